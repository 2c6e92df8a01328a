"""decisions: drop ix_decisions_allowed_at (allowed, at); the review index serves its readers

The JSON API's blocked-dial list and summary filter `kind IN ('dial', 'recheck')` instead
of `kind != 'check'`, so SQLite seeks (allowed, kind, at) in `ix_decisions_review` and
the (allowed, at) index has no reader left: one B-tree less written per dial. It also
stops misleading the planner: without sqlite_stat1 SQLite preferred (allowed, at) for the
console's agent- and rule-filtered pages and read the table row by row to filter.

Revision ID: 0005_allowed_at
Revises: 0004_indexes
Create Date: 2026-11-24 03:00:00
"""
from alembic import op


revision = '0005_allowed_at'
down_revision = '0004_indexes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_decisions_allowed_at', table_name='decisions')


def downgrade() -> None:
    op.create_index('ix_decisions_allowed_at', 'decisions', ['allowed', 'at'], unique=False)
