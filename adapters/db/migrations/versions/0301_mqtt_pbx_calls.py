"""mqtt: the bridge's SIP Call-ID → attempt map (`mqtt_pbx_calls`)

Revision ID: 0301_mqtt
Revises: 0003_expiry
Create Date: 2026-11-23 20:25:00

Declared for queries as adapters/db/tables.py `mqtt_pbx_calls`. Earlier builds created
this table at start-up; a database that already has it is left as it is.
"""
from alembic import op
import sqlalchemy as sa


revision = '0301_mqtt'
down_revision = '0003_expiry'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table('mqtt_pbx_calls'):
        return
    op.create_table('mqtt_pbx_calls',
    sa.Column('call_id', sa.String(length=256), nullable=False),
    sa.Column('attempt_id', sa.String(length=64), nullable=False),
    sa.Column('pbx_id', sa.String(length=128), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('call_id'),
    )
    op.create_index('ix_mqtt_pbx_calls_attempt_id', 'mqtt_pbx_calls', ['attempt_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_mqtt_pbx_calls_attempt_id', table_name='mqtt_pbx_calls')
    op.drop_table('mqtt_pbx_calls')
