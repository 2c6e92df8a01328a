"""evidence: keyed chain heads (decision log) and the destruction register's head

`chain_heads` gains `keyed_from` (the first seq chained with the evidence key; null:
every record so far is unkeyed SHA-256) and `mac` (HMAC over chain, seq, hash and
keyed_from: a head rolled back or edited without the key no longer verifies). Both
are null on existing rows: the service anchors them under the key when it starts
(`dialer.evidence`), since a migration has no key.

`evidence_heads` keeps the heads of chains other than the decision log's, first the
destruction register's, with the same columns.

Revision ID: 1951_evidence
Revises: 0007_blocked_case
Create Date: 2026-12-07 03:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '1951_evidence'
down_revision = '0007_blocked_case'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('chain_heads') as batch:
        batch.add_column(sa.Column('keyed_from', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('mac', sa.String(length=64), nullable=True))
    op.create_table('evidence_heads',
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('keyed_from', sa.BigInteger(), nullable=True),
    sa.Column('mac', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('chain', name=op.f('pk_evidence_heads')),
    )


def downgrade() -> None:
    op.drop_table('evidence_heads')
    with op.batch_alter_table('chain_heads') as batch:
        batch.drop_column('mac')
        batch.drop_column('keyed_from')
