"""The Twilio messaging webhooks. Thin: deduplicate, find who is texting, hand over, reply.

Replies go out through the REST API (``sms.outbox``), each claimed once and tracked to
delivery; the webhook itself answers with empty TwiML.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from sqlalchemy import select, update
from twilio.twiml.messaging_response import MessagingResponse

from crisisline.db import db, insert_once
from crisisline.models import Message, Texter
from crisisline.phone import caller_number
from crisisline.sms_segments import segment_count
from crisisline.twilio_auth import twilio_signed
from ivr.call_log import phone_hash
from routing.document import RoutingDocument
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
    # Timed work (expired offers, idle closes, retries) is the clock's, every minute: an
    # inbound text costs the same however many people wait.
    return response


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
    texter = None if responder else convo.find_or_create_texter(sender, phone_hash(sender))
    body = form.get("Body", "")
    settings = current_app.extensions["crisisline.settings"]
    inserted = insert_once(
        Message,
        {
            "direction": "in",
            "party": "counselor" if responder else "texter",
            "message_sid": form.get("MessageSid", ""),
            "responder_id": responder.id if responder else None,
            "texter_id": texter.id if texter else None,
            "line_number": caller_number(form.get("To")) or settings.line_phone_number,
            "num_media": int(form.get("NumMedia", "0") or 0) if form.get("NumMedia", "0").isdigit() else 0,
            "sealed_body": outbox.vault().seal(body, context=outbox.BODY_CONTEXT),
            "segments": segment_count(body) if body else 0,
            "status": "received",
            "status_rank": 5,
            "created_at": convo.now(),
        },
    )
    db.session.commit()
    if not inserted:
        return _twiml()  # a duplicate delivery: already handled (or being retried by the sweep)
    inbound = db.session.scalars(select(Message).where(Message.message_sid == form.get("MessageSid", ""))).one()
    handle_inbound(document, inbound, body)
    return _twiml()


def handle_inbound(document: RoutingDocument, inbound: Message, body: str) -> None:
    """Handle one stored inbound text, then mark it handled. Safe to run again for the same
    text: every reply and relay it sends is keyed on the text's id, and every state change
    is conditional."""
    if inbound.responder_id is not None:
        responder = document.responder(inbound.responder_id)
        if responder is not None:
            reply = handle_staff_message(document, responder, inbound, body)
            if reply.text:
                outbox.send_text(
                    key=f"staff:{inbound.id}", to_number=responder.phone, from_number=inbound.line_number or "",
                    body=reply.text, party="counselor", responder_id=responder.id,
                    conversation_id=reply.conversation.id if reply.conversation else None,
                )  # fmt: skip
    else:
        texter = db.session.get(Texter, inbound.texter_id) if inbound.texter_id else None
        if texter is not None:
            handle_texter_message(document, texter, inbound, body, inbound.num_media, inbound.line_number)
    db.session.execute(update(Message).where(Message.id == inbound.id).values(handled_at=convo.now()))
    db.session.commit()


@bp.post("/status")
@twilio_signed
def message_status() -> Response:
    """Delivery status of a text we sent (duplicated and reordered by Twilio at will)."""
    message_id = request.args.get("message", "")
    if message_id.isdigit():
        outbox.record_status(int(message_id), request.form.get("MessageStatus", ""), request.form.get("ErrorCode"))
    return Response(status=204)
