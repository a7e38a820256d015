"""messages: index of texts sent that did not reach their phone (the board lists the last hour's)

Revision ID: 9d3b5e7f1a2c
Revises: 6a2f8c4d1e7b
Create Date: 2026-12-02 19:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '9d3b5e7f1a2c'
down_revision = '6a2f8c4d1e7b'
branch_labels = None
depends_on = None

NOT_DELIVERED = (
    "direction = 'out' AND status IN ('claimed', 'failed', 'undelivered', 'canceled', 'partially_delivered')"
)


def upgrade():
    op.create_index('ix_messages_not_delivered', 'messages', ['created_at'], unique=False,
                    postgresql_where=sa.text(NOT_DELIVERED), sqlite_where=sa.text(NOT_DELIVERED))


def downgrade():
    op.drop_index('ix_messages_not_delivered', table_name='messages')
