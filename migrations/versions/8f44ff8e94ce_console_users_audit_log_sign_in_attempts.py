"""console: staff accounts, the audit log, sign-in attempts (for the rate limit)

Revision ID: 8f44ff8e94ce
Revises: 5c0e2b7d9a14
Create Date: 2026-11-30 10:40:40.829860

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8f44ff8e94ce'
down_revision = '5c0e2b7d9a14'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('console_sign_in_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_key', sa.String(length=64), nullable=False),
    sa.Column('address_key', sa.String(length=64), nullable=False),
    sa.Column('succeeded', sa.Boolean(), nullable=False),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_sign_in_attempts'))
    )
    with op.batch_alter_table('console_sign_in_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_console_sign_in_attempts_account', ['account_key', 'attempted_at'], unique=False)
        batch_op.create_index('ix_console_sign_in_attempts_address', ['address_key', 'attempted_at'], unique=False)

    op.create_table('console_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=120), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('responder_id', sa.String(length=64), nullable=True),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('session_token', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('password_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_sign_in_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_users')),
    sa.UniqueConstraint('session_token', name=op.f('uq_console_users_session_token')),
    sa.UniqueConstraint('username', name=op.f('uq_console_users_username'))
    )
    op.create_table('console_audit_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('action', sa.String(length=48), nullable=False),
    sa.Column('target', sa.String(length=160), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['console_users.id'], name=op.f('fk_console_audit_entries_actor_id_console_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_audit_entries'))
    )
    with op.batch_alter_table('console_audit_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_audit_entries_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_console_audit_entries_occurred_at'), ['occurred_at'], unique=False)



def downgrade():
    with op.batch_alter_table('console_audit_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_audit_entries_occurred_at'))
        batch_op.drop_index(batch_op.f('ix_console_audit_entries_action'))

    op.drop_table('console_audit_entries')
    op.drop_table('console_users')
    with op.batch_alter_table('console_sign_in_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_console_sign_in_attempts_address')
        batch_op.drop_index('ix_console_sign_in_attempts_account')

    op.drop_table('console_sign_in_attempts')
