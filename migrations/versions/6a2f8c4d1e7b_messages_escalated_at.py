"""messages: escalated_at (supervisors told a text could not be handled), index of unhandled texts

Revision ID: 6a2f8c4d1e7b
Revises: 4e6f1a2b3c5d
Create Date: 2026-12-02 12:05:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '6a2f8c4d1e7b'
down_revision = '4e6f1a2b3c5d'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('escalated_at', sa.DateTime(timezone=True), nullable=True))
    # Texts left unhandled before this release are not alerted all at once on the first sweep
    # (a burst of texts to every supervisor); the board lists those from the last day as
    # "no alert was sent".
    op.execute("UPDATE messages SET escalated_at = created_at WHERE direction = 'in' AND handled_at IS NULL")
    unhandled = sa.text("direction = 'in' AND handled_at IS NULL")
    op.create_index('ix_messages_unhandled', 'messages', ['created_at'], unique=False,
                    postgresql_where=unhandled, sqlite_where=unhandled)


def downgrade():
    op.drop_index('ix_messages_unhandled', table_name='messages')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('escalated_at')
