"""Voice side of check-ins: when the counselor leaves a caller who is still on the line, ask
(key 1) whether we may text them later to check on them; anything else searches again.

:func:`checkin_offer` is connected to ``transfer.views.staff_left_caller``, so the caller
hears the question before anything else. The consent route is a caller route: signed, and
any failure dials the backup line.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, request
from sqlalchemy import func, select
from twilio.twiml.voice_response import Gather, VoiceResponse

from crisisline import twilio_params
from crisisline.db import db
from crisisline.failsafe import twiml_response, voice_failsafe
from crisisline.models import Call, CallEvent, CheckIn, Transfer
from crisisline.twilio_auth import twilio_signed
from crisisline.urls import path_for
from followups import checkins
from ivr import twiml as ivr_twiml
from routing.document import RoutingDocument
from routing.store import active_routing
from transfer import flow, state
from transfer.views import hold_twiml, staff_left_caller

bp = Blueprint("followups", __name__, url_prefix="/voice/checkin")
log = logging.getLogger(__name__)


def _asked_key(transfer: Transfer) -> str:
    return f"checkin:asked:{transfer.id}"


@staff_left_caller.connect
def _offer_checkin(transfer: Transfer, *, document: RoutingDocument, **_: object) -> VoiceResponse | None:
    return checkin_offer(transfer, document)


def checkin_offer(transfer: Transfer, document: RoutingDocument) -> VoiceResponse | None:
    """The check-in question for a caller whose counselor left, or None for today's path
    (search again). Never raises: a problem here just means no question."""
    try:
        return _checkin_offer(transfer, document)
    except Exception as error:
        log.error("check-in question not offered: %s", type(error).__name__)
        db.session.rollback()
        return None


def _checkin_offer(transfer: Transfer, document: RoutingDocument) -> VoiceResponse | None:
    if not document.followups.checkins:
        return None
    call = db.session.get(Call, transfer.call_id)
    if call is None or not call.sealed_caller or not (call.line_number or checkins._settings_line_number()):
        return None
    if db.session.scalar(select(CheckIn.id).where(CheckIn.dedupe_key == f"call:{call.id}")) is not None:
        return None  # already agreed during this call
    texter = checkins.texter_for_call(call, create=False)
    if texter is not None and texter.opted_out:
        return None  # STOP: we would never text them, so we do not ask
    if transfer.connected_at is None:
        return None  # they never reached the room: no conversation to check in about; search on
    if transfer.state not in ("connecting", "connected") and not _asked_before(transfer):
        return None
    # The conversation is over: end this round now, so nothing treats the caller as connected
    # while they answer (a repeated request for this same moment asks the same question again).
    state.move_transfer(transfer.id, ("connecting", "connected"), "ended", end_reason="staff_left")
    flow.record_event(transfer, "checkin.asked", _asked_key(transfer))
    db.session.commit()
    flow.stop_ringing(transfer)  # a unit rung to join this round: not into an empty room
    language = document.language(transfer.language)
    action = path_for("followups.consent", transfer=transfer.id)
    twiml = VoiceResponse()
    gather = Gather(input="dtmf", num_digits=1, timeout=document.menu.timeout_seconds, action=action, method="POST")
    ivr_twiml.say(gather, language, language.prompt("checkin_question"))
    twiml.append(gather)
    twiml.redirect(action, method="POST")  # silence: the same route, with no key
    return twiml


def _asked_before(transfer: Transfer) -> bool:
    """This round already asked (a repeated request) and no newer search has started."""
    asked = db.session.scalar(
        select(CallEvent.id).where(CallEvent.call_id == transfer.call_id, CallEvent.dedupe_key == _asked_key(transfer))
    )
    latest = db.session.scalar(select(func.max(Transfer.round)).where(Transfer.call_id == transfer.call_id))
    return asked is not None and latest == transfer.round


@bp.post("/consent")
@twilio_signed
@voice_failsafe
def consent() -> Response:
    """1: the caller agrees to a check-in text; thank them and end the call. Anything else
    (or silence): exactly what happens when a counselor leaves: tell them, search again."""
    transfer_id = twilio_params.query_id("transfer")
    transfer = db.session.get(Transfer, transfer_id) if transfer_id is not None else None
    active = active_routing()
    if transfer is None or active is None:
        abort(404)  # the fail-safe answers with the backup line
    document = active.document
    language = document.language(transfer.language)
    call = db.session.get(Call, transfer.call_id)
    if request.form.get("Digits", "").strip()[:1] == "1" and call is not None:
        checkin = checkins.consent_from_call(call, transfer.language, transfer.need, document)
        if checkin is not None:
            flow.record_event(transfer, "checkin.consented", f"checkin:consented:{call.id}", checkin=checkin.id)
            db.session.commit()
            twiml = VoiceResponse()
            ivr_twiml.say(twiml, language, language.prompt("checkin_thanks"))
            twiml.hangup()
            return twiml_response(twiml)
    renewed = flow.restart_after_staff_left(transfer, document)
    return twiml_response(
        ivr_twiml.with_lead(language, [language.prompt("staff_left")], hold_twiml(renewed, document, "hold", 1))
    )
