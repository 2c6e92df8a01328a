"""import jobs: a validated file's rows staged for batched, resumable application

An import is validated whole first; its rows are then staged here and applied in
short batches, each its own transaction, so the gate's decisions run between them.
A batch applies its rows, deletes them from `import_rows` and advances
`import_jobs.rows_done` in one transaction: after a crash the job rolls forward from
`rows_done`, and no row is applied twice.

Revision ID: 1851_import_jobs
Revises: 0007_blocked_case
Create Date: 2026-12-07 03:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '1851_import_jobs'
down_revision = '0007_blocked_case'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('import_jobs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('creditors', sa.Text(), nullable=False),
    sa.Column('file_name', sa.String(length=200), nullable=True),
    sa.Column('encoding', sa.String(length=20), nullable=True),
    sa.Column('rows_total', sa.Integer(), nullable=False),
    sa.Column('rows_done', sa.Integer(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('errors', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_import_jobs'))
    )
    op.create_index('ix_import_jobs_state', 'import_jobs', ['state'], unique=False)
    op.create_table('import_rows',
    sa.Column('import_id', sa.String(length=40), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('import_id', 'seq', name=op.f('pk_import_rows'))
    )


def downgrade() -> None:
    op.drop_table('import_rows')
    op.drop_index('ix_import_jobs_state', table_name='import_jobs')
    op.drop_table('import_jobs')
