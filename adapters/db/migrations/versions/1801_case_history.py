"""cases: what the creditor supplies apart from what the agency learns; case history

`cases` gains the bank's own flags (`creditor_flags`, replaced by each file) apart from
the flags outcomes and people set (`agency_flags`, kept until lifted explicitly);
`flags` stays the effective union the gate reads. `status_hold` names what holds the
status against a later file (a repayment closure, a pause or withdrawal by API call).
`history_seq` / `history_hash` are the head of the case's history chain.
`first_call_alerted_at`: when `case.first_call_overdue` was emitted (once per case).
`commission_extended_to`: an extension granted through the API, which a file's earlier
commission end does not undo.

Existing flags are all taken as the agency's (failing closed: a flag of unknown origin
stays until someone lifts it with a reason).

`case_history`: every change to a case, contact or flag, append-only and hash-chained
per case.

Revision ID: 1801_case_history
Revises: 0007_blocked_case
Create Date: 2026-12-07 03:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '1801_case_history'
down_revision = '0007_blocked_case'
branch_labels = None
depends_on = None

GENESIS = '0' * 64


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite: rebuilding `cases` would cascade
    # into its contacts).
    op.add_column('cases', sa.Column('creditor_flags', sa.Text(), nullable=False, server_default=''))
    op.add_column('cases', sa.Column('agency_flags', sa.Text(), nullable=False, server_default=''))
    op.add_column('cases', sa.Column('status_hold', sa.String(length=20), nullable=True))
    op.add_column('cases', sa.Column('history_seq', sa.BigInteger(), nullable=False, server_default='0'))
    op.add_column('cases', sa.Column('history_hash', sa.String(length=64), nullable=False, server_default=GENESIS))
    op.add_column('cases', sa.Column('first_call_alerted_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('cases', sa.Column('commission_extended_to', sa.Date(), nullable=True))
    op.execute("UPDATE cases SET agency_flags = flags")
    # The first-call sweep and the worklist's new cases: (follow_up_status, next_action_date).
    op.create_index('ix_cases_follow_up_status_next_action_date', 'cases', ['follow_up_status', 'next_action_date'],
                    unique=False)
    op.create_table('case_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('case_pk', sa.BigInteger(), nullable=False),
    sa.Column('creditor', sa.String(length=64), nullable=False),
    sa.Column('case_id', sa.String(length=100), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('source_ref', sa.String(length=200), nullable=True),
    sa.Column('source_row', sa.Integer(), nullable=True),
    sa.Column('field', sa.String(length=80), nullable=False),
    sa.Column('record', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_history')),
    sa.UniqueConstraint('case_pk', 'seq', name=op.f('uq_case_history_case_pk_seq')),
    )
    op.create_index('ix_case_history_creditor_case_id', 'case_history', ['creditor', 'case_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_case_history_creditor_case_id', table_name='case_history')
    op.drop_table('case_history')
    op.drop_index('ix_cases_follow_up_status_next_action_date', table_name='cases')
    with op.batch_alter_table('cases') as batch:
        batch.drop_column('commission_extended_to')
        batch.drop_column('first_call_alerted_at')
        batch.drop_column('history_hash')
        batch.drop_column('history_seq')
        batch.drop_column('status_hold')
        batch.drop_column('agency_flags')
        batch.drop_column('creditor_flags')
