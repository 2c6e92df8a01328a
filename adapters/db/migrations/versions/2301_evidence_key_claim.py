"""evidence key claim: which evidence key the store's chains are kept under

`evidence_key` holds one row: the id (a one-way digest, not the key) of the key the
first instance started with. An instance starting with another key stops, instead of
linking the shared chains under a key the others cannot verify.

Revision ID: 2301_evidence_key
Revises: 0007_blocked_case
Create Date: 2026-12-07 07:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '2301_evidence_key'
down_revision = '0007_blocked_case'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('evidence_key',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('key_id', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('evidence_key')
