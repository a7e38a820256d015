"""messages: received_at (when a text kept in Redis through a database outage arrived; its
retention counts from it, while created_at stays when the clock stored it)

Revision ID: a9e3d5c7b1f4
Revises: f1b4d7e2a9c3
Create Date: 2026-12-04 02:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a9e3d5c7b1f4'
down_revision = 'f1b4d7e2a9c3'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('received_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('received_at')
