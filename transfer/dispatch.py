"""Ringing responders: placing the calls the queue (``line_queue``) decided on.

``advance`` is safe to call from anywhere, any number of times, concurrently: from the
need menu, every hold tick, every responder leg's status callback, or a worker. Which
waiting contact a free responder is offered is the queue's decision, in queue order; this
module rings them (``ring_for_transfer``), a lease serialising it per transfer and each
responder claimed atomically before being rung.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial

import requests
from flask import current_app
from sqlalchemy import and_, bindparam, case, insert, literal, or_, select, update
from twilio.base.exceptions import TwilioRestException
from twilio.twiml.voice_response import VoiceResponse

import line_queue
from crisisline.background import side_by_side
from crisisline.db import commit_keeping_loaded, db
from crisisline.models import ACTIVE_OFFER_STATES, Call, Offer, Transfer
from crisisline.settings import Settings
from crisisline.telephony import REST_EXTENSION, TwilioRest, api_is_slow, make_rest_client
from crisisline.urls import public_url
from ivr import call_log
from routing.document import Responder, RoutingDocument
from transfer import state

log = logging.getLogger(__name__)
# REST calls made while Twilio waits for our TwiML must be quick; the hold loop retries.
INLINE_REST_TIMEOUT_SECONDS = 3.0
LEG_EVENTS = ["initiated", "ringing", "answered", "completed"]
TERMINAL_LEG_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


def rest_client() -> TwilioRest:
    settings: Settings = current_app.extensions["crisisline.settings"]
    rest: TwilioRest | None = current_app.extensions.get(REST_EXTENSION)
    if rest is None:
        client = make_rest_client(settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url)
        client.http_client.timeout = INLINE_REST_TIMEOUT_SECONDS
        rest = current_app.extensions.setdefault(REST_EXTENSION, TwilioRest(client))
    return rest


def line_number(transfer: Transfer) -> str:
    """The number the line calls responders from for this transfer: the one its caller dialled
    (remembered per call: ``ivr.call_log.CallFacts``)."""
    settings: Settings = current_app.extensions["crisisline.settings"]
    facts = call_log.known_facts(transfer.caller_call_sid)
    if facts is None or facts.call_id != transfer.call_id:
        call = db.session.get(Call, transfer.call_id)
        facts = call_log.facts_of(call) if call is not None else None
    number = (facts.line_number if facts else None) or settings.line_phone_number
    if not number:
        raise RuntimeError("no line number to call from: set LINE_PHONE_NUMBER")
    return number


@dataclass(frozen=True)
class DispatchResult:
    rung: int  # new legs placed now (for this transfer or anyone else in the queue)
    ringing: int  # this transfer's legs in progress after this pass
    exhausted: bool  # nobody on shift could ever take it: the caller should move on now


def advance(
    transfer_id: int, document: RoutingDocument, *, safety_net: bool = False, joined: str | None = None
) -> DispatchResult:
    """Offer free responders to the queue (this transfer only where it is first in line for
    them), then say where this transfer stands. Idempotent and concurrency-safe.

    On a webhook, the ringing (Twilio REST calls) runs off the request thread; a later turn
    waits for it at most half the voice deadline (a slow Twilio API leaves the caller holding,
    never silent, and the ringing carries on), a first step not at all. ``safety_net``: a
    later hold turn, whose pass a process runs at most once a second (``line_queue.fill_soon``). ``joined``:
    "voice" when the transfer has just joined the queue and nothing else changed (its first
    step), so with separate lines only the callers' line is looked at (``fill_soon``).
    """
    passed = not safety_net or line_queue.safety_net_due()
    # A caller's first step is not kept waiting for the ringing: its answer is "hold" whoever
    # rings, and a ring it waited for would add Twilio's answer time (0.1 to 0.3 s, seconds
    # when the API is slow) to the silence after their keypress. Later turns wait, within
    # the budget: they say who is ringing ("you are next").
    rung = line_queue.fill_soon(document, joined=joined, wait=joined is None) if passed else 0
    if passed:
        # The session's own copy is refreshed in the same read: callers holding it read the
        # state after the pass (someone may have accepted meanwhile).
        transfer, ringing = state.where_it_stands(transfer_id)
    else:
        # A hold turn whose safety-net pass did not run keeps the copy read at the start of its
        # request: nothing it did could have changed the transfer, so no second read.
        transfer = db.session.get(Transfer, transfer_id)
        ringing = len(state.active_offers(transfer_id)) if transfer is not None else 0
    if transfer is None or transfer.state != "waiting":
        return DispatchResult(rung, 0, False)
    exhausted = not ringing and not line_queue.anyone_can_take(document, transfer.language, transfer.need, transfer.id)
    return DispatchResult(rung, ringing, exhausted)


@line_queue.offers_for("voice")
def ring_for_transfer(transfer_id: int, responders: Sequence[Responder], document: RoutingDocument) -> int:
    """The queue chose ``responders`` for this waiting caller (or callback): ring them. One
    process rings for a transfer at a time (a lease); each responder is claimed before ringing.

    The queue chose from a snapshot taken before the lease: another pass may have rung for
    this caller meanwhile, so the phones already ringing are counted again under the lease
    and never more than the need allows ring at once."""
    transfer = state.lease_dispatch(transfer_id)
    if transfer is None:
        db.session.commit()
        return 0
    commit_keeping_loaded()  # the transfer as the lease left it stays loaded
    try:
        allowed = line_queue.offers_allowed(document, "voice", transfer.need)
        ringing = [offer.responder_id for offer in state.active_offers(transfer_id) if offer.purpose == "answer"]
        chosen = responders[: max(0, allowed - len(ringing))]
        if not chosen or transfer.state != "waiting":
            return 0
        already = [responder for responder in map(document.responder, ringing) if responder is not None]
        if _notice_due(transfer, [*chosen, *already]):
            state.language_notice_due(transfer_id)
            commit_keeping_loaded()  # before the ring: a hold turn meanwhile says it
        # Parallel ringing's phones, side by side when Twilio is slow (``side_by_side``).
        rings = [partial(_ring, transfer, chosen[0], document, purpose="answer")]
        rings += [partial(_ring_while_waiting, transfer_id, responder, document) for responder in chosen[1:]]
        return sum(side_by_side(rings, when=api_is_slow, lane="phones"))
    finally:
        state.release_dispatch(transfer_id)
        db.session.commit()


def _notice_due(transfer: Transfer, phones: Sequence[Responder]) -> bool:
    """A live caller who has not heard that nobody who speaks their language is available is
    about to have ``phones`` ringing for them (those about to ring and those ringing already),
    none of whom speaks it."""
    if transfer.mode != "live" or transfer.language_notice is not None:
        return False
    return not any(transfer.language in responder.languages for responder in phones)


def _ring_while_waiting(transfer_id: int, responder: Responder, document: RoutingDocument) -> int:
    """Another of a caller's phones: rung unless someone accepted (or the caller left) while the
    ones before it were rung. Read fresh, in whichever session this runs in."""
    transfer = db.session.get(Transfer, transfer_id, populate_existing=True)
    if transfer is None or transfer.state != "waiting":
        return 0
    return _ring(transfer, responder, document, purpose="answer")


def invite_unit(transfer: Transfer, document: RoutingDocument, *, not_again: frozenset[str] = frozenset()) -> bool:
    """Ring an on-call co-responder unit to join a live call (three-way). True if one was rung.

    The first free unit that can be rung: one whose call Twilio refuses (a wrong number) or who
    was claimed elsewhere meanwhile does not keep the others from being asked. ``not_again``:
    units asked already for this request (they did not come)."""
    need = document.need(transfer.need)
    if need is None:
        return False
    unavailable = state.unavailable_responder_ids() | {offer.responder_id for offer in state.staff_on_call(transfer.id)}
    units = [r for r in _on_call_units(document) if r.id not in unavailable and r.id not in not_again]
    units.sort(key=lambda unit: transfer.language not in unit.languages)  # speakers first
    if transfer.state != "connected":
        return False  # the caller has gone: nobody is rung into an empty room
    return any(_ring(transfer, unit, document, purpose="join") for unit in units)


def _on_call_units(document: RoutingDocument) -> list[Responder]:
    from routing.schedule import on_call

    return [r for r in on_call(document, state.now()) if r.kind == "co_responder"]


def _ring(transfer: Transfer, responder: Responder, document: RoutingDocument, *, purpose: str) -> int:
    """Claim ``responder`` and place their call. Returns 1 if their phone is now ringing.

    ``transfer`` may have been read before its caller hung up, went to the backup line or was
    taken: the offer is stored only if it is still as this ring needs it (``_PLACE_OFFER``),
    so nobody is rung, or held engaged, for a caller who has moved on."""
    bound = {
        "transfer": transfer.id, "needed": RINGS_WHILE[purpose], "responder": responder.id, "offer_purpose": purpose,
        "at": state.now(),
    }  # fmt: skip
    offer = db.session.scalars(_PLACE_OFFER, bound).first()
    if offer is None:
        db.session.commit()
        return 0
    if not state.claim_responder(responder.id, offer.id):
        offer.state, offer.outcome = "ended", "engaged_elsewhere"
        db.session.commit()
        return 0
    # Read before the commit expires the rows (reading them after costs a SELECT each).
    offer_id, from_number = offer.id, line_number(transfer)
    queued = QueuedLeg(transfer.call_id, transfer.id, transfer.round, responder.id, offer_id)
    db.session.commit()
    try:
        call = rest_client().calls.create(
            to=responder.phone,
            from_=from_number,
            url=public_url("transfer.whisper", offer=offer_id),
            method="POST",
            fallback_url=public_url("transfer.staff_fallback", offer=offer_id),
            fallback_method="POST",
            status_callback=public_url("transfer.offer_status", offer=offer_id),
            status_callback_event=LEG_EVENTS,
            status_callback_method="POST",
            timeout=document.transfer.ring_timeout_seconds,
        )
    except TwilioRestException as error:
        # e.g. 21211 (invalid number): skip to the next person; log the code, never the number.
        log.warning("offer %s to %s failed: Twilio error %s", offer.id, responder.id, error.code)
        state.finish_offer(offer, f"rest_error_{error.code or error.status}")
        db.session.commit()
        return 0
    except (requests.RequestException, OSError) as error:
        # A read timeout means Twilio may have placed the call all the same: ``rest_lost`` legs
        # are adopted when answered (``flow.adopt_lost_leg``) or cancelled (``cancel_stray_legs``).
        lost = isinstance(error, requests.ReadTimeout | requests.exceptions.ChunkedEncodingError)
        log.warning("offer %s to %s failed: %s", offer.id, responder.id, type(error).__name__)
        # Only while still placing: an offer its own leg's webhooks moved on (picked up already)
        # proves the call exists and is theirs.
        if not state.finish_offer(
            offer, state.LOST_REST_ANSWER if lost else "rest_unreachable", from_states=("placing",)
        ):
            db.session.commit()
            db.session.refresh(offer)
            return int(offer.state in (*ACTIVE_OFFER_STATES, "accepted"))
        db.session.commit()
        return 0
    placed = db.session.execute(_PLACED, {"offer": offer_id, "sid": call.sid})
    queued_ms = queue_time_ms(call)
    line_queue.call_queue().heard(queued_ms)
    _record_queue_time(queued, queued_ms)
    db.session.commit()
    if not placed.rowcount:  # type: ignore[attr-defined]
        end_a_leg_placed_too_late(offer_id, call.sid)
        return 0
    return 1


def end_a_leg_placed_too_late(offer_id: int, call_sid: str) -> None:
    """Twilio placed this leg after its offer closed (accepted by someone else, the caller left
    or went to the backup line): nobody owns it, so it must not ring on. Unless the offer holds
    its SID (picked up before the REST answer came): then what closed the offer ended the leg,
    telling them why, and a hang-up here would cut that short."""
    if db.session.scalar(select(Offer.call_sid).where(Offer.id == offer_id)) != call_sid:
        hang_up_call(call_sid, answered=False)
    db.session.commit()


# What a transfer must still be for a ring of each purpose: a caller waiting for someone to
# answer, a live call a unit is asked to join.
RINGS_WHILE = {"answer": "waiting", "join": "connected"}
# Built once, as every statement a ring runs (``crisisline.db``, "Statements built once").
# The new offer, stored only while its transfer is ``needed`` (``RINGS_WHILE``): the check costs
# no statement of its own. On PostgreSQL the transfer's row is held (FOR SHARE) until the ring's
# commit, so a move of it (the caller hung up, someone accepted) either came first and no offer
# is stored, or waits for that commit and its ``flow.stop_ringing`` then finds the offer; SQLite
# takes one writer at a time, with the same effect.
_PLACE_OFFER = (
    insert(Offer)
    .from_select(
        ["transfer_id", "responder_id", "purpose", "state", "status_sequence", "created_at"],
        select(
            Transfer.id,
            bindparam("responder", type_=Offer.responder_id.type),
            bindparam("offer_purpose", type_=Offer.purpose.type),
            literal("placing", Offer.state.type),
            literal(-1, Offer.status_sequence.type),
            bindparam("at", type_=Offer.created_at.type),
        )
        .where(Transfer.id == bindparam("transfer"), Transfer.state == bindparam("needed"))
        .with_for_update(read=True),
    )
    .returning(Offer)
    .execution_options(dml_strategy="orm")  # one row, from the SELECT (not "bulk": a params dict)
)
# An offer its own leg's webhooks moved on first (the responder picked up, even pressed 1, before
# the REST answer reached us) is still theirs: it gets its SID (or has it already, from their
# pickup: ``flow.offer_answered``) and keeps its state.
_PLACED = (
    update(Offer)
    .where(
        Offer.id == bindparam("offer"),
        or_(
            Offer.state == "placing",
            and_(
                Offer.state.in_(("ringing", "answered", "accepted")),
                or_(Offer.call_sid.is_(None), Offer.call_sid == bindparam("sid")),
            ),
        ),
    )
    .values(call_sid=bindparam("sid"), state=case((Offer.state == "placing", "ringing"), else_=Offer.state))
    .execution_options(synchronize_session=False)
)


def queue_time_ms(placed: object) -> int:
    """Twilio's ``queue_time`` of a call it just accepted: the estimated ms it waits behind the
    account's calls-per-second limit before it is placed (0 when absent or unreadable)."""
    try:
        return max(0, round(float(getattr(placed, "queue_time", None) or 0)))
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class QueuedLeg:
    """Whose leg a ``queue_time`` belongs to: plain values, read before the ring's commit."""

    call_id: int
    transfer_id: int
    round: int
    responder_id: str
    offer_id: int


def _record_queue_time(leg: QueuedLeg, queue_ms: int) -> None:
    """Twilio queued this leg: its phone rings ``queue_ms`` late. Logged on the caller's record
    (only when queued: no write otherwise)."""
    call = db.session.get(Call, leg.call_id) if queue_ms > 0 else None
    if call is not None:
        detail = {"transfer": leg.transfer_id, "round": leg.round, "responder": leg.responder_id}
        key = f"offer:{leg.offer_id}:queued"
        call_log.record_event(call, "offer.queued", key, {**detail, "queue_time_ms": queue_ms})


def hang_up_call(call_sid: str | None, *, answered: bool) -> None:
    """End a responder's leg: ``completed`` hangs up an answered call, ``canceled`` a ringing one."""
    if not call_sid:
        return
    try:
        left = rest_client().calls(call_sid).update(status="completed" if answered else "canceled")
        if not answered and left.status not in TERMINAL_LEG_STATUSES:
            # Answered meanwhile ("canceled" does not end an answered call), or the answer to the
            # update does not say it ended: "completed" as well. A ringing leg that comes back
            # "canceled" costs one request.
            rest_client().calls(call_sid).update(status="completed")
    except (TwilioRestException, requests.RequestException, OSError) as error:
        log.info("could not end responder leg: %s", type(error).__name__)


def tell_responder(call_sid: str | None, text: str) -> None:
    """Say ``text`` to a responder on their leg, then end it (it frees them for the queue)."""
    if not call_sid:
        return
    message = VoiceResponse()
    message.say(text)
    message.hangup()
    try:
        rest_client().calls(call_sid).update(twiml=str(message))
    except (TwilioRestException, requests.RequestException, OSError) as error:
        log.info("could not tell the responder: %s", type(error).__name__)
        hang_up_call(call_sid, answered=True)


def play_to_responder(call_sid: str | None, twiml: VoiceResponse) -> bool:
    """Replace what a responder's leg is doing with ``twiml`` (which must take them back where
    they were: it is not a goodbye). Absolute URLs only: inline TwiML has no page of its own
    for a relative one. False if Twilio could not be asked or refused (their leg has ended)."""
    if not call_sid:
        return False
    try:
        rest_client().calls(call_sid).update(twiml=str(twiml))
    except (TwilioRestException, requests.RequestException, OSError) as error:
        log.info("could not update a responder's leg: %s", type(error).__name__)
        return False
    return True


REDIRECTED, CALLER_GONE, REDIRECT_FAILED, REDIRECT_UNSURE = "redirected", "caller_gone", "failed", "unsure"
GONE_ERROR_CODES = frozenset({20404, 21220})  # unknown call; call not in progress


def redirect_caller(transfer: Transfer, endpoint: str) -> str:
    """Move the caller to new TwiML: ``redirected``, ``caller_gone`` (their call has ended),
    ``failed`` (Twilio unreachable or erroring: the caller is still there, and their own hold
    turns will carry them on), or ``unsure`` (the request went out but its answer timed out or
    broke off: the redirect may still happen)."""
    try:
        # With the line's voice fallback, as their call has it: should the new TwiML fail (a 502
        # while a web process restarts), Twilio asks it and the caller reaches the backup line.
        rest_client().calls(transfer.caller_call_sid).update(
            url=public_url(endpoint, transfer=transfer.id), method="POST",
            fallback_url=public_url("voice.fallback"), fallback_method="POST",
        )  # fmt: skip
    except TwilioRestException as error:
        log.info("could not redirect caller of transfer %s: Twilio error %s", transfer.id, error.code)
        gone = error.status == 404 or error.code in GONE_ERROR_CODES
        return CALLER_GONE if gone else REDIRECT_FAILED
    except (requests.ReadTimeout, requests.exceptions.ChunkedEncodingError):
        # As a ring whose answer was lost (``_ring``): Twilio may have taken it all the same.
        log.info("redirect of the caller of transfer %s sent, its answer lost", transfer.id)
        return REDIRECT_UNSURE
    except (requests.RequestException, OSError) as error:
        log.info("could not redirect caller of transfer %s: %s", transfer.id, type(error).__name__)
        return REDIRECT_FAILED
    return REDIRECTED


STRAY_LEG_STATUSES = frozenset({"queued", "initiated", "ringing"})


def cancel_stray_legs(offer: Offer, phone: str, transfer: Transfer) -> int:
    """Cancel the still-ringing calls Twilio placed for a ``rest_lost`` offer that no offer
    owns (its REST answer never reached us). Returns how many were cancelled."""
    since = offer.created_at - timedelta(seconds=5)  # Twilio's clock and ours may differ a little
    try:
        listed = rest_client().calls.list(to=phone, from_=line_number(transfer), limit=20)
    except (TwilioRestException, requests.RequestException, OSError) as error:
        log.info("could not list calls to reconcile offer %s: %s", offer.id, type(error).__name__)
        return 0
    candidates = [
        call.sid for call in listed
        if str(call.status) in STRAY_LEG_STATUSES and call.date_created is not None and call.date_created >= since
    ]  # fmt: skip
    known = (
        set(db.session.scalars(select(Offer.call_sid).where(Offer.call_sid.in_(candidates)))) if candidates else set()
    )
    cancelled = 0
    for sid in candidates:
        if sid in known:
            continue
        try:
            rest_client().calls(sid).update(status="canceled")
            cancelled += 1
        except (TwilioRestException, requests.RequestException, OSError) as error:
            log.info("could not cancel a stray leg: %s", type(error).__name__)
    return cancelled


LIVE_LEG_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress"})
# Asked on a counselor's press of 1, before the redirect, and on their in-call menu (``*``), within
# that webhook's 2 s deadline: a slower answer counts as "Twilio cannot say" (the hold turns
# decide; the counselor goes back to the caller), not a missed deadline.
WHEREABOUTS_TIMEOUT_SECONDS = 0.8


def caller_dial_legs(call_sid: str | None) -> list[str] | None:
    """The statuses of the calls the caller's call has dialled through ``<Dial>`` (the backup
    line, where the fail-safe or the Fallback URL sends them): its child calls, by
    ``ParentCallSid``. The responders' legs, placed over REST, are never among them. None if
    Twilio cannot be asked right now. Assumes Twilio's call list shows a dial leg once it has
    started (not checked against a real account: see ``docs/reliability.md``)."""
    if not call_sid:
        return None
    try:
        children = rest_client().calls.list(parent_call_sid=call_sid, limit=20, timeout=WHEREABOUTS_TIMEOUT_SECONDS)
    except (TwilioRestException, requests.RequestException, OSError) as error:
        log.info("could not list the caller's legs: %s", type(error).__name__)
        return None
    return [child.status for child in children]


def call_has_ended(call_sid: str, *, timeout: float | None = None) -> bool | None:
    """Ask Twilio whether a call is over (None if Twilio cannot be asked right now).
    ``timeout``: shorter than the client's, for a webhook that must answer first."""
    status = call_status(call_sid, timeout=timeout)
    return None if status is None else status in ("completed", "busy", "failed", "no-answer", "canceled")


def call_status(call_sid: str, *, timeout: float | None = None) -> str | None:
    """Ask Twilio a call's status (``completed`` for a call it does not know; None if Twilio
    cannot be asked right now)."""
    found = call_status_since(call_sid, timeout=timeout)
    return None if found is None else found[0]


def call_status_since(call_sid: str, *, timeout: float | None = None) -> tuple[str, datetime | None] | None:
    """Ask Twilio a call's status and its ``start_time`` (``("completed", None)`` for a call it
    does not know; None if Twilio cannot be asked right now, or not within ``timeout``)."""
    try:
        # The Call resource read directly: ``calls(sid).fetch()`` takes no timeout of its own.
        placed = rest_client().request("GET", f"Calls/{call_sid}.json", timeout=timeout)
    except TwilioRestException as error:
        return ("completed", None) if error.status == 404 else None
    except (requests.RequestException, OSError):
        return None
    started = placed.get("start_time")
    return str(placed.get("status", "")), parsedate_to_datetime(started) if started else None
