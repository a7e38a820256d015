"""The Twilio messaging webhooks. Thin: deduplicate, find who is texting, hand over, reply.

Replies go out through the REST API (``sms.outbox``), each claimed once and tracked to
delivery; the webhook itself answers with empty TwiML.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from sqlalchemy import select
from twilio.twiml.messaging_response import MessagingResponse

from crisisline.db import db, insert_once
from crisisline.models import Message
from crisisline.phone import caller_number
from crisisline.sms_segments import segment_count
from crisisline.twilio_auth import twilio_signed
from ivr.call_log import phone_hash
from routing.store import active_routing
from sms import conversations as convo
from sms import outbox
from sms.staff import handle_staff_message
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
    _sweep_quietly()
    return response


def _sweep_quietly() -> None:
    """Timed work piggybacks on every inbound text; its failure never affects the reply."""
    try:
        active = active_routing()
        if active is not None:
            convo.sweep(active.document)
    except Exception as error:
        log.error("text sweep after webhook failed: %s", type(error).__name__)
        db.session.rollback()


def _incoming() -> Response:
    form = request.form
    active = active_routing()
    if active is None:
        return _twiml(FAILSAFE_TEXT)
    document = active.document
    sender = caller_number(form.get("From"))
    if sender is None:
        return _twiml()
    responder = document.responder_by_phone(sender)
    body = form.get("Body", "")
    inserted = insert_once(
        Message,
        {
            "direction": "in",
            "party": "counselor" if responder else "texter",
            "message_sid": form.get("MessageSid", ""),
            "responder_id": responder.id if responder else None,
            "sealed_body": outbox.vault().seal(body, context=outbox.BODY_CONTEXT),
            "segments": segment_count(body) if body else 0,
            "status": "received",
            "status_rank": 4,
            "created_at": convo.now(),
        },
    )
    db.session.commit()
    if not inserted:
        return _twiml()  # a duplicate delivery: already handled
    inbound = db.session.scalars(select(Message).where(Message.message_sid == form.get("MessageSid", ""))).one()
    line_number = caller_number(form.get("To")) or current_app.extensions["crisisline.settings"].line_phone_number
    if responder is not None:
        reply = handle_staff_message(document, responder, inbound, body)
        if reply.text:
            outbox.send_text(
                key=f"staff:{inbound.id}", to_number=responder.phone, from_number=line_number or "",
                body=reply.text, party="counselor", responder_id=responder.id,
                conversation_id=reply.conversation.id if reply.conversation else None,
            )  # fmt: skip
    else:
        texter = convo.find_or_create_texter(sender, phone_hash(sender))
        handle_texter_message(document, texter, inbound, body, int(form.get("NumMedia", "0") or 0), line_number)
    return _twiml()


@bp.post("/status")
@twilio_signed
def message_status() -> Response:
    """Delivery status of a text we sent (duplicated and reordered by Twilio at will)."""
    message_id = request.args.get("message", "")
    if message_id.isdigit():
        outbox.record_status(int(message_id), request.form.get("MessageStatus", ""), request.form.get("ErrorCode"))
    return Response(status=204)
