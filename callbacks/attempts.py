"""Callback attempts: counselor first, then the person, retried, then a text.

Each attempt is a scheduled contact (kind ``callback``, at most once) that starts a callback
*transfer*: the ordinary search for a responder (same whisper, same one-winner accept, a pass
rings the next person), except nobody is on the line yet. Only when a responder presses 1 is
the person dialled into the responder's conference, so the person is never called by a line
with nobody on it. No answer → the next attempt after the configured wait; after the last,
kind ``callback_missed`` texts them how to reach us.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import requests
from blinker import Namespace
from flask import current_app
from sqlalchemy import ColumnElement, Select, bindparam, func, or_, select, update
from twilio.base.exceptions import TwilioRestException

import line_queue
from crisisline.background import start_soon
from crisisline.db import commit_keeping_loaded, db, insert_once
from crisisline.failsafe import answered_by_failsafe
from crisisline.models import Call, Callback, ScheduledContact, Texter, Transfer
from crisisline.privacy import Vault
from crisisline.urls import public_url
from ivr.call_log import PHONE_CONTEXT, phone_hash, record_event
from line_queue.reached import HOLDING, REACHED, reached_since
from routing.document import RoutingDocument
from routing.store import active_routing
from sms import outbox
from sms.conversations import find_or_create_texter
from transfer import dispatch, flow, state
from workers.contacts import (
    contact_needs_a_human,
    enqueue_or_leave_to_the_clock,
    held_back,
    schedule,
    sends,
    text_outcome,
)

log = logging.getLogger(__name__)
signals = Namespace()
# A callback ended without reaching the person (no answer to its last attempt, or nobody took
# its search in time), its "we tried" text stored. Sender: the Callback; ``outcome``. Features
# above callbacks react (``followups``: a check-in's "2, I'd like to talk" that no call reached
# is flagged to the supervisors). Sent after the commit, once per callback.
callback_gave_up = signals.signal("callback-gave-up")
PERSON_LEG_GRACE = timedelta(seconds=120)  # past ring timeout: ask Twilio about a silent person leg
UNSURE_LEG_GRACE = timedelta(seconds=30)  # past ring timeout: a leg never heard of was not placed
# An answered person leg's answer webhook has come and gone by then: answering machine detection
# (up to 30 s, Twilio's default) and the webhook's own 15 s, with room to spare. Counted from the
# leg's ``start_time``: a dial Twilio's calls-per-second queue held starts late.
ANSWER_HANDLED_WITHIN = timedelta(seconds=90)


def _active_document() -> RoutingDocument | None:
    active = active_routing()
    return active.document if active else None


@sends("callback", retry_safe=True)
def start_attempt(contact: ScheduledContact) -> str:
    """Start attempt ``contact.attempt``: a callback search that rings responders now.

    Safe to run twice (a worker killed mid-way is simply run again): the attempt counter
    moves once, and a search already started for this attempt is not started again.
    """
    document = _active_document()
    callback = db.session.get(Callback, contact.callback_id) if contact.callback_id else None
    if callback is None or document is None:
        return "not_needed"
    db.session.execute(
        update(Callback)
        .where(
            Callback.id == callback.id,
            Callback.state.in_(("waiting", "retry_wait")),
            Callback.attempts == contact.attempt - 1,
        )
        .values(state="waiting", attempts=contact.attempt)
    )
    db.session.commit()
    db.session.refresh(callback)
    started = db.session.scalar(_STARTED_SEARCHES, {"callback": callback.id}) or 0
    if callback.state != "waiting" or callback.attempts != contact.attempt or started >= contact.attempt:
        return "not_needed"
    db.session.refresh(callback)
    call = db.session.get(Call, callback.call_id)
    assert call is not None
    reached = _reached_us_since(callback, call)
    if reached == HOLDING:
        # They called in again and hold live now: that call keeps their place, and a search for
        # them now would ring a counselor to call a phone that is busy on our line. Asked again
        # in a minute: a human reached them by then (canceled below), or they hung up without
        # one (this attempt runs then; their callback is not lost with that call).
        due = state.now() + HOLDING_RECHECK
        schedule(
            "callback", f"callback:{callback.id}:{contact.attempt}:holding:{due:%Y%m%d%H%M}", due,
            call_id=callback.call_id, callback_id=callback.id, attempt=contact.attempt,
        )  # fmt: skip
        return "not_needed"
    if reached == REACHED:
        _cancel_as_called_in(callback)
        return "not_needed"
    transfer = state.start_transfer(
        call, callback.language, callback.need, language_matched=True, callback=callback,
        priority=callback_priority(callback, document),
    )  # fmt: skip
    flow.record_event(transfer, "callback.attempt", f"callback:{callback.id}:attempt:{contact.attempt}")
    db.session.commit()
    dispatch.advance(transfer.id, document)
    return "sent"


def callback_priority(callback: Callback, document: RoutingDocument) -> int:
    """The priority a callback queues with: its need's, at least a check-in answer's for one
    a check-in's "2" asked for (it keeps the place a check-in answer has, as by text)."""
    need = document.need(callback.need)
    priority = need.priority if need else 0
    if callback.origin == "checkin":
        priority = max(line_queue.CHECKIN_PRIORITY, priority)
    return priority


# An attempt's search ended because its person held live on another call when a counselor
# accepted: nobody tried their phone, so the same attempt runs again (``_called_in_meanwhile``).
PERSON_CALLED_IN = "person_called_in"
# ...or because Twilio refused for a moment to place the person's call (``_not_placed_for_now``).
PERSON_NOT_PLACED = "person_not_placed"
# The searches an attempt number counts: one per attempt, searches ended unrung (above) aside.
_STARTED_SEARCHES = select(func.count(Transfer.id)).where(
    Transfer.callback_id == bindparam("callback"),
    or_(Transfer.end_reason.is_(None), Transfer.end_reason.not_in((PERSON_CALLED_IN, PERSON_NOT_PLACED))),
)
# Twilio's refusals after which it created nothing and a later request may be taken (too many
# requests; Twilio failing), as ``sms.outbox`` retries texts; and a connection never made.
_FOR_NOW_STATUSES, _FOR_NOW_CODES = frozenset({429, 500, 503}), frozenset({20429, 20500, 20503})
# Twilio's refusals to place a call that are about the number itself, for good (its error
# dictionary): 21211 "invalid 'To' phone number" and 21217 "phone number does not appear to be
# valid" (not a number that can be called or texted: no "we tried" text either); 21214 "'To'
# phone number cannot be reached", 21215 (the account's Geo Permissions do not allow it) and
# 21216 "call blocked by Twilio" (fraud risk, regulation): no call will go, a text may. 13224 is
# left out: Twilio says it can also come from a carrier's outage.
INVALID_NUMBER_CODES = frozenset({21211, 21217})
NOT_CALLABLE_CODES = frozenset({21214, 21215, 21216})
NUMBER_INVALID, NUMBER_NOT_CALLABLE = "number_invalid", "number_not_callable"
# How many of a callback's searches may end so before a refusal counts as an attempt: a Twilio
# that refuses for an hour must not keep ringing counselors for a call it will not place.
NOT_PLACED_AT_MOST = 3
NOT_PLACED_RETRY_AFTER = timedelta(minutes=1)


def _placed_nothing_for_now(error: BaseException) -> bool:
    if isinstance(error, TwilioRestException):
        return error.code in _FOR_NOW_CODES or error.status in _FOR_NOW_STATUSES
    # Not any ConnectionError: "connection aborted" can come after the request went out.
    return isinstance(error, requests.ConnectTimeout)


def _not_placed_for_now(transfer: Transfer, callback: Callback) -> bool:
    """Twilio refused for a moment to place the person's call: their phone never rang, so this
    search ends without using one of their tries and the same attempt runs again in a minute,
    ``NOT_PLACED_AT_MOST`` times at most (False after that: it then counts). Before, each such
    refusal used a try, and after the last they were texted "we tried to call you back"."""
    its_searches = (Transfer.callback_id == callback.id, Transfer.end_reason == PERSON_NOT_PLACED)
    ended_so = db.session.scalar(select(func.count(Transfer.id)).where(*its_searches)) or 0
    if ended_so >= NOT_PLACED_AT_MOST:
        return False
    if state.move_transfer(transfer.id, ("connecting",), "ended", end_reason=PERSON_NOT_PLACED):
        flow.record_event(transfer, "callback.not_placed", f"transfer:{transfer.id}:not_placed")
        _same_attempt_again(callback, f"not-placed:{transfer.id}", state.now() + NOT_PLACED_RETRY_AFTER)
    db.session.commit()
    return True


def _same_attempt_again(callback: Callback, why: str, due: datetime) -> None:
    """The attempt's search ended unrung (nobody tried their phone): the same attempt again at
    ``due``, keyed by ``why``. In the transaction that ended the search (``schedule`` commits
    both): never ended with nothing due. The callback stays ``waiting``, for this attempt."""
    schedule(
        "callback", f"callback:{callback.id}:{callback.attempts}:{why}", due, call_id=callback.call_id,
        callback_id=callback.id, attempt=callback.attempts,
    )  # fmt: skip


def _cancel_as_called_in(callback: Callback) -> None:
    """A counselor has had the person live since they asked: the callback is done (once)."""
    canceled = db.session.execute(
        update(Callback)
        .where(Callback.id == callback.id, Callback.state == "waiting")
        .values(state="canceled", outcome="called_in", finished_at=state.now())
    ).rowcount  # type: ignore[attr-defined]
    if canceled:
        record_outcome(callback, "callback.canceled", "called_in")
    db.session.commit()


HOLDING_RECHECK = timedelta(minutes=1)


def _reached_us_since(callback: Callback, call: Call) -> str | None:
    """Whether the person reached the line after asking (``line_queue.reached``): on the call
    they asked on, only a counselor joining them after the promise (or their holding on it
    still), and the conversation their CALL came from left out, which that CALL closed before
    storing the callback."""
    return reached_since(
        call.caller_hash, callback.promised_since, asked_on_call=call.id, own_conversation=callback.conversation_id
    )


@sends("callback_missed", one_text=True)
def send_missed_text(contact: ScheduledContact) -> str:
    """We could not reach them (no answer, or nobody free in time): say so, and how to reach us."""
    document = _active_document()
    callback = db.session.get(Callback, contact.callback_id) if contact.callback_id else None
    call = db.session.get(Call, callback.call_id) if callback else None
    if callback is None or call is None or not call.sealed_caller or document is None:
        return "no_number"
    reached = _reached_us_since(callback, call)
    waits = held_back(
        contact, reached, call.caller_hash, contact.created_at, this_call=call.id, this_callback=callback.id
    )
    if waits is not None:
        return waits
    number = _vault().open(call.sealed_caller, context=PHONE_CONTEXT)
    known = db.session.scalars(select(Texter).where(Texter.number_hash == phone_hash(number))).first()
    if known is not None and known.opted_out:
        return "opted_out"
    texter = known or find_or_create_texter(number, phone_hash(number))
    settings = current_app.extensions["crisisline.settings"]
    from_number = call.line_number or settings.line_phone_number
    if not from_number:
        return "no_line_number"
    sent = outbox.send_text(
        key=f"contact:{contact.id}", to_number=number, from_number=from_number,
        body=document.language(callback.language).text("callback_missed"), party="line", texter=texter,
    )  # fmt: skip
    return text_outcome(contact, sent)


@flow.callback_accepted.connect
def _dial_the_person(transfer: Transfer, *, document: RoutingDocument, **_: object) -> bool | str:
    return call_person(transfer, document)


def call_person(transfer: Transfer, document: RoutingDocument) -> bool | str:
    """A responder accepted a callback: ring the person into their conference (once).

    True if their phone rings (or may: Twilio's answer was lost), else the key of the staff
    prompt that tells the responder why not."""
    callback = db.session.get(Callback, transfer.callback_id) if transfer.callback_id else None
    call = db.session.get(Call, transfer.call_id)
    if callback is None or call is None or not call.sealed_caller:
        return NO_ANSWER
    if transfer.caller_call_sid:
        return True  # the same accept delivered twice: the person is already being rung
    reached = _reached_us_since(callback, call)
    if reached is not None:
        # They called the line again while this search rang: never dial a phone that is busy
        # on our own line, or a person a counselor has had since.
        return _called_in_meanwhile(transfer, callback, reached)
    number = _vault().open(call.sealed_caller, context=PHONE_CONTEXT)
    try:
        placed = dispatch.rest_client().calls.create(
            to=number,
            from_=dispatch.line_number(transfer),
            url=public_url("callbacks.person_answer", transfer=transfer.id),
            method="POST",
            fallback_url=public_url("voice.fallback"),
            fallback_method="POST",
            status_callback=public_url("callbacks.person_status", transfer=transfer.id),
            status_callback_event=dispatch.LEG_EVENTS,
            status_callback_method="POST",
            timeout=document.callbacks.ring_timeout_seconds,
            # An answering machine is not the person: we hang up (no message, for their
            # privacy), tell the counselor, and try again later.
            machine_detection="Enable",
        )
    except (requests.ReadTimeout, requests.exceptions.ChunkedEncodingError) as error:
        # Twilio may have placed it all the same: the responder waits as if it rings. Its own
        # webhooks bring its SID (``adopt_person_leg``); if none comes, ``tend`` ends the attempt.
        log.warning("callback %s: unsure whether the person's call was placed (%s)", callback.id, type(error).__name__)
        _calling(transfer, callback, unsure=True)
        return True
    except (TwilioRestException, requests.RequestException, OSError) as error:
        code = getattr(error, "code", None) or type(error).__name__
        log.warning("callback %s: the person's call was not placed (%s)", callback.id, code)
        if isinstance(error, TwilioRestException) and error.code in INVALID_NUMBER_CODES | NOT_CALLABLE_CODES:
            return _refused_for_good(transfer, callback, error.code)
        if _placed_nothing_for_now(error) and _not_placed_for_now(transfer, callback):
            return NO_ANSWER  # "we will try again later": true, and it costs them no try
        return person_not_reached(transfer, document, "not_placed", tell_responder=False)  # told in the reply
    db.session.execute(
        update(Transfer)
        .where(Transfer.id == transfer.id, Transfer.caller_call_sid == "")
        .values(caller_call_sid=placed.sid)
    )
    # queue_time: how long Twilio's calls-per-second queue held the call before it rang (ms).
    queued_ms = dispatch.queue_time_ms(placed)
    line_queue.call_queue().heard(queued_ms)
    _calling(transfer, callback, queue_time_ms=queued_ms)
    return True


def _refused_for_good(transfer: Transfer, callback: Callback, code: int) -> str:
    """Twilio will never place a call to this number: the callback ends now (once), with no
    further try, so no counselor is rung and briefed for it again. The "we tried" text goes
    only where a text can arrive (not to an invalid number); the give-up tells supervisors."""
    outcome = NUMBER_INVALID if code in INVALID_NUMBER_CODES else NUMBER_NOT_CALLABLE
    if state.move_transfer(transfer.id, ("connecting",), "ended", end_reason=outcome):
        flow.record_event(transfer, "callback.number_refused", f"transfer:{transfer.id}:number_refused", code=code)
        give_up(callback, outcome, text=outcome != NUMBER_INVALID)
    db.session.commit()
    return NUMBER_REFUSED


def _calling(transfer: Transfer, callback: Callback, **detail: object) -> None:
    db.session.execute(
        update(Callback).where(Callback.id == callback.id, Callback.state == "waiting").values(state="calling")
    )
    flow.record_event(transfer, "callback.dialled", f"callback:{callback.id}:dialled:{transfer.id}", **detail)
    db.session.commit()


# What a responder who accepted a callback is told when the person is not rung.
NO_ANSWER, LAST_NO_ANSWER = "callback_no_answer", "callback_no_answer_last"
CALLED_IN, HOLDING_LIVE = "callback_called_in", "callback_person_holding"
NUMBER_REFUSED = "callback_number_refused"


def _called_in_meanwhile(transfer: Transfer, callback: Callback, reached: str) -> str:
    """The person called the line again while this attempt's search rang a counselor. Reached
    by a counselor since: the callback is done. Holding live now: this attempt ends unrung and
    is run again in a minute, as the same attempt (nobody tried their phone: it costs them none
    of their tries; their live call goes first; hanging up on it loses them nothing). The
    responder who accepted is told, and is free for the next contact (their live call among
    them) once they hang up."""
    moved = state.move_transfer(transfer.id, ("connecting",), "ended", end_reason=PERSON_CALLED_IN)
    flow.record_event(transfer, "callback.person_called_in", f"transfer:{transfer.id}:called_in", reached=reached)
    if reached == REACHED:
        _cancel_as_called_in(callback)
        return CALLED_IN
    if moved:
        _same_attempt_again(callback, f"holding:{transfer.id}", state.now() + HOLDING_RECHECK)
    db.session.commit()
    return HOLDING_LIVE


# The caller's own callback searches still ringing counselors (none accepted yet): read once
# per live search begun, for a caller whose number is known.
_RINGING_FOR_CALLER = (
    select(Transfer)
    .join(Call, Call.id == Transfer.call_id)
    .where(
        Call.caller_hash == bindparam("caller_hash"),
        Call.id != bindparam("call"),
        Transfer.mode == "callback",
        Transfer.state == "waiting",
    )
)


def stop_callback_search_for_caller(transfer: Transfer, call: Call) -> None:
    """The person called the line live while a search for their callback rang counselors
    (``callbacks.requests`` calls this when they have a callback still to be made):
    that search ends unaccepted and stops ringing, so the counselor free for their live call is
    not rung and briefed for their callback (nor counted a miss for not taking it). Their
    callback keeps its place: the same attempt is asked again in a minute, as when a counselor
    accepts it while they hold (``_called_in_meanwhile``)."""
    if not call.caller_hash:
        return
    for search in db.session.scalars(_RINGING_FOR_CALLER, {"caller_hash": call.caller_hash, "call": call.id}).all():
        callback = db.session.get(Callback, search.callback_id) if search.callback_id else None
        if callback is None:
            continue
        if not state.move_transfer(search.id, ("waiting",), "ended", end_reason=PERSON_CALLED_IN):
            db.session.commit()  # a counselor accepted it first: their 1 finds the person holding
            continue
        flow.record_event(
            search, "callback.person_called_in", f"transfer:{search.id}:called_in", reached=HOLDING, live=transfer.id
        )
        # In the transaction that ends the search (``schedule`` commits both): never ended with
        # nothing due. The callback stays ``waiting``, for this same attempt.
        schedule(
            "callback", f"callback:{callback.id}:{callback.attempts}:holding:{search.id}",
            state.now() + HOLDING_RECHECK, call_id=callback.call_id, callback_id=callback.id,
            attempt=callback.attempts,
        )  # fmt: skip
        flow.stop_ringing(search)


def adopt_person_leg(transfer: Transfer, call_sid: str) -> None:
    """The person's leg reported itself (its SID unknown: Twilio's answer to placing it was
    lost). From now on it is this attempt's leg."""
    if transfer.caller_call_sid or not call_sid:
        return
    db.session.execute(
        update(Transfer)
        .where(Transfer.id == transfer.id, Transfer.caller_call_sid == "")
        .values(caller_call_sid=call_sid)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    db.session.refresh(transfer)


def person_answered(transfer: Transfer, promise_join: Callable[[], bool] = lambda: True) -> bool:
    """The person picked up: into the conference if their responder is still there.

    ``promise_join`` (``crisisline.deadline.answer_if_late`` with their join TwiML) is called
    once their join is stored and their responder is known to be in the room: should the
    request's deadline pass after that, it answers with the room, not the backup line. False
    if the deadline has already answered with the backup line: the attempt ends there (the
    fail-safe's hook), and is not counted connected."""
    if answered_by_failsafe(transfer.caller_call_sid):
        # This is the late handler of an answer the deadline gave: the fail-safe has put them
        # through to the backup line, and its hook ends this attempt there.
        return False
    if not flow.caller_joined(transfer):
        return False
    if not state.staff_on_call(transfer.id):
        # Their counselor hung up while the phone rang: no empty conference; search again.
        state.move_transfer(transfer.id, ("connected",), "ended", end_reason="staff_left")
        flow.record_event(transfer, "transfer.staff_left", f"transfer:{transfer.id}:staff_left")
        db.session.commit()
        return False
    if not promise_join():
        return False
    connected = db.session.execute(
        update(Callback)
        # From ``waiting`` too: the person's answer can be handled before the press of 1 that
        # rang them has recorded ``calling`` (which then changes nothing).
        .where(Callback.id == transfer.callback_id, Callback.state.in_(("waiting", "calling")))
        .values(state="connected", connected_at=state.now(), outcome="connected", finished_at=state.now())
    ).rowcount  # type: ignore[attr-defined]
    callback = db.session.get(Callback, transfer.callback_id) if connected and transfer.callback_id else None
    if callback is not None:
        record_outcome(callback, "callback.connected", "connected")
    db.session.commit()
    return True


# A callback's outcome (``callback.canceled``): the fail-safe put the person it reached through
# to the backup line.
TO_BACKUP = "to_backup"


@flow.callback_on_backup.connect
def _handed_to_backup(transfer: Transfer, **_: object) -> None:
    """The fail-safe put the person this attempt reached through to the backup line (their
    answer, or a later request of their leg, failed): the callback ends there, once, and no
    later attempt rings them; the counselor waiting for them is told and freed by the sender.
    A callback already connected keeps that outcome. The sender commits."""
    if transfer.callback_id is None:
        return
    ended = db.session.execute(
        update(Callback)
        .where(Callback.id == transfer.callback_id, Callback.state.in_(("waiting", "calling")))
        .values(state="canceled", outcome=TO_BACKUP, finished_at=state.now())
    ).rowcount  # type: ignore[attr-defined]
    callback = db.session.get(Callback, transfer.callback_id) if ended else None
    if callback is not None:
        record_outcome(callback, "callback.canceled", TO_BACKUP)


def person_leg_ended(transfer: Transfer, document: RoutingDocument, status: str, call_sid: str) -> None:
    """The person's leg ended (Twilio may repeat or reorder this). Never answered → their
    responder is told and the next attempt is scheduled; answered → the call is over, in
    whichever round it was (their responder may have left and a new search begun)."""
    call = db.session.get(Call, transfer.call_id)
    later_rounds = db.session.scalars(
        select(Transfer).where(
            Transfer.call_id == transfer.call_id,
            Transfer.id != transfer.id,
            Transfer.caller_call_sid == call_sid,
            Transfer.state.in_(state.OPEN_TRANSFER_STATES),
        )
    ).all()
    for later in later_rounds:
        if call is not None:
            flow.leg_gone(later, call)
    if state.move_transfer(transfer.id, ("connected",), "ended", end_reason="caller_left"):
        flow.record_event(transfer, "transfer.ended", f"transfer:{transfer.id}:ended")
        db.session.commit()
        flow.stop_ringing(transfer)
        # As for a live caller: a counselor still in the room (the person hung up during the
        # greeting, before joining it) is told and their leg ended, which frees them.
        flow.release_staff(transfer)
        return
    if transfer.state != "connecting":
        return
    if status != "completed":
        person_not_reached(transfer, document, status.replace("-", "_"))
        return
    # Answered (a phone not answered ends ``no-answer``, ``busy``, ``failed`` or ``canceled``),
    # yet never in the room: their answer was never handled as a join (``person_answered``
    # joins them before the greeting, so a hang-up during it ends a connected attempt, above).
    if answered_by_failsafe(call_sid):
        flow.on_the_backup_line(transfer, "failsafe")
        return
    # Twilio is asked whether the fail-safe's ``<Dial>`` took them to the backup line: off this
    # status callback's thread. Unsure there, the minute's ``tend`` asks again.
    start_soon(f"answered-unjoined:{transfer.id}", partial(_settle_answered_unjoined, transfer.id, call_sid))


def _settle_answered_unjoined(transfer_id: int, call_sid: str) -> None:
    """In its own app context (``start_soon``): settle an attempt whose person's leg completed
    without joining the room."""
    transfer = db.session.get(Transfer, transfer_id)
    document = _active_document()
    if transfer is None or document is None:
        return
    if transfer.state == "connecting":
        answered_but_never_joined(transfer, document, "completed")
    elif transfer.state == "connected" and transfer.caller_call_sid == call_sid:
        # Their answer was handled as a join after their leg's end was (they hung up while it
        # was): the call is over, and the counselor waiting in the room is told and freed.
        person_leg_ended(transfer, document, "completed", call_sid)


ON_BACKUP, NOT_REACHED = "on_backup", "settled"


def answered_but_never_joined(transfer: Transfer, document: RoutingDocument, reason: str) -> str | None:
    """A ``connecting`` attempt whose person's leg completed (answered) without ever joining
    the room: the fail-safe put them through to the backup line unrecorded (their answer
    failed, and so did the hook after it, or Twilio's Fallback URL answered) if their leg dialled
    one: the attempt ends there, no try used (``ON_BACKUP``). Otherwise they hung up before
    their answer was handled (or it was a machine): not reached (``NOT_REACHED``). None while
    Twilio cannot say (asked again by the minute's ``tend``)."""
    if answered_by_failsafe(transfer.caller_call_sid):
        return ON_BACKUP if flow.on_the_backup_line(transfer, "failsafe") else None
    commit_keeping_loaded()  # no read transaction held open while Twilio answers
    dialled = dispatch.caller_dial_legs(transfer.caller_call_sid)
    if dialled is None:
        return None
    if dialled:
        return ON_BACKUP if flow.on_the_backup_line(transfer, "failsafe") else None
    person_not_reached(transfer, document, reason)
    return NOT_REACHED


def person_not_reached(
    transfer: Transfer, document: RoutingDocument, reason: str, *, tell_responder: bool = True
) -> str:
    """End this attempt (once): tell the waiting responder, then retry or text. Returns the key
    of what the responder is told (whether another attempt will follow)."""
    callback = db.session.get(Callback, transfer.callback_id) if transfer.callback_id else None
    told = NO_ANSWER if callback is None or _retries_left(callback, document) else LAST_NO_ANSWER
    if not state.move_transfer(transfer.id, ("connecting",), "ended", end_reason="person_no_answer"):
        db.session.commit()
        return told
    flow.record_event(transfer, "callback.no_answer", f"transfer:{transfer.id}:no_answer", reason=reason)
    # The attempt's end, the callback's next state and the next contact's row: one transaction
    # (``schedule`` commits it), before anything is said to anyone, so no crash or failure in
    # between leaves the callback open with nothing due.
    if callback is not None:
        _next_step(callback, document)
    db.session.commit()
    for offer in state.staff_on_call(transfer.id) if tell_responder else ():
        dispatch.tell_responder(offer.call_sid, document.staff_prompt(told))
    return told


def _retries_left(callback: Callback, document: RoutingDocument) -> bool:
    return callback.attempts <= len(document.callbacks.retry_after_minutes)


def _next_step(callback: Callback, document: RoutingDocument) -> None:
    """The next attempt after its configured wait, or the "we tried" text after the last: the
    callback's state and the contact's row in the caller's transaction, which this commits."""
    if not _retries_left(callback, document):
        give_up(callback, "no_answer")
        return
    wait = timedelta(minutes=document.callbacks.retry_after_minutes[callback.attempts - 1])
    _next_attempt(callback, state.now() + wait)


def _next_attempt(callback: Callback, due: datetime, repair: str = "") -> bool:
    """Attempt ``attempts + 1`` at ``due`` (once): the callback waits for it (a conditional
    UPDATE) and its contact's row is stored, committed with the caller's transaction
    (``schedule``). ``repair``: a suffix keying a contact that replaces one lost."""
    moved = db.session.execute(
        update(Callback)
        .where(
            Callback.id == callback.id,
            Callback.state.in_(OPEN_CALLBACK_STATES),
            Callback.attempts == callback.attempts,
        )
        .values(state="retry_wait")
    ).rowcount  # type: ignore[attr-defined]
    if not moved:
        db.session.commit()
        return False
    attempt = callback.attempts + 1
    return schedule(
        "callback", f"callback:{callback.id}:{attempt}{repair}", due, call_id=callback.call_id,
        callback_id=callback.id, attempt=attempt,
    )  # fmt: skip


def give_up(callback: Callback, outcome: str, *, text: bool = True) -> bool:
    """No more attempts: text the person how to reach us (once; not with ``text=False``, for a
    number no text can reach). The callback's end and the text's row are committed together
    (``schedule``), with whatever the caller's transaction holds (the search it ends)."""
    moved = db.session.execute(
        update(Callback)
        .where(Callback.id == callback.id, Callback.state.in_(OPEN_CALLBACK_STATES))
        .values(state="gave_up", outcome=outcome, finished_at=state.now())
    ).rowcount  # type: ignore[attr-defined]
    if not moved:
        db.session.commit()
        return False
    record_outcome(callback, "callback.gave_up", outcome)
    # The supervisors are told (``tell_supervisors_unreached``): its row in the give-up's commit,
    # so no process dying in between leaves a callback given up that nobody is told of.
    alert_key = f"{UNREACHED_ALERT}:{callback.id}"
    insert_once(
        ScheduledContact,
        {"kind": UNREACHED_ALERT, "dedupe_key": alert_key, "call_id": callback.call_id, "callback_id": callback.id,
         "attempt": 1, "due_at": state.now(), "state": "pending", "created_at": state.now()},
    )  # fmt: skip
    if text:
        stored = schedule(
            "callback_missed", f"callback-missed:{callback.id}", state.now(), call_id=callback.call_id,
            callback_id=callback.id,
        )  # fmt: skip
    else:
        db.session.commit()
        stored = True
    alert = db.session.scalar(select(ScheduledContact.id).where(ScheduledContact.dedupe_key == alert_key))
    if alert is not None:
        enqueue_or_leave_to_the_clock(alert)
    try:
        callback_gave_up.send(callback, outcome=outcome)
    except Exception as error:  # the give-up stands; its path (a search's end) goes on
        log.error("callback-gave-up subscriber failed for callback %s: %s", callback.id, type(error).__name__)
        db.session.rollback()
    return stored


# A callback given up without reaching its person: every supervisor is told, by case id only.
UNREACHED_ALERT = "callback_unreached"
# ...and for a day the emergency unmask lists it by that case id (``CB12``), so the supervisor
# told can call the person; its number is kept that long, however short the retention window.
UNREACHED_LISTED_FOR = timedelta(days=1)


def unreached_callbacks(moment: datetime) -> Select[Callback]:
    """Callbacks given up in the last ``UNREACHED_LISTED_FOR`` whose supervisors are told (or
    about to be): not one whose alert found nothing to tell (``tell_supervisors_unreached``:
    a check-in's "2" rides on it, flagged and listed as that check-in instead, or a counselor
    has had them since), so no supervisor is sent to call someone the line has reached."""
    nothing_to_tell = (
        select(ScheduledContact.id)
        .where(
            # Any round of its alert (``_alert_again``): a later one may find them reached since.
            ScheduledContact.callback_id == Callback.id,
            ScheduledContact.kind == UNREACHED_ALERT,
            ScheduledContact.outcome == "not_needed",
        )
        .exists()
    )
    return select(Callback).where(
        Callback.state == "gave_up", Callback.finished_at >= moment - UNREACHED_LISTED_FOR, ~nothing_to_tell
    )


# Why, as the supervisors' text says it (``callback_unreached_sms``'s ``reason``): never who.
UNREACHED_REASON = {
    "nobody_free": "no counselor was free to call them back in time",
    "no_answer": "they did not answer any of our calls back",
    "line_failed": "the line failed to call them back",  # LINE_FAILED, below
    NUMBER_INVALID: "their number is not a valid phone number",
    NUMBER_NOT_CALLABLE: "our phone service will not call their number",
}


def unreached_reason(outcome: str | None) -> str:
    """Why a callback nobody reached was given up, in ``UNREACHED_REASON``'s words."""
    return UNREACHED_REASON.get(outcome or "", "the line could not call them back")


@sends(UNREACHED_ALERT, retry_safe=True)
def tell_supervisors_unreached(contact: ScheduledContact) -> str:
    """A callback was given up without reaching the person who asked for it: every supervisor
    is texted its case id and why (``callback_unreached_sms``), never a number or a need. Not
    when a check-in's "2" rides on it (that check-in is flagged, and told, instead), nor once a
    counselor has had them since. Safe to run again: each supervisor's text is sent once. One
    Twilio refused for now is texted again by this alert's next round (``_alert_again``)."""
    from callbacks.requests import checkins_carried_by  # requests imports this module

    document = _active_document()
    callback = db.session.get(Callback, contact.callback_id) if contact.callback_id else None
    call = db.session.get(Call, callback.call_id) if callback else None
    if callback is None or call is None or document is None or callback.state != "gave_up":
        return "not_needed"
    if checkins_carried_by(callback) or _reached_us_since(callback, call) == REACHED:
        return "not_needed"
    if not document.supervisors:
        log.error("callback %s was given up unreached, and no supervisor is configured to be told", callback.id)
        return "no_supervisors"
    reason = unreached_reason(callback.outcome)
    body = document.staff_prompt("callback_unreached_sms", case=f"CB{callback.id}", reason=reason)
    settings = current_app.extensions["crisisline.settings"]
    from_number = call.line_number or settings.line_phone_number or ""
    round_ = _alert_round(contact)
    keys = [f"{UNREACHED_ALERT}:{callback.id}" + (f":r{n}" if n else "") for n in range(round_ + 1)]
    told = outbox.tell_supervisors(document, key=keys[-1], earlier=keys[:-1], body=body, from_number=from_number)
    have_it = len(outbox.supervisors_told(document, keys))
    if have_it < len(document.supervisors) and not _alert_again(contact, round_):
        log.error("callback %s was given up unreached, and not every supervisor could be told (Twilio refused"
                  " every try)", callback.id)  # fmt: skip
    return "sent" if told or have_it == len(document.supervisors) else "send_failed"


# Supervisors Twilio would not text now (a 429, a 503: a busy night) are texted again after the
# next of these, as a flagged check-in's are (``followups.checkins.SEND_RETRIES``); then an error.
UNREACHED_ALERT_RETRIES = (timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=30), timedelta(hours=1))
_ALERT_AGAIN = re.compile(r"^(?P<base>.+?):again:(?P<round>\d+)$")


def _alert_round(contact: ScheduledContact) -> int:
    """0 for the alert as first scheduled (``give_up``); n for its n-th time again: the earlier
    runs that each left a supervisor untold (each scheduled the next only then)."""
    found = _ALERT_AGAIN.match(contact.dedupe_key)
    return int(found["round"]) if found else 0


def _alert_again(contact: ScheduledContact, round_: int) -> bool:
    """Schedule this alert once more, after the next of ``UNREACHED_ALERT_RETRIES`` (its earlier
    refusals counted by ``round_``); False once they are used up. Once per round: run again, this
    contact schedules the same next one (its key), never a second."""
    if round_ >= len(UNREACHED_ALERT_RETRIES):
        return False
    base = f"{UNREACHED_ALERT}:{contact.callback_id}"
    schedule(UNREACHED_ALERT, f"{base}:again:{round_ + 1}", state.now() + UNREACHED_ALERT_RETRIES[round_],
             call_id=contact.call_id, callback_id=contact.callback_id)  # fmt: skip
    return True


# A callback still to be made: a person asking again (another call, a text) is given this one.
OPEN_CALLBACK_STATES = ("waiting", "calling", "retry_wait")
# A callback ended because its attempt's runs kept stopping part way (a bug, not a busy line).
LINE_FAILED = "line_failed"


@contact_needs_a_human.connect
def _give_up_a_callback_the_line_could_not_make(contact_id: int, **_: object) -> None:
    """An attempt whose runs kept stopping part way (``workers.contacts.interrupted``): the
    callback ends (``LINE_FAILED``) rather than stay a promise nothing keeps, which the clock's
    repair would hand the same failing attempt again, for ever. So the person is texted how to
    reach us, a check-in's "2" is flagged, and the board lists the attempt for a supervisor.
    Not while a search of its is open: that search ends the callback itself."""
    contact = db.session.get(ScheduledContact, contact_id)
    if contact is None or contact.kind != "callback" or contact.callback_id is None:
        return
    callback = db.session.get(Callback, contact.callback_id)
    searching = select(Transfer.id).where(
        Transfer.callback_id == contact.callback_id, Transfer.state.in_(state.OPEN_TRANSFER_STATES)
    )
    if callback is None or callback.state not in OPEN_CALLBACK_STATES or db.session.scalar(searching.limit(1)):
        db.session.commit()
        return
    log.error("callback %s ended: its attempt (contact %s) kept failing", callback.id, contact_id)
    give_up(callback, LINE_FAILED)  # commits


# A callback gave up here when nobody took its search in time (the search's end reason).
NOBODY_FREE = "callback_gave_up"
# An open callback with neither an open search nor a contact due this long after anything last
# happened to it lost its next step (a crash between two commits, before they were one): the
# minute's ``tend`` gives it one. Longer than any step between two of its commits takes.
ORPHANED_AFTER = timedelta(minutes=2)


def _give_up_search(transfer: Transfer, callback: Callback) -> bool:
    """Nobody took this attempt's search in time: it ends, and the callback with the "we tried"
    text, in one transaction; then the responders' legs stop ringing. Once."""
    if not state.move_transfer(transfer.id, ("waiting",), "to_backup", end_reason=NOBODY_FREE):
        db.session.commit()
        return False
    give_up(callback, "nobody_free")  # commits the search's end with it
    flow.stop_ringing(transfer)
    return True


def has_next_step(callback_id: int) -> bool:
    """Whether something will happen for this callback: a search open, or a contact due (or
    being sent)."""
    return bool(db.session.scalar(select(_next_step_pending(callback_id))))


def _next_step_pending(callback_id: Any) -> ColumnElement[bool]:
    searching = (
        select(Transfer.id)
        .where(Transfer.callback_id == callback_id, Transfer.state.in_(state.OPEN_TRANSFER_STATES))
        .exists()
    )
    due = (
        select(ScheduledContact.id)
        .where(ScheduledContact.callback_id == callback_id, ScheduledContact.state.in_(("pending", "sending")))
        .exists()
    )
    return or_(searching, due)


def _orphaned_callbacks(moment: datetime) -> list[tuple[Callback, int]]:
    """Open callbacks with nothing open or due, untouched for ``ORPHANED_AFTER``, each with the
    newest of its contacts' ids (0 for none): what a repair's contact is keyed by."""
    found = db.session.scalars(
        select(Callback).where(
            Callback.state.in_(OPEN_CALLBACK_STATES),
            ~_next_step_pending(Callback.id),
            Callback.promised_since < moment - ORPHANED_AFTER,
        )
    ).all()
    orphans = []
    for callback in found:
        searched = db.session.execute(
            select(func.max(Transfer.started_at), func.max(Transfer.ended_at)).where(
                Transfer.callback_id == callback.id
            )
        ).one()
        contacted = db.session.execute(
            select(
                func.max(ScheduledContact.id),
                func.max(ScheduledContact.created_at),
                func.max(ScheduledContact.finished_at),
            ).where(ScheduledContact.callback_id == callback.id)
        ).one()
        moments = [m for m in (*searched, *contacted[1:]) if m is not None]
        if moments and moment - max(moments) < ORPHANED_AFTER:
            continue
        orphans.append((callback, contacted[0] or 0))
    return orphans


def keep_to_its_promise(callback: Callback) -> bool:
    """An open callback handed to a new request (the person asked again): should it have lost
    its next step, it gets an attempt now, in the request's transaction (committed here), even
    past its last retry (this is a new promise). True if it needed one. So "we will call you
    back" is never said over a callback nothing will make."""
    document = _active_document()
    if document is None or has_next_step(callback.id):
        return False
    newest = db.session.scalar(select(func.max(ScheduledContact.id)).where(ScheduledContact.callback_id == callback.id))
    log.warning("callback %s had no next step: repaired for a new request", callback.id)
    return repair(callback, document, newest or 0, asked_again=True) is not None


def bring_the_retry_forward(callback: Callback) -> bool:
    """An open callback waiting for its next try (``retry_wait``) handed to a new request (the
    person asked again, so they can be reached now): that try is due now, once. Its pending
    contact is cancelled by a conditional UPDATE (one winner however many requests, processes
    or duplicated webhooks) and its attempt stored due now under a key naming the one it
    replaces (insert-once), in one commit (``schedule``); its job at the old time finds it
    cancelled. A try already running, or due already, is left as it is. True if moved."""
    if callback.state != "retry_wait":
        return False
    due_later = db.session.scalars(
        select(ScheduledContact).where(
            ScheduledContact.callback_id == callback.id,
            ScheduledContact.kind == "callback",
            ScheduledContact.state == "pending",
            ScheduledContact.attempt == callback.attempts + 1,
            ScheduledContact.due_at > state.now(),
        )
    ).first()
    if due_later is None:
        return False
    replaced = db.session.execute(
        update(ScheduledContact)
        .where(ScheduledContact.id == due_later.id, ScheduledContact.state == "pending")
        .values(state="canceled", outcome="postponed", finished_at=state.now())
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if not replaced:
        db.session.commit()
        return False
    return schedule(
        "callback", f"callback:{callback.id}:{due_later.attempt}:asked-again:{due_later.id}", state.now(),
        call_id=callback.call_id, callback_id=callback.id, attempt=due_later.attempt, enqueue_off_this_thread=True,
    )  # fmt: skip


def repair(
    callback: Callback, document: RoutingDocument, newest_contact: int, *, asked_again: bool = False
) -> str | None:
    """Give an open callback that lost its next step one: its attempt again if that attempt's
    search never started; else the next attempt (after its wait from the last search's end),
    or, with none left or its search given up, the "we tried" text (its person put through to
    the backup line: it ends there). ``asked_again``: the person has just been promised it
    again: an attempt now, whatever came before. Once: the new contact's key names the newest
    contact the repairer saw (a give-up or an end is a conditional UPDATE), so two clocks
    repairing what they both found schedule one contact. Commits. Returns what it did
    ("attempt", "gave_up", "canceled"), or None."""
    started = db.session.scalar(_STARTED_SEARCHES, {"callback": callback.id}) or 0
    last = db.session.scalars(
        select(Transfer).where(Transfer.callback_id == callback.id).order_by(Transfer.id.desc()).limit(1)
    ).first()
    key = f":repair:{newest_contact}"
    if callback.attempts == 0 or (callback.state == "waiting" and started < callback.attempts):
        attempt = max(callback.attempts, 1)  # its search never started: this attempt, again
        if not newest_contact:
            key = ""  # its first contact was never stored: the one its request would have made
        again = schedule(
            "callback", f"callback:{callback.id}:{attempt}{key}", state.now(), call_id=callback.call_id,
            callback_id=callback.id, attempt=attempt,
        )  # fmt: skip
        return "attempt" if again else None
    if asked_again:
        return "attempt" if _next_attempt(callback, state.now(), key) else None
    if last is not None and last.state == "to_backup" and last.end_reason == NOBODY_FREE:
        return "gave_up" if give_up(callback, "nobody_free") else None
    if last is not None and last.state == "to_backup":
        # The fail-safe put the person it reached through to the backup line: it ends there.
        ended = db.session.execute(
            update(Callback)
            .where(Callback.id == callback.id, Callback.state.in_(OPEN_CALLBACK_STATES))
            .values(state="canceled", outcome=TO_BACKUP, finished_at=state.now())
        ).rowcount  # type: ignore[attr-defined]
        if ended:
            record_outcome(callback, "callback.canceled", TO_BACKUP)
        db.session.commit()
        return "canceled" if ended else None
    if not _retries_left(callback, document):
        return "gave_up" if give_up(callback, "no_answer") else None
    due = state.now()
    if last is not None and last.ended_at is not None:
        wait = timedelta(minutes=document.callbacks.retry_after_minutes[callback.attempts - 1])
        due = max(due, last.ended_at + wait)
    return "attempt" if _next_attempt(callback, due, key) else None


# However late a callback's search starts, it is not given up before it has searched this long.
SEARCHES_AT_LEAST = timedelta(minutes=10)


def tend(document: RoutingDocument) -> dict[str, int]:
    """Every minute: give up on callbacks nobody could take in time, offer free responders to
    the queue (callbacks among everyone waiting, in queue order: the safety net behind the
    events), settle person legs whose final status callback was lost, and find people the
    fail-safe put through to the backup line unrecorded. Idempotent."""
    counts = {"rung": 0, "gave_up": 0, "repaired": 0, "settled": 0, "on_backup": 0}
    moment = state.now()
    give_up_after = timedelta(minutes=document.callbacks.give_up_after_minutes)
    overdue_searches = db.session.scalars(
        select(Transfer)
        .join(Callback, Callback.id == Transfer.callback_id)
        .where(
            Transfer.mode == "callback",
            Transfer.state == "waiting",
            Callback.promised_since < moment - give_up_after,
            # A retry's search has its own time, from its start: it is not given up while a
            # counselor's phone rings for it because the first attempt began long ago.
            or_(Callback.attempts <= 1, Transfer.started_at < moment - give_up_after),
            # A first attempt that could only start late (no worker, Redis down for longer than
            # the give-up time) still searches a while: "we tried to call you" must be true.
            Transfer.started_at < moment - min(give_up_after, SEARCHES_AT_LEAST),
        )
    ).all()
    for transfer in overdue_searches:
        callback = db.session.get(Callback, transfer.callback_id) if transfer.callback_id else None
        if callback is not None and _give_up_search(transfer, callback):
            counts["gave_up"] += 1
    for callback, newest_contact in _orphaned_callbacks(moment):
        log.warning("callback %s had no next step: repaired", callback.id)
        if repair(callback, document, newest_contact) is not None:
            counts["repaired"] += 1
    counts["rung"] += line_queue.fill(document)
    ring_limit = timedelta(seconds=document.callbacks.ring_timeout_seconds) + PERSON_LEG_GRACE
    stalled = db.session.scalars(
        select(Transfer).where(Transfer.mode == "callback", Transfer.state == "connecting")
    ).all()
    for transfer in stalled:
        # No SID: Twilio's answer to placing it was lost. Had it placed the call, the leg's own
        # webhooks would have brought the SID by now.
        limit = ring_limit if transfer.caller_call_sid else ring_limit - PERSON_LEG_GRACE + UNSURE_LEG_GRACE
        overdue = transfer.accepted_at is not None and moment - transfer.accepted_at > limit
        if not overdue:
            continue
        status: str | None = "never_placed"
        started: datetime | None = None
        if transfer.caller_call_sid:
            status, started = dispatch.call_status_since(transfer.caller_call_sid) or (None, None)
        if status == "in-progress":
            if started is not None and moment - started < ANSWER_HANDLED_WITHIN:
                continue  # answered moments ago (Twilio's CPS queue held the dial): their answer may be on its way
            # Answered long ago, yet never in the room: their answer was never handled (it
            # failed, and so did the fail-safe's hook after it, or Twilio's Fallback URL
            # answered): the fail-safe has put them through to the backup line.
            if flow.on_the_backup_line(transfer, "failsafe"):
                counts["on_backup"] += 1
        elif status == "completed":
            settled = answered_but_never_joined(transfer, document, "lost_status")
            if settled is not None:
                counts[settled] += 1
        elif status == "never_placed" or status in flow.TERMINAL_LEG_STATUSES:
            person_not_reached(transfer, document, "lost_status")
            counts["settled"] += 1
    return counts


def _vault() -> Vault:
    vault: Vault = current_app.extensions["crisisline.vault"]
    return vault


def answered_after_all(transfer: Transfer) -> None:
    """The person picked up after this attempt had ended (their counselor left, or a status
    arrived late): they are served live now, so no further attempt may ring them again."""
    connected = db.session.execute(
        update(Callback)
        .where(Callback.id == transfer.callback_id, Callback.state.in_(("waiting", "calling", "retry_wait")))
        .values(state="connected", outcome="answered_late", connected_at=state.now(), finished_at=state.now())
    ).rowcount  # type: ignore[attr-defined]
    callback = db.session.get(Callback, transfer.callback_id) if connected and transfer.callback_id else None
    if callback is not None:
        record_outcome(callback, "callback.connected", "answered_late")
    db.session.commit()


def record_outcome(callback: Callback, kind: str, outcome: str) -> None:
    """The callback's one final event (``callback.connected``/``gave_up``/``canceled``), on
    its call record, once: every way a callback ends is in the event log (docs/metrics.md)."""
    call = db.session.get(Call, callback.call_id)
    if call is not None:
        detail = {"callback": callback.id, "origin": callback.origin, "outcome": outcome, "attempts": callback.attempts}
        record_event(call, kind, f"callback:{callback.id}:outcome", detail)
