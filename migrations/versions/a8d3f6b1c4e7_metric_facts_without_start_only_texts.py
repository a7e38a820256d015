"""metric_facts: no fact for a conversation that only carried the reply to START (closed
``opted_in``): nobody reached out, so it is no text contact (``metrics.load.text_contacts``
leaves it out from now on; the rollup re-reads only what changed, so the facts written
before are removed here)

Revision ID: a8d3f6b1c4e7
Revises: e4b8c2d6f0a3
Create Date: 2026-12-04 18:45:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "a8d3f6b1c4e7"
down_revision = "e4b8c2d6f0a3"
branch_labels = None
depends_on = None

START_ONLY_FACTS = """
DELETE FROM metric_facts
WHERE source = 'conversation'
  AND source_id IN (SELECT id FROM conversations WHERE close_reason = 'opted_in')
"""


def upgrade() -> None:
    op.get_bind().execute(sa.text(START_ONLY_FACTS))


def downgrade() -> None:
    # Nothing to put back: the rollup would not write these facts again.
    pass
