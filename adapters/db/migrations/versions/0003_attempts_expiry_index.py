"""attempts: index for the expiry sweep (authorised attempts past their validity)

Without it the sweep that runs every 15 s scans the whole attempts table inside a write
transaction — a full scan of 10^6 rows holding the write lock.

Revision ID: 0003_expiry
Revises: 0101
Create Date: 2026-11-23 19:55:00
"""
from alembic import op


revision = '0003_expiry'
down_revision = '0101'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_attempts_state_valid_until', 'attempts', ['state', 'valid_until'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_attempts_state_valid_until', table_name='attempts')
