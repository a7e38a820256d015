"""The console's personal data in the retention purge: counselors' wrap-up notes and the
reasons given for emergency unmasks are scrubbed with their contact's channel window
(``RETENTION_DAYS_CALLS`` or ``_TEXTS``). A note goes by when its contact began (the call's or
the conversation's start), not by when it was written: wrap-ups are offered for days after
the contact, and a note must not outlive what it is about. Outcomes, needs and who did what
stay: metrics and the audit log need them, and they hold nothing personal. Sign-in attempts
(a keyed hash of the name typed and of the address) go once the throttle's window has passed."""

from __future__ import annotations

from sqlalchemy import CursorResult, and_, delete, or_, update

from console.accounts.throttle import WINDOW
from console.models import AuditEntry, SignInAttempt, WrapUp
from crisisline.db import db
from crisisline.models import Call, Conversation
from crisisline.retention import Cutoffs, registers_purge


@registers_purge("wrap_up_notes")
def purge_wrap_up_notes(cutoffs: Cutoffs) -> int:
    scrubbed = 0
    for channel in ("voice", "text"):
        cutoff = cutoffs.for_channel(channel)
        # Its contact's start; a note whose contact is unknown (deleted) goes by when it was written.
        contact_is_old = (
            WrapUp.call_id.in_(db.select(Call.id).where(Call.started_at < cutoff))
            if channel == "voice"
            else WrapUp.conversation_id.in_(db.select(Conversation.id).where(Conversation.started_at < cutoff))
        )
        result = db.session.execute(
            update(WrapUp)
            .where(WrapUp.channel == channel, or_(WrapUp.created_at < cutoff, contact_is_old))
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


@registers_purge("sign_in_attempts")
def purge_sign_in_attempts(cutoffs: Cutoffs) -> int:
    """Attempts the throttle no longer counts (older than its ``WINDOW``), whatever the
    retention windows: each one holds a keyed hash of an address, and the next sign-in, which
    deletes them too, may be days away."""
    result = db.session.execute(
        delete(SignInAttempt)
        .where(SignInAttempt.attempted_at < cutoffs.now - WINDOW)
        .execution_options(synchronize_session=False)
    )
    return _count(result)


def _count(result: object) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0
