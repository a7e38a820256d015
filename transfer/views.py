"""Webhooks of the warm transfer: the caller's hold loop and conference, and responder legs.

Caller-facing routes fail safe to the backup line (``voice_failsafe``); responder-facing
routes fail by ending the responder's leg politely, since the caller's hold loop carries on.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import ParamSpec
from urllib.parse import parse_qs, urlsplit

from blinker import Namespace
from flask import Blueprint, Response, abort, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from twilio.twiml.voice_response import VoiceResponse

from crisisline import deadline, twilio_params
from crisisline.background import start_soon
from crisisline.db import db
from crisisline.failsafe import (
    AFTER_FAILSAFE,
    acknowledged,
    answering_failures_with,
    hold_failsafe,
    status_deadline,
    twiml_response,
    voice_failsafe,
)
from crisisline.models import Call, Offer, Transfer
from crisisline.twilio_auth import twilio_signed
from crisisline.urls import path_for
from ivr import twiml as ivr_twiml
from ivr.backup import to_backup
from routing.document import RoutingDocument
from routing.store import active_routing
from transfer import dispatch, flow, joining, state
from transfer import twiml as transfer_twiml

bp = Blueprint("transfer", __name__, url_prefix="/voice")
AFTER_FAILSAFE.append(flow.failsafe_took_over)
log = logging.getLogger(__name__)
P = ParamSpec("P")
STAFF_ERROR = "Sorry, something went wrong on the crisis line. The caller is still being looked after."


# A failure on a responder's leg ends that leg politely; it must never dial the backup line
# from a counselor's phone. The caller's own hold loop keeps them safe.
def staff_error_answer(_error: BaseException | None = None) -> Response:
    return twiml_response(transfer_twiml.staff_message(STAFF_ERROR))


def _end_the_offer_the_line_failed(outcome: str) -> None:
    """The line apologises on a responder's leg (``?offer=``) and hangs it up: their offer ends
    as ``outcome``, not their miss, and the caller's next person is rung
    (``flow.line_failed_the_leg``), off this thread: the apology never waits on the database.
    Best effort: should this fail, their leg's end still closes the offer."""
    offer_id = twilio_params.query_id("offer")
    if offer_id is None:
        return
    try:
        start_soon(f"line-failed:{offer_id}", partial(flow.line_failed_the_leg, offer_id, outcome))
    except Exception as error:  # the apology goes out whatever happens here
        log.warning("offer the line failed not handed on: %s", type(error).__name__)


def _apology_unbriefed(_error: BaseException) -> Response:
    """The whisper failed (or ran past its deadline): the apology, and the offer ends unbriefed."""
    answer = staff_error_answer()
    _end_the_offer_the_line_failed(state.NOT_BRIEFED)
    return answer


staff_failsafe = answering_failures_with(_apology_unbriefed, "responder webhook failed")


def active_document() -> RoutingDocument:
    active = active_routing()
    if active is None:
        raise RuntimeError("no routing published")
    return active.document


def found_transfer() -> Transfer | None:
    """The transfer named by ``?transfer=`` (a row id in ASCII digits), or None."""
    transfer_id = twilio_params.query_id("transfer")
    return db.session.get(Transfer, transfer_id) if transfer_id else None


def requested_transfer() -> Transfer:
    transfer = found_transfer()
    if transfer is None:
        abort(404)
    return transfer


def _found_offer() -> tuple[Offer, Transfer] | None:
    offer_id = twilio_params.query_id("offer")
    offer = db.session.get(Offer, offer_id) if offer_id else None
    transfer = db.session.get(Transfer, offer.transfer_id) if offer else None
    return (offer, transfer) if offer and transfer else None


def _offer() -> tuple[Offer, Transfer]:
    found = _found_offer()
    if found is None:
        abort(404)
    return found


def _events_url(transfer: Transfer) -> str:
    return path_for("transfer.conference_events", transfer=transfer.id)


def caller_join_twiml(transfer: Transfer) -> VoiceResponse:
    return transfer_twiml.caller_joins(
        transfer.conference_name,
        events_url=_events_url(transfer),
        after_url=path_for("transfer.caller_after", transfer=transfer.id),
    )


def hold_twiml(
    transfer: Transfer, document: RoutingDocument, message: str, tick: int, *, minutes: int = 0,
    offer_callback: bool = False, position: int = 0, language_notice: bool = False,
) -> VoiceResponse:  # fmt: skip
    """A hold turn; with ``language_notice`` it first says nobody who speaks their language is available."""
    language = document.language(transfer.language)
    text = language.prompt(message, minutes=minutes, position=position)  # unused placeholders are ignored
    turn = transfer_twiml.hold(
        document, language, message=text, next_url=path_for("transfer.hold", transfer=transfer.id, tick=tick + 1),
        callback_offer=language.prompt("callback_offer", digit=document.callbacks.digit) if offer_callback else None,
        callback_url=path_for("callbacks.caller_key", transfer=transfer.id, tick=tick + 1),
    )  # fmt: skip
    return ivr_twiml.with_lead(language, [language.prompt("no_language_match")], turn) if language_notice else turn


def hold_turn(transfer: Transfer, document: RoutingDocument, tick: int) -> Response:
    """One turn of the hold loop as TwiML: hold (maybe offering a callback), join, or backup."""
    transfer = flow.current_round(transfer)
    step = flow.hold_step(transfer, document, tick)
    if step.kind == "backup":
        return backup(transfer, document, step.message)
    return twiml_response(step_twiml(transfer, document, step, tick))


def step_twiml(transfer: Transfer, document: RoutingDocument, step: flow.HoldStep, tick: int) -> VoiceResponse:
    """The TwiML of a hold step other than ``backup``: join, hold, or the callback-or-backup choice."""
    if step.kind == "join":
        if not flow.caller_joined(transfer):
            # Not accepted after all (withdrawn this instant, or over): the hold loop decides.
            return hold_twiml(transfer, document, "hold_update", tick)
        return caller_join_twiml(transfer)
    if step.kind == "settle":
        return transfer_twiml.settle(path_for("transfer.hold", transfer=transfer.id, tick=tick + 1))
    if step.kind == "staff_left":
        return transfer_twiml.go_to(path_for("transfer.staff_left", transfer=transfer.id))
    if step.kind == "callback_confirmed":
        return callback_confirmed_twiml(transfer, document)
    if step.kind == "callback_or_backup":
        language = document.language(transfer.language)
        return transfer_twiml.callback_or_backup(
            language,
            message=language.prompt(step.message),
            callback_offer=language.prompt("callback_offer", digit=document.callbacks.digit),
            callback_url=path_for("callbacks.caller_key", transfer=transfer.id, tick=tick + 1),
            backup_url=path_for("callbacks.declined", transfer=transfer.id, reason=step.reason or "nobody_left"),
        )
    return hold_twiml(
        transfer, document, step.message, tick, minutes=step.minutes, offer_callback=step.offer_callback,
        position=step.position, language_notice=step.language_notice,
    )  # fmt: skip


def callback_confirmed_twiml(transfer: Transfer, document: RoutingDocument) -> VoiceResponse:
    """Their callback is stored: "We will call you back…", then the line hangs up."""
    language = document.language(transfer.language)
    response = VoiceResponse()
    ivr_twiml.say(response, language, language.prompt("callback_confirmed"))
    response.hangup()
    return response


def backup(transfer: Transfer, document: RoutingDocument, message: str) -> Response:
    call = db.session.get(Call, transfer.call_id)
    assert call is not None
    return to_backup(call, document, document.language(transfer.language), message, attempt=1)


# --- the caller ------------------------------------------------------------------------------


@bp.post("/hold")
@twilio_signed
@hold_failsafe
def hold() -> Response:
    """One turn of the caller's hold loop: keep holding, join the responder, or go to backup."""
    transfer, document = requested_transfer(), active_document()
    tick = twilio_params.query_number("tick", 1)
    return hold_turn(transfer, document, tick)


@bp.post("/transfer/join")
@twilio_signed
@voice_failsafe
def caller_join() -> Response:
    """Where an accepting responder's press of 1 redirects the caller: into the conference."""
    transfer, document = flow.current_round(requested_transfer()), active_document()
    if flow.caller_joined(transfer):
        return twiml_response(caller_join_twiml(transfer))
    # Not accepted after all (or already over): back to the hold loop, which knows what next.
    return twiml_response(hold_twiml(transfer, document, "hold_update", 1))


# The line's people left a caller who is still on the line (sender: the transfer; ``document``).
# A receiver may return TwiML for the caller to hear first (``followups``: may we check in by
# text?); every receiver runs, the first TwiML wins. None from all of them (disabled, number unknown,
# STOP, any problem) carries on exactly as without them: tell the caller, search again.
staff_left_caller = Namespace().signal("staff-left-caller")


@bp.post("/transfer/after")
@twilio_signed
@voice_failsafe
def caller_after() -> Response:
    """The caller's conference ended while they are still on the line: never leave them there."""
    transfer, document = requested_transfer(), active_document()
    if request.form.get("CallStatus") in flow.TERMINAL_LEG_STATUSES:
        return twiml_response(VoiceResponse())  # they hung up: nobody to search for
    current = flow.current_round(transfer)
    if current.id != transfer.id and current.state in ("connecting", "connected"):
        # A move for a leaving already handled, arriving late: someone else has them now, and
        # they go straight back to that room (never told "disconnected", never asked again).
        return hold_turn(current, document, 1)
    for _receiver, first in staff_left_caller.send(transfer, document=document):
        if first is not None:
            return twiml_response(first)
    reached_the_room = transfer.connected_at is not None
    renewed = flow.restart_after_staff_left(transfer, document)
    if not reached_the_room:
        # Their counselor left before they reached the room: nobody they were talking with was
        # disconnected, as far as they know; they are still waiting.
        return twiml_response(hold_twiml(renewed, document, "hold_update", 1))
    language = document.language(transfer.language)
    return twiml_response(
        ivr_twiml.with_lead(language, [language.prompt("staff_left")], hold_twiml(renewed, document, "hold", 1))
    )


@bp.post("/transfer/staff-left")
@twilio_signed
@voice_failsafe
def staff_left() -> Response:
    """Everyone from the line left the caller's conference: tell them, and search again."""
    return caller_after()


@bp.post("/conference/events")
@twilio_signed
@status_deadline(acknowledged)
def conference_events() -> Response:
    """Conference status callbacks: recorded for metrics. One also steers: a responder who
    hung up (``participant-leave``, their call over) is handled as their leg's end, at once;
    if the database fails it, again in a moment (``flow.leg_end_again_later``)."""
    form = request.form
    event = twilio_params.choice(form, "StatusCallbackEvent", twilio_params.CONFERENCE_EVENTS)
    label = twilio_params.text(form, "ParticipantLabel", limit=64)  # our own, e.g. "answer-12"
    call_status = twilio_params.call_status(form, "ParticipantCallStatus")
    try:
        transfer = found_transfer()
        if transfer is None or event is None:
            return Response(status=204)  # acknowledged and ignored: nothing known to record it on
        sequence = twilio_params.number(form, "SequenceNumber")
        key = f"conference:{transfer.id}:{'' if sequence is None else sequence}:{event}"
        flow.record_event(transfer, f"conference.{event}", key, label=label)
        db.session.commit()
        if event == "participant-leave":
            flow.staff_left_the_room(transfer, label, twilio_params.call_sid(form), call_status)
    except (DBAPIError, PoolTimeout):
        if event == "participant-leave" and call_status in flow.TERMINAL_LEG_STATUSES:
            flow.leg_end_again_later(_offer_id_of(label), None)  # a responder hung up: the caller may be alone
        raise
    return Response(status=204)


def _offer_id_of(label: str) -> int | None:
    """The offer id in a responder's conference label (``answer-12``, ``join-12``)."""
    _purpose, _, offer_id = label.partition("-")
    return int(offer_id) if offer_id.isascii() and offer_id.isdigit() and len(offer_id) < 12 else None


# --- responders ------------------------------------------------------------------------------


@bp.post("/offer/whisper")
@twilio_signed
@staff_failsafe
def whisper() -> Response:
    """A responder answered their phone: brief them and ask for 1 (accept) or 2 (pass)."""
    offer, transfer = _offer()
    document = active_document()
    leg = twilio_params.call_sid(request.form)

    def still_answering() -> bool:
        return deadline.answered_by_deadline() is None

    flow.adopt_lost_leg(offer, transfer, leg, still_answering=still_answering)
    step = flow.offer_answered(offer, transfer, document, leg, still_answering=still_answering)
    if step.kind == "staff":
        return twiml_response(transfer_twiml.staff_message(step.text))
    return twiml_response(
        transfer_twiml.whisper(document, step.text, action=path_for("transfer.decide", offer=offer.id))
    )


@bp.post("/offer/fallback")
@twilio_signed
def staff_fallback() -> Response:
    """Twilio's fallback for a responder's leg (our whisper or decide failed): a plain apology
    instead of Twilio's generic error; the caller's own hold loop carries on regardless. The
    offer ends as the failed webhook's own fail-safe ends it: not the responder's miss.

    A counselor's in-call menu that failed (they are with a caller, out of the room for a
    moment) takes them back to the call shortly instead (``_back_to_the_call_shortly``)."""
    failed = urlsplit(request.form.get("ErrorUrl", ""))
    if failed.path.endswith(IN_CALL_PATHS):
        # Their offer is accepted: nothing to end (their leg's end moves their caller on).
        tried = twilio_params.natural(parse_qs(failed.query).get("again", [""])[0], highest=BACK_TO_THE_CALL_TRIES)
        return _back_to_the_call_shortly(twilio_params.query_id("offer"), tried or 0) or staff_error_answer()
    answer = staff_error_answer()
    _end_the_offer_the_line_failed(flow.DEADLINE_PASSED if failed.path.endswith("/offer/decide") else state.NOT_BRIEFED)
    return answer


def _promised_or_apology(_error: BaseException) -> Response:
    """A press of 1 that fails after its acceptance promised the room (a database failing on
    what follows, say) still puts the responder there: the caller is on their way in (their
    redirect, or their own hold turn). So does a counselor's menu once the caller is known to
    be with them. Otherwise the apology."""
    promised = deadline.promised_answer()
    return Response(promised, status=200, mimetype="text/xml") if promised else staff_error_answer()


def _decide_failed(error: BaseException) -> Response:
    """A key press that failed or ran past its deadline: ``_promised_or_apology``; an offer
    still open (no acceptance or pass stored) ends as ``DEADLINE_PASSED``, not their miss."""
    if deadline.promised_answer():  # stored before promised: an acceptance or a pass, nothing to end
        return _promised_or_apology(error)
    answer = staff_error_answer()
    _end_the_offer_the_line_failed(flow.DEADLINE_PASSED)
    return answer


@bp.post("/offer/decide")
@twilio_signed
@answering_failures_with(_decide_failed, "responder webhook failed")
def decide() -> Response:
    """The responder's key after the whisper: 1 joins them to the caller (if they are first)."""
    offer, transfer = _offer()
    document = active_document()
    digits = request.form.get("Digits", "").strip()[:1]
    if digits != "1":
        # A pass is a pass whatever follows (ringing the next person, moving a caller with
        # nobody left on): a deadline passing meanwhile says so, not sorry.
        deadline.answer_if_late(transfer_twiml.staff_message(document.staff_prompt("passed")).to_xml())

    def promise_join(lead: str) -> bool:
        return deadline.answer_if_late(_responder_join_twiml(offer, transfer, document, lead=lead).to_xml())

    decision = flow.offer_decided(
        offer, transfer, document, digits,
        still_answering=lambda: deadline.answered_by_deadline() is None, promise_join=promise_join,
    )  # fmt: skip
    if decision.kind == "joined":
        return twiml_response(_responder_join_twiml(offer, transfer, document, lead=decision.lead))
    message = document.staff_prompt(decision.key)
    answer = transfer_twiml.staff_message(message)
    if digits != "1":
        return twiml_response(answer)  # the answer promised above
    # This answer replaces any promised room for a deadline still to pass; if it already put
    # them in the room, it will stay empty (the caller hung up meanwhile, the person's phone
    # could not be dialled): they are told there, over REST.
    if not deadline.answer_if_late(answer.to_xml()) and deadline.answered_by_deadline() == deadline.PROMISED:
        dispatch.tell_responder(offer.call_sid, message)
    return twiml_response(answer)


def _responder_join_twiml(
    offer: Offer, transfer: Transfer, document: RoutingDocument, *, lead: str = "connecting"
) -> VoiceResponse:
    return transfer_twiml.responder_joins(
        document, transfer.conference_name,
        events_url=_events_url(transfer),
        after_url=path_for("transfer.responder_after", offer=offer.id),
        label=f"{offer.purpose}-{offer.id}", lead=lead,
    )  # fmt: skip


@bp.post("/offer/status")
@twilio_signed
@status_deadline(acknowledged)
def offer_status() -> Response:
    """Status callbacks of a responder's leg (duplicated and reordered by Twilio at will). A
    final status the database failed is handled again in a moment (``flow.leg_end_again_later``)."""
    status = twilio_params.call_status(request.form) or ""
    try:
        found = _found_offer()
        if found is None:
            return Response(status=204)  # acknowledged and ignored: no such offer
        offer, transfer = found
        fresh = state.apply_offer_sequence(offer, twilio_params.number(request.form, "SequenceNumber"))
        db.session.commit()
        if fresh and status in flow.TERMINAL_LEG_STATUSES:
            db.session.refresh(offer)
            flow.offer_leg_ended(offer, transfer, active_document(), status)
    except (DBAPIError, PoolTimeout):
        if status in flow.TERMINAL_LEG_STATUSES:
            flow.leg_end_again_later(twilio_params.query_id("offer"), status)
        raise
    return Response(status=204)


# A counselor whose in-call menu the line cannot answer (its database failing, or the web
# process down: Twilio's fallback) is with a caller, out of the room for a moment: a pause, then
# the way back in (``/offer/rejoin``) is asked again, this many times in all, before the apology.
# Needs no database: a blip of a few seconds no longer cuts a counselor off their caller.
BACK_TO_THE_CALL_TRIES = 3
BACK_TO_THE_CALL_PAUSE_SECONDS = 2
ONE_MOMENT = "One moment, taking you back to the call."
IN_CALL_PATHS = ("/offer/after", "/offer/menu", "/offer/rejoin")


def _back_to_the_call_shortly(offer_id: int | None, tried: int) -> Response | None:
    """The pause and ``/offer/rejoin`` again (its ``again=`` counts the tries); None once
    ``BACK_TO_THE_CALL_TRIES`` were made, or without the offer's id."""
    if offer_id is None or tried >= BACK_TO_THE_CALL_TRIES:
        return None
    response = VoiceResponse()
    if not tried:
        response.say(ONE_MOMENT)
    response.pause(length=BACK_TO_THE_CALL_PAUSE_SECONDS)
    response.redirect(path_for("transfer.rejoin", offer=offer_id, again=tried + 1), method="POST")
    return twiml_response(response)


def _promised_or_back_shortly(error: BaseException) -> Response:
    """An in-call menu that failed: what it promised (the room, the caller known to be there),
    else back to the call shortly, else (tried enough) the apology."""
    if deadline.promised_answer():
        return _promised_or_apology(error)
    tried = twilio_params.query_number("again", 0, lowest=0, highest=BACK_TO_THE_CALL_TRIES)
    return _back_to_the_call_shortly(twilio_params.query_id("offer"), tried) or staff_error_answer()


# The counselor's in-call menu: past the deadline, or on a failure once the caller is known to
# be with us, they are put back where they were (``deadline.answer_if_late``); on a failure
# before that, taken back shortly (``_promised_or_back_shortly``); never hung up on mid-call at
# the first failure: that would leave the caller alone in the room.
back_in_the_call_failsafe = answering_failures_with(_promised_or_back_shortly, "responder webhook failed")


def _caller_still_there(offer: Offer, transfer: Transfer, back: VoiceResponse) -> bool:
    """``flow.caller_still_with_us``, promising ``back`` should the deadline pass while Twilio
    is asked (our records say the caller is there: Twilio only confirms it)."""
    return flow.caller_still_with_us(
        offer, transfer, before_asking_twilio=lambda: deadline.answer_if_late(back.to_xml())
    )


def _caller_gone(offer: Offer, document: RoutingDocument) -> Response:
    """Tell a responder the caller has gone, and end their leg. If the deadline already put
    them back in the (empty) room, they are told there, over REST, as ``decide`` does."""
    message = document.staff_prompt("caller_gone")
    answer = transfer_twiml.staff_message(message)
    if not deadline.answer_if_late(answer.to_xml()) and deadline.answered_by_deadline() == deadline.PROMISED:
        dispatch.tell_responder(offer.call_sid, message)
    return twiml_response(answer)


def _counselor_menu_twiml(offer: Offer, document: RoutingDocument) -> VoiceResponse:
    return transfer_twiml.counselor_menu(
        document,
        action=path_for("transfer.counselor_menu", offer=offer.id),
        back_url=path_for("transfer.rejoin", offer=offer.id),
    )


@bp.post("/offer/after")
@twilio_signed
@back_in_the_call_failsafe
def responder_after() -> Response:
    """A responder's conference ``<Dial>`` ended: they pressed ``*``, or the call is over."""
    offer, transfer = _offer()
    document = active_document()
    if offer.purpose == "answer":
        after = _counselor_menu_twiml(offer, document)
    else:
        after = _responder_join_twiml(offer, transfer, document)
    if not _caller_still_there(offer, transfer, after):
        return _caller_gone(offer, document)
    return twiml_response(after)


@bp.post("/offer/menu")
@twilio_signed
@back_in_the_call_failsafe
def counselor_menu() -> Response:
    """The counselor's menu: 1 asks the co-responder unit to join the call; anything else goes back."""
    offer, transfer = _offer()
    document = active_document()
    back = _responder_join_twiml(offer, transfer, document)
    if not _caller_still_there(offer, transfer, back):
        return _caller_gone(offer, document)
    if not request.form.get("Digits", "").startswith("1"):
        return twiml_response(back)
    # The console's once-only request: a second ``*`` 1 while the unit rings rings nobody new.
    asked = joining.request_unit_join(transfer.id, offer.responder_id, document)
    outcome = joining.phone_outcome(asked, transfer)
    if outcome == joining.ON_THE_CALL:
        return twiml_response(back)
    if outcome == joining.CALLING:
        told = document.staff_prompt("unit_calling")
    else:
        told = document.staff_prompt("unit_unavailable")  # none on shift, all busy, or Twilio refused
    response = VoiceResponse()
    response.say(told)
    for verb in back.verbs:
        response.append(verb)
    return twiml_response(response)


@bp.post("/offer/rejoin")
@twilio_signed
@back_in_the_call_failsafe
def rejoin() -> Response:
    """Back into the caller's conference (if the caller is still there)."""
    offer, transfer = _offer()
    document = active_document()
    back = _responder_join_twiml(offer, transfer, document)
    if not _caller_still_there(offer, transfer, back):
        return _caller_gone(offer, document)
    return twiml_response(back)
