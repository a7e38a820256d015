"""messages: opt_out_type (Twilio's OptOutType on an inbound text, sent with Advanced Opt-Out:
a Messaging Service's own keywords, "PARAR" or "COMENZAR", mean STOP or START whatever they say)

Revision ID: c3f7a1e9d5b2
Revises: a8d3f6b1c4e7
Create Date: 2026-12-05 21:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c3f7a1e9d5b2'
down_revision = "a8d3f6b1c4e7"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('opt_out_type', sa.String(length=8), nullable=True))


def downgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('opt_out_type')
