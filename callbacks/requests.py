"""Asking for a callback: from the hold loop (a key) or by text (``CALL``).

A request is one ``Callback`` row (unique per call or text conversation, so a repeated key
press or a duplicated webhook asks once) and its first attempt, a scheduled contact due now.
The person keeps their place: the callback queues from when they first started waiting.
A texter's ``CALL`` reaches :func:`request_from_text` through ``sms.texting.call_requested``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import case, or_, select, update

from callbacks.attempts import (
    OPEN_CALLBACK_STATES,
    bring_the_retry_forward,
    callback_priority,
    keep_to_its_promise,
    record_outcome,
    stop_callback_search_for_caller,
)
from crisisline.db import db, hold_lock, insert_ignoring_duplicates
from crisisline.models import Call, Callback, CheckIn, Conversation, Texter, Transfer
from ivr import call_log
from routing.document import RoutingDocument
from routing.store import active_routing
from sms.texting import call_requested
from transfer import flow, state
from workers.contacts import schedule

log = logging.getLogger(__name__)


def can_call_back(call: Call | None, document: RoutingDocument) -> bool:
    """Callbacks are on, and we have a number to call (withheld numbers are never sealed)."""
    return bool(document.callbacks.enabled and call is not None and call.sealed_caller)


def offer_callback_now(transfer: Transfer, document: RoutingDocument) -> bool:
    """Should this hold turn offer the callback key? After the configured wait."""
    if transfer.mode != "live" or not can_call_back(db.session.get(Call, transfer.call_id), document):
        return False
    waited = (state.now() - transfer.started_at).total_seconds()
    return waited >= document.callbacks.offer_after_seconds


def request_from_hold(
    transfer: Transfer, document: RoutingDocument, promise_confirmed: Callable[[], object] = lambda: None
) -> str:
    """The holding caller pressed the callback key. Returns ``requested`` (tell them and
    hang up), ``join`` (a responder accepted this very moment), or ``impossible``.

    ``promise_confirmed`` is called once the callback and the transfer's hand-over to it are
    committed (``crisisline.deadline.answer_if_late`` with the confirmation): what is slow after
    that (ending the rings, queueing the first attempt) must not turn a stored callback into
    the backup line. Idempotent: a repeated press finds the transfer already handed to the callback.
    """
    call = db.session.get(Call, transfer.call_id)
    if call is None or not can_call_back(call, document):
        return "impossible"
    request = _create(
        dedupe_key=f"call:{call.id}:{transfer.id}", origin="call", call_id=call.id, conversation_id=None,
        language=transfer.language, need=transfer.need, queue_since=transfer.queued_since,
        fresh_if_closed=transfer.state == "waiting",
    )  # fmt: skip
    callback = request.callback
    if not state.move_transfer(transfer.id, ("waiting",), "callback", end_reason="callback_requested"):
        db.session.commit()
        db.session.refresh(transfer)
        if transfer.state != "callback":  # the press lost its race: answered live, or gone
            answered = transfer.state in ("connecting", "connected")
            _take_back(request, call, "answered_live" if answered else "caller_gone")
            return "join" if answered else "impossible"
        promise_confirmed()
        _schedule_first_attempt(callback)  # idempotent: a repeated press, or a crash before scheduling
        return "requested"
    waited = round((state.now() - transfer.started_at).total_seconds())
    flow.record_event(transfer, "callback.requested", f"callback:{callback.id}:requested", waited_seconds=waited)
    db.session.commit()
    promise_confirmed()
    flow.stop_ringing(transfer)
    _schedule_first_attempt(callback)
    return "requested"


@flow.live_search_started.connect
def _their_callback_meets_their_call(transfer: Transfer, *, call: Call, **_: object) -> None:
    """The person whose callback is still to be made called the line live. One read finds
    that callback (none, the usual case: nothing more is read); then a search ringing for it
    stops (``stop_callback_search_for_caller``) and their live search keeps its place."""
    if not call.caller_hash:
        return
    callback = their_open_callback(call.caller_hash)
    if callback is None or callback.call_id == call.id:
        return
    stop_callback_search_for_caller(transfer, call)
    _keep_their_callbacks_place(transfer, callback)


def _keep_their_callbacks_place(transfer: Transfer, callback: Callback) -> None:
    """Their live search queues from their callback's place (when they first started
    waiting), with the higher of the two priorities, so they are not put behind everyone who
    called since they asked. One conditional UPDATE: only a search still waiting, only ever
    earlier and higher."""
    active = active_routing()
    if active is None:
        return
    since, priority = callback.queue_since, callback_priority(callback, active.document)
    moved = db.session.execute(
        update(Transfer)
        .where(
            Transfer.id == transfer.id,
            Transfer.state == "waiting",
            or_(Transfer.queued_since > since, Transfer.priority < priority),
        )
        .values(
            queued_since=case((Transfer.queued_since > since, since), else_=Transfer.queued_since),
            priority=case((Transfer.priority < priority, priority), else_=Transfer.priority),
        )
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if moved:
        db.session.refresh(transfer)  # its first hold step says the place it has now


@call_requested.connect
def _call_the_texter(conversation: Conversation, *, texter: Texter, document: RoutingDocument, **_: object) -> bool:
    return request_from_text(conversation, texter, document)


def request_from_text(conversation: Conversation, texter: Texter, document: RoutingDocument) -> bool:
    """A texter replied ``CALL``. Their conversation, closed for it (``sms.texting``), is handed
    to the callback, which keeps its queue place. False if callbacks are off or the number unknown."""
    if not document.callbacks.enabled or not texter.sealed_number:
        return False
    language = conversation.language or document.menu.default_language
    need = conversation.need or document.menu.default_need
    call = _call_for_texter(f"text-callback-{conversation.id}", texter, conversation.line_number, language, need)
    callback = _create(
        dedupe_key=f"text:{conversation.id}", origin="text", call_id=call.id, conversation_id=conversation.id,
        language=language, need=need, queue_since=conversation.queued_at or conversation.started_at,
    ).callback  # fmt: skip
    call_log.record_event(call, "callback.requested", f"callback:{callback.id}:requested", {"origin": "text"})
    db.session.commit()
    _schedule_first_attempt(callback)
    return True


def request_from_checkin(checkin: CheckIn) -> bool:
    """A check-in reply "2, I'd like to talk" on a line with ``followups.talk_by: call``.
    It queues from when the check-in was sent, so it goes ahead of contacts that came later."""
    active = active_routing()
    texter = db.session.get(Texter, checkin.texter_id) if checkin.texter_id else None
    if active is None or not active.document.callbacks.enabled or texter is None or not texter.sealed_number:
        return False
    document = active.document
    need = checkin.need or document.menu.default_need
    call = _call_for_texter(
        f"{CHECKIN_CALL_SID_PREFIX}{checkin.id}", texter, checkin.line_number, checkin.language, need
    )
    callback = _create(
        dedupe_key=f"{CHECKIN_KEY_PREFIX}{checkin.id}", origin="checkin", call_id=call.id, conversation_id=None,
        language=checkin.language, need=need, queue_since=checkin.sent_at or state.now(),
    ).callback  # fmt: skip
    call_log.record_event(call, "callback.requested", f"callback:{callback.id}:requested", {"origin": "checkin"})
    db.session.commit()
    _schedule_first_attempt(callback)
    return True


CHECKIN_KEY_PREFIX = "checkin:"
CHECKIN_CALL_SID_PREFIX = "checkin-callback-"  # the call record a check-in's "2" hangs its callback on


def checkin_of(callback: Callback) -> int | None:
    """The check-in whose "2, I'd like to talk" asked for this callback, if one did."""
    key = callback.dedupe_key or ""
    if callback.origin != "checkin" or not key.startswith(CHECKIN_KEY_PREFIX):
        return None
    number = key.removeprefix(CHECKIN_KEY_PREFIX)
    return int(number) if number.isdecimal() else None


def checkins_carried_by(callback: Callback) -> list[int]:
    """The check-ins whose "2, I'd like to talk" this callback carries: the one that asked for
    it, and any whose "2" joined it because the person had asked already (``_create``: one
    callback per person at a time). A joined "2" left its call record (``checkin-callback-<id>``),
    made while this callback was open."""
    carried = [own] if (own := checkin_of(callback)) is not None else []
    call = db.session.get(Call, callback.call_id) if callback.call_id else None
    if call is None or not call.caller_hash:
        return carried
    asked_while_open = [
        Call.caller_hash == call.caller_hash,
        Call.call_sid.startswith(CHECKIN_CALL_SID_PREFIX),
        Call.started_at >= callback.requested_at,
    ]
    if callback.finished_at is not None:
        asked_while_open.append(Call.started_at <= callback.finished_at)
    for call_sid in db.session.scalars(select(Call.call_sid).where(*asked_while_open)):
        number = call_sid.removeprefix(CHECKIN_CALL_SID_PREFIX)
        if number.isdecimal() and int(number) not in carried:
            carried.append(int(number))
    return carried


def callback_carrying(checkin: CheckIn) -> Callback | None:
    """The callback that carries this check-in's "2" (its own, or the one it joined), if any."""
    own = db.session.scalars(select(Callback).where(Callback.dedupe_key == f"{CHECKIN_KEY_PREFIX}{checkin.id}")).first()
    if own is not None:
        return own
    asked = db.session.scalars(select(Call).where(Call.call_sid == f"{CHECKIN_CALL_SID_PREFIX}{checkin.id}")).first()
    if asked is None or not asked.caller_hash:
        return None  # its "2" asked for no callback (talk by text, or callbacks off)
    return db.session.scalars(
        select(Callback)
        .join(Call, Call.id == Callback.call_id)
        .where(
            Call.caller_hash == asked.caller_hash,
            Callback.requested_at <= asked.started_at,
            or_(Callback.finished_at.is_(None), Callback.finished_at >= asked.started_at),
        )
        .order_by(Callback.id)
        .limit(1)
    ).first()


# The call records of callbacks asked for by text (``CALL``, a check-in's "2"): they hold the
# texter's number, so the purge scrubs them by the shorter of the calls' and the texts' windows.
TEXT_BORN_CALL_SID_PREFIXES = ("text-callback-", CHECKIN_CALL_SID_PREFIX)


def _call_for_texter(call_sid: str, texter: Texter, line_number: str | None, language: str, need: str) -> Call:
    """The call record a callback for someone who texted hangs on (idempotent by ``call_sid``,
    which starts with one of ``TEXT_BORN_CALL_SID_PREFIXES``)."""
    db.session.execute(
        insert_ignoring_duplicates(
            Call,
            {
                "call_sid": call_sid,
                "caller_hash": texter.number_hash,
                "sealed_caller": texter.sealed_number,  # both sealed under the "phone" context
                "line_number": line_number,
                "language": language,
                "need": need,
                "route": "callback",
                "status": "callback",
                "started_at": state.now(),
            },
        )
    )
    return db.session.scalars(select(Call).where(Call.call_sid == call_sid)).one()


class _Request(NamedTuple):
    """The callback a request is answered with, and, if it is the person's own from an earlier
    request that this one promised again, the promise it had before (``promised_at``) and the
    new one: a key press that then loses its race puts the earlier promise back (``_take_back``)."""

    callback: Callback
    promised_again: tuple[datetime | None, datetime] | None = None


def _create(
    *, dedupe_key: str, origin: str, call_id: int, conversation_id: int | None, language: str, need: str,
    queue_since: datetime, fresh_if_closed: bool = False,
) -> _Request:  # fmt: skip
    """The callback for this request: the person's own still to be made, if they asked before
    (on another call, or by text), so two counselors never dial one phone at once; else a new
    one (once per ``dedupe_key``). ``fresh_if_closed``: this request is a new one (their hold
    is still waiting), so the request's callback cancelled before does not answer it."""
    call = db.session.get(Call, call_id)
    if call is not None and call.caller_hash:
        _one_request_at_a_time(call)
        already = their_open_callback(call.caller_hash)
        promised_before = already.promised_at if already is not None else None
        # A new promise: counted from now, so the person's contacts before it (a counselor
        # reached on the call they ask from) do not cancel it as "called in", and it is not
        # given up by the clock of their first request. Their place in line and the time they
        # first asked (metrics, the counselor's briefing) are kept. Only while it is still open:
        # one given up or made this instant (the lock orders requests, not the clock's give-up)
        # is not promised again; this request gets a new one.
        if already is not None and _promised_again(already):
            # One that lost its next step (a crash between two commits) is given it now: never
            # promised again over a callback nothing will make.
            if not keep_to_its_promise(already):
                db.session.commit()
            # Waiting for its next try: they can be reached now (they have just asked), so
            # that try is due now, once, rather than at its old time.
            bring_the_retry_forward(already)
            assert already.promised_at is not None  # stamped by ``_promised_again``
            return _Request(already, (promised_before, already.promised_at))
    db.session.execute(
        insert_ignoring_duplicates(
            Callback,
            {
                "dedupe_key": dedupe_key, "origin": origin, "call_id": call_id,
                "conversation_id": conversation_id, "language": language, "need": need, "state": "waiting",
                "attempts": 0, "queue_since": queue_since, "requested_at": state.now(),
            },
        )
    )  # fmt: skip
    callback = db.session.scalars(select(Callback).where(Callback.dedupe_key == dedupe_key)).one()
    db.session.commit()
    if fresh_if_closed and callback.state not in OPEN_CALLBACK_STATES:
        # Asked again on the same hold after this one was cancelled (an acceptance that was
        # then withdrawn): a new one, not the cancelled one, which would never be made.
        return _create(
            dedupe_key=f"{dedupe_key}:again:{callback.id}", origin=origin, call_id=call_id,
            conversation_id=conversation_id, language=language, need=need, queue_since=queue_since,
            fresh_if_closed=True,
        )  # fmt: skip
    return _Request(callback)


def their_open_callback(caller_hash: str) -> Callback | None:
    """The person's callback still to be made (their first, if somehow more than one)."""
    return db.session.scalars(
        select(Callback)
        .join(Call, Call.id == Callback.call_id)
        .where(Call.caller_hash == caller_hash, Callback.state.in_(OPEN_CALLBACK_STATES))
        .order_by(Callback.id)
        .limit(1)
    ).first()


def _promised_again(callback: Callback) -> bool:
    """Counts the promise from now if the callback is still open (a conditional UPDATE)."""
    renewed = db.session.execute(
        update(Callback)
        .where(Callback.id == callback.id, Callback.state.in_(OPEN_CALLBACK_STATES))
        .values(promised_at=state.now())
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    db.session.refresh(callback)
    return bool(renewed)


def _one_request_at_a_time(call: Call) -> None:
    """Hold this person's lock until the request commits, so that a second request from them
    (two calls pressing the key together, a key and a CALL) waits, then finds the callback this
    one made. PostgreSQL: a transaction-scoped advisory lock on their keyed hash (no row, no
    personal data). SQLite: a write, which takes its one database-wide write lock."""
    hold_lock(f"callback:{call.caller_hash}")


def _take_back(request: _Request, call: Call, outcome: str) -> None:
    """The callback key pressed on ``call`` lost its race: the caller was answered live, or left,
    before the press could hand their hold to the callback, so nothing was promised. A callback
    this call asked for is cancelled (``outcome``; only before its first attempt). One asked for
    earlier (another call, a text) that this press was handed stays open, with its promise as it
    was before the press: a counselor who has the person live on this call counts as reaching
    them since (``line_queue.reached``: the attempt is then not made, ``called_in``), and while
    they hold on it the attempt waits, as if they had never pressed (before, the press cancelled
    it: the earlier promise was dropped with no attempt, no "we tried" text and no alert)."""
    if request.callback.call_id == call.id:
        _cancel(request.callback, outcome)
        return
    if request.promised_again is not None:
        before, stamped = request.promised_again
        db.session.execute(
            update(Callback)
            .where(Callback.id == request.callback.id, Callback.promised_at == stamped)  # not promised since
            .values(promised_at=before)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        db.session.refresh(request.callback)


def _cancel(callback: Callback, outcome: str) -> None:
    canceled = db.session.execute(
        db.update(Callback)
        .where(Callback.id == callback.id, Callback.attempts == 0, Callback.state == "waiting")
        .values(state="canceled", outcome=outcome, finished_at=state.now())
    ).rowcount  # type: ignore[attr-defined]
    if canceled:
        record_outcome(callback, "callback.canceled", outcome)
    db.session.commit()


def _schedule_first_attempt(callback: Callback) -> None:
    """Its first attempt, due now: the row is committed here, its job queued off the request
    thread (a hung Redis must not hold the person's answer; the clock queues what it lost)."""
    schedule(
        "callback", f"callback:{callback.id}:1", state.now(), call_id=callback.call_id, callback_id=callback.id,
        enqueue_off_this_thread=True,
    )  # fmt: skip
