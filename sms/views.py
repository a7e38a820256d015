"""The Twilio messaging webhooks. Thin: deduplicate, find who is texting, hand over, reply.

Replies go out through the REST API (``sms.outbox``), each claimed once and tracked to
delivery; the webhook itself answers with empty TwiML.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from twilio.twiml.messaging_response import MessagingResponse

from crisisline import twilio_params
from crisisline.db import commit_keeping_loaded, db, inserted_row
from crisisline.models import Message
from crisisline.phone import caller_number
from crisisline.sms_segments import segment_count
from crisisline.twilio_auth import twilio_signed
from ivr.call_log import phone_hash
from routing.store import active_routing
from sms import conversations as convo
from sms import outbox
from sms.inbound import handle_inbound
from sms.texting import handle_texter_message

bp = Blueprint("sms", __name__, url_prefix="/sms")
log = logging.getLogger(__name__)
FAILSAFE_TEXT = "To talk to someone now, call this number, or call or text 988. If you are in danger, call 911."


def _twiml(text: str | None = None) -> Response:
    response = MessagingResponse()
    if text:
        response.message(text)
    return Response(response.to_xml(), mimetype="text/xml")


@bp.post("/incoming")
@twilio_signed
def incoming() -> Response:
    """An inbound text. Delivered twice (or five times, concurrently) it is handled once."""
    if not request.form.get("MessageSid"):
        return Response("MessageSid is required", status=400)
    try:
        response = _incoming()
    except Exception as error:
        # Class name only: the exception text could hold a body or a number.
        log.error("sms webhook failed: %s", type(error).__name__)
        db.session.rollback()
        return _twiml(FAILSAFE_TEXT)
    # Timed work (expired offers, idle closes, retries) is the clock's, every minute: an
    # inbound text costs the same however many people wait.
    return response


def _incoming() -> Response:
    form = request.form
    active = active_routing()
    if active is None:
        return _twiml(FAILSAFE_TEXT)
    document = active.document
    # A withheld or unreadable sender cannot be answered, but what they wrote is still kept.
    sender = caller_number(form.get("From"))
    responder = document.responder_by_phone(sender) if sender else None
    texter = convo.find_or_create_texter(sender, phone_hash(sender)) if sender and not responder else None
    message_key = twilio_params.message_key(form.get("MessageSid", ""))
    body = form.get("Body", "")  # as written, whole: sealed, never trimmed
    settings = current_app.extensions["crisisline.settings"]
    inbound = inserted_row(
        Message,
        {
            "direction": "in",
            "party": "counselor" if responder else "texter",
            "message_sid": message_key,
            "responder_id": responder.id if responder else None,
            "texter_id": texter.id if texter else None,
            "line_number": caller_number(form.get("To")) or settings.line_phone_number,
            "num_media": twilio_params.count(form, "NumMedia", highest=twilio_params.MAX_MEDIA),
            "sealed_body": outbox.vault().seal(body, context=outbox.BODY_CONTEXT),
            "segments": segment_count(body) if body else 0,
            "status": "received",
            "status_rank": 5,
            "created_at": convo.now(),
        },
    )
    commit_keeping_loaded()  # stored before anything is done with it; the texter and it stay loaded
    if inbound is None:
        return _twiml()  # a duplicate delivery: already handled (or being retried by the sweep)
    # The texter handler is named here, so this module's binding is the one used (and the one
    # a test may replace); the clock's retry uses sms.texting's own.
    handle_inbound(document, inbound, body, texter_handler=handle_texter_message)
    return _twiml()


@bp.post("/status")
@twilio_signed
def message_status() -> Response:
    """Delivery status of a text we sent (duplicated and reordered by Twilio at will)."""
    message_id = twilio_params.query_id("message")
    status = twilio_params.choice(request.form, "MessageStatus", outbox.MESSAGE_STATUSES)
    if message_id is not None and status is not None:
        error_code = twilio_params.number(request.form, "ErrorCode")
        outbox.record_status(message_id, status, str(error_code) if error_code is not None else None)
    return Response(status=204)
