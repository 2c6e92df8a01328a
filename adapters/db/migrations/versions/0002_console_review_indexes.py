"""console review indexes: the blocked-dial view and case timelines over a large decision log

The web console counts, charts and pages blocked decisions filtered by date
range, creditor, agent, rule and case. `ix_decisions_review` covers every column
those filters and groupings read, so counts and chart aggregates are index-only scans
(no decision record is read except the page shown); `ix_decisions_creditor_case_id_at`
serves the case filter and the case page's timeline.

Revision ID: 0002_console
Revises: 0001
Create Date: 2026-11-23 19:05:00
"""
from alembic import op


revision = '0002_console'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        'ix_decisions_review', 'decisions',
        ['allowed', 'kind', 'at', 'creditor', 'rule_id', 'agent_id', 'case_id'], unique=False,
    )
    op.create_index('ix_decisions_creditor_case_id_at', 'decisions', ['creditor', 'case_id', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_decisions_creditor_case_id_at', table_name='decisions')
    op.drop_index('ix_decisions_review', table_name='decisions')
