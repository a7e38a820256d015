"""metrics: the per-contact rollup (metric_facts) and its refresh state

Revision ID: 4e6f1a2b3c5d
Revises: 3c7d1e5a9b20
Create Date: 2026-12-01 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '4e6f1a2b3c5d'
down_revision = '3c7d1e5a9b20'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('metric_facts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=12), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('local_day', sa.String(length=10), nullable=False),
    sa.Column('local_hour', sa.Integer(), nullable=False),
    sa.Column('local_weekday', sa.Integer(), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=True),
    sa.Column('need', sa.String(length=64), nullable=True),
    sa.Column('offered', sa.Boolean(), nullable=False),
    sa.Column('outcome', sa.String(length=12), nullable=False),
    sa.Column('answered_by', sa.String(length=16), nullable=True),
    sa.Column('speed_to_answer_seconds', sa.Double(), nullable=True),
    sa.Column('waited_seconds', sa.Double(), nullable=True),
    sa.Column('rollovers', sa.Integer(), nullable=False),
    sa.Column('co_responder_involved', sa.Boolean(), nullable=False),
    sa.Column('first_response_seconds', sa.Double(), nullable=True),
    sa.Column('seconds_to_callback', sa.Double(), nullable=True),
    sa.Column('sent', sa.Boolean(), nullable=False),
    sa.Column('reached', sa.Boolean(), nullable=False),
    sa.Column('escalated', sa.Boolean(), nullable=False),
    sa.Column('rating', sa.Integer(), nullable=True),
    sa.Column('settled', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metric_facts')),
    sa.UniqueConstraint('source', 'source_id', name=op.f('uq_metric_facts_source_source_id'))
    )
    with op.batch_alter_table('metric_facts', schema=None) as batch_op:
        batch_op.create_index('ix_metric_facts_source_at', ['source', 'at'], unique=False)
        batch_op.create_index('ix_metric_facts_source_settled', ['source', 'settled'], unique=False)

    op.create_table('metric_rollup_state',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('marks', sa.JSON(), nullable=False),
    sa.Column('refreshed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metric_rollup_state'))
    )


def downgrade():
    op.drop_table('metric_rollup_state')
    with op.batch_alter_table('metric_facts', schema=None) as batch_op:
        batch_op.drop_index('ix_metric_facts_source_settled')
        batch_op.drop_index('ix_metric_facts_source_at')

    op.drop_table('metric_facts')
