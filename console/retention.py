"""The console's personal data in the retention purge: counselors' wrap-up notes and the
reasons given for emergency unmasks are scrubbed with their contact's channel window
(``RETENTION_DAYS_CALLS`` or ``_TEXTS``). Outcomes, needs and who did what stay: metrics and
the audit log need them, and they hold nothing personal."""

from __future__ import annotations

from sqlalchemy import CursorResult, and_, or_, update

from console.models import AuditEntry, WrapUp
from crisisline.db import db
from crisisline.retention import Cutoffs, registers_purge


@registers_purge("wrap_up_notes")
def purge_wrap_up_notes(cutoffs: Cutoffs) -> int:
    scrubbed = 0
    for channel in ("voice", "text"):
        result = db.session.execute(
            update(WrapUp)
            .where(WrapUp.channel == channel, WrapUp.created_at < cutoffs.for_channel(channel))
            .where(WrapUp.sealed_note.is_not(None))
            .values(sealed_note=None)
            .execution_options(synchronize_session=False)
        )
        scrubbed += _count(result)
    return scrubbed


@registers_purge("unmask_reasons")
def purge_unmask_reasons(cutoffs: Cutoffs) -> int:
    scrubbed = 0
    for prefix, channel in (("call:", "voice"), ("text:", "text")):
        result = db.session.execute(
            update(AuditEntry)
            .where(AuditEntry.sealed_detail.is_not(None), AuditEntry.target.startswith(prefix, autoescape=True))
            .where(AuditEntry.occurred_at < cutoffs.for_channel(channel))
            .values(sealed_detail=None)
            .execution_options(synchronize_session=False)
        )
        scrubbed += _count(result)
    # A sealed detail with any other target is personal too: the shorter window of the two.
    other = db.session.execute(
        update(AuditEntry)
        .where(AuditEntry.sealed_detail.is_not(None))
        .where(
            or_(
                AuditEntry.target.is_(None),
                and_(
                    ~AuditEntry.target.startswith("call:", autoescape=True),
                    ~AuditEntry.target.startswith("text:", autoescape=True),
                ),
            )
        )
        .where(AuditEntry.occurred_at < max(cutoffs.calls, cutoffs.texts))
        .values(sealed_detail=None)
        .execution_options(synchronize_session=False)
    )
    return scrubbed + _count(other)


def _count(result: object) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0
