"""pbx: the sip_ua adapter's attempt progress rows (`pbx_attempt_progress`)

Revision ID: 0201_pbx
Revises: 0003_expiry
Create Date: 2026-11-23 20:25:00

Declared for queries as adapters/db/tables.py `pbx_attempt_progress`. Earlier builds created
this table at start-up; a database that already has it is left as it is.
"""
from alembic import op
import sqlalchemy as sa


revision = '0201_pbx'
down_revision = '0003_expiry'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table('pbx_attempt_progress'):
        return
    op.create_table('pbx_attempt_progress',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('attempt_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cause', sa.String(length=32), nullable=True),
    sa.Column('rule_id', sa.String(length=100), nullable=True),
    sa.Column('detail', sa.String(length=500), nullable=True),
    sa.Column('recording_id', sa.String(length=100), nullable=True),
    sa.Column('case_flags', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_pbx_attempt_progress_attempt_id', 'pbx_attempt_progress', ['attempt_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_pbx_attempt_progress_attempt_id', table_name='pbx_attempt_progress')
    op.drop_table('pbx_attempt_progress')
