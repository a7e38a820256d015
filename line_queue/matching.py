"""Offering free responders the first eligible waiting contacts.

``fill`` is the one place that decides which waiting contact a free responder is offered. It
runs on the events that change who is free or who waits (a contact joins the queue, a
responder's call or conversation ends, they pass or miss an offer, they text ON) and, as
safety nets, on callers' hold turns (at most one a second per process) and on the clock.
A process runs one pass at a time. Its cost is bounded by the number
of responders and a fixed head of the queue, never by how many wait.

Concurrency: each responder is claimed by one conditional UPDATE (voice) or one open offer
(text), and each contact is leased or claimed before it is offered, so two processes filling
at once cannot ring a busy responder or offer one sequential contact twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from flask import current_app
from sqlalchemy import CompoundSelect, Select, String, and_, bindparam, func, literal, not_, or_, select, union_all

from crisisline.background import one_writer_at_a_time, side_by_side, start_soon, within_budget
from crisisline.db import db
from crisisline.events import responder_freed
from crisisline.models import ACTIVE_OFFER_STATES, Conversation, ConversationOffer, Offer, ResponderState
from crisisline.settings import Settings
from crisisline.telephony import api_is_slow
from line_queue.responders import unavailable_responder_ids
from line_queue.waiting import WaitingContact, Wanted, head, now
from routing.document import Responder, RoutingDocument
from routing.engine import decide_route
from routing.schedule import on_call
from routing.store import active_routing

log = logging.getLogger(__name__)
# How many contacts at the head of the queue (of each line, with separate channels) a pass
# looks at, of those who may be offered more now (a contact already offered as much as it may
# be is skipped, so it cannot hide the ones behind it). A free responder none of them can use
# (another language, say) waits for the next pass; the queue's length costs nothing.
HEAD_LIMIT = 50
# How deep a pass looks, at contacts someone free could take, when responders are still free
# after the head (see ``_fill_pass``).
DEEPER_HEAD_LIMIT = 500
# An offer Twilio refused for the responder's number itself (invalid, unreachable from the
# account, blocked: ``rest_error_<code>``) can never ring them for this contact, however long it
# waits. One refused for a moment (rate limited, Twilio's own failure, unreachable, our request
# lost) only waits out the re-offer cooldown, like a missed ring: a single 429 must not bar the
# only counselor on shift from a caller. Twice for one contact, and they do not count for it
# either: in an outage of Twilio's API callers move on to the backup line, not hold for nobody.
PASSING_FAILURES_ALLOWED = 1
PASSING_REST_OUTCOMES = (
    "rest_error_20429", "rest_error_429", "rest_error_20500", "rest_error_20503", "error", "rest_unreachable",
    "rest_lost",
)  # fmt: skip

# channel → how a contact of that channel is offered to these responders; returns how many
# offers were made. Registered by ``transfer.dispatch`` (voice) and ``sms.conversations`` (text).
Offerer = Callable[[int, Sequence[Responder], RoutingDocument], int]
_offerers: dict[str, Offerer] = {}


def offers_for(channel: str) -> Callable[[Offerer], Offerer]:
    """Register how contacts of ``channel`` ("voice" or "text") are offered."""

    def register(offerer: Offerer) -> Offerer:
        _offerers[channel] = offerer
        return offerer

    return register


# A pass whose offers partly failed (a refused number, Twilio unreachable) runs again at once,
# so the next person is rung now rather than on the caller's next hold turn.
MAX_FILL_PASSES = 3


# A caller's hold turn runs a pass only as a safety net: every event that changes who is free or
# who waits runs its own pass at once. So a process runs at most one safety-net pass in this
# many seconds after any pass began: a hundred callers holding do not run a hundred identical
# passes a second, and a lost event still costs at most this long plus a hold turn.
SAFETY_NET_INTERVAL_SECONDS = 1.0
FILL_KEY = "line_queue.fill"  # one pass at a time per process (``crisisline.background``)
CHANNELS = ("voice", "text")


class _PassClock:
    """When this process last began a fill pass, by the line's clock (the one cooldowns and
    shifts are measured with, so a cooldown that just ran out is never hidden by it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.began: datetime | None = None

    def mark(self) -> None:
        with self.lock:
            self.began = now()

    def begin_unless_recent(self, interval: float) -> bool:
        with self.lock:
            moment = now()
            since = (moment - self.began).total_seconds() if self.began else None
            if since is not None and 0 <= since < interval:
                return False
            self.began = moment
            return True


def _pass_clock() -> _PassClock:
    clock: _PassClock | None = current_app.extensions.get("line_queue.pass_clock")
    if clock is None:
        clock = current_app.extensions.setdefault("line_queue.pass_clock", _PassClock())
    return clock


def fill(document: RoutingDocument, channels: tuple[str, ...] = CHANNELS) -> int:
    """Offer every free responder the first waiting contact they are eligible for, in queue
    order. Idempotent and safe to run concurrently. Returns how many offers were made.

    ``channels``: only these lines (``queue.channels: separate``; see ``fill_soon``)."""
    if document.mode == "system_down":
        return 0
    if set(channels) >= set(CHANNELS):
        # Only a pass over both lines stands in for a hold turn's safety-net pass, which looks
        # at both (``safety_net_due``): a new caller's pass must not hold back the one that
        # would offer a texter left waiting by a lost event.
        _pass_clock().mark()
    made = 0
    for number in range(MAX_FILL_PASSES):
        # Only the first pass may leave extra phones to the next (``_offer_to``): at most once
        # per fill, so a surge that never lets up cannot hold them back for good.
        offered, attempted, deferred = _fill_pass(document, channels, may_defer=number == 0)
        made += offered
        if offered == attempted and not deferred:
            break
    return made


def safety_net_due() -> bool:
    """Whether a safety-net pass runs now: no pass began in this process in the last
    ``SAFETY_NET_INTERVAL_SECONDS``. If so, this one counts as begun."""
    return _pass_clock().begin_unless_recent(SAFETY_NET_INTERVAL_SECONDS)


def fill_soon(
    document: RoutingDocument, *, safety_net: bool = False, joined: str | None = None, wait: bool = True
) -> int:
    """``fill``, but on a webhook the offers (Twilio REST calls) run off the request thread and
    the request waits for them at most half the voice deadline: a slow Twilio API never adds to
    a caller's or texter's wait for our answer. Inline in workers, the clock and the CLI.

    ``wait=False``: for a request whose answer does not depend on the pass (a caller's first hold
    step hears "hold" whoever is rung), it is started and not waited for at all; returns 0. The
    pass runs as it would have (under the same key, shared with any queued behind it), so the
    first ring comes as soon; the caller's silence just no longer includes Twilio's answer.
    Waited for on SQLite all the same (``one_writer_at_a_time``).

    ``safety_net`` (a hold turn): skipped when this process began a pass less than
    ``SAFETY_NET_INTERVAL_SECONDS`` ago; that pass saw the queue as this one would.

    ``joined``: the channel of a contact that just joined the queue (a new caller, a text
    conversation just sorted). With separate lines nothing else changed for the other line, so
    the pass offers this one only, one at a time per process under a key of its own: a new
    caller's first ring never waits behind a pass sending text offers (each a REST request)."""
    if safety_net and not safety_net_due():
        return 0
    settings: Settings = current_app.extensions["crisisline.settings"]
    budget = settings.voice_deadline_seconds / 2
    key, work = FILL_KEY, lambda: fill(document)
    if joined is not None and document.queue.channels == "separate":
        key, work = f"{FILL_KEY}:{joined}", lambda: fill(document, (joined,))
    if not wait and not one_writer_at_a_time():
        start_soon(key, work)
        return 0
    return within_budget(key, work, budget) or 0


def _fill_pass(
    document: RoutingDocument, channels: tuple[str, ...] = CHANNELS, *, may_defer: bool = False
) -> tuple[int, int, bool]:
    """One pass over the queue's head: (offers made, offers attempted, extra phones left to the
    next pass: ``_offer_to``, only when ``may_defer``).

    The pass reads only contacts of a language and need someone free could take (``takeable``)
    who may be offered more: the first ``HEAD_LIMIT`` of them and, if responders are still free
    after those and the queue goes on, ``DEEPER_HEAD_LIMIT`` more. So a free counselor is
    never kept from a caller by 50 contacts none of whom they may take (other languages, each
    passed by them a minute ago), and a long queue of contacts only busy responders could take
    (a surge, everyone ringing) costs the pass nothing: when nobody free could take anyone it
    reads no queue at all. (Contacts whose need or language the routing no longer knows are
    read whatever; ``_Matcher`` asks the routing engine once per kind of them.)"""
    # A lane per pass's set of lines: a new caller's pass (voice only) never queues its offers
    # behind those of a pass that also offers texters (``side_by_side``).
    lane = "+".join(channels)
    moment = now()
    rotation: dict[str, datetime] = {}
    pools = free_responders(document, moment, rotation, channels)
    matcher = _Matcher(document, moment, rotation)
    made = attempted = 0
    deferred = False
    seen: set[tuple[str, int]] = set()
    for limit in (HEAD_LIMIT, DEEPER_HEAD_LIMIT):
        channels = tuple(channel for channel, pool in pools.items() if pool)
        if not channels:
            break
        # Only contacts someone free could take (an offer needs someone free whom the routing
        # would choose for their language and need): the rest could fill a look and hide the
        # ones behind them. Contacts they passed a moment ago can still fill a look until
        # their cooldown ends; then they are offered again, in order.
        wanted = takeable(document, pools, moment, matcher.present)
        if not any(wanted.values()):
            break  # nobody free could take anyone, however deep the queue
        entries, more = _head_of(document, limit, channels, wanted)
        fresh = [entry for entry in entries if (entry.channel, entry.id) not in seen]
        seen.update((entry.channel, entry.id) for entry in fresh)
        offered, tried, later = _offer_to(document, fresh, pools, matcher, lane, may_defer=may_defer)
        made, attempted, deferred = made + offered, attempted + tried, deferred or later
        if not more:
            break  # the whole queue was seen
    return made, attempted, deferred


TAKEABLE_CACHE_SIZE = 256
_TakeableKey = tuple[int, str, frozenset[str], frozenset[str]]


def takeable(
    document: RoutingDocument, pools: dict[str, dict[str, Responder]], moment: datetime,
    present: Sequence[Responder] | None = None,
) -> Wanted:  # fmt: skip
    """Per channel, the (language, need) pairs the routing would give one of its free responders.
    ``present``: who is on call at ``moment``, when the caller knows already.

    Every pass asks, so the answer is kept per routing version, pool and on-call set, which
    is all it depends on (``moment`` only through who is on call)."""
    present = on_call(document, moment) if present is None else present
    on_call_ids = frozenset(responder.id for responder in present)
    cache = _takeable_cache()
    wanted: Wanted = {}
    for channel, pool in pools.items():
        key = (id(document), channel, frozenset(pool), on_call_ids)
        kept = cache.get(key)
        if kept is not None and kept[0] is document:
            wanted[channel] = set(kept[1])
            continue
        busy = {responder.id for responder in document.responders if responder.id not in pool}
        pairs = frozenset(
            (language.code, need.key)
            for language in document.languages
            for need in document.needs
            if pool
            and decide_route(
                document, language.code, need, moment, unavailable=busy, present=present, channel=channel
            ).responders
        )
        if len(cache) >= TAKEABLE_CACHE_SIZE:
            cache.clear()
        cache[key] = (document, pairs)  # the document kept too: its id is never another's meanwhile
        wanted[channel] = set(pairs)
    return wanted


def _takeable_cache() -> dict[_TakeableKey, tuple[RoutingDocument, frozenset[tuple[str, str]]]]:
    cache: dict[_TakeableKey, tuple[RoutingDocument, frozenset[tuple[str, str]]]] | None
    cache = current_app.extensions.get("line_queue.takeable")
    if cache is None:
        cache = current_app.extensions.setdefault("line_queue.takeable", {})
    return cache


def _head_of(
    document: RoutingDocument, limit: int, channels: tuple[str, ...], wanted: Wanted | None = None
) -> tuple[list[WaitingContact], bool]:
    """The head to offer from, and whether the queue goes on beyond it."""
    most = parallel_max_now(document)  # while Twilio's queue is behind, a caller ringing one phone is full
    if document.queue.channels == "shared":
        entries = head(document, limit, channels, offerable=True, wanted=wanted, parallel_max=most)
        return entries, len(entries) >= limit
    # Two lines: texters waiting never hide a caller from a responder free for calls. Their
    # pools are apart, so the order between the lines decides only who is offered first in
    # this pass: callers, whose silence is counted in seconds (a ring is a REST request, and so
    # is each text offer; behind 60 of them a caller waited 1.2 s for a first ring, not 0.45).
    heads = [
        head(document, limit, (channel,), offerable=True, wanted=wanted, parallel_max=most)
        for channel in _voice_first(channels)
    ]
    entries = [entry for part in heads for entry in part]
    return entries, any(len(part) >= limit for part in heads)


def _voice_first(channels: tuple[str, ...]) -> list[str]:
    return sorted(channels, key=lambda channel: channel != "voice")


def _offer_to(
    document: RoutingDocument, entries: list[WaitingContact], pools: dict[str, dict[str, Responder]],
    matcher: _Matcher, lane: str = "offers", *, may_defer: bool = False,
) -> tuple[int, int, bool]:  # fmt: skip
    """Offer each entry, in order, the free responders it may have (``matcher``: this pass's
    routing decisions); the pools shrink as it goes.

    First offers first: when several contacts wait, each is offered one responder, in order,
    before anyone is offered the extra phones of parallel ringing. In a surge a phone rings for
    every caller before a second rings for anyone (also in Twilio's calls-per-second queue, which
    places the line's REST calls in the order they came), and when responders are scarce they go
    to different callers rather than three to the first, of whom only one can take the call."""
    if not entries:
        return 0, 0, False
    offered_lately: dict[tuple[str, int], set[str]] | None = None

    def excluded(key: tuple[str, int]) -> set[str]:
        # Read once, and only if someone free could take one of them (a busy line: never).
        nonlocal offered_lately
        if offered_lately is None:
            offered_lately = recently_offered(entries, matcher.moment, document.queue.reoffer_after_seconds)
        return offered_lately.get(key, set())

    shared = document.queue.channels == "shared"
    waiting = [entry for entry in entries if matcher.capacity(entry) > entry.active_offers]
    # Several waiting: first a phone for each contact who has none, then the extra phones.
    rounds = [[entry for entry in waiting if not entry.active_offers], waiting] if len(waiting) > 1 else [waiting]
    given: Counter[tuple[str, int]] = Counter()

    def room_left(entry: WaitingContact) -> bool:
        return matcher.capacity(entry) - entry.active_offers - given[(entry.channel, entry.id)] > 0

    made = attempted = 0
    for number, contacts in enumerate(rounds):
        firsts = number == 0 and len(rounds) > 1
        if number and may_defer and made and api_is_slow() and any(room_left(entry) for entry in contacts):
            # Twilio is slow and first phones were just rung: the extra phones go to the next
            # pass (``fill`` runs it at once), which first rings whoever joined meanwhile.
            return made, attempted, True
        # While Twilio answers quickly each offer is made as soon as it is decided: Twilio
        # places calls in the order they came. Once it is slow, the rest of the round's offers
        # are decided (the pools shrink as they are), then made side by side: the round's last
        # contact would otherwise wait for every request before theirs. The next round starts
        # once they end, so every first phone is asked for before any extra one.
        later: list[Callable[[], int]] = []
        # First phones are decided for the whole round before any is rung (``first_phones``):
        # a caller is not given the only free speaker of the language of someone behind them
        # when another free responder would do for them.
        planned = _first_phones(contacts, pools, matcher, excluded, shared) if firsts else {}
        for entry in contacts:
            pool = pools.get(entry.channel, {})
            offerer = _offerers.get(entry.channel)
            key = (entry.channel, entry.id)
            room = matcher.capacity(entry) - entry.active_offers - given[key]
            if firsts:
                room = min(room, 1)
            if not pool or offerer is None or room <= 0:
                continue
            if firsts:
                chosen = [planned[key]] if key in planned and planned[key].id in pool else []
            else:
                chosen = matcher.eligible(entry, pool, partial(excluded, key))[:room]
            if not chosen:
                continue
            if later or api_is_slow():
                later.append(partial(offerer, entry.id, chosen, document))
            else:
                made += offerer(entry.id, chosen, document)
                matcher.offered()
            attempted += len(chosen)
            given[key] += len(chosen)
            # Offered or not (a lost race, a refused number), not again in this pass.
            for responder in chosen:
                for other in pools.values() if shared else (pool,):
                    other.pop(responder.id, None)
            if not any(pools.values()):
                break
        if later:
            made += sum(side_by_side(later, lane=lane))
            matcher.offered()
        if not any(pools.values()):
            break
    return made, attempted, False


def _first_phones(
    contacts: list[WaitingContact], pools: dict[str, dict[str, Responder]], matcher: _Matcher,
    excluded: Callable[[tuple[str, int]], set[str]], shared: bool,
) -> dict[tuple[str, int], Responder]:  # fmt: skip
    """A first phone for each of ``contacts`` (in queue order) who can have one now: who rings
    for whom in this round (``first_phones``, over this pass's routing decisions)."""
    wanting = [
        entry for entry in contacts
        if pools.get(entry.channel) and entry.channel in _offerers and matcher.capacity(entry) > entry.active_offers
    ]  # fmt: skip

    def lane_of(entry: WaitingContact) -> str:
        return "shared" if shared else entry.channel  # a responder taken is taken from every contact of a lane

    def choices(entry: WaitingContact, taken: set[str]) -> list[Responder]:
        pool = pools[entry.channel]
        free = {rid: responder for rid, responder in pool.items() if rid not in taken} if taken else pool
        return matcher.eligible(entry, free, partial(excluded, (entry.channel, entry.id)))

    slots = {(lane_of(entry), rid) for entry in wanting for rid in pools[entry.channel]}
    chosen = first_phones(wanting, lane_of, choices, Counter(lane for lane, _rid in slots))
    return {(entry.channel, entry.id): responder for entry, responder in zip(wanting, chosen, strict=True) if responder}


def first_phones(
    contacts: Sequence[WaitingContact], lane: Callable[[WaitingContact], str],
    choices: Callable[[WaitingContact, set[str]], list[Responder]], free: Counter[str],
) -> list[Responder | None]:  # fmt: skip
    """One responder (or None) for each contact, in queue order, none given twice in a lane
    (``free``: how many responders each lane has free).

    ``choices(contact, taken)``: whom the routing would ring for them, best first, were the
    responders ``taken`` (ids, in the contact's lane) not free; all equally fit for them (one
    target and language match: ``decide_route``). Each contact in turn takes the first of its
    choices still free, as in a plain pass in queue order; when none is, an earlier contact
    moves to another of its own choices to make room, if that frees one (an augmenting path,
    tried before anything worse). So an English caller first in line takes Ben rather than
    Diego, the only Spanish speaker free, when the Spanish caller behind them needs him; and
    nobody earlier ends up worse off: a contact moved keeps one of its own choices. Only a
    contact that can take none of its choices is given what the routing chooses among those
    left (another language, the fallback target), as a pass in order would have."""
    options: list[list[Responder]] = []
    holder: dict[tuple[str, str], int] = {}  # (lane, responder id) → the contact it rings for

    def place(index: int, tried: set[tuple[str, str]]) -> bool:
        slots = [(lane(contacts[index]), responder.id) for responder in options[index]]
        for slot in slots:  # a free one first: nobody moves when nobody needs to
            if slot not in holder:
                holder[slot] = index
                return True
        for slot in slots:
            if slot not in tried:
                tried.add(slot)
                if place(holder[slot], tried):
                    holder[slot] = index
                    return True
        return False

    left = Counter(free)
    for index, contact in enumerate(contacts):
        if left[lane(contact)] <= 0:
            options.append([])  # everyone in their lane rings for someone ahead of them
            continue
        options.append(choices(contact, set()))
        if not place(index, set()):
            taken = {rid for slot_lane, rid in holder if slot_lane == lane(contact)}
            options[index] = choices(contact, taken)
            if not place(index, set()):
                continue
        left[lane(contact)] -= 1
    given: list[Responder | None] = [None] * len(contacts)
    for (_lane, rid), index in holder.items():
        given[index] = next(responder for responder in options[index] if responder.id == rid)
    return given


# The fill pass's reads, built once: a need answer, a status callback and a text each run a
# pass (``crisisline.db``, "Statements built once"). ``ids`` are the responders on shift.
_ON_SHIFT: Any = bindparam("ids", expanding=True)
_STATES_OF = select(ResponderState).where(ResponderState.responder_id.in_(_ON_SHIFT))
# Their texts, in one statement: an open text offer each, and a row per conversation they are
# in (a few per counselor at most).
_TEXTS_OF: CompoundSelect[Any] = union_all(
    select(ConversationOffer.responder_id, literal("offer", String)).where(
        ConversationOffer.state == "open", ConversationOffer.responder_id.in_(_ON_SHIFT)
    ),
    select(Conversation.counselor_id, literal("active", String)).where(
        Conversation.state == "active", Conversation.counselor_id.in_(_ON_SHIFT)
    ),
)


def free_responders(
    document: RoutingDocument, moment: datetime, rotation: dict[str, datetime] | None = None,
    channels: tuple[str, ...] = CHANNELS,
) -> dict[str, dict[str, Responder]]:  # fmt: skip
    """Who could be offered a contact now, per channel: on shift, not paused, not ringing or on
    a call. Texts also need a counselor under their conversation limit without an open text
    offer; with shared channels, an open text offer keeps them from being rung too. Fills
    ``rotation`` with when each one on shift was last offered anything (read in the same go).
    ``channels``: the pools wanted (the others come back empty)."""
    present = on_call(document, moment)
    if not present:
        return {"voice": {}, "text": {}}
    ids = {"ids": [responder.id for responder in present]}
    states = {state.responder_id: state for state in db.session.scalars(_STATES_OF, ids)}
    if rotation is not None:
        rotation.update({rid: state.last_offered_at for rid, state in states.items() if state.last_offered_at})
    shared = document.queue.channels == "shared"
    # Who holds a text offer or how many texts they have matters to the text pool, and to the
    # voice pool only when the lines are one.
    texts_matter = shared or "text" in channels
    read = db.session.execute(_TEXTS_OF, ids) if texts_matter else ()
    texts = [(str(responder_id), str(kind)) for responder_id, kind in read]
    holding_text_offer = {responder_id for responder_id, kind in texts if kind == "offer"}
    loads = Counter(responder_id for responder_id, kind in texts if kind == "active")
    voice: dict[str, Responder] = {}
    text: dict[str, Responder] = {}
    for responder in present:
        state = states.get(responder.id)
        if state is not None and (state.paused or state.engaged_offer_id is not None):
            continue
        if not (shared and responder.id in holding_text_offer):
            voice[responder.id] = responder
        if (
            responder.kind == "counselor"
            and responder.id not in holding_text_offer
            and loads.get(responder.id, 0) < document.sms.max_conversations_per_counselor
        ):
            text[responder.id] = responder
    return {"voice": voice if "voice" in channels else {}, "text": text if "text" in channels else {}}


def capacity(document: RoutingDocument, entry: WaitingContact) -> int:
    """How many offers a contact may have at once: one, or ``parallel_max`` for a need rung in parallel."""
    return offers_allowed(document, entry.channel, entry.need)


def offers_allowed(document: RoutingDocument, channel: str, need_key: str | None) -> int:
    """How many offers a contact of this channel and need may have open at once: one, or
    ``parallel_max`` for a need rung in parallel, except while Twilio's calls-per-second queue
    is behind (``CallQueue``): then one, so every caller's first phone is placed before anyone's
    extra phones. Their extra phones follow once it has caught up (the next pass)."""
    if channel == "text":
        return 1
    need = document.need(need_key) if need_key else None
    parallel = need is not None and document.transfer.strategy_for(need) == "parallel"
    return parallel_max_now(document) if parallel else 1


def parallel_max_now(document: RoutingDocument) -> int:
    """How many phones a caller rung in parallel may have now (see ``offers_allowed``)."""
    return 1 if call_queue().behind() else document.transfer.parallel_max


class CallQueue:
    """How far behind Twilio's calls-per-second queue is, as this process's last placed call
    heard it (Twilio answers each REST-created call with its ``queue_time``). Twilio places the
    account's calls one by one in the order they came: at the default 1 CPS, 20 callers rung
    three phones each in a surge waited up to 57 s for a first ring, behind others' second and
    third phones. Per process and in memory: a process that has not placed a call lately knows
    no backlog, and a dead Redis or database cannot make the line ring fewer phones for long."""

    BEHIND_SECONDS = 1.0  # a new call would wait longer than this before it rings

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clear_at = 0.0  # time.monotonic() when the queue's last known call is placed

    def heard(self, queue_time_ms: int) -> None:
        """Twilio's answer to a call just placed: it waits ``queue_time_ms`` before it rings.
        The queue is first in, first out, so an answer that arrives late (another thread's)
        never brings the end of the queue forward."""
        with self.lock:
            self.clear_at = max(self.clear_at, time.monotonic() + max(0, queue_time_ms) / 1000)

    def behind(self) -> bool:
        with self.lock:
            return self.clear_at - time.monotonic() > self.BEHIND_SECONDS


def call_queue() -> CallQueue:
    """This process's view of Twilio's calls-per-second queue (one per app)."""
    queue: CallQueue | None = current_app.extensions.get("line_queue.call_queue")
    if queue is None:
        queue = current_app.extensions.setdefault("line_queue.call_queue", CallQueue())
    return queue


def eligible(
    document: RoutingDocument, entry: WaitingContact, pool: dict[str, Responder], excluded: set[str],
    moment: datetime, rotation: dict[str, datetime], *, present: Sequence[Responder] | None = None,
) -> list[Responder]:  # fmt: skip
    """The free responders the routing engine would choose for this contact, best first.
    ``present``: who is on call at ``moment``, when the caller knows already."""
    need = document.need(entry.need) or document.need(document.menu.default_need)
    if need is None:
        return []
    unavailable = {r.id for r in document.responders if r.id not in pool} | excluded
    if entry.channel == "text":
        unavailable |= {r.id for r in document.responders if r.kind != "counselor"}  # units take calls only
    decision = decide_route(
        document, entry.language, need, moment, unavailable=unavailable, last_offered=rotation, present=present,
        channel=entry.channel,
    )  # fmt: skip
    return [responder for responder in decision.responders if responder.id in pool]


class _Matcher:
    """``eligible`` for one pass, where the moment is fixed and the pools only shrink: who is on
    call is read once, and a kind of contact (line, language, need) that nobody free may take is
    known as such for the rest of the pass. The head a pass reads holds only kinds someone free
    could take when the look began, so this matters once its offers have taken those free, and
    for contacts whose need or language the routing no longer knows (always read): without it
    the pass asked the routing engine for each of them, over every responder's shifts."""

    def __init__(self, document: RoutingDocument, moment: datetime, rotation: dict[str, datetime]) -> None:
        self.document, self.moment, self.rotation = document, moment, rotation
        self.present = on_call(document, moment)
        self.nobody_for: set[tuple[str, str, str | None]] = set()
        self.capacities: dict[tuple[str, str | None], int] = {}

    def offered(self) -> None:
        """An offer was made: capacities are read again (these calls may have put Twilio's
        calls-per-second queue behind)."""
        self.capacities.clear()

    def capacity(self, entry: WaitingContact) -> int:
        """``capacity``, read once per line and need until the pass makes an offer."""
        kind = (entry.channel, entry.need)
        if kind not in self.capacities:
            self.capacities[kind] = capacity(self.document, entry)
        return self.capacities[kind]

    def eligible(
        self, entry: WaitingContact, pool: dict[str, Responder], excluded: Callable[[], set[str]]
    ) -> list[Responder]:
        """``eligible``, with ``excluded()`` (a read of the database) asked only when someone
        free could take this kind of contact were nobody excluded."""
        kind = (entry.channel, entry.language, entry.need)
        if kind in self.nobody_for:
            return []  # fewer free now than when nobody fitted, and exclusions only take away
        anyone = eligible(self.document, entry, pool, set(), self.moment, self.rotation, present=self.present)
        if not anyone:
            self.nobody_for.add(kind)
            return []
        not_them = excluded()
        if not not_them:
            return anyone
        return eligible(self.document, entry, pool, not_them, self.moment, self.rotation, present=self.present)


def recently_offered(
    entries: Sequence[WaitingContact], moment: datetime, cooldown_seconds: int
) -> dict[tuple[str, int], set[str]]:
    """Per contact, the responders not to offer it to now: ringing for it already, or who
    passed or missed it less than ``cooldown_seconds`` ago (small teams get it again after)."""
    since = moment - timedelta(seconds=cooldown_seconds)
    result: dict[tuple[str, int], set[str]] = {}
    voice_ids = [entry.id for entry in entries if entry.channel == "voice"]
    if voice_ids:
        for transfer_id, responder_id in db.session.execute(_VOICE_OFFERED, {"ids": voice_ids, "since": since}):
            result.setdefault(("voice", transfer_id), set()).add(responder_id)
    text_ids = [entry.id for entry in entries if entry.channel == "text"]
    if text_ids:
        for conversation_id, responder_id in db.session.execute(_TEXT_OFFERED, {"ids": text_ids, "since": since}):
            result.setdefault(("text", conversation_id), set()).add(responder_id)
    return result


def _passing_failure(outcome: Any) -> Any:
    return or_(outcome.in_(PASSING_REST_OUTCOMES), outcome.like("rest_error_5%"))


def _unreachable(outcome: Any) -> Any:
    return and_(outcome.like("rest_error%"), not_(_passing_failure(outcome)))


def _failing_again(contact: Any) -> Select[int, str]:
    """(contact, responder) pairs whose ring for ``contact`` failed for a moment more than
    ``PASSING_FAILURES_ALLOWED`` times: unreachable for it, as a refused number is."""
    return (
        select(Offer.transfer_id, Offer.responder_id)
        .where(contact, _passing_failure(Offer.outcome))
        .group_by(Offer.transfer_id, Offer.responder_id)
        .having(func.count(Offer.id) > PASSING_FAILURES_ALLOWED)
    )


# ``recently_offered``'s reads, built once: ``ids`` the contacts, ``since`` the cooldown's start.
_VOICE_OFFERED: CompoundSelect[Any] = union_all(
    select(Offer.transfer_id, Offer.responder_id).where(
        Offer.transfer_id.in_(bindparam("ids", expanding=True)),
        or_(Offer.state.in_(ACTIVE_OFFER_STATES), Offer.ended_at >= bindparam("since"), _unreachable(Offer.outcome)),
        or_(Offer.outcome.is_(None), Offer.outcome != "engaged_elsewhere"),
    ),
    _failing_again(Offer.transfer_id.in_(bindparam("ids", expanding=True))),
)
_TEXT_OFFERED = select(ConversationOffer.conversation_id, ConversationOffer.responder_id).where(
    ConversationOffer.conversation_id.in_(bindparam("ids", expanding=True)),
    or_(ConversationOffer.state == "open", ConversationOffer.decided_at >= bindparam("since")),
)


def anyone_can_take(
    document: RoutingDocument, language: str, need_key: str, transfer_id: int | None = None, *, channel: str = "voice"
) -> bool:
    """Is anyone who could take this contact on shift and not paused, even if busy right now?
    While so, a caller waits (up to the hold limit) rather than moving on. Responders whose
    phone Twilio could not ring for this contact do not count; for a texter (``channel``
    ``text``), nor do co-responder units, who take calls only."""
    need = document.need(need_key) or document.need(document.menu.default_need)
    if need is None:
        return False
    moment = now()
    units = {r.id for r in document.responders if r.kind != "counselor"} if channel == "text" else set()
    if not decide_route(document, language, need, moment, unavailable=units, channel=channel).responders:
        return False  # nobody on shift at all: no need to read who is paused
    unavailable = set(db.session.scalars(_PAUSED_OR_UNREACHABLE, {"transfer": transfer_id or 0}))  # 0: no row
    return bool(
        decide_route(document, language, need, moment, unavailable=unavailable | units, channel=channel).responders
    )


def rung_in_another_language(document: RoutingDocument, language: str, need_key: str) -> bool:
    """Would a contact of this language and need, rung now, be rung through to someone who does
    not speak their language? So when nobody free (not paused, not ringing or on a call) who
    could take them speaks it, and someone free who could does not. Who is free is read only
    when the routing could choose someone who does not speak it (never on a line where all who
    could take them speak it)."""
    need = document.need(need_key) or document.need(document.menu.default_need)
    if need is None:
        return False
    moment = now()
    present = on_call(document, moment)
    speakers = {responder.id for responder in present if language in responder.languages}
    if not decide_route(document, language, need, moment, unavailable=speakers, present=present).responders:
        return False  # nobody else could ever be rung for them
    decision = decide_route(document, language, need, moment, unavailable=unavailable_responder_ids(), present=present)
    return bool(decision.responders) and not decision.language_matched


# ``anyone_can_take``'s read, built once and in one round trip (every need answer on a line
# where nobody is free asks): who is paused, and whom Twilio could not ring for ``transfer``.
_PAUSED_OR_UNREACHABLE: CompoundSelect[Any] = union_all(
    select(ResponderState.responder_id).where(ResponderState.paused.is_(True)),
    select(Offer.responder_id).where(Offer.transfer_id == bindparam("transfer"), _unreachable(Offer.outcome)),
    _failing_again(Offer.transfer_id == bindparam("transfer")).with_only_columns(Offer.responder_id),
)


@responder_freed.connect
def _offer_to_the_freed(responder_id: str, **_: object) -> None:
    """A responder became free: offer them (and anyone else free) the first eligible contact.

    Started, not waited for: the request that freed them (a status callback, a counselor's
    text) answers nothing that depends on it, and its reply is sent only after this returns."""
    active = active_routing()
    if active is not None:
        document = active.document
        start_soon(FILL_KEY, lambda: fill(document))
