"""The console's personal data in the retention purge: counselors' wrap-up notes are scrubbed
with their contact's channel window (``RETENTION_DAYS_CALLS`` or ``_TEXTS``), and the reasons
given for emergency unmasks with the shortest window of what the unmask named
(``UNMASK_REASON_WINDOWS``). A note goes by when its contact began (the call's or the
conversation's start), not by when it was written: wrap-ups are offered for days after the
contact, and a note must not outlive what it is about. Outcomes, needs and who did what stay:
metrics and the audit log need them, and they hold nothing personal. Sign-in attempts (a keyed
hash of the name typed and of the address) go once the throttle's window has passed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CursorResult, delete, or_, update

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


# An unmask's target names whom it was about (``console.board.unmask.LiveContact.target``); its
# sealed reason (words about that person) goes with the shortest window among those covering
# what the target names. A caller (``call:``) by the calls' window, a texter in a conversation
# (``text:``) by the texts'. A text the line could not handle or answer (``message:``) names a
# texter who may have had their number from a call (``workers.upkeep._purge_texters``). A flagged
# check-in (``checkin:``) is a follow-up's person, linked to them by ``RETENTION_DAYS_FOLLOWUPS``,
# reached by a texter's number from a text or a call; a follow-up the line could not finish
# (``contact:``) and a callback nobody reached (``callback:``, perhaps a check-in's "2", its "we
# tried" text a follow-up) likewise name a follow-up's person by a caller's or texter's number.
# Any other target, or none, is not known: the shortest window of all.
UNMASK_REASON_WINDOWS: dict[str, tuple[str, ...]] = {
    "call:": ("calls",),
    "text:": ("texts",),
    "message:": ("calls", "texts"),
    "checkin:": ("calls", "texts", "followups"),
    "contact:": ("calls", "texts", "followups"),
    "callback:": ("calls", "texts", "followups"),
}
ALL_WINDOWS = ("calls", "texts", "followups")


def _cutoff(cutoffs: Cutoffs, windows: tuple[str, ...]) -> datetime:
    """The latest of these windows' cutoffs: the shortest window of them."""
    return max(getattr(cutoffs, window) for window in windows)


@registers_purge("unmask_reasons")
def purge_unmask_reasons(cutoffs: Cutoffs) -> int:
    scrubbed = 0
    for prefix, windows in UNMASK_REASON_WINDOWS.items():
        result = db.session.execute(
            update(AuditEntry)
            .where(AuditEntry.sealed_detail.is_not(None), AuditEntry.target.startswith(prefix, autoescape=True))
            .where(AuditEntry.occurred_at < _cutoff(cutoffs, windows))
            .values(sealed_detail=None)
            .execution_options(synchronize_session=False)
        )
        scrubbed += _count(result)
    known = or_(*(AuditEntry.target.startswith(prefix, autoescape=True) for prefix in UNMASK_REASON_WINDOWS))
    other = db.session.execute(
        update(AuditEntry)
        .where(AuditEntry.sealed_detail.is_not(None))
        .where(or_(AuditEntry.target.is_(None), ~known))
        .where(AuditEntry.occurred_at < _cutoff(cutoffs, ALL_WINDOWS))
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
