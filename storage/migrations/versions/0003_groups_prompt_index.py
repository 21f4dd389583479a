"""index groups by prompt (follow one prompt across steps)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 15:30:00
"""
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_groups_stage_prompt', 'groups', ['stage_id', 'prompt'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_groups_stage_prompt', table_name='groups')
