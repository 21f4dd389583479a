"""eval samples: every completion an evaluate stage scored, per model, template and problem

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 03:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'eval_samples',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('stage_id', sa.Integer(), nullable=False),
        sa.Column('model', sa.String(length=64), nullable=False),
        sa.Column('template', sa.String(length=64), nullable=False),
        sa.Column('problem_index', sa.Integer(), nullable=False),
        sa.Column('prompt', sa.Text(), nullable=False),
        sa.Column('reference', sa.Text(), nullable=True),
        sa.Column('greedy', sa.Boolean(), nullable=False),
        sa.Column('sample_index', sa.Integer(), nullable=False),
        sa.Column('completion', sa.Text(), nullable=False),
        sa.Column('extracted', sa.Text(), nullable=True),
        sa.Column('correct', sa.Boolean(), nullable=False),
        sa.Column('cluster', sa.Integer(), nullable=True),
        sa.Column('format_ok', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['stage_id'], ['stages.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('eval_samples', schema=None) as batch_op:
        batch_op.create_index('ix_eval_samples_stage',
                              ['stage_id', 'model', 'template', 'problem_index'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('eval_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_eval_samples_stage')
    op.drop_table('eval_samples')
