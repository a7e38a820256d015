"""callbacks: promised_at (the latest promise of a callback asked for again; the give-up and
"reached since" clocks count from it, requested_at stays the first request)

Revision ID: f1b4d7e2a9c3
Revises: e7a3c1f5d9b2
Create Date: 2026-12-03 21:05:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'f1b4d7e2a9c3'
down_revision = 'e7a3c1f5d9b2'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('callbacks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('promised_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('callbacks', schema=None) as batch_op:
        batch_op.drop_column('promised_at')
