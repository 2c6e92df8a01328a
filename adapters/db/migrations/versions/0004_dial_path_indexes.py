"""dial-path indexes: drop decisions (creditor, at); attempts (agent_id, state, number) gains valid_until

Plans checked with EXPLAIN QUERY PLAN on 10^6 decisions / 8*10^5 attempts and no
sqlite_stat1 (DialGate never runs ANALYZE, so SQLite plans from its default estimates).

* `ix_decisions_creditor_at` (creditor, at) is dropped. Every dial writes its
  decision row inside the serialised write transaction, and this index was one more
  B-tree per row with no reader that needs it: the console's blocked-dial queries
  (`kind = 'dial'`) use `ix_decisions_review`, which holds the creditor and filters on
  it inside the index; case pages and case filters use
  `ix_decisions_creditor_case_id_at`; the JSON API (`kind != 'check'`) uses
  `ix_decisions_allowed_at`. Where the planner did pick (creditor, at) it was its
  worst plan (it reads every decision of the creditor in the range to find the few
  blocked ones), so the creditor-filtered console page, export and API list and
  summary are better served without it.
* `ix_attempts_agent_id_state_number` becomes `ix_attempts_agent_id_state_number_valid_until`.
  Since `ix_attempts_state_valid_until` (0003) exists, the planner preferred it for
  "the agent's live authorisation for this number" (`find_pending`, the SIP gate's case
  resolution): an equality and a range beat three equalities in its default estimates,
  so each lookup reads every live authorisation, inside the write transaction. With
  `valid_until` as a fourth column the lookup is a direct seek, whatever the number of
  live authorisations; the index costs the same to maintain.

Revision ID: 0004_indexes
Revises: 0003_expiry
Create Date: 2026-11-24 02:45:00
"""
from alembic import op


revision = '0004_indexes'
down_revision = '0003_expiry'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_decisions_creditor_at', table_name='decisions')
    op.create_index(
        'ix_attempts_agent_id_state_number_valid_until', 'attempts',
        ['agent_id', 'state', 'number', 'valid_until'], unique=False,
    )
    op.drop_index('ix_attempts_agent_id_state_number', table_name='attempts')


def downgrade() -> None:
    op.create_index('ix_attempts_agent_id_state_number', 'attempts', ['agent_id', 'state', 'number'], unique=False)
    op.drop_index('ix_attempts_agent_id_state_number_valid_until', table_name='attempts')
    op.create_index('ix_decisions_creditor_at', 'decisions', ['creditor', 'at'], unique=False)
