"""Text conversations: open, queue, offer, take, pass, close, and the timed sweep.

Every state change is a conditional UPDATE (one winner); every text sent has a key (once).
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from crisisline.db import db, insert_ignoring_duplicates
from crisisline.models import Conversation, ConversationOffer, Message, ResponderState, Texter
from routing.document import Responder, RoutingDocument
from routing.engine import decide_route
from sms import outbox
from transfer import state as voice_state

OPEN_STATES = ("language", "need", "queued", "offered", "active")
WAITING_STATES = ("queued", "offered")
DEFAULT_WAIT_SECONDS = 180


def now() -> datetime:
    return datetime.now(UTC)


def texter_number(texter: Texter) -> str:
    return outbox.vault().open(texter.sealed_number or "", context="phone")


def find_or_create_texter(number: str, number_hash: str) -> Texter:
    db.session.execute(
        insert_ignoring_duplicates(
            Texter,
            {
                "number_hash": number_hash,
                "sealed_number": outbox.vault().seal(number, context="phone"),
                "opted_out": False,
                "created_at": now(),
            },
        )
    )
    texter = db.session.scalars(select(Texter).where(Texter.number_hash == number_hash)).one()
    db.session.commit()
    return texter


def open_conversation(texter: Texter) -> Conversation | None:
    return db.session.scalars(
        select(Conversation)
        .where(Conversation.texter_id == texter.id, Conversation.state.in_(OPEN_STATES))
        .order_by(Conversation.id.desc())
    ).first()


def start_conversation(texter: Texter, line_number: str | None) -> Conversation:
    previous = db.session.scalar(select(func.max(Conversation.id)).where(Conversation.texter_id == texter.id))
    conversation = Conversation(
        texter_id=texter.id, previous_id=previous, state="language", line_number=line_number,
        started_at=now(), last_activity_at=now(),
    )  # fmt: skip
    db.session.add(conversation)
    db.session.commit()
    return conversation


def to_texter(conversation: Conversation, key: str, body: str) -> bool:
    texter = db.session.get(Texter, conversation.texter_id)
    if texter is None or not conversation.line_number:
        return False
    return outbox.send_text(
        key=f"c{conversation.id}:{key}", to_number=texter_number(texter), from_number=conversation.line_number,
        body=body, party="texter", conversation_id=conversation.id, texter=texter,
    )  # fmt: skip


def to_counselor(conversation: Conversation, responder: Responder, key: str, body: str) -> bool:
    return outbox.send_text(
        key=f"c{conversation.id}:{key}", to_number=responder.phone,
        from_number=conversation.line_number or "", body=body, party="counselor",
        conversation_id=conversation.id, responder_id=responder.id,
    )  # fmt: skip


def estimate_wait_minutes(conversation: Conversation) -> int:
    """An honest guess: recent time-to-answer, times the texters waiting ahead plus one."""
    recent = db.session.execute(
        select(Conversation.queued_at, Conversation.assigned_at)
        .where(Conversation.assigned_at.is_not(None), Conversation.queued_at.is_not(None))
        .order_by(Conversation.assigned_at.desc())
        .limit(20)
    ).all()
    waits = [(assigned - queued).total_seconds() for queued, assigned in recent if assigned and queued]
    typical = statistics.median(waits) if waits else DEFAULT_WAIT_SECONDS
    ahead = (
        db.session.scalar(
            select(func.count(Conversation.id)).where(
                Conversation.state.in_(WAITING_STATES),
                Conversation.id != conversation.id,
                Conversation.queued_at < (conversation.queued_at or now()),
            )
        )
        or 0
    )
    return max(1, round(typical * (ahead + 1) / 60))


def queue(conversation: Conversation, document: RoutingDocument) -> None:
    """Put a sorted conversation in the queue, tell the texter the wait, offer it out."""
    moved = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state.in_(("language", "need")))
        .values(state="queued", queued_at=now())
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if not moved:
        return
    db.session.refresh(conversation)
    language = document.language(conversation.language)
    offered = offer_next(conversation, document)
    minutes = estimate_wait_minutes(conversation)
    key = "queued" if offered else "nobody_free"
    to_texter(conversation, "queued", language.text(key, minutes=minutes))


def counselor_load(responder_id: str) -> int:
    return (
        db.session.scalar(
            select(func.count(Conversation.id)).where(
                Conversation.counselor_id == responder_id, Conversation.state == "active"
            )
        )
        or 0
    )


def offer_next(conversation: Conversation, document: RoutingDocument) -> bool:
    """Offer a waiting conversation to the next suitable counselor. True if one was offered."""
    need = document.need(conversation.need)
    if need is None or conversation.state not in WAITING_STATES:
        return False
    if db.session.scalar(
        select(ConversationOffer.id).where(
            ConversationOffer.conversation_id == conversation.id, ConversationOffer.state == "open"
        )
    ):
        return True  # one open offer at a time
    tried = set(
        db.session.scalars(
            select(ConversationOffer.responder_id).where(ConversationOffer.conversation_id == conversation.id)
        )
    )
    engaged = set(
        db.session.scalars(
            select(ResponderState.responder_id).where(
                ResponderState.engaged_offer_id.is_not(None) | ResponderState.paused.is_(True)
            )
        )
    )
    full = {r.id for r in document.responders if counselor_load(r.id) >= document.sms.max_conversations_per_counselor}
    decision = decide_route(
        document, conversation.language or document.menu.default_language, need, now(),
        unavailable=tried | engaged | full, last_offered=voice_state.last_offered(),
    )  # fmt: skip
    counselors = [r for r in decision.responders if r.kind == "counselor"]
    if not counselors:
        db.session.execute(
            update(Conversation).where(Conversation.id == conversation.id, Conversation.state == "offered")
            .values(state="queued")
        )  # fmt: skip
        db.session.commit()
        return False
    counselor = counselors[0]
    offer = ConversationOffer(
        conversation_id=conversation.id, responder_id=counselor.id, state="open", created_at=now(),
        expires_at=now() + timedelta(seconds=document.sms.offer_timeout_seconds),
    )  # fmt: skip
    db.session.add(offer)
    db.session.execute(
        update(Conversation).where(Conversation.id == conversation.id, Conversation.state == "queued")
        .values(state="offered")
    )  # fmt: skip
    db.session.commit()
    language = document.language(conversation.language)
    waited = max(1, round((now() - (conversation.queued_at or now())).total_seconds() / 60))
    label = need.labels.get(document.menu.default_language, need.key)
    to_counselor(
        conversation, counselor, f"offer:{offer.id}",
        document.staff_prompt("sms_offer", tag=conversation.tag, language=language.staff_name,
                              need=label, wait=f"{waited} min"),
    )  # fmt: skip
    return True


def take(conversation: Conversation, responder: Responder, document: RoutingDocument) -> bool:
    """A counselor takes a waiting conversation: exactly one can (conditional UPDATE)."""
    if counselor_load(responder.id) >= document.sms.max_conversations_per_counselor:
        return False
    won = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state.in_(WAITING_STATES))
        .values(state="active", counselor_id=responder.id, assigned_at=now(), last_activity_at=now())
    ).rowcount  # type: ignore[attr-defined]
    if won:
        db.session.execute(
            update(ConversationOffer)
            .where(ConversationOffer.conversation_id == conversation.id, ConversationOffer.state == "open")
            .values(state="closed", decided_at=now())
        )
        db.session.execute(
            update(ConversationOffer)
            .where(ConversationOffer.conversation_id == conversation.id,
                   ConversationOffer.responder_id == responder.id)
            .values(state="taken")
        )  # fmt: skip
    db.session.commit()
    return bool(won)


def pass_back(conversation: Conversation, responder: Responder, document: RoutingDocument) -> bool:
    """The assigned counselor hands the conversation back; it is offered to someone else."""
    moved = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state == "active",
               Conversation.counselor_id == responder.id)
        .values(state="queued", counselor_id=None, assigned_at=None)
    ).rowcount  # type: ignore[attr-defined]  # fmt: skip
    db.session.commit()
    if moved:
        db.session.refresh(conversation)
        offer_next(conversation, document)
    return bool(moved)


def close(conversation: Conversation, document: RoutingDocument, reason: str, *, tell_texter: str | None) -> bool:
    """Close once; tell the texter (``tell_texter`` is a prompt key) and the counselor."""
    closed = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state.in_(OPEN_STATES))
        .values(state="closed", closed_at=now(), close_reason=reason)
    ).rowcount  # type: ignore[attr-defined]
    db.session.execute(
        update(ConversationOffer)
        .where(ConversationOffer.conversation_id == conversation.id, ConversationOffer.state == "open")
        .values(state="closed", decided_at=now())
    )
    db.session.commit()
    if not closed:
        return False
    if tell_texter:
        to_texter(conversation, "closed", document.language(conversation.language).text(tell_texter))
    if conversation.counselor_id and reason != "counselor_ended":
        responder = document.responder(conversation.counselor_id)
        if responder:
            to_counselor(
                conversation,
                responder,
                "texter-left",
                document.staff_prompt("sms_texter_left", tag=conversation.tag),
            )
    return True


def sweep(document: RoutingDocument) -> dict[str, int]:
    """Timed work, safe to run anywhere any number of times: expired offers are re-offered,
    long waits get the backup option once, idle conversations are closed with a note."""
    moment = now()
    counts = {"reoffered": 0, "backup": 0, "idle_closed": 0}
    for offer in db.session.scalars(
        select(ConversationOffer).where(ConversationOffer.state == "open", ConversationOffer.expires_at <= moment)
    ).all():
        expired = db.session.execute(
            update(ConversationOffer).where(ConversationOffer.id == offer.id, ConversationOffer.state == "open")
            .values(state="expired", decided_at=moment)
        ).rowcount  # type: ignore[attr-defined]  # fmt: skip
        db.session.commit()
        conversation = db.session.get(Conversation, offer.conversation_id)
        if expired and conversation is not None and conversation.state == "offered":
            db.session.execute(
                update(Conversation).where(Conversation.id == conversation.id, Conversation.state == "offered")
                .values(state="queued")
            )  # fmt: skip
            db.session.commit()
            db.session.refresh(conversation)
            counts["reoffered"] += int(offer_next(conversation, document))
    # Waiting texters with no open offer, most urgent and longest waiting first.
    for conversation in db.session.scalars(
        select(Conversation)
        .where(Conversation.state == "queued")
        .order_by(Conversation.priority.desc(), Conversation.queued_at)
    ).all():
        counts["reoffered"] += int(offer_next(conversation, document))
    for conversation in db.session.scalars(
        select(Conversation).where(
            Conversation.state.in_(WAITING_STATES),
            Conversation.backup_offered_at.is_(None),
            Conversation.queued_at <= moment - timedelta(seconds=document.sms.max_wait_seconds),
        )
    ).all():
        claimed = db.session.execute(
            update(Conversation).where(Conversation.id == conversation.id, Conversation.backup_offered_at.is_(None))
            .values(backup_offered_at=moment)
        ).rowcount  # type: ignore[attr-defined]  # fmt: skip
        db.session.commit()
        if claimed:
            to_texter(conversation, "backup", document.language(conversation.language).text("backup"))
            counts["backup"] += 1
    idle_before = moment - timedelta(minutes=document.sms.idle_close_minutes)
    # Only conversations waiting on the texter go idle; a texter waiting on us is never closed.
    for conversation in db.session.scalars(
        select(Conversation).where(
            Conversation.state.in_(("language", "need", "active")),
            Conversation.last_activity_at <= idle_before,
        )
    ).all():
        counts["idle_closed"] += int(close(conversation, document, "idle", tell_texter="idle_closed"))
    return counts


def last_message_from_texter(conversation_id: int) -> datetime | None:
    return db.session.scalar(
        select(func.max(Message.created_at)).where(
            Message.conversation_id == conversation_id, Message.direction == "in", Message.party == "texter"
        )
    )
