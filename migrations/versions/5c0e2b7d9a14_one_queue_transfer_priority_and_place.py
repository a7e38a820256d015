"""one queue: transfers' priority and place in line; queue-order indexes

Revision ID: 5c0e2b7d9a14
Revises: 7b8237145c2a
Create Date: 2026-11-30 08:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5c0e2b7d9a14'
down_revision = '7b8237145c2a'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('queued_since', sa.DateTime(timezone=True), nullable=True))
    # Existing rows keep their place: the queue ordered them by when they started.
    op.execute("UPDATE transfers SET queued_since = started_at")
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.alter_column('queued_since', existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_index('ix_transfers_queue_order', ['state', 'priority', 'queued_since'], unique=False)
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.create_index('ix_conversations_queue_order', ['state', 'priority', 'queued_at'], unique=False)


def downgrade():
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_index('ix_conversations_queue_order')
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.drop_index('ix_transfers_queue_order')
        batch_op.drop_column('queued_since')
        batch_op.drop_column('priority')
