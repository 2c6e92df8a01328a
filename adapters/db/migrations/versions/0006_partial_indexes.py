"""partial indexes on SQLite: attempts' state indexes hold 'authorised' rows only, the decision review index blocked decisions only

Every dial writes an attempt (when allowed) and a decision row inside the serialised
write transaction, and each index is one more B-tree written per row. Three of them
are read only for a subset of the rows:

* `ix_attempts_agent_id_state_number_valid_until` (the pending-authorisation lookup
  of the SIP gate) and `ix_attempts_state_valid_until` (the expiry sweep) are only
  ever read with `state = 'authorised'`. A SIP dial's attempt is born 'dialing', so it
  never enters either; a click-to-dial's leaves them when it is used or expires.
* `ix_decisions_review` serves the blocked-dial review (console and JSON API), which
  always asks for `allowed IS 0`; allowed decisions (most of them) stay out of it.

SQLite uses a partial index when the query's WHERE implies the index's: the readers
spell the condition the same way (`allowed IS 0`; `state = 'authorised'`, also as a
bound parameter, which SQLite matches against its value).

PostgreSQL keeps the full indexes: its generic plans for prepared statements cannot
use a partial index whose condition arrives as a parameter.

Revision ID: 0006_partial
Revises: 0005_allowed_at
Create Date: 2026-11-24 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_partial'
down_revision = '0005_allowed_at'
branch_labels = None
depends_on = None

_ATTEMPT_INDEXES = (
    ('ix_attempts_agent_id_state_number_valid_until', ['agent_id', 'state', 'number', 'valid_until']),
    ('ix_attempts_state_valid_until', ['state', 'valid_until']),
)
_REVIEW = ('ix_decisions_review', ['allowed', 'kind', 'at', 'creditor', 'rule_id', 'agent_id', 'case_id'])


def _sqlite() -> bool:
    return op.get_bind().dialect.name == 'sqlite'


def upgrade() -> None:
    if not _sqlite():
        return
    for name, cols in _ATTEMPT_INDEXES:
        op.drop_index(name, table_name='attempts')
        op.create_index(name, 'attempts', cols, unique=False, sqlite_where=sa.text("state = 'authorised'"))
    op.drop_index(_REVIEW[0], table_name='decisions')
    op.create_index(_REVIEW[0], 'decisions', _REVIEW[1], unique=False, sqlite_where=sa.text('allowed IS 0'))


def downgrade() -> None:
    if not _sqlite():
        return
    op.drop_index(_REVIEW[0], table_name='decisions')
    op.create_index(_REVIEW[0], 'decisions', _REVIEW[1], unique=False)
    for name, cols in _ATTEMPT_INDEXES:
        op.drop_index(name, table_name='attempts')
        op.create_index(name, 'attempts', cols, unique=False)
