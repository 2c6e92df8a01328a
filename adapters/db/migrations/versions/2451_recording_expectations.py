"""recordings: connected calls the vault expects a recording for (`recording_expectations`)

Revision ID: 2451_rec_expect
Revises: 0007_blocked_case
Create Date: 2026-12-07 04:00:00

Owned by the vault's repository (adapters/db/recordings_repo.py
`recording_expectations`, which the code queries).
"""
from alembic import op
import sqlalchemy as sa


revision = '2451_rec_expect'
down_revision = '0007_blocked_case'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('recording_expectations',
    sa.Column('attempt_id', sa.String(length=36), nullable=False),
    sa.Column('creditor', sa.String(length=64), nullable=False),
    sa.Column('case_id', sa.String(length=100), nullable=False),
    sa.Column('agent', sa.String(length=100), nullable=False),
    sa.Column('number_masked', sa.String(length=32), nullable=False),
    sa.Column('dialed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('alerted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('recording_id', sa.String(length=32), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('attempt_id', name=op.f('pk_recording_expectations')),
    )
    op.create_index('ix_recording_expectations_resolved_at_due_at', 'recording_expectations',
                    ['resolved_at', 'due_at'], unique=False)
    op.create_index('ix_recording_expectations_creditor_dialed_at', 'recording_expectations',
                    ['creditor', 'dialed_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_recording_expectations_creditor_dialed_at', table_name='recording_expectations')
    op.drop_index('ix_recording_expectations_resolved_at_due_at', table_name='recording_expectations')
    op.drop_table('recording_expectations')
