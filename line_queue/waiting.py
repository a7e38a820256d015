"""Reading the queue: who waits, in what order, and how long a person should expect to wait.

Order (the policy, also printed by ``flask routing check``): the need's ``priority`` (higher
first), then since when the person has been waiting (``Transfer.queued_since``: a callback
keeps the place its person had; ``Conversation.queued_at``), then arrival id. Every query here
is bounded (a LIMIT, or a COUNT over an index), so no webhook's cost grows with the queue.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any

from flask import current_app
from sqlalchemy import Executable, Select, and_, bindparam, case, func, or_, select

from crisisline.db import db
from crisisline.models import ACTIVE_OFFER_STATES, Conversation, Offer, ResponderState, Transfer
from routing.document import RoutingDocument
from routing.engine import decide_route

VOICE_KINDS = ("call", "callback")
TEXT_WAITING_STATES = ("queued", "offered")
DEFAULT_HANDLE_SECONDS = 8 * 60  # before the line has finished calls of its own to learn from
RECENT = 20  # how many recent calls the wait estimate learns from
HANDLE_SECONDS_KEPT = timedelta(seconds=60)
HANDLE_SECONDS_EXTENSION = "line_queue.handle_seconds"

# A person answering a check-in ("2, I'd like to talk") waits ahead of ordinary contacts, as a
# text conversation or as a callback: at least this priority.
CHECKIN_PRIORITY = 5


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WaitingContact:
    """One entry of the queue. ``id`` is a transfer id (voice) or a conversation id (text)."""

    kind: str  # "call", "callback" or "text"
    id: int
    language: str
    need: str
    priority: int
    since: datetime
    active_offers: int  # phones ringing (voice) or open text offers for it now

    @property
    def channel(self) -> str:
        return "voice" if self.kind in VOICE_KINDS else "text"

    @property
    def order(self) -> tuple[int, datetime, int, int]:
        return (-self.priority, self.since, 0 if self.channel == "voice" else 1, self.id)


# Per channel, the (language, need) pairs a reader of the queue wants; None: every contact.
Wanted = dict[str, set[tuple[str, str]]]


def head(
    document: RoutingDocument, limit: int = 50, channels: tuple[str, ...] = ("voice", "text"),
    *, offerable: bool = False, wanted: Wanted | None = None, parallel_max: int | None = None,
) -> list[WaitingContact]:  # fmt: skip
    """The first ``limit`` waiting contacts in queue order (both channels merged).

    ``offerable``: only those who may be offered more now (a texter without an open offer, a
    caller ringing fewer phones than their need allows), so that contacts who cannot take
    another offer never hide the ones behind them from a free responder. ``parallel_max``: the
    phones a caller rung in parallel may have now (default: the routing's). ``wanted``: only
    contacts of these (language, need) pairs, and always those whose language or need the
    routing does not know (not sorted yet, or kept from an earlier routing version: the
    routing engine takes them as its default need, or as any language, so only it can say)."""
    entries: list[WaitingContact] = []
    known = None
    if wanted is not None:
        channels = tuple(channel for channel in channels if wanted.get(channel))
        known = (tuple(sorted(n.key for n in document.needs)), tuple(sorted(lang.code for lang in document.languages)))
    if "voice" in channels:
        room = None
        if offerable:
            parallel = tuple(n.key for n in document.needs if document.transfer.strategy_for(n) == "parallel")
            room = (parallel, parallel_max or document.transfer.parallel_max)
        rows = db.session.execute(
            _voice_head(limit, room, tuple(sorted(wanted["voice"])) if wanted is not None else None, known)
        ).all()
        entries += [
            WaitingContact("callback" if mode == "callback" else "call", id_, language, need, priority, since, active)
            for id_, mode, language, need, priority, since, active in rows
        ]
    if "text" in channels:
        rows = db.session.execute(
            _text_head(limit, offerable, tuple(sorted(wanted["text"])) if wanted is not None else None, known)
        ).all()
        default_language = document.menu.default_language
        entries += [
            WaitingContact("text", id_, language or default_language, need or document.menu.default_need,
                           priority, since or now(), int(state == "offered"))
            for id_, language, need, priority, since, state in rows
        ]  # fmt: skip
    return sorted(entries, key=lambda entry: entry.order)[:limit]


# The routing's need keys and language codes, for ``wanted``: contacts outside them always match.
Known = tuple[tuple[str, ...], tuple[str, ...]]


def _wanted_or_unknown(language: Any, need: Any, wanted: tuple[tuple[str, str], ...], known: Known | None) -> Any:
    need_keys, language_codes = known or ((), ())
    unknown = [language.is_(None), need.is_(None)]
    if need_keys:
        unknown.append(need.not_in(need_keys))
    if language_codes:
        unknown.append(language.not_in(language_codes))
    return or_(*unknown, *(and_(language == code, need == key) for code, key in wanted))


# The heads' statements, built once per shape: every need answer, status callback and text
# reads the head (``crisisline.db``, "Statements built once"). A pass's ``wanted`` pairs follow
# who is free; the shapes that recur (the same free responders) are kept, up to 256.
@lru_cache(maxsize=256)
def _voice_head(
    limit: int, room: tuple[tuple[str, ...], int] | None, wanted: tuple[tuple[str, str], ...] | None,
    known: Known | None = None,
) -> Executable:  # fmt: skip
    """``room``: (the needs rung in parallel, ``parallel_max``), to read only callers ringing
    fewer phones than their need allows; None for every waiting caller."""
    ringing = (
        select(func.count(Offer.id))
        .where(Offer.transfer_id == Transfer.id, Offer.state.in_(ACTIVE_OFFER_STATES), Offer.purpose == "answer")
        .scalar_subquery()
    )
    voice_waiting: list[Any] = [Transfer.state == "waiting"]
    if room is not None:
        parallel, parallel_max = room
        voice_waiting.append(ringing < (case((Transfer.need.in_(parallel), parallel_max), else_=1) if parallel else 1))
    if wanted is not None:
        voice_waiting.append(_wanted_or_unknown(Transfer.language, Transfer.need, wanted, known))
    return (
        select(Transfer.id, Transfer.mode, Transfer.language, Transfer.need, Transfer.priority,
               Transfer.queued_since, ringing)
        .where(*voice_waiting)
        .order_by(Transfer.priority.desc(), Transfer.queued_since, Transfer.id)
        .limit(limit)
    )  # fmt: skip


@lru_cache(maxsize=256)
def _text_head(
    limit: int, offerable: bool, wanted: tuple[tuple[str, str], ...] | None, known: Known | None = None
) -> Executable:
    text_waiting: list[Any] = [Conversation.state.in_(("queued",) if offerable else TEXT_WAITING_STATES)]
    if wanted is not None:
        text_waiting.append(_wanted_or_unknown(Conversation.language, Conversation.need, wanted, known))
    return (
        select(Conversation.id, Conversation.language, Conversation.need, Conversation.priority,
               Conversation.queued_at, Conversation.state)
        .where(*text_waiting)
        .order_by(Conversation.priority.desc(), Conversation.queued_at, Conversation.id)
        .limit(limit)
    )  # fmt: skip


def position(document: RoutingDocument, channel: str, priority: int, since: datetime, contact_id: int) -> int:
    """A waiting contact's place in line (1 = next). With ``queue.channels: shared`` texters
    waiting ahead count too; with ``separate`` only the contact's own channel does."""
    ahead = 0
    counted = ("voice", "text") if document.queue.channels == "shared" else (channel,)
    place = {"priority": priority, "since": since, "contact_id": contact_id}
    if "voice" in counted:
        ties = "id" if channel == "voice" else "all"  # calls go first at an equal place
        ahead += db.session.scalar(_count_ahead("voice", ties), place) or 0
    if "text" in counted:
        ties = "id" if channel == "text" else "none"
        ahead += db.session.scalar(_count_ahead("text", ties), place) or 0
    return ahead + 1


@cache
def _count_ahead(channel: str, ties: str) -> Select[int]:
    """How many of ``channel`` wait ahead of the place bound as ``priority``, ``since`` and
    ``contact_id``. Built once per shape: every hold turn asks (``crisisline.db``, "Statements built once")."""
    place: list[Any] = [bindparam("priority"), bindparam("since"), bindparam("contact_id")]
    if channel == "voice":
        voice_ahead = _ahead(Transfer.priority, Transfer.queued_since, Transfer.id, place, ties)
        return select(func.count(Transfer.id)).where(Transfer.state == "waiting", voice_ahead)
    text_ahead = _ahead(Conversation.priority, Conversation.queued_at, Conversation.id, place, ties)
    return select(func.count(Conversation.id)).where(Conversation.state.in_(TEXT_WAITING_STATES), text_ahead)


def _ahead(priority_column: Any, since_column: Any, id_column: Any, place: list[Any], ties: str) -> Any:
    """SQL for "waits ahead of ``place``" (priority, since, id). ``ties``: at an equal place, ``id``
    (same channel: the lower id is ahead), ``all`` (voice rows ahead of a text) or ``none``."""
    priority, since, contact_id = place
    earlier = or_(priority_column > priority, and_(priority_column == priority, since_column < since))
    same_place = and_(priority_column == priority, since_column == since)
    if ties == "id":
        return or_(earlier, and_(same_place, id_column < contact_id))
    return or_(earlier, same_place) if ties == "all" else earlier


def expected_wait_minutes(document: RoutingDocument, place: int, language: str, need_key: str) -> int:
    """An honest estimate for the person at ``place``: the people up to and including them,
    shared among the responders who could take them and are not paused, each taking as long
    as the line's recent calls took (median). At least one minute."""
    need = document.need(need_key) or document.need(document.menu.default_need)
    paused = set(db.session.scalars(select(ResponderState.responder_id).where(ResponderState.paused.is_(True))))
    staff = len(decide_route(document, language, need, now(), unavailable=paused).responders) if need else 0
    seconds = place * typical_handle_seconds() / max(1, staff)
    return max(1, round(seconds / 60))


def typical_handle_seconds() -> float:
    """How long a recent live call kept its responder (median, from connection to end).

    Every hold turn asks; the answer moves only when a call ends, so a process keeps it for
    ``HANDLE_SECONDS_KEPT`` (by the line's clock)."""
    kept: tuple[datetime, float] | None = current_app.extensions.get(HANDLE_SECONDS_EXTENSION)
    moment = now()
    if kept is not None and timedelta(0) <= moment - kept[0] < HANDLE_SECONDS_KEPT:
        return kept[1]
    seconds = _median_handle_seconds()
    current_app.extensions[HANDLE_SECONDS_EXTENSION] = (moment, seconds)
    return seconds


def _median_handle_seconds() -> float:
    rows = db.session.execute(
        select(Transfer.connected_at, Transfer.ended_at)
        .where(Transfer.mode == "live", Transfer.connected_at.is_not(None), Transfer.ended_at.is_not(None))
        .order_by(Transfer.ended_at.desc())
        .limit(RECENT)
    ).all()
    talks = [(ended - connected).total_seconds() for connected, ended in rows if connected and ended]
    return statistics.median(talks) if talks else DEFAULT_HANDLE_SECONDS
