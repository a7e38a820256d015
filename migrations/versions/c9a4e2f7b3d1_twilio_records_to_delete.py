"""twilio_records: Twilio's own records (calls, texts) of contacts the line has purged, to be
deleted through its REST API; noted for the contacts purged before this revision too

Revision ID: c9a4e2f7b3d1
Revises: b8f2e6d4c1a7
Create Date: 2026-12-05 09:00:00.000000

"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "c9a4e2f7b3d1"
down_revision = "b8f2e6d4c1a7"
branch_labels = None
depends_on = None

# The contacts already purged: their calls (the caller's, the callback legs, the responders'
# legs) and their texts, as ``workers.twilio_records.note_purged`` notes them from now on.
ALREADY_PURGED = """
INSERT INTO twilio_records (kind, sid, state, due_at, attempts, queued_at)
SELECT purged.kind, purged.sid, 'pending', :now, 0, :now FROM (
    SELECT 'call' AS kind, calls.call_sid AS sid FROM calls
    WHERE calls.personal_data_purged_at IS NOT NULL AND calls.call_sid LIKE 'CA%'
    UNION
    SELECT 'call', transfers.caller_call_sid FROM transfers JOIN calls ON calls.id = transfers.call_id
    WHERE calls.personal_data_purged_at IS NOT NULL AND transfers.caller_call_sid LIKE 'CA%'
    UNION
    SELECT 'call', offers.call_sid FROM offers
    JOIN transfers ON transfers.id = offers.transfer_id JOIN calls ON calls.id = transfers.call_id
    WHERE calls.personal_data_purged_at IS NOT NULL AND offers.call_sid LIKE 'CA%'
    UNION
    SELECT 'message', messages.message_sid FROM messages
    WHERE messages.sealed_body IS NULL AND (messages.message_sid LIKE 'SM%' OR messages.message_sid LIKE 'MM%')
) AS purged
"""


def upgrade():
    op.create_table(
        "twilio_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=40), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_twilio_records")),
        sa.UniqueConstraint("sid", name=op.f("uq_twilio_records_sid")),
    )
    with op.batch_alter_table("twilio_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_twilio_records_due_at"), ["due_at"], unique=False)

    now = sa.bindparam("now", datetime.now(UTC), type_=sa.DateTime(timezone=True))
    op.get_bind().execute(sa.text(ALREADY_PURGED).bindparams(now))


def downgrade():
    with op.batch_alter_table("twilio_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_twilio_records_due_at"))

    op.drop_table("twilio_records")
