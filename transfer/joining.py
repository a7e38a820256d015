"""A counselor on a live call asks for the co-responder unit to join it (from the console, or
from their phone: ``*`` then 1).

The ringing and the briefing: ``dispatch.invite_unit`` rings an on-call unit with an offer of
purpose ``join``, the unit hears ``whisper_add_unit`` and presses 1 to join the caller's
conference (``flow.offer_answered``/``offer_decided``).

What this adds is the once-only request: the request is a ``unit.requested`` call event whose
``dedupe_key`` carries an attempt number, so of two clicks or two tabs racing, one insert wins
and only the winner rings. A new attempt is possible once the previous one is settled (the unit
passed, did not answer, or could not be rung). The REST call runs off the request thread
(``crisisline.background``), as the queue's ringing does.

A counselor who heard "We are calling the co-responder unit" is not left waiting for a unit that
is not coming: a unit that passes, does not answer or cannot be rung is followed by the next
free unit on shift, and when none is left the counselor is told on their own leg
(``unit_not_reached``) and put back with the caller, once per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from flask import current_app
from sqlalchemy import func, select

from crisisline.background import start_later, start_soon, within_budget
from crisisline.db import db, insert_once
from crisisline.models import ACTIVE_OFFER_STATES, CallEvent, Offer, Transfer
from crisisline.settings import Settings
from crisisline.urls import public_url
from routing.document import Responder, RoutingDocument
from routing.schedule import on_call
from routing.store import active_routing
from transfer import dispatch, state
from transfer import twiml as transfer_twiml

REQUESTED = "unit.requested"
NOT_RUNG = "unit.not_rung"
# Who tells the counselor about a request: its webhook ("calling") or, when its ring failed
# after the webhook stopped waiting for it, that ring (over REST). One insert wins.
TOLD = "unit.told"
# The counselor was told no unit is coming after all (once per request).
NOT_REACHED = "unit.not_reached"
# A request whose ringing has not shown up as an offer by then was lost with its process.
IN_FLIGHT = timedelta(seconds=30)

# Outcomes of a request. ``ringing`` and ``already`` mean the unit is (being) asked.
RINGING, ALREADY = "ringing", "already"
NOT_ON_CALL, NO_UNIT_ON_SHIFT, UNITS_BUSY = "not_on_call", "no_unit_on_shift", "units_busy"


@dataclass(frozen=True)
class JoinRequest:
    outcome: str
    unit_id: str | None = None  # the unit asked (a config id, never a number)
    rung: bool | None = None  # for ``ringing``: its phone rings (None: still being placed)


# What a counselor who asked from their phone is told (``transfer.views.counselor_menu``): the
# unit is being called, it is on the call already (nothing to add), or nobody is being called.
CALLING, ON_THE_CALL, NOT_CALLED = "calling", "on_the_call", "not_called"


@dataclass(frozen=True)
class UnitStatus:
    """Where a live call stands with the unit: ``""`` (not asked), ``requested`` (being
    placed), ``ringing``, ``joined``, or ``left`` (it joined, then left the call)."""

    state: str
    unit_id: str | None = None


def counselor_on_call(transfer: Transfer, responder_id: str) -> bool:
    """Is ``responder_id`` the counselor with the caller on this live call right now?"""
    if transfer.state != "connected":
        return False
    return any(
        offer.responder_id == responder_id and offer.purpose == "answer" for offer in state.staff_on_call(transfer.id)
    )


def units_on_shift(document: RoutingDocument) -> list[Responder]:
    return [responder for responder in on_call(document, state.now()) if responder.kind == "co_responder"]


def units_to_ask(document: RoutingDocument, transfer: Transfer) -> list[Responder]:
    """On-shift units free to join, in the order ``dispatch.invite_unit`` asks them: those
    speaking the caller's language first (its pick is the first of these)."""
    unavailable = state.unavailable_responder_ids() | {offer.responder_id for offer in state.staff_on_call(transfer.id)}
    units = [unit for unit in units_on_shift(document) if unit.id not in unavailable]
    units.sort(key=lambda unit: transfer.language not in unit.languages)
    return units


def _key_prefix(transfer_id: int) -> str:
    return f"transfer:{transfer_id}:unit_requested:"


def _requests(transfer: Transfer) -> list[CallEvent]:
    return list(
        db.session.scalars(
            select(CallEvent)
            .where(CallEvent.call_id == transfer.call_id, CallEvent.kind == REQUESTED,
                   CallEvent.dedupe_key.startswith(_key_prefix(transfer.id)))
            .order_by(CallEvent.occurred_at.desc(), CallEvent.id.desc())
        )
    )  # fmt: skip


def _join_offers(transfer_id: int) -> list[Offer]:
    return list(
        db.session.scalars(
            select(Offer).where(Offer.transfer_id == transfer_id, Offer.purpose == "join").order_by(Offer.id.desc())
        )
    )


def unit_status(transfer: Transfer) -> UnitStatus:
    offers = _join_offers(transfer.id)
    for offer in offers:
        if offer.state == "accepted":
            return UnitStatus("joined", offer.responder_id)
    for offer in offers:
        if offer.state in ACTIVE_OFFER_STATES:
            return UnitStatus("ringing", offer.responder_id)
    pending = _pending_request(transfer, offers)
    if pending is not None:
        return UnitStatus("requested", pending.detail.get("responder"))
    joined = next((offer for offer in offers if offer.decided_at is not None), None)
    return UnitStatus("left", joined.responder_id) if joined else UnitStatus("")


def _pending_request(transfer: Transfer, offers: list[Offer]) -> CallEvent | None:
    """The newest request if its ringing is still being placed (no offer for it yet)."""
    requests = _requests(transfer)
    if not requests:
        return None
    latest = requests[0]
    if state.now() - latest.occurred_at >= IN_FLIGHT:
        return None
    if any(offer.created_at >= latest.occurred_at for offer in offers):
        return None
    settled = db.session.scalar(
        select(CallEvent.id).where(
            CallEvent.call_id == transfer.call_id, CallEvent.dedupe_key == f"{latest.dedupe_key}:not_rung"
        )
    )
    return None if settled is not None else latest


def request_unit_join(transfer_id: int, requested_by: str, document: RoutingDocument) -> JoinRequest:
    """Ask the co-responder unit to join the live call ``transfer_id`` of counselor
    ``requested_by`` (a responder id). Idempotent: while a unit is being rung or is on the
    call, asking again changes nothing (``already``). Commits."""
    transfer = db.session.get(Transfer, transfer_id)
    if transfer is None:
        return JoinRequest(NOT_ON_CALL)
    db.session.refresh(transfer)
    if not counselor_on_call(transfer, requested_by):
        return JoinRequest(NOT_ON_CALL)
    # Counted before the open-request check: two requests racing either count the same
    # attempt (one insert wins) or the later one counts after the earlier committed, and
    # then sees it as open.
    attempt = db.session.scalar(
        select(func.count(CallEvent.id)).where(
            CallEvent.call_id == transfer.call_id, CallEvent.dedupe_key.startswith(_key_prefix(transfer.id))
        )
    ) or 0  # fmt: skip
    status = unit_status(transfer)
    if status.state in ("joined", "ringing", "requested"):
        return JoinRequest(ALREADY, status.unit_id)
    if not units_on_shift(document):
        return JoinRequest(NO_UNIT_ON_SHIFT)
    units = units_to_ask(document, transfer)
    if not units:
        return JoinRequest(UNITS_BUSY)
    unit = units[0]
    key = f"{_key_prefix(transfer.id)}{attempt}"
    won = insert_once(
        CallEvent,
        {"call_id": transfer.call_id, "kind": REQUESTED, "dedupe_key": key, "occurred_at": state.now(),
         "detail": {"transfer": transfer.id, "round": transfer.round, "responder": unit.id,
                    "requested_by": requested_by}},
    )  # fmt: skip
    db.session.commit()
    if not won:
        return JoinRequest(ALREADY, unit.id)
    settings: Settings = current_app.extensions["crisisline.settings"]
    rung = within_budget(
        f"transfer.unit_join:{transfer.id}", lambda: _ring_unit(transfer_id, key), settings.voice_deadline_seconds / 2
    )
    if rung is None:
        # Still being placed: this webhook will say "calling", unless the ring has failed in
        # the meantime and claimed the telling (then it is not coming, and is said so now).
        if not _claim(transfer, TOLD, f"{key}:told"):
            rung = False
        db.session.commit()
    return JoinRequest(RINGING, unit.id, rung)


def _claim(transfer: Transfer, kind: str, dedupe_key: str) -> bool:
    return insert_once(
        CallEvent,
        {"call_id": transfer.call_id, "kind": kind, "dedupe_key": dedupe_key, "occurred_at": state.now(),
         "detail": {"transfer": transfer.id}},
    )  # fmt: skip


def _ring_unit(transfer_id: int, request_key: str) -> bool:
    """Ring the unit (ids only: this may run off the request thread). If nobody could be
    rung, the request is marked settled at once, so the counselor may ask again; and if its
    webhook had stopped waiting and said "calling", the counselor is told it is not coming."""
    transfer = db.session.get(Transfer, transfer_id)
    active = active_routing()
    rung = transfer is not None and active is not None and dispatch.invite_unit(transfer, active.document)
    told_calling = False
    if not rung and transfer is not None:
        _claim(transfer, NOT_RUNG, f"{request_key}:not_rung")
        told_calling = not _claim(transfer, TOLD, f"{request_key}:told")
    db.session.commit()
    if told_calling and transfer is not None and active is not None:
        _tell_counselor_not_coming(transfer, active.document, request_key)
    return bool(rung)


def unit_did_not_come_soon(transfer_id: int, document: RoutingDocument) -> None:
    """``unit_did_not_come`` off the request thread (it rings, or tells over REST)."""
    start_soon(f"transfer.unit_not_come:{transfer_id}", lambda: unit_did_not_come(transfer_id, document))


def unit_did_not_come(transfer_id: int, document: RoutingDocument) -> None:
    """A unit rung to join ``transfer_id`` ended without joining (passed, no answer, busy, its
    call failed): ring the next free unit on shift not yet asked since the counselor's latest
    request; with none left, tell the counselor, who heard "calling". Nothing while another
    unit rings or is on the call, or once the call's round is over."""
    transfer = db.session.get(Transfer, transfer_id, populate_existing=True)
    if transfer is None or transfer.state != "connected":
        return
    offers = _join_offers(transfer.id)
    if any(offer.state in (*ACTIVE_OFFER_STATES, "accepted") for offer in offers):
        return
    requests = _requests(transfer)
    if not requests:
        return
    latest = requests[0]
    asked = frozenset(offer.responder_id for offer in offers if offer.created_at >= latest.occurred_at)
    if dispatch.invite_unit(transfer, document, not_again=asked):
        return
    _tell_counselor_not_coming(transfer, document, latest.dedupe_key)


def _tell_counselor_not_coming(transfer: Transfer, document: RoutingDocument, request_key: str) -> None:
    """Say ``unit_not_reached`` on the counselor's own leg and put them back in the caller's
    room (inline TwiML: nothing more for the line to answer). Once per request."""
    if not _claim(transfer, NOT_REACHED, f"{request_key}:not_reached"):
        db.session.commit()
        return
    db.session.commit()
    _tell_on_their_leg(transfer.id, document, request_key, attempt=0)


# The claim above is taken before Twilio is asked: should Twilio not take the news (unreachable,
# erroring), it is asked again after these many seconds from the first try, while the counselor
# is still with the caller. Without it, the claim kept any later try from telling them.
TELL_AGAIN_AFTER_SECONDS = (1.0, 3.0, 10.0)


def _tell_on_their_leg(transfer_id: int, document: RoutingDocument, request_key: str, attempt: int) -> None:
    transfer = db.session.get(Transfer, transfer_id, populate_existing=True)
    counselor = next(
        (offer for offer in state.staff_on_call(transfer_id) if offer.purpose == "answer" and offer.call_sid), None
    )
    if transfer is None or transfer.state != "connected" or counselor is None:
        db.session.commit()
        return  # the call is over, or their counselor has left it: nobody to tell
    if attempt and _asked_again_since(transfer, request_key):
        db.session.commit()
        return  # that request has its own news
    back = transfer_twiml.responder_joins(
        document, transfer.conference_name,
        events_url=public_url("transfer.conference_events", transfer=transfer_id),
        after_url=public_url("transfer.responder_after", offer=counselor.id),
        label=f"answer-{counselor.id}", lead="unit_not_reached",
    )  # fmt: skip
    call_sid = counselor.call_sid
    db.session.commit()  # no transaction held open while Twilio is asked
    if dispatch.play_to_responder(call_sid, back) or attempt >= len(TELL_AGAIN_AFTER_SECONDS):
        return
    wait = TELL_AGAIN_AFTER_SECONDS[attempt] - (TELL_AGAIN_AFTER_SECONDS[attempt - 1] if attempt else 0.0)
    start_later(
        wait, f"transfer.unit_not_reached_again:{transfer_id}",
        partial(_tell_on_their_leg, transfer_id, document, request_key, attempt + 1),
    )  # fmt: skip


def _asked_again_since(transfer: Transfer, request_key: str) -> bool:
    """The counselor asked for a unit again after request ``request_key`` (the desk, ``*`` then
    1), or a unit rings or has joined: its "not coming" is no longer true to tell."""
    latest = next(iter(_requests(transfer)), None)
    if latest is not None and latest.dedupe_key != request_key:
        return True
    return unit_status(transfer).state in ("joined", "ringing", "requested")


def phone_outcome(asked: JoinRequest, transfer: Transfer) -> str:
    """What to tell a counselor about their request ``asked`` (``CALLING``, ``ON_THE_CALL`` or
    ``NOT_CALLED``): "calling" only while a unit is being rung or placed."""
    if asked.outcome == RINGING:
        # ``rung`` None: still being placed when the webhook could wait no longer. Should Twilio
        # refuse it after all, the request is settled (``NOT_RUNG``): the console's desk shows
        # the unit as not asked, and ``*`` then 1 asks again.
        return NOT_CALLED if asked.rung is False else CALLING
    if asked.outcome == ALREADY:
        return ON_THE_CALL if unit_status(transfer).state == "joined" else CALLING
    return NOT_CALLED
