"""The Twilio messaging webhooks. Thin: store the text (``sms.inbound``), hand it over, reply.

Replies to the sender go out in the webhook's TwiML, each claimed once first and tracked to
delivery by its status callback (``sms.outbox.TwimlReplies``); the fail-safe text joins them
when the handling failed. Texts to anyone else go through the REST API.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from flask import Blueprint, Response, current_app, request
from twilio.twiml.messaging_response import MessagingResponse

from crisisline import twilio_params
from crisisline.background import start_soon
from crisisline.db import db
from crisisline.deadline import PROGRESS
from crisisline.failsafe import DeadlineExceeded, status_deadline
from crisisline.phone import caller_number
from crisisline.twilio_auth import twilio_signed
from crisisline.urls import public_url
from routing.store import active_routing, last_read_routing
from sms import conversations as convo
from sms import outbox, unstored
from sms.inbound import handle_inbound, store_inbound
from sms.texting import handle_texter_message

bp = Blueprint("sms", __name__, url_prefix="/sms")
log = logging.getLogger(__name__)
FAILSAFE_TEXT = "To talk to someone now, call this number, or call or text 988. If you are in danger, call 911."


def failsafe_text(*, kept: bool = True) -> str:
    """The text a failure answers: the public pointer to the backup line, or, for a sender the
    routing names as staff (a counselor would read the pointer to 988 as the line mistaking
    them for a texter), what the line's trouble means for them: their text is kept and will be
    handled (``sms_line_trouble``), or, when it could be neither stored nor kept, that they
    should send it again (``sms_line_lost``). From the routing this process last read, in
    memory: never the database, which may be what failed. Never raises."""
    try:
        sender = caller_number(request.form.get("From"))
        known = last_read_routing()
        if (
            sender
            and known is not None
            and (
                known.document.responder_by_phone(sender) is not None
                or known.document.supervisor_by_phone(sender) is not None
            )
        ):
            return known.document.staff_prompt("sms_line_trouble" if kept else "sms_line_lost")
    except Exception as error:  # the public text is always a safe answer
        log.warning("could not tell whether a failed text came from staff: %s", type(error).__name__)
    return FAILSAFE_TEXT


def _twiml(text: str | None = None, replies: Sequence[tuple[int, str]] = ()) -> Response:
    """Messaging TwiML: each reply (claimed in ``sms.outbox``) with its row's status callback,
    then ``text`` (the fail-safe's, which is not tracked).

    Twilio sends a TwiML reply's status callbacks only if its ``<Message>`` also has an
    ``action``, the same URL (twilio-semantics §2.2). An ``action`` ends the answer (the verbs
    after it are never reached), so only the last verb can carry one: earlier replies stay
    ``queued``, which no page reads as a failure."""
    response = MessagingResponse()
    for position, (message_id, part) in enumerate(replies, start=1):
        status_url = public_url("sms.message_status", message=message_id)
        last_verb = position == len(replies) and not text
        response.message(part, status_callback=status_url, action=status_url if last_verb else None)
    if text:
        response.message(text)
    return Response(response.to_xml(), mimetype="text/xml")


def _answer(replies: outbox.TwimlReplies, text: str | None = None) -> Response:
    """The handler's answer, with the replies it claimed (``sms.outbox.TwimlReplies``)."""
    parts = replies.render()
    if parts is None:
        return _twiml(text)  # dropped: the deadline's answer carried the replies taken by then
    try:
        outbox.handed_to_twilio(message_id for message_id, _ in parts)
    except Exception as error:  # the replies matter more than their status: answered anyway
        log.error("replies answered, their status not recorded: %s", type(error).__name__)
        _rollback_quietly()
    return _twiml(text, parts)


@bp.post("/incoming")
@twilio_signed
def incoming() -> Response:
    """An inbound text. Delivered twice (or five times, concurrently) it is handled once.

    Stored first: if the database will not take it (refused, broken, or hung past the
    deadline, ``VOICE_DEADLINE_SECONDS`` as for calls), it is kept in Redis, sealed, for the
    clock to store, and the texter is pointed to the backup line now. Once stored it is safe:
    if its handling fails, the clock's sweep retries it (the texter gets the fail-safe text);
    if it is slow (a slow Twilio API), the deadline answers and the handling goes on. Timed
    work (expired offers, idle closes, retries) is the clock's, every minute: an inbound text
    costs the same however many people wait."""
    if not request.form.get("MessageSid"):
        return Response("MessageSid is required", status=400)
    settings = current_app.extensions["crisisline.settings"]
    replies = outbox.TwimlReplies(
        caller_number(request.form.get("From")), caller_number(request.form.get("To")) or settings.line_phone_number
    )
    outbox.answering(replies)
    try:
        active = active_routing()
        if active is None:
            raise LookupError("no routing published")
        document = active.document
        inbound = store_inbound(document, request.form, line_number=settings.line_phone_number)
        request.environ.get(PROGRESS, {})["stored"] = True
    except Exception as error:
        # Class name only: the exception text could hold a body or a number.
        log.error("sms webhook failed: could not store a text: %s", type(error).__name__)
        return keep_and_point_to_backup(error)
    if inbound is None:
        return _twiml()  # a duplicate delivery: already handled (or being retried by the sweep)
    try:
        # The texter handler is named here, so this module's binding is the one used (and the
        # one a test may replace); the clock's retry uses sms.texting's own.
        handle_inbound(document, inbound, request.form.get("Body", ""), texter_handler=handle_texter_message)
    except Exception as error:
        log.error("sms webhook failed: %s", type(error).__name__)
        _rollback_quietly()
        return _answer(replies, failsafe_text())  # with any reply claimed before it failed
    return _answer(replies)


def keep_and_point_to_backup(error: BaseException) -> Response:
    """A text not stored: kept in Redis for the clock (a copy, if the late handler does store
    it after all: the clock then finds it stored and forgets the copy), and the texter pointed
    to the backup line. Touches neither the database nor anything that can raise."""
    replies: outbox.TwimlReplies | None = request.environ.get(PROGRESS, {}).get("replies")
    # Replies the handler took for its answer so far: this answer carries them (``TwimlReplies``).
    parts = replies.abandon() if replies is not None else []
    if parts:
        # Handed to Twilio in this answer: ``queued``, as the handler's own answer marks them,
        # off this thread (the database may be what is slow); else after two minutes the
        # counselor's thread and the board would say they may not have been sent.
        ids = [message_id for message_id, _ in parts]
        try:
            start_soon(f"handed:{ids[0]}", partial(outbox.handed_to_twilio, ids))
        except Exception as failure:  # nothing may keep this answer from Twilio
            log.warning("replies answered, their status not recorded: %s", type(failure).__name__)
    if isinstance(error, DeadlineExceeded) and request.environ.get(PROGRESS, {}).get("stored"):
        # Stored, slow to handle: the handling goes on and replies itself, over REST. With no
        # reply yet, the texter is pointed to the backup line now, as when it was not stored:
        # a handling that then fails has no answer left to carry its fail-safe text.
        return _twiml(replies=parts) if parts else _twiml(failsafe_text())
    if not request.form.get("MessageSid"):
        return _twiml(FAILSAFE_TEXT)  # never checked by the view (it never ran): nothing to key it by
    kept = False
    try:
        kept = unstored.keep(request.form, convo.now())
    except Exception as failure:  # keep() logs its own Redis failures; this is anything else
        log.error("a text the database could not store was lost: %s", type(failure).__name__)
    _rollback_quietly()
    return _twiml(failsafe_text(kept=kept), parts)


def _rollback_quietly() -> None:
    try:
        db.session.rollback()
    except Exception as error:  # a broken connection: the answer matters more
        log.warning("rollback after a failed text failed too: %s", type(error).__name__)


# What ``crisisline.deadline`` answers when the webhook runs past its deadline.
incoming.on_deadline = keep_and_point_to_backup  # type: ignore[attr-defined]


@bp.post("/status")
@twilio_signed
@status_deadline(_twiml)
def message_status() -> Response:
    """Delivery status of a text we sent (duplicated and reordered by Twilio at will); also the
    ``action`` of the last reply in a webhook's TwiML (``_twiml``)."""
    message_id = twilio_params.query_id("message")
    status = twilio_params.choice(request.form, "MessageStatus", outbox.MESSAGE_STATUSES)
    if message_id is not None and status is not None:
        error_code = twilio_params.number(request.form, "ErrorCode")
        outbox.record_status(message_id, status, str(error_code) if error_code is not None else None,
                             twilio_params.sid(request.form, "MessageSid"))  # fmt: skip
    return _twiml()  # empty TwiML: as a <Message action>'s answer it sends nothing more
