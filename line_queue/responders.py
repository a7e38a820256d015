"""Responders' availability in the database (``ResponderState``), shared by voice and texts.

Who is engaged with an offer, who is paused (and why), who missed offers in a row. It lives
here, below both channels, because a call (``transfer``) and a text (``sms``) change it alike:
a counselor who texts OFF is not rung, one whose phone blocks the line's texts is paused.
Every change is one conditional UPDATE, so concurrent webhooks and workers cannot produce two
winners. Freeing or un-pausing someone notes ``responder_freed`` (``crisisline.events``): once
the unit of work is over, the queue offers them the first contact they can take.

A responder whose console account was closed is paused with the reason ``ACCOUNT_CLOSED``
(:func:`stop_ringing`). Being paused is what every path that picks someone to ring already
reads (the queue's passes, ``decide_route``'s ``unavailable``, the claim itself), so the line
stops ringing them with no statement added to any webhook. Only an administrator lifts it
(:func:`ring_again`): their own ``ON`` text, or the desk's switch, does not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, or_, select, update

from crisisline import events
from crisisline.db import db, insert_ignoring_duplicates
from crisisline.models import Conversation, ConversationOffer, ResponderState

# Why a responder is paused when their console account was closed (``paused_reason``).
ACCOUNT_CLOSED = "account_closed"
# Their phone blocks the line's texts (they texted STOP: Twilio refuses every text, 21610), so
# no offer can reach them: paused, and only their START (or YES) lifts it, to ``TEXTS_UNBLOCKED``,
# still paused until they take contacts again. Their ON and the desk's switch do not lift it.
TEXTS_BLOCKED = "sms_blocked"
TEXTS_UNBLOCKED = "sms_unblocked"
# Outcomes that count as a missed offer (a deliberate "2" does not).
MISSED_OUTCOMES = frozenset({"no_answer", "busy", "no_decision"})


def _now() -> datetime:
    return datetime.now(UTC)


def _change(where: list[Any], values: dict[str, Any]) -> bool:
    result = db.session.execute(
        update(ResponderState).where(*where).values(**values).execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def ensure_responder_state(responder_id: str) -> None:
    """The responder's row, created once (a concurrent insert is ignored)."""
    db.session.execute(
        insert_ignoring_duplicates(
            ResponderState,
            {"responder_id": responder_id, "paused": False, "missed_in_a_row": 0, "updated_at": _now()},
        )
    )


# Claiming and freeing run for every ring and every ended leg: built once
# (``crisisline.db``, "Statements built once"). Bound: ``responder``, ``offer``, ``at``.
_CLAIM = (
    update(ResponderState)
    .where(
        ResponderState.responder_id == bindparam("responder"),
        ResponderState.engaged_offer_id.is_(None),
        ResponderState.paused.is_(False),
    )
    .values(engaged_offer_id=bindparam("offer"), last_offered_at=bindparam("at"), updated_at=bindparam("at"))
    .execution_options(synchronize_session=False)
)
_RELEASE = (
    update(ResponderState)
    .where(ResponderState.responder_id == bindparam("responder"), ResponderState.engaged_offer_id == bindparam("offer"))
    .values(engaged_offer_id=None, updated_at=bindparam("at"))
    .execution_options(synchronize_session=False)
)


def _changed(statement: Any, responder_id: str, offer_id: int) -> bool:
    result = db.session.execute(statement, {"responder": responder_id, "offer": offer_id, "at": _now()})
    return bool(result.rowcount)  # type: ignore[attr-defined]


def claim_responder(responder_id: str, offer_id: int) -> bool:
    """Engage a responder for one offer, unless they are engaged or paused already."""
    if _changed(_CLAIM, responder_id, offer_id):
        return True  # the usual case: their row exists, one statement
    ensure_responder_state(responder_id)  # never rung before, or engaged or paused: try once more
    return _changed(_CLAIM, responder_id, offer_id)


def release_responder(responder_id: str, offer_id: int) -> None:
    """Free a responder from this offer (a no-op if they moved on to another already). Once
    this unit of work is over, the queue offers them the next contact (``responder_freed``)."""
    if _changed(_RELEASE, responder_id, offer_id):
        events.note_responder_freed(responder_id)


# A responder who pressed a key was there: their misses are no longer "in a row".
PRESENT_OUTCOMES = frozenset({"accepted", "passed"})


def count_missed(responder_id: str, outcome: str) -> int:
    """Track missed offers in a row; returns the new count (0 after an accepted or passed call)."""
    ensure_responder_state(responder_id)
    if outcome in PRESENT_OUTCOMES:
        _change([ResponderState.responder_id == responder_id], {"missed_in_a_row": 0})
        return 0
    if outcome not in MISSED_OUTCOMES:
        state = db.session.get(ResponderState, responder_id)
        return state.missed_in_a_row if state else 0
    _change([ResponderState.responder_id == responder_id], {"missed_in_a_row": ResponderState.missed_in_a_row + 1})
    return (
        db.session.scalar(select(ResponderState.missed_in_a_row).where(ResponderState.responder_id == responder_id))
        or 0
    )


def set_paused(responder_id: str, paused: bool, reason: str | None) -> bool:
    """Pause or resume a responder. True if this changed anything (idempotent). Never resumes
    one paused because their account was closed (see :func:`ring_again`) or whose phone blocks
    the line's texts (see :func:`lift_text_block`): :func:`paused_reason` says which."""
    ensure_responder_state(responder_id)
    values: dict[str, Any] = {
        "paused": paused,
        "paused_reason": reason if paused else None,
        "updated_at": _now(),
    }
    where = [ResponderState.responder_id == responder_id, ResponderState.paused.is_(not paused)]
    if not paused:
        values["missed_in_a_row"] = 0
        where.append(_MAY_RESUME)
    changed = _change(where, values)
    if changed and not paused:
        events.note_responder_freed(responder_id)
    return changed


def resume_after_a_pass(responder_id: str) -> bool:
    """Undo a pause for missed offers that a press of 2 crossing their hang-up caused (the leg's
    end, handled first, counted it as their miss). True if it resumed them."""
    changed = _change(
        [ResponderState.responder_id == responder_id, ResponderState.paused.is_(True),
         ResponderState.paused_reason == "missed_offers"],
        {"paused": False, "paused_reason": None, "missed_in_a_row": 0, "updated_at": _now()},
    )  # fmt: skip
    if changed:
        events.note_responder_freed(responder_id)
    return changed


_NOT_CLOSED = or_(ResponderState.paused_reason.is_(None), ResponderState.paused_reason != ACCOUNT_CLOSED)
_MAY_RESUME = or_(
    ResponderState.paused_reason.is_(None), ResponderState.paused_reason.not_in((ACCOUNT_CLOSED, TEXTS_BLOCKED))
)


def lift_text_block(responder_id: str) -> bool:
    """Their phone takes the line's texts again (they texted START): a pause for the block
    becomes ``TEXTS_UNBLOCKED``, still paused (they take contacts again when ready, by ON or
    the desk). True if they were paused for the block."""
    return _change(
        [ResponderState.responder_id == responder_id, ResponderState.paused.is_(True),
         ResponderState.paused_reason == TEXTS_BLOCKED],
        {"paused_reason": TEXTS_UNBLOCKED, "updated_at": _now()},
    )  # fmt: skip


def paused_reason(responder_id: str) -> str | None:
    """Why ``responder_id`` is paused, or None if they are not (one small read: for a refused
    resume, never a webhook's usual path)."""
    return db.session.scalar(
        select(ResponderState.paused_reason).where(
            ResponderState.responder_id == responder_id, ResponderState.paused.is_(True)
        )
    )


def stop_ringing(responder_id: str) -> bool:
    """The line rings ``responder_id`` no more: their console account was closed. Paused with
    ``ACCOUNT_CLOSED`` (over any other reason, so their ``ON`` cannot undo it). A call they are
    on now goes on; the text conversations they hold are handed back to the queue by the
    console once the closing is committed, and nothing they text reaches a texter
    (``sms.staff``). True if this changed anything.

    A text offer still open to them is made due at once, in the same unit of work: the clock's
    next sweep hands it back to the queue as it hands back any expired offer, and their
    ``YES <tag>`` is refused meanwhile (``sms.conversations.take``)."""
    ensure_responder_state(responder_id)
    moment = make_offers_due(responder_id)
    return _change(
        [ResponderState.responder_id == responder_id, _NOT_CLOSED | ResponderState.paused.is_(False)],
        {"paused": True, "paused_reason": ACCOUNT_CLOSED, "updated_at": moment},
    )


def make_offers_due(responder_id: str) -> datetime:
    """Every text offer still open to ``responder_id`` is due now (not committed): the clock's
    next sweep hands each back to the queue as it hands back any expired offer. For a phone
    the line can no longer reach (an account closed, a phone that blocks the line's texts): a
    texter never waits out an offer nobody will read. Returns the moment used."""
    moment = _now()
    db.session.execute(
        update(ConversationOffer)
        .where(
            ConversationOffer.responder_id == responder_id,
            ConversationOffer.state == "open",
            ConversationOffer.expires_at > moment,
        )
        .values(expires_at=moment)
        .execution_options(synchronize_session=False)
    )
    return moment


def expire_offer(responder_id: str, conversation_id: int) -> bool:
    """The text offer of ``conversation_id`` open to ``responder_id`` ends now, as an expired
    one does (not committed): they may not take it (at their conversation limit, say), so its
    texter goes back to the queue at once, and once the unit of work is over the queue offers
    it to the next counselor (``responder_freed``; the re-offer cooldown keeps it from them).
    True if such an offer was open."""
    moment = _now()
    expired = db.session.execute(
        update(ConversationOffer)
        .where(
            ConversationOffer.responder_id == responder_id,
            ConversationOffer.conversation_id == conversation_id,
            ConversationOffer.state == "open",
        )
        .values(state="expired", decided_at=moment)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if expired:
        db.session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.state == "offered")
            .values(state="queued")
            .execution_options(synchronize_session=False)
        )
        events.note_responder_freed(responder_id)
    return bool(expired)


def hand_on_offers(responder_id: str) -> list[int]:
    """Every text offer open to ``responder_id`` ends now, as an expired one does (not
    committed): for a counselor who paused themselves (``OFF``, the desk's "Pause me"), who
    will not take it, so its texter is offered to the next counselor once the unit of work is
    over instead of waiting out an offer nobody will read. Conversations they hold stay
    theirs. Returns the conversations handed on."""
    offered = db.session.scalars(
        select(ConversationOffer.conversation_id).where(
            ConversationOffer.responder_id == responder_id, ConversationOffer.state == "open"
        )
    ).all()
    return [conversation_id for conversation_id in offered if expire_offer(responder_id, conversation_id)]


def ring_again(responder_id: str) -> bool:
    """Lift :func:`stop_ringing` (an active account is linked to the responder again). True if
    they were stopped; the queue then offers them the first contact they can take."""
    changed = _change(
        [ResponderState.responder_id == responder_id, ResponderState.paused_reason == ACCOUNT_CLOSED],
        {"paused": False, "paused_reason": None, "missed_in_a_row": 0, "updated_at": _now()},
    )
    if changed:
        events.note_responder_freed(responder_id)
    return changed


def still_rung(responder_id: Any) -> Any:
    """A condition for a claim's own WHERE (``responder_id``: a column or value): the account
    linked to the responder was not closed. Read in the claiming UPDATE itself, so it costs no
    statement on the hot path and a closing committed before the claim cannot slip past it
    (a voice acceptance, ``transfer.state.accept``; a text's ``sms.conversations.take``)."""
    return ~(
        select(ResponderState.responder_id)
        .where(ResponderState.responder_id == responder_id, ResponderState.paused_reason == ACCOUNT_CLOSED)
        .exists()
    )


def is_closed(responder_id: str) -> bool:
    """Whether the line stopped ringing ``responder_id`` because their account was closed (one
    small read: for their own ON/OFF/STATUS, a refused YES or a refused press of 1, never a
    webhook's usual path)."""
    reason = db.session.scalar(select(ResponderState.paused_reason).where(ResponderState.responder_id == responder_id))
    return reason == ACCOUNT_CLOSED


def closed_responder_ids() -> set[str]:
    """Responders the line does not ring because their console account was closed."""
    return set(
        db.session.scalars(
            select(ResponderState.responder_id).where(
                ResponderState.paused.is_(True), ResponderState.paused_reason == ACCOUNT_CLOSED
            )
        )
    )


def unavailable_responder_ids() -> set[str]:
    """Responders engaged with another contact, or paused."""
    return set(
        db.session.scalars(
            select(ResponderState.responder_id).where(
                ResponderState.engaged_offer_id.is_not(None) | ResponderState.paused.is_(True)
            )
        )
    )
