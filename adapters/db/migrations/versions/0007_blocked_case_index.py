"""the blocked decisions of one case, whatever the creditor (admin's console case filter)

The console's case filter for a user who sees every creditor (an admin, no creditor
chosen) had no index to seek: `ix_decisions_creditor_case_id_at` leads with the
creditor, and the review index (allowed, kind, at, …) would read every blocked dial in
the range. This index holds blocked decisions only, under the same condition the case
filter spells (`coalesce(allowed, 1) IS 0`, which keeps SQLite off the review index for
a case): an allowed dial's decision is not written into it, so the dial path pays
nothing; a blocked one pays one B-tree entry.

PostgreSQL gets the same partial index under its spelling of the condition,
`coalesce(allowed, true) IS false` (what the query renders there; the predicate has no
parameter, so generic plans can use it too, unlike 0006's).

Revision ID: 0007_blocked_case
Revises: 0006_partial
Create Date: 2026-11-24 10:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_blocked_case'
down_revision = '0006_partial'
branch_labels = None
depends_on = None

NAME = 'ix_decisions_blocked_case_kind_at'
COLUMNS = ['case_id', 'kind', 'at']


def upgrade() -> None:
    op.create_index(NAME, 'decisions', COLUMNS, unique=False,
                    sqlite_where=sa.text('coalesce(allowed, 1) IS 0'),
                    postgresql_where=sa.text('coalesce(allowed, true) IS false'))


def downgrade() -> None:
    op.drop_index(NAME, table_name='decisions')
