"""stage contract: stage key, input wiring, live parameter values, command errors

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('stages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('inputs_json', sa.Text(), nullable=False,
                                      server_default='{}'))
        batch_op.add_column(sa.Column('params_json', sa.Text(), nullable=False,
                                      server_default='{}'))
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=True))
    # Stages made before the contract existed are named by their kind.
    op.execute("UPDATE stages SET key = kind WHERE key IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.drop_column('error')
    with op.batch_alter_table('stages', schema=None) as batch_op:
        batch_op.drop_column('params_json')
        batch_op.drop_column('inputs_json')
        batch_op.drop_column('key')
