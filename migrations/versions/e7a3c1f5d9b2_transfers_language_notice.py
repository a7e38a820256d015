"""transfers: language_notice (the caller is told nobody who speaks their language is
available when the responder rung for them does not speak it)

Revision ID: e7a3c1f5d9b2
Revises: c5d2f8a1b3e6
Create Date: 2026-12-04 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e7a3c1f5d9b2'
down_revision = 'c5d2f8a1b3e6'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language_notice', sa.String(length=8), nullable=True))


def downgrade():
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.drop_column('language_notice')
