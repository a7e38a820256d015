"""Ringing responders: the one place that decides who to ring next and places those calls.

``advance`` is safe to call from anywhere, any number of times, concurrently: from the
need menu, every hold tick, every responder leg's status callback, or a worker. A lease
serialises it per transfer, and each responder is claimed atomically before being rung.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests
from flask import current_app
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from crisisline.db import db
from crisisline.models import Offer, Transfer
from crisisline.settings import Settings
from crisisline.telephony import make_rest_client
from crisisline.urls import public_url
from routing.document import Responder, RoutingDocument
from routing.engine import decide_route
from transfer import state

log = logging.getLogger(__name__)
# REST calls made while Twilio waits for our TwiML must be quick; the hold loop retries.
INLINE_REST_TIMEOUT_SECONDS = 3.0
LEG_EVENTS = ["initiated", "ringing", "answered", "completed"]


def rest_client() -> Client:
    settings: Settings = current_app.extensions["crisisline.settings"]
    client: Client | None = current_app.extensions.get("crisisline.rest")
    if client is None:
        client = make_rest_client(settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url)
        client.http_client.timeout = INLINE_REST_TIMEOUT_SECONDS
        current_app.extensions["crisisline.rest"] = client
    return client


def line_number(transfer: Transfer) -> str:
    settings: Settings = current_app.extensions["crisisline.settings"]
    from crisisline.models import Call

    call = db.session.get(Call, transfer.call_id)
    number = (call.line_number if call else None) or settings.line_phone_number
    if not number:
        raise RuntimeError("no line number to call from: set LINE_PHONE_NUMBER")
    return number


@dataclass(frozen=True)
class DispatchResult:
    rung: int  # new legs placed now
    ringing: int  # legs in progress after this pass
    exhausted: bool  # nobody left to try: the caller should go to the backup line


def advance(transfer_id: int, document: RoutingDocument) -> DispatchResult:
    """Ring as many new responders as the strategy allows. Idempotent and concurrency-safe."""
    transfer = db.session.get(Transfer, transfer_id)
    if transfer is None or transfer.state != "waiting":
        return DispatchResult(0, 0, False)
    if transfer.mode == "live":
        # Queue order: people who asked to be called back keep their place, so responders
        # free now are offered to callbacks that were waiting before this caller first.
        for earlier_id in state.earlier_waiting_callbacks(transfer):
            advance(earlier_id, document)
    if not state.lease_dispatch(transfer_id):
        db.session.commit()
        return DispatchResult(0, len(state.active_offers(transfer_id)), False)
    db.session.commit()
    rung = 0
    exhausted = False
    try:
        need = document.need(transfer.need)
        if need is None:
            return DispatchResult(0, 0, True)
        capacity = document.transfer.parallel_max if document.transfer.strategy_for(need) == "parallel" else 1
        while True:
            active = len(state.active_offers(transfer_id))
            if active >= capacity:
                break
            db.session.refresh(transfer)
            if transfer.state != "waiting":
                break  # someone accepted (or the caller left) while we were ringing
            unavailable = state.offered_responder_ids(transfer_id) | state.unavailable_responder_ids()
            decision = decide_route(
                document, transfer.language, need, state.now(),
                unavailable=unavailable, last_offered=state.last_offered(),
            )  # fmt: skip
            if not decision.responders:
                exhausted = active == 0
                break
            for responder in decision.responders[: capacity - active]:
                rung += _ring(transfer, responder, document, purpose="answer")
        return DispatchResult(rung, len(state.active_offers(transfer_id)), exhausted)
    finally:
        state.release_dispatch(transfer_id)
        db.session.commit()


def invite_unit(transfer: Transfer, document: RoutingDocument) -> bool:
    """Ring an on-call co-responder unit to join a live call (three-way). True if one was rung."""
    need = document.need(transfer.need)
    if need is None:
        return False
    unavailable = state.unavailable_responder_ids() | {offer.responder_id for offer in state.staff_on_call(transfer.id)}
    units = [r for r in _on_call_units(document) if r.id not in unavailable]
    units.sort(key=lambda unit: transfer.language not in unit.languages)  # speakers first
    if transfer.state != "connected":
        return False  # the caller has gone: nobody is rung into an empty room
    return any(_ring(transfer, unit, document, purpose="join") for unit in units[:1])


def _on_call_units(document: RoutingDocument) -> list[Responder]:
    from routing.schedule import on_call

    return [r for r in on_call(document, state.now()) if r.kind == "co_responder"]


def _ring(transfer: Transfer, responder: Responder, document: RoutingDocument, *, purpose: str) -> int:
    """Claim ``responder`` and place their call. Returns 1 if their phone is now ringing."""
    offer = Offer(transfer_id=transfer.id, responder_id=responder.id, purpose=purpose, state="placing")
    db.session.add(offer)
    db.session.flush()
    if not state.claim_responder(responder.id, offer.id):
        offer.state, offer.outcome = "ended", "engaged_elsewhere"
        db.session.commit()
        return 0
    db.session.commit()
    try:
        call = rest_client().calls.create(
            to=responder.phone,
            from_=line_number(transfer),
            url=public_url("transfer.whisper", offer=offer.id),
            method="POST",
            fallback_url=public_url("transfer.staff_fallback", offer=offer.id),
            fallback_method="POST",
            status_callback=public_url("transfer.offer_status", offer=offer.id),
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
        log.warning("offer %s to %s failed: %s", offer.id, responder.id, type(error).__name__)
        state.finish_offer(offer, "rest_unreachable")
        db.session.commit()
        return 0
    db.session.execute(
        db.update(Offer)
        .where(Offer.id == offer.id, Offer.state == "placing")
        .values(call_sid=call.sid, state="ringing")
    )
    db.session.commit()
    return 1


def hang_up_call(call_sid: str | None, *, answered: bool) -> None:
    """End a responder's leg: ``completed`` hangs up an answered call, ``canceled`` a ringing one."""
    if not call_sid:
        return
    try:
        rest_client().calls(call_sid).update(status="completed" if answered else "canceled")
        if not answered:
            # It may have been answered meanwhile; "canceled" does not end an answered call.
            rest_client().calls(call_sid).update(status="completed")
    except (TwilioRestException, requests.RequestException, OSError) as error:
        log.info("could not end responder leg: %s", type(error).__name__)


REDIRECTED, CALLER_GONE, REDIRECT_FAILED = "redirected", "caller_gone", "failed"
GONE_ERROR_CODES = frozenset({20404, 21220})  # unknown call; call not in progress


def redirect_caller(transfer: Transfer, endpoint: str) -> str:
    """Move the caller to new TwiML: ``redirected``, ``caller_gone`` (their call has ended), or
    ``failed`` (Twilio unreachable or erroring: the caller is still there, and their own hold
    turns will carry them on)."""
    try:
        rest_client().calls(transfer.caller_call_sid).update(
            url=public_url(endpoint, transfer=transfer.id), method="POST"
        )
    except TwilioRestException as error:
        log.info("could not redirect caller of transfer %s: Twilio error %s", transfer.id, error.code)
        gone = error.status == 404 or error.code in GONE_ERROR_CODES
        return CALLER_GONE if gone else REDIRECT_FAILED
    except (requests.RequestException, OSError) as error:
        log.info("could not redirect caller of transfer %s: %s", transfer.id, type(error).__name__)
        return REDIRECT_FAILED
    return REDIRECTED


def call_has_ended(call_sid: str) -> bool | None:
    """Ask Twilio whether a call is over (None if Twilio cannot be asked right now)."""
    try:
        status = rest_client().calls(call_sid).fetch().status
    except TwilioRestException as error:
        return True if error.status == 404 else None
    except (requests.RequestException, OSError):
        return None
    return str(status) in ("completed", "busy", "failed", "no-answer", "canceled")
