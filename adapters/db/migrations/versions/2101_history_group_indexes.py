"""attempts: indexes to read a heavily dialed number's or case's history by group

A decision needs at most its largest cap's limit of the newest attempts of each
(relation, answered) group; with these a number with thousands of attempts in its
look-back is read a few rows per group instead of all of them.

Revision ID: 2101_history_groups
Revises: 0007_blocked_case
Create Date: 2026-12-07 04:00:00
"""
from alembic import op


revision = '2101_history_groups'
down_revision = '0007_blocked_case'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_attempts_number_group_at', 'attempts', ['number', 'relation', 'connected', 'at'], unique=False)
    op.create_index('ix_attempts_case_pk_group_at', 'attempts', ['case_pk', 'relation', 'connected', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_attempts_case_pk_group_at', table_name='attempts')
    op.drop_index('ix_attempts_number_group_at', table_name='attempts')
