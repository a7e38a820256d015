"""A counselor's situation now, and their availability switch: the same ``set_paused`` the
SMS ``ON``/``OFF`` commands use, so the queue reacts the same way (un-pausing notes
``responder_freed``: they are offered the first contact they can take once the request ends)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from console.audit.log import record
from console.board.live import RINGING, language_name, need_label, voice_status
from console.desk.history import History, earlier_contacts, person_hash_of_conversation, person_hash_of_transfer
from console.models import User
from crisisline import events
from crisisline.db import db
from crisisline.models import ACTIVE_OFFER_STATES, Conversation, ConversationOffer, Offer, ResponderState, Transfer
from line_queue import responders
from routing.document import Responder, RoutingDocument
from routing.schedule import is_on_call, local_time


@dataclass(frozen=True)
class EarlierRow:
    channel: str  # voice | text
    date: str  # YYYY-MM-DD (UTC)
    need: str


@dataclass(frozen=True)
class Contact:
    channel: str  # voice | text
    state: str  # ringing | on a call | offered | active
    tag: str | None
    language: str
    need: str
    seconds: int  # waited so far (offered), or since it was taken (on now)
    # Earlier calls and texts by the same person (by keyed hash): how many, and the newest.
    earlier_count: int = 0
    earlier: list[EarlierRow] = field(default_factory=list)


@dataclass(frozen=True)
class Desk:
    responder_id: str
    name: str
    status: str  # available | ringing | on a call | paused | off shift
    paused: bool
    paused_reason: str | None
    on_shift: bool
    contacts: list[Contact] = field(default_factory=list)

    @property
    def held(self) -> list[str]:
        """The tags of the text conversations they hold now (``#12``): pausing leaves them theirs."""
        return [c.tag for c in self.contacts if c.channel == "text" and c.state == "active" and c.tag]

    @property
    def still_held(self) -> str:
        """ "You still hold #12 …" while paused with conversations, else ""."""
        return still_holding(self.held) if self.paused else ""

    @property
    def on_a_call_for(self) -> int | None:
        """Seconds talking with a caller now (put through, not only rung), or None."""
        return next((c.seconds for c in self.contacts if c.channel == "voice" and c.state == "on a call"), None)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def still_holding(tags: list[str]) -> str:
    """What pausing leaves with them, in plain words ("" when nothing)."""
    if not tags:
        return ""
    them = "it stays yours until you end or pass it" if len(tags) == 1 else "they stay yours until you end or pass them"
    return f"You still hold {_listed(tags)}: {them}."


def handed_on_words(conversation_ids: list[int]) -> str:
    """What pausing did with the texts offered to them, in plain words ("" when none were)."""
    if not conversation_ids:
        return ""
    tags = [f"#{conversation_id}" for conversation_id in conversation_ids]
    what = "The text" if len(tags) == 1 else "The texts"
    return f"{what} offered to you ({_listed(tags)}) went to the next counselor."


def _seconds(moment: datetime, since: datetime | None) -> int:
    return max(0, int((moment - since).total_seconds())) if since else 0


def _earlier(document: RoutingDocument, history: History) -> dict[str, Any]:
    rows = [
        EarlierRow(e.channel, e.at.strftime("%Y-%m-%d"), need_label(document, e.need or document.menu.default_need))
        for e in history.recent
    ]
    return {"earlier_count": history.count, "earlier": rows}


def desk(document: RoutingDocument, responder: Responder, moment: datetime) -> Desk:
    state = db.session.get(ResponderState, responder.id)
    status = voice_status(document, responder, moment)
    contacts: list[Contact] = []
    if state is not None and state.engaged_offer_id is not None:
        offer = db.session.get(Offer, state.engaged_offer_id)
        transfer = db.session.get(Transfer, offer.transfer_id) if offer else None
        if offer is not None and transfer is not None:
            ringing = offer.state in ACTIVE_OFFER_STATES
            person, call_id = person_hash_of_transfer(transfer)
            history = earlier_contacts(person, transfer.started_at, now=moment, call_id=call_id)
            contacts.append(
                Contact(
                    channel="voice",
                    state=RINGING if ringing else "on a call",
                    tag=None,
                    language=language_name(document, transfer.language),
                    need=need_label(document, transfer.need),
                    seconds=_seconds(moment, transfer.queued_since if ringing else transfer.connected_at),
                    **_earlier(document, history),
                )
            )
    offered = db.session.execute(
        select(Conversation)
        .join(ConversationOffer, ConversationOffer.conversation_id == Conversation.id)
        .where(ConversationOffer.responder_id == responder.id, ConversationOffer.state == "open")
        .order_by(Conversation.priority.desc(), Conversation.queued_at)
    ).scalars()
    active = db.session.scalars(
        select(Conversation)
        .where(Conversation.counselor_id == responder.id, Conversation.state == "active")
        .order_by(Conversation.assigned_at)
    )
    for conversation, how, since in [
        *((c, "offered", c.queued_at) for c in offered),
        *((c, "active", c.assigned_at) for c in active),
    ]:
        history = earlier_contacts(
            person_hash_of_conversation(conversation),
            conversation.started_at,
            now=moment,
            conversation_id=conversation.id,
        )
        contacts.append(
            Contact(
                channel="text",
                state=how,
                tag=f"#{conversation.tag}",
                language=language_name(document, conversation.language or document.menu.default_language),
                need=need_label(document, conversation.need or document.menu.default_need),
                seconds=_seconds(moment, since),
                **_earlier(document, history),
            )
        )
    return Desk(
        responder_id=responder.id,
        name=responder.name,
        status=status,
        paused=bool(state and state.paused),
        paused_reason=state.paused_reason if state is not None and state.paused else None,
        on_shift=is_on_call(responder, local_time(document, moment)),
        contacts=contacts,
    )


@dataclass(frozen=True)
class Switched:
    changed: bool  # False: it was so already (the form sent twice), or refused
    handed_on: list[int]  # pausing: the conversations offered to them, now offered to the next counselor
    refused: str | None = None  # taking contacts again refused: why they stay paused (``paused_reason``)


def set_available(user: User, responder: Responder, available: bool) -> Switched:
    """The availability switch; audited; commits. Pausing hands every text offer open to them
    on at once (as their ``OFF`` does): the texter is offered to the next counselor, not kept
    waiting on a paused phone. A phone of theirs still ringing for a caller stops, and the
    caller's next person is rung (``events.responder_paused``). The conversations they hold,
    and a call they picked up, stay theirs."""
    changed = responders.set_paused(responder.id, not available, None if available else "self")
    handed_on = [] if available else responders.hand_on_offers(responder.id)
    # Their account closed, or their phone blocking the line's texts: only an administrator, or
    # their START, lifts that.
    refused = responders.paused_reason(responder.id) if available and not changed else None
    if changed:
        record("availability_changed", actor=user, target=f"responder:{responder.id}", available=available)
    db.session.commit()
    if not available:  # sent again for a form sent twice: harmless, and whatever it missed is done
        events.send_responder_paused(responder.id)
    return Switched(changed, handed_on, refused)
