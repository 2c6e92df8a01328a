"""recordings vault: metadata, case holds, access log, purges, destruction register

Revision ID: 0101
Revises: 0002_console
Create Date: 2026-11-23 19:10:00

Owned by the recordings vault; mirrored for queries by
`adapters/db/recordings_repo.py`. The access log and the destruction register are
append-only and never purged.
"""
from alembic import op
import sqlalchemy as sa


revision = '0101'
down_revision = '0002_console'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('recordings',
    sa.Column('recording_id', sa.String(length=32), nullable=False),
    sa.Column('source_kind', sa.String(length=10), nullable=False),
    sa.Column('source_id', sa.String(length=200), nullable=False),
    sa.Column('creditor', sa.String(length=64), nullable=True),
    sa.Column('case_id', sa.String(length=100), nullable=True),
    sa.Column('agent', sa.String(length=100), nullable=True),
    sa.Column('number_masked', sa.String(length=32), nullable=True),
    sa.Column('number_digest', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('media_type', sa.String(length=40), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('blob_size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('data_key_id', sa.String(length=32), nullable=False),
    sa.Column('kek_id', sa.String(length=64), nullable=True),
    sa.Column('wrapped_key', sa.LargeBinary(length=128), nullable=True),
    sa.Column('retain_until', sa.Date(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('destroyed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('hold_reason', sa.Text(), nullable=True),
    sa.Column('hold_by', sa.String(length=100), nullable=True),
    sa.Column('hold_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('recording_id', name=op.f('pk_recordings')),
    sa.UniqueConstraint('source_kind', 'source_id', name=op.f('uq_recordings_source_kind_source_id'))
    )
    op.create_index('ix_recordings_agent_started_at', 'recordings', ['agent', 'started_at'], unique=False)
    op.create_index('ix_recordings_creditor_case_id', 'recordings', ['creditor', 'case_id'], unique=False)
    op.create_index('ix_recordings_creditor_started_at', 'recordings', ['creditor', 'started_at'], unique=False)
    op.create_index('ix_recordings_number_digest', 'recordings', ['number_digest'], unique=False)
    op.create_index('ix_recordings_state_retain_until', 'recordings', ['state', 'retain_until'], unique=False)

    op.create_table('recording_case_holds',
    sa.Column('creditor', sa.String(length=64), nullable=False),
    sa.Column('case_id', sa.String(length=100), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('held_by', sa.String(length=100), nullable=False),
    sa.Column('held_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('creditor', 'case_id', name=op.f('pk_recording_case_holds'))
    )

    op.create_table('recording_access_log',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('recording_id', sa.String(length=32), nullable=False),
    sa.Column('user', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('range_start', sa.BigInteger(), nullable=False),
    sa.Column('range_end', sa.BigInteger(), nullable=False),
    sa.Column('client', sa.String(length=100), nullable=True),
    sa.Column('purpose', sa.String(length=10), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recording_access_log'))
    )
    op.create_index('ix_recording_access_log_recording_id_at', 'recording_access_log', ['recording_id', 'at'], unique=False)

    op.create_table('recording_purges',
    sa.Column('purge_id', sa.String(length=32), nullable=False),
    sa.Column('requested_by', sa.String(length=100), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('recording_ids', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('approved_by', sa.String(length=100), nullable=True),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('destroyed', sa.Text(), nullable=False),
    sa.Column('skipped', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('purge_id', name=op.f('pk_recording_purges'))
    )

    op.create_table('recording_destruction_register',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('recording_id', sa.String(length=32), nullable=False),
    sa.Column('case_id', sa.String(length=100), nullable=True),
    sa.Column('creditor', sa.String(length=64), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('retain_until', sa.Date(), nullable=False),
    sa.Column('operator', sa.String(length=100), nullable=False),
    sa.Column('approver', sa.String(length=100), nullable=False),
    sa.Column('purge_id', sa.String(length=32), nullable=False),
    sa.Column('destroyed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('method', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_recording_destruction_register')),
    sa.UniqueConstraint('entry_hash', name=op.f('uq_recording_destruction_register_entry_hash'))
    )


def downgrade() -> None:
    op.drop_table('recording_destruction_register')
    op.drop_table('recording_purges')
    op.drop_index('ix_recording_access_log_recording_id_at', table_name='recording_access_log')
    op.drop_table('recording_access_log')
    op.drop_table('recording_case_holds')
    op.drop_index('ix_recordings_state_retain_until', table_name='recordings')
    op.drop_index('ix_recordings_number_digest', table_name='recordings')
    op.drop_index('ix_recordings_creditor_started_at', table_name='recordings')
    op.drop_index('ix_recordings_creditor_case_id', table_name='recordings')
    op.drop_index('ix_recordings_agent_started_at', table_name='recordings')
    op.drop_table('recordings')
