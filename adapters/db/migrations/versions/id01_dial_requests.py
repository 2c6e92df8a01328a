"""dial path: request identities stored with their decision (`dial_requests`)

Revision ID: id01_dial_requests
Revises: 2451_rec_expect
Create Date: 2026-12-07 07:00:00

Two gate instances behind one PBX: an INVITE retried on the second after the first's
answer was lost, or a click-to-dial retried with the same Idempotency-Key, must get the
answer already given, not a second decision and a second counted attempt. Each request
identity is written with the decision that answered it, in the same transaction; the
primary key makes two instances racing on one identity end with one row.
"""
from alembic import op
import sqlalchemy as sa


revision = 'id01_dial_requests'
down_revision = '2451_rec_expect'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dial_requests',
    sa.Column('identity', sa.String(length=64), nullable=False),
    sa.Column('decision_id', sa.String(length=64), nullable=False),
    sa.Column('attempt_id', sa.String(length=64), nullable=True),
    sa.Column('request_digest', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('identity'),
    )
    op.create_index('ix_dial_requests_created_at', 'dial_requests', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_dial_requests_created_at', table_name='dial_requests')
    op.drop_table('dial_requests')
