"""console: wrap-ups after a contact (sealed note), and a sealed detail for audit entries

Revision ID: 3c7d1e5a9b20
Revises: 8f44ff8e94ce
Create Date: 2026-11-30 11:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '3c7d1e5a9b20'
down_revision = '8f44ff8e94ce'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('console_wrap_ups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_key', sa.String(length=40), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=True),
    sa.Column('transfer_id', sa.Integer(), nullable=True),
    sa.Column('conversation_id', sa.Integer(), nullable=True),
    sa.Column('responder_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('language', sa.String(length=16), nullable=True),
    sa.Column('need', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('followup_consent', sa.Boolean(), nullable=False),
    sa.Column('followup', sa.String(length=24), nullable=True),
    sa.Column('sealed_note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_console_wrap_ups_call_id_calls'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_console_wrap_ups_conversation_id_conversations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['transfer_id'], ['transfers.id'], name=op.f('fk_console_wrap_ups_transfer_id_transfers'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['console_users.id'], name=op.f('fk_console_wrap_ups_user_id_console_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_wrap_ups')),
    sa.UniqueConstraint('contact_key', name=op.f('uq_console_wrap_ups_contact_key'))
    )
    with op.batch_alter_table('console_wrap_ups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_wrap_ups_responder_id'), ['responder_id'], unique=False)

    with op.batch_alter_table('console_audit_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sealed_detail', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('console_audit_entries', schema=None) as batch_op:
        batch_op.drop_column('sealed_detail')

    with op.batch_alter_table('console_wrap_ups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_wrap_ups_responder_id'))

    op.drop_table('console_wrap_ups')
