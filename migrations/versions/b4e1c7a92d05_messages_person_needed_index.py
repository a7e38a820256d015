"""messages: when a person was asked to see to a text the line could not answer (its sender had
texted STOP), and an index of those texts

Revision ID: b4e1c7a92d05
Revises: 9d3b5e7f1a2c
Create Date: 2026-12-03 06:50:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b4e1c7a92d05'
down_revision = '9d3b5e7f1a2c'
branch_labels = None
depends_on = None

PERSON_NEEDED = "direction = 'in' AND person_needed_at IS NOT NULL"


def upgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('person_needed_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_messages_person_needed', 'messages', ['person_needed_at'], unique=False,
                    postgresql_where=sa.text(PERSON_NEEDED), sqlite_where=sa.text(PERSON_NEEDED))


def downgrade():
    op.drop_index('ix_messages_person_needed', table_name='messages')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('person_needed_at')
