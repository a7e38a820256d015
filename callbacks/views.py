"""Webhooks of callbacks: the holding caller's key, and the leg that rings the person back.

Caller-facing routes fail safe to the backup line (``voice_failsafe``), like every voice route.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from twilio.twiml.voice_response import VoiceResponse

from callbacks import attempts
from callbacks.requests import request_from_hold
from crisisline import deadline, twilio_params
from crisisline.failsafe import (
    acknowledged,
    answered_by_failsafe,
    failsafe_response,
    hold_failsafe,
    status_deadline,
    twiml_response,
    voice_failsafe,
)
from crisisline.twilio_auth import twilio_signed
from ivr import twiml as ivr_twiml
from transfer import flow
from transfer import views as transfer_views

bp = Blueprint("callbacks", __name__, url_prefix="/voice/callback")


@bp.post("/request")
@twilio_signed
@hold_failsafe  # a caller already in the queue: a database blip holds them, as a hold turn's does
def caller_key() -> Response:
    """A key pressed while holding: the callback key hands them to a callback; any other
    key (or one when a callback is impossible) carries on holding."""
    transfer, document = transfer_views.requested_transfer(), transfer_views.active_document()
    language = document.language(transfer.language)
    tick = twilio_params.query_number("tick", 1)
    if request.form.get("Digits", "").strip()[:1] != document.callbacks.digit:
        return transfer_views.hold_turn(transfer, document, tick)
    confirmed = transfer_views.callback_confirmed_twiml(transfer, document)
    # Once the callback is stored, a deadline passing on what is slow after it answers with the
    # confirmation (as for a counselor's press of 1), never the backup line.
    outcome = request_from_hold(transfer, document, lambda: deadline.answer_if_late(confirmed.to_xml()))
    if outcome == "requested":
        return twiml_response(confirmed)
    if outcome == "join":
        return transfer_views.hold_turn(transfer, document, tick)
    lead = [language.prompt("callback_impossible")]
    holding = transfer_views.hold_twiml(transfer, document, "hold", tick)
    return twiml_response(ivr_twiml.with_lead(language, lead, holding))


@bp.post("/declined")
@twilio_signed
@voice_failsafe
def declined() -> Response:
    """Nobody could take the call and no callback key was pressed: the backup line now
    (unless a responder accepted in this very moment)."""
    transfer, document = transfer_views.requested_transfer(), transfer_views.active_document()
    reason = request.args.get("reason", "")
    step = flow.backup_unless_accepted(transfer, reason if reason in ("hold_limit", "nobody_left") else "nobody_left")
    if step.kind == "backup":
        return transfer_views.backup(transfer, document, step.message)
    # Accepted meanwhile: join, or settle while the responder's redirect brings them in.
    return twiml_response(transfer_views.step_twiml(transfer, document, step, twilio_params.query_number("tick", 1)))


@bp.post("/answer")
@twilio_signed
@voice_failsafe
def person_answer() -> Response:
    """The person we called back picked up: a greeting, then their responder's conference.
    If the responder has gone meanwhile, they are on the line with us: search again."""
    transfer, document = transfer_views.requested_transfer(), transfer_views.active_document()
    attempts.adopt_person_leg(transfer, twilio_params.call_sid(request.form) or "")
    answered_by = request.form.get("AnsweredBy", "")
    if answered_by.startswith("machine") or answered_by == "fax":
        attempts.person_not_reached(transfer, document, "machine")
        response = VoiceResponse()
        response.hangup()
        return twiml_response(response)
    language = document.language(transfer.language)
    greeting = [language.prompt("callback_greeting")]

    def join() -> VoiceResponse:
        return ivr_twiml.with_lead(language, greeting, transfer_views.caller_join_twiml(transfer))

    def promise_join() -> bool:
        # Their join is stored: should the deadline pass now, it answers with the room (as for
        # a counselor's press of 1), not the backup line, so the records say where they are.
        return deadline.answer_if_late(join().to_xml())

    if attempts.person_answered(transfer, promise_join):
        return twiml_response(join())
    if (
        transfer.state == "to_backup"
        or answered_by_failsafe(transfer.caller_call_sid)
        or deadline.answered_by_deadline() == deadline.FAILSAFE
    ):
        # The fail-safe has put them through to the backup line (this is its late handler, or
        # the same answer again): they stay there, and nobody is rung for them.
        return failsafe_response()
    attempts.answered_after_all(transfer)
    renewed = flow.restart_for_person(transfer, document, request.form.get("CallSid", ""))
    return twiml_response(
        ivr_twiml.with_lead(language, greeting, transfer_views.hold_twiml(renewed, document, "hold", 1))
    )


@bp.post("/status")
@twilio_signed
@status_deadline(acknowledged)
def person_status() -> Response:
    """Status callbacks of the person's leg (duplicated and reordered by Twilio at will)."""
    transfer = transfer_views.found_transfer()
    status, call_sid = twilio_params.call_status(request.form), twilio_params.call_sid(request.form)
    if transfer is None or call_sid is None:
        return Response(status=204)  # acknowledged and ignored: no callback or no leg we know
    attempts.adopt_person_leg(transfer, call_sid)
    if status in flow.TERMINAL_LEG_STATUSES and transfer.caller_call_sid in ("", call_sid):
        attempts.person_leg_ended(transfer, transfer_views.active_document(), status, call_sid)
    return Response(status=204)
