"""curation: review statuses, row versions, authored and grouped edits, ready flag, snapshots

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00

Rows that older versions marked ``kept`` become ``accepted`` (the statuses are now pending |
accepted | rejected). Every existing edit becomes its own curation action, so undo keeps
working on edits made before the upgrade.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'curation_actions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('dataset_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('author', sa.String(length=200), nullable=True),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('rows', sa.Integer(), nullable=False),
        sa.Column('undone', sa.Boolean(), nullable=False),
        sa.Column('undone_at', sa.DateTime(), nullable=True),
        sa.Column('undone_by', sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('curation_actions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_curation_actions_dataset_id'), ['dataset_id'],
                              unique=False)

    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ready', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('ready_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('ready_by', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('origin', sa.Text(), nullable=True))
        batch_op.create_foreign_key('fk_datasets_parent_id', 'datasets', ['parent_id'], ['id'],
                                    ondelete='SET NULL')

    with op.batch_alter_table('dataset_rows', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), nullable=False,
                                      server_default='1'))
        batch_op.create_index('ix_dataset_rows_status', ['dataset_id', 'status'], unique=False)
    op.execute("UPDATE dataset_rows SET status = 'accepted' WHERE status = 'kept'")
    op.execute("UPDATE row_edits SET old_value = 'accepted' "
               "WHERE field = 'status' AND old_value = 'kept'")
    op.execute("UPDATE row_edits SET new_value = 'accepted' "
               "WHERE field = 'status' AND new_value = 'kept'")

    with op.batch_alter_table('row_edits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('author', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('action_id', sa.Integer(), nullable=True))
    # One action per edit made before actions existed (same id, so the join is trivial).
    op.execute(
        "INSERT INTO curation_actions (id, dataset_id, kind, description, author, at, rows, "
        "undone) SELECT e.id, r.dataset_id, 'edit', 'edited ' || e.field, NULL, e.at, 1, "
        "e.undone FROM row_edits e JOIN dataset_rows r ON r.id = e.row_id")
    op.execute("UPDATE row_edits SET action_id = id")
    if op.get_bind().dialect.name == "postgresql":
        # Ids were given explicitly: move the sequence past them.
        op.execute("SELECT setval(pg_get_serial_sequence('curation_actions', 'id'), "
                   "COALESCE((SELECT MAX(id) FROM curation_actions), 0) + 1, false)")
    with op.batch_alter_table('row_edits', schema=None) as batch_op:
        batch_op.alter_column('action_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_index(batch_op.f('ix_row_edits_action_id'), ['action_id'], unique=False)
        batch_op.create_foreign_key('fk_row_edits_action_id', 'curation_actions', ['action_id'],
                                    ['id'], ondelete='CASCADE')

    op.create_table(
        'dataset_snapshots',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('dataset_id', sa.Integer(), nullable=False),
        sa.Column('stage_id', sa.Integer(), nullable=True),
        sa.Column('content_hash', sa.String(length=64), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['stage_id'], ['stages.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('dataset_snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_snapshots_dataset_id'), ['dataset_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_dataset_snapshots_stage_id'), ['stage_id'],
                              unique=False)
    op.create_table(
        'snapshot_rows',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('snapshot_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('row_id', sa.Integer(), nullable=True),
        sa.Column('prompt', sa.Text(), nullable=False),
        sa.Column('completion', sa.Text(), nullable=False),
        sa.Column('answer', sa.Text(), nullable=True),
        sa.Column('source', sa.String(length=64), nullable=True),
        sa.Column('meta_json', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['snapshot_id'], ['dataset_snapshots.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('snapshot_rows', schema=None) as batch_op:
        batch_op.create_index('ix_snapshot_rows_pos', ['snapshot_id', 'position'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('snapshot_rows', schema=None) as batch_op:
        batch_op.drop_index('ix_snapshot_rows_pos')
    op.drop_table('snapshot_rows')
    with op.batch_alter_table('dataset_snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_snapshots_stage_id'))
        batch_op.drop_index(batch_op.f('ix_dataset_snapshots_dataset_id'))
    op.drop_table('dataset_snapshots')
    with op.batch_alter_table('row_edits', schema=None) as batch_op:
        batch_op.drop_constraint('fk_row_edits_action_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_row_edits_action_id'))
        batch_op.drop_column('action_id')
        batch_op.drop_column('author')
    op.execute("UPDATE dataset_rows SET status = 'kept' WHERE status = 'accepted'")
    with op.batch_alter_table('dataset_rows', schema=None) as batch_op:
        batch_op.drop_index('ix_dataset_rows_status')
        batch_op.drop_column('version')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_constraint('fk_datasets_parent_id', type_='foreignkey')
        batch_op.drop_column('origin')
        batch_op.drop_column('parent_id')
        batch_op.drop_column('ready_by')
        batch_op.drop_column('ready_at')
        batch_op.drop_column('ready')
    with op.batch_alter_table('curation_actions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_curation_actions_dataset_id'))
    op.drop_table('curation_actions')
