"""messages: an index of the supervisors' alert texts (few among every text), which the board
and the text sweep read every few seconds and every minute

Revision ID: c5d2f8a1b3e6
Revises: b4e1c7a92d05
Create Date: 2026-12-03 09:50:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c5d2f8a1b3e6'
down_revision = 'b4e1c7a92d05'
branch_labels = None
depends_on = None

SUPERVISOR_ALERTS = "party = 'supervisor'"


def upgrade():
    op.create_index('ix_messages_supervisor_alerts', 'messages', ['created_at'], unique=False,
                    postgresql_where=sa.text(SUPERVISOR_ALERTS), sqlite_where=sa.text(SUPERVISOR_ALERTS))


def downgrade():
    op.drop_index('ix_messages_supervisor_alerts', table_name='messages')
