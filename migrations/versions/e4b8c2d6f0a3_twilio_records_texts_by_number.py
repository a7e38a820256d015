"""twilio_records: texts found at Twilio by number (sealed_number, line_number, sent_before), for
the replies a webhook's TwiML carried, whose SIDs the line never learns; noted for the texters
whose texts were purged before this revision too, while the line still has their number

Revision ID: e4b8c2d6f0a3
Revises: c9a4e2f7b3d1
Create Date: 2026-12-05 12:00:00.000000

"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "e4b8c2d6f0a3"
down_revision = "c9a4e2f7b3d1"
branch_labels = None
depends_on = None

# Each texter (whose number the line still has) and line number with texts already purged: their
# texts up to the last one purged, as ``workers.twilio_records.note_purged`` notes them from now
# on with the purge's cutoff (unknown here; every later text came after it, so none is newer).
# A text kept through an outage counts from when it arrived, as the purge counts it.
ALREADY_PURGED = """
INSERT INTO twilio_records (kind, sid, state, due_at, attempts, queued_at, sealed_number, line_number, sent_before)
SELECT 'texts', 'texts:' || CAST(purged.texter_id AS VARCHAR) || ':' || purged.line_number || ':' || 'before',
       'pending', :now, 0, :now, texters.sealed_number, purged.line_number, purged.last_at
FROM (
    SELECT messages.texter_id AS texter_id, messages.line_number AS line_number,
           MAX(CASE WHEN messages.received_at IS NOT NULL AND messages.received_at < messages.created_at
                    THEN messages.received_at ELSE messages.created_at END) AS last_at
    FROM messages
    WHERE messages.direction = 'in' AND messages.sealed_body IS NULL
      AND messages.texter_id IS NOT NULL AND messages.line_number IS NOT NULL
    GROUP BY messages.texter_id, messages.line_number
) AS purged
JOIN texters ON texters.id = purged.texter_id
WHERE texters.sealed_number IS NOT NULL
"""


def upgrade():
    with op.batch_alter_table("twilio_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed_number", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("line_number", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("sent_before", sa.DateTime(timezone=True), nullable=True))

    now = sa.bindparam("now", datetime.now(UTC), type_=sa.DateTime(timezone=True))
    op.get_bind().execute(sa.text(ALREADY_PURGED).bindparams(now))


def downgrade():
    # The rows found by number go with their numbers: a SID-less row is nothing to the older code.
    op.execute("DELETE FROM twilio_records WHERE kind = 'texts'")
    with op.batch_alter_table("twilio_records", schema=None) as batch_op:
        batch_op.drop_column("sent_before")
        batch_op.drop_column("line_number")
        batch_op.drop_column("sealed_number")
