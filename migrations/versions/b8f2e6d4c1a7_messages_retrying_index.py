"""messages: an index of the texts Twilio refused for now (a handful among every text), which
the text sweep tries again every minute

Revision ID: b8f2e6d4c1a7
Revises: b6d2f8a4c1e7
Create Date: 2026-12-04 03:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b8f2e6d4c1a7'
down_revision = 'b6d2f8a4c1e7'
branch_labels = None
depends_on = None

RETRYING_ROWS = "status = 'retrying'"


def upgrade():
    op.create_index('ix_messages_retrying', 'messages', ['id'], unique=False,
                    postgresql_where=sa.text(RETRYING_ROWS), sqlite_where=sa.text(RETRYING_ROWS))


def downgrade():
    op.drop_index('ix_messages_retrying', table_name='messages')
