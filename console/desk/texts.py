"""The counselor's SMS inbox: their open text conversations, each thread read back for them
alone, and replies and commands from the browser.

A reply or command from the console is handled exactly as if the counselor had texted it to
the line: it is stored as their inbound text (sealed, like every text) and handed to
``sms.staff.handle_staff_message``, the function a counselor's SMS goes through. So a reply
is relayed from the line's number under the same once-only key (``relay:<text id>``), and
``END``/``PASS``/``YES`` do what they do by text. Each form carries its own random key; the
stored text is unique by it, so a double submit sends nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import and_, case, func, select, update

from console.models import User
from crisisline.db import db, insert_once
from crisisline.models import Conversation, ConversationOffer, Message, utcnow
from crisisline.privacy import Vault
from crisisline.sms_segments import segment_count
from routing.document import Responder, RoutingDocument
from sms.delivery import DELIVERED_STATUSES, Delivery, delivery_of, not_delivered
from sms.outbox import BODY_CONTEXT
from sms.staff import Reply, handle_staff_message, relay_to_tag

FORM_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}\Z")
COMMANDS = {"end": "END", "pass": "PASS", "take": "YES"}
MAX_REPLY = 1600


@dataclass(frozen=True)
class Line:
    who: str  # texter | counselor | line
    at: datetime
    body: str
    delivery: Delivery | None = None  # texts sent to the texter only; None while on its way

    @property
    def label(self) -> str:
        return SPEAKERS[self.who]

    def as_json(self) -> dict[str, Any]:
        """For the open thread page to redraw (console/static/thread.js): what the template shows."""
        return {
            "who": self.who, "label": self.label, "at": self.at.isoformat(), "time": self.at.strftime("%H:%M"),
            "body": self.body,
            "delivery": {"kind": self.delivery.kind, "text": self.delivery.text} if self.delivery else None,
        }  # fmt: skip


SPEAKERS = {"texter": "Texter", "counselor": "Counselor", "line": "Line"}


@dataclass(frozen=True)
class Sent:
    handled: bool  # False: this form was submitted before (nothing sent again)
    answer: str  # what the line would have texted back to the counselor ("" for a plain reply)
    refused: bool = False  # nothing was sent or done: the conversation is not theirs (any more)


def _vault() -> Vault:
    vault: Vault = current_app.extensions["crisisline.vault"]
    return vault


def mine(responder_id: str, conversation_id: int) -> Conversation | None:
    """The conversation if this counselor holds it now (active and theirs), else None."""
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None or conversation.state != "active" or conversation.counselor_id != responder_id:
        return None
    return conversation


# Why a conversation was closed (``Conversation.close_reason``), in the counselor's words.
CLOSED_BECAUSE = {
    "stopped": "the texter texted STOP, so the line cannot text them any more",
    "idle": "it was closed after a time with no messages",
    "counselor_ended": "it was ended",
    "callback": "the texter asked to be called instead",
    "opted_in": "it only carried the line's answer to the texter's START",
}


def not_one_of_yours(conversation_id: int) -> str:
    return f"#{conversation_id} is not one of your conversations."


def was_theirs(responder_id: str, conversation_id: int) -> bool:
    """Whether this counselor holds or held the conversation, or was offered it: an offer to
    them, or a text the line sent their phone for it (a YES with no offer brings the backlog).
    Only they are told what became of it; to anyone else it is not one of theirs."""
    offered = select(ConversationOffer.id).where(
        ConversationOffer.conversation_id == conversation_id, ConversationOffer.responder_id == responder_id
    )
    texted = select(Message.id).where(
        Message.conversation_id == conversation_id, Message.party == "counselor", Message.responder_id == responder_id
    )
    held = select(Conversation.id).where(Conversation.id == conversation_id, Conversation.counselor_id == responder_id)
    return bool(db.session.scalar(select(offered.exists() | texted.exists() | held.exists())))


def why_not_yours(responder_id: str, conversation_id: int) -> str:
    """Why conversation ``conversation_id`` is not this counselor's now, in plain words (never
    who has it, nor anything the texter wrote); to a counselor who never held it nor was
    offered it, only that it is not one of theirs."""
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None or not was_theirs(responder_id, conversation_id):
        return not_one_of_yours(conversation_id)
    tag = f"#{conversation.tag}"
    if conversation.state == "closed":
        why = CLOSED_BECAUSE.get(conversation.close_reason or "")
        return f"{tag} is closed: {why}." if why else f"{tag} is closed."
    if conversation.state in ("queued", "offered"):
        return (
            f"{tag} was handed back to the queue (passed, or after a time without a reply), and the next counselor "
            "free is offered it."
        )
    if conversation.state == "active" and conversation.counselor_id != responder_id:
        return f"{tag} is with another counselor now."
    return f"{tag} is not one of your conversations now."


def why_not_taken(responder_id: str, conversation_id: int) -> str | None:
    """Why this counselor cannot take conversation ``conversation_id`` now, in plain words
    (never who has it, nor anything the texter wrote; to a counselor never offered it, only
    that it is not one of theirs); None when there is no such conversation."""
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    if not was_theirs(responder_id, conversation_id):
        return not_one_of_yours(conversation_id)
    tag = f"#{conversation.tag}"
    if conversation.state == "active" and conversation.counselor_id == responder_id:
        return f"{tag} is yours already."
    if conversation.state == "active":
        return f"{tag} was taken by another counselor."
    if conversation.state == "closed":
        why = CLOSED_BECAUSE.get(conversation.close_reason or "")
        return f"{tag} is no longer waiting: it is closed{': ' + why if why else ''}."
    if conversation.state in ("queued", "offered"):
        return f"{tag} is no longer offered to you: it was handed on, and the next counselor free is offered it."
    return f"{tag} is not waiting for a counselor."


def offered_to(responder_id: str, conversation_id: int) -> Conversation | None:
    """The conversation if it is offered to this counselor now (an open offer), else None."""
    return db.session.scalars(
        select(Conversation)
        .join(ConversationOffer, ConversationOffer.conversation_id == Conversation.id)
        .where(Conversation.id == conversation_id, Conversation.state == "offered",
               ConversationOffer.responder_id == responder_id, ConversationOffer.state == "open")
    ).first()  # fmt: skip


def open_conversations(responder_id: str) -> list[Conversation]:
    return list(
        db.session.scalars(
            select(Conversation)
            .where(Conversation.counselor_id == responder_id, Conversation.state == "active")
            .order_by(Conversation.assigned_at)
        )
    )


def thread(conversation: Conversation, moment: datetime | None = None) -> list[Line]:
    """What the texter wrote and what the line and counselors sent them, oldest first, each
    text sent with what became of it. Texts to counselors' phones (offers, relays of the
    texter's words) are left out: they repeat."""
    moment = moment or utcnow()
    messages = db.session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation.id, Message.party == "texter")
        .order_by(Message.created_at, Message.id)
    )
    vault = _vault()
    lines = []
    for message in messages:
        delivery = None
        if message.direction == "in":
            who = "texter"
        else:
            who = "counselor" if ":relay:" in (message.idempotency_key or "") else "line"
            delivery = delivery_of(message.status, message.error_code, message.created_at, moment)
        body = vault.open(message.sealed_body, context=BODY_CONTEXT) if message.sealed_body else ""
        lines.append(Line(who, message.created_at, body, delivery))
    return lines


def send_as_text(
    user: User, document: RoutingDocument, responder: Responder, conversation: Conversation, form_key: str,
    body: str, handle: Callable[[Message], Reply] | None = None,
) -> Sent:  # fmt: skip
    """Handle ``body`` as the counselor's text to the line, once per ``form_key`` (by ``handle``
    if given, else as a text from their phone is)."""
    if not FORM_KEY.match(form_key):
        raise ValueError("bad form key")
    key = f"console:{user.id}:{form_key}"
    inserted = insert_once(
        Message,
        {
            "conversation_id": None,  # as a counselor's text: their words reach the thread as the relay
            "direction": "in",
            "party": "counselor",
            "idempotency_key": key,
            "responder_id": responder.id,
            "line_number": conversation.line_number,
            "num_media": 0,
            "sealed_body": _vault().seal(body, context=BODY_CONTEXT),
            "segments": segment_count(body) if body else 0,
            "status": "received",
            "status_rank": 5,
            "created_at": utcnow(),
        },
    )
    db.session.commit()
    if not inserted:
        return Sent(False, "")
    inbound = db.session.scalars(select(Message).where(Message.idempotency_key == key)).one()
    reply = handle(inbound) if handle else handle_staff_message(document, responder, inbound, body)
    db.session.execute(update(Message).where(Message.id == inbound.id).values(handled_at=utcnow()))
    db.session.commit()
    return Sent(True, reply.text, reply.refused)


def reply(
    user: User, document: RoutingDocument, responder: Responder, conversation: Conversation, form_key: str,
    words: str,
) -> Sent:  # fmt: skip
    """Words for the texter, as typed, to this conversation only (kept as ``#<tag> words``)."""
    words = words.strip()
    tag = str(conversation.tag)

    def relay(inbound: Message) -> Reply:
        return relay_to_tag(document, responder, inbound, tag, words)

    return send_as_text(user, document, responder, conversation, form_key, f"#{tag} {words}", relay)


def command(
    user: User, document: RoutingDocument, responder: Responder, conversation: Conversation, form_key: str,
    name: str,
) -> Sent:  # fmt: skip
    """``END``, ``PASS`` or ``YES`` with the conversation's tag."""
    return send_as_text(user, document, responder, conversation, form_key, f"{COMMANDS[name]} {conversation.tag}")


def inbox_signature(responder_id: str, moment: datetime | None = None) -> str:
    """Changes when a conversation of theirs opens or closes, gets a new message, or a text to
    the texter is delivered or fails: the page reloads its inbox then (ids and counts only,
    nothing anyone wrote)."""
    conversations = open_conversations(responder_id)
    if not conversations:
        return ""
    moment = moment or utcnow()
    counts = {
        conversation_id: (count, delivered or 0, failed or 0)
        for conversation_id, count, delivered, failed in db.session.execute(
            select(
                Message.conversation_id,
                func.count(Message.id),
                func.sum(case((and_(Message.direction == "out", Message.status.in_(DELIVERED_STATUSES)), 1), else_=0)),
                func.sum(case((not_delivered(moment), 1), else_=0)),
            )
            .where(Message.conversation_id.in_([c.id for c in conversations]), Message.party == "texter")
            .group_by(Message.conversation_id)
        ).all()
    }
    return ",".join(":".join(map(str, (c.id, *counts.get(c.id, (0, 0, 0))))) for c in conversations)
