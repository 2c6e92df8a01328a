"""initial schema: cases, contacts, attempts, decision log, outbox, users, audit

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 18:48:03.428280
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('creditor', sa.String(length=64), nullable=True),
    sa.Column('case_id', sa.String(length=100), nullable=True),
    sa.Column('details', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_at', ['at'], unique=False)

    op.create_table('chain_heads',
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('chain', name=op.f('pk_chain_heads'))
    )
    op.create_table('creditors',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_creditors'))
    )
    op.create_table('decisions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('decision_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('creditor', sa.String(length=64), nullable=False),
    sa.Column('case_id', sa.String(length=100), nullable=False),
    sa.Column('agent_id', sa.String(length=100), nullable=False),
    sa.Column('allowed', sa.Boolean(), nullable=False),
    sa.Column('rule_id', sa.String(length=80), nullable=False),
    sa.Column('attempt_id', sa.String(length=36), nullable=True),
    sa.Column('record', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_decisions')),
    sa.UniqueConstraint('chain', 'seq', name=op.f('uq_decisions_chain_seq')),
    sa.UniqueConstraint('decision_id', name=op.f('uq_decisions_decision_id'))
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index('ix_decisions_allowed_at', ['allowed', 'at'], unique=False)
        batch_op.create_index('ix_decisions_creditor_at', ['creditor', 'at'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('creditor', sa.String(length=64), nullable=False),
    sa.Column('case_id', sa.String(length=100), nullable=True),
    sa.Column('case_seq', sa.BigInteger(), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_event_id'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_published_at_id', ['published_at', 'id'], unique=False)

    op.create_table('repayments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('creditor', sa.String(length=64), nullable=False),
    sa.Column('case_id', sa.String(length=100), nullable=False),
    sa.Column('amount', sa.String(length=40), nullable=True),
    sa.Column('paid_on', sa.Date(), nullable=True),
    sa.Column('settled', sa.Boolean(), nullable=False),
    sa.Column('imported_by', sa.String(length=100), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_repayments'))
    )
    with op.batch_alter_table('repayments', schema=None) as batch_op:
        batch_op.create_index('ix_repayments_creditor_case_id', ['creditor', 'case_id'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_users_token_hash'))
    )
    op.create_table('cases',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('creditor', sa.String(length=64), nullable=False),
    sa.Column('case_id', sa.String(length=100), nullable=False),
    sa.Column('debtor_name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('commission_start', sa.Date(), nullable=True),
    sa.Column('commission_end', sa.Date(), nullable=True),
    sa.Column('assigned_agent', sa.String(length=100), nullable=True),
    sa.Column('flags', sa.Text(), nullable=False),
    sa.Column('amount_due', sa.String(length=40), nullable=True),
    sa.Column('overdue_days', sa.Integer(), nullable=True),
    sa.Column('follow_up_status', sa.String(length=40), nullable=False),
    sa.Column('next_action_date', sa.Date(), nullable=True),
    sa.Column('event_seq', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['creditor'], ['creditors.id'], name=op.f('fk_cases_creditor_creditors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cases')),
    sa.UniqueConstraint('creditor', 'case_id', name=op.f('uq_cases_creditor_case_id'))
    )
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_assigned_agent', ['assigned_agent'], unique=False)
        batch_op.create_index('ix_cases_case_id', ['case_id'], unique=False)

    op.create_table('user_creditors',
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('creditor', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['creditor'], ['creditors.id'], name=op.f('fk_user_creditors_creditor_creditors')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_creditors_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'creditor', name=op.f('pk_user_creditors'))
    )
    op.create_table('appointments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('case_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempt_id', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_pk'], ['cases.id'], name=op.f('fk_appointments_case_pk_cases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_appointments'))
    )
    with op.batch_alter_table('appointments', schema=None) as batch_op:
        batch_op.create_index('ix_appointments_case_pk_at', ['case_pk', 'at'], unique=False)

    op.create_table('attempts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('case_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('creditor', sa.String(length=64), nullable=False),
    sa.Column('case_id', sa.String(length=100), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('relation', sa.String(length=20), nullable=False),
    sa.Column('agent_id', sa.String(length=100), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decision_id', sa.String(length=36), nullable=False),
    sa.Column('connected', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['case_pk'], ['cases.id'], name=op.f('fk_attempts_case_pk_cases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attempts'))
    )
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.create_index('ix_attempts_agent_id_state_number', ['agent_id', 'state', 'number'], unique=False)
        batch_op.create_index('ix_attempts_case_pk_at', ['case_pk', 'at'], unique=False)
        batch_op.create_index('ix_attempts_number_at', ['number', 'at'], unique=False)

    op.create_table('contacts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('case_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('relation', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('tz', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('do_not_call', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=40), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_pk'], ['cases.id'], name=op.f('fk_contacts_case_pk_cases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts')),
    sa.UniqueConstraint('case_pk', 'number', name=op.f('uq_contacts_case_pk_number'))
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index('ix_contacts_number', ['number'], unique=False)

    op.create_table('outcomes',
    sa.Column('attempt_id', sa.String(length=36), nullable=False),
    sa.Column('case_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('disposition', sa.String(length=30), nullable=False),
    sa.Column('result', sa.String(length=40), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('callback_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('promise_amount', sa.String(length=40), nullable=True),
    sa.Column('promise_date', sa.Date(), nullable=True),
    sa.Column('logged_by', sa.String(length=100), nullable=False),
    sa.Column('logged_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('request_digest', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['attempt_id'], ['attempts.id'], name=op.f('fk_outcomes_attempt_id_attempts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['case_pk'], ['cases.id'], name=op.f('fk_outcomes_case_pk_cases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('attempt_id', name=op.f('pk_outcomes'))
    )
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.create_index('ix_outcomes_case_pk', ['case_pk'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.drop_index('ix_outcomes_case_pk')

    op.drop_table('outcomes')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index('ix_contacts_number')

    op.drop_table('contacts')
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_attempts_number_at')
        batch_op.drop_index('ix_attempts_case_pk_at')
        batch_op.drop_index('ix_attempts_agent_id_state_number')

    op.drop_table('attempts')
    with op.batch_alter_table('appointments', schema=None) as batch_op:
        batch_op.drop_index('ix_appointments_case_pk_at')

    op.drop_table('appointments')
    op.drop_table('user_creditors')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_case_id')
        batch_op.drop_index('ix_cases_assigned_agent')

    op.drop_table('cases')
    op.drop_table('users')
    with op.batch_alter_table('repayments', schema=None) as batch_op:
        batch_op.drop_index('ix_repayments_creditor_case_id')

    op.drop_table('repayments')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_published_at_id')

    op.drop_table('outbox')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_decisions_creditor_at')
        batch_op.drop_index('ix_decisions_allowed_at')

    op.drop_table('decisions')
    op.drop_table('creditors')
    op.drop_table('chain_heads')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_at')

    op.drop_table('audit_log')

