"""The Twilio messaging webhook. Thin: who is texting, then the staff command or a safe reply."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request
from twilio.twiml.messaging_response import MessagingResponse

from crisisline.phone import caller_number
from crisisline.twilio_auth import twilio_signed
from routing.store import active_routing
from sms.staff import parse_command, run_command

bp = Blueprint("sms", __name__, url_prefix="/sms")
log = logging.getLogger(__name__)
FAILSAFE_TEXT = (
    "To talk to someone now, call this number, or call or text 988. If you are in danger, call 911."
)


def _reply(text: str) -> Response:
    response = MessagingResponse()
    response.message(text)
    return Response(response.to_xml(), mimetype="text/xml")


@bp.post("/incoming")
@twilio_signed
def incoming() -> Response:
    """A text to the line. Responders' commands are recognised only from their registered
    phone; anyone else (including an unknown number sending ``ON``) gets the pointer to help."""
    try:
        active = active_routing()
    except Exception as error:  # the database is down: still point the texter to help
        log.error("sms webhook without routing: %s", type(error).__name__)
        return _reply(FAILSAFE_TEXT)
    if active is None:
        return _reply(FAILSAFE_TEXT)
    document = active.document
    sender = caller_number(request.form.get("From"))
    responder = document.responder_by_phone(sender) if sender else None
    command = parse_command(request.form.get("Body", ""))
    if responder is not None and command is not None:
        log.info("staff command %s from %s", command, responder.id)
        return _reply(run_command(document, responder, command))
    return _reply(document.default_language.prompt("sms_unavailable"))
