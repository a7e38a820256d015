"""texters: opt_changed_at (when the person sent the opt-out or opt-in now in force; an older
one handled late, a kept STOP or a repeated 21610 callback, changes nothing)

Revision ID: b6d2f8a4c1e7
Revises: a9e3d5c7b1f4
Create Date: 2026-12-04 03:05:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b6d2f8a4c1e7'
down_revision = 'a9e3d5c7b1f4'
branch_labels = None
depends_on = None


def upgrade():
    # Left empty for texters from before: unknown, so the next change applies, as before.
    with op.batch_alter_table('texters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('opt_changed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('texters', schema=None) as batch_op:
        batch_op.drop_column('opt_changed_at')
