"""console: sessions ended by sign-out (`console_signouts`)

Revision ID: 1901_console_signouts
Revises: 0007_blocked_case
Create Date: 2026-12-07 03:50:00

A console session is a signed cookie; signing out must end it on the server too, or a
copy of the cookie keeps working until it expires. The session ids signed out are kept
until the cookie would have expired (`expires_at`), then may be deleted. Rotating a
user's token or disabling them ends every session they signed in before that moment
(`console_session_cutoffs`): a token that leaked may have opened one.
"""
from alembic import op
import sqlalchemy as sa


revision = '1901_console_signouts'
down_revision = '0007_blocked_case'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_signouts',
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sid'),
    )
    op.create_index('ix_console_signouts_expires_at', 'console_signouts', ['expires_at'], unique=False)
    op.create_table('console_session_cutoffs',
    sa.Column('user_name', sa.String(length=100), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_name'),
    )


def downgrade() -> None:
    op.drop_table('console_session_cutoffs')
    op.drop_index('ix_console_signouts_expires_at', table_name='console_signouts')
    op.drop_table('console_signouts')
