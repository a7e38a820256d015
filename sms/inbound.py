"""One stored inbound text, handled: a responder's (``sms.staff``) or a texter's (``sms.texting``).

The webhook (``sms.views``) stores each text once and hands it here; the clock's sweep
(``sms.conversations``) hands back any text whose handling never finished, through the
handler registered below (this module is above ``sms.conversations``, which cannot import it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from sqlalchemy import bindparam, update

from crisisline import twilio_params
from crisisline.db import commit_keeping_loaded, db, inserted_row
from crisisline.models import Message, Texter
from crisisline.phone import caller_number
from crisisline.sms_segments import segment_count
from ivr.call_log import phone_hash
from routing.document import Responder, RoutingDocument
from routing.schedule import is_on_call, local_time
from sms import conversations as convo
from sms import outbox
from sms.staff import handle_staff_message
from sms.texting import handle_texter_message
from sms.unstored import KeptText

log = logging.getLogger(__name__)
# Twilio's ``OptOutType`` values (Advanced Opt-Out); the keyword a texter sent means this.
OPT_OUT_TYPES = frozenset({"STOP", "START", "HELP"})
# (document, texter, text, body, number of media, line number)
TexterHandler = Callable[[RoutingDocument, Texter, Message, str, int, str | None], None]


def _whose_phone(document: RoutingDocument, phone: str) -> Responder | None:
    """The responder texting from ``phone``. Two sharing one phone (a warning when published):
    the one on call now, if one is, else the first listed."""
    sharing = [responder for responder in document.responders if responder.phone == phone]
    if len(sharing) > 1:
        wall_clock = local_time(document, datetime.now(UTC))
        return next((responder for responder in sharing if is_on_call(responder, wall_clock)), sharing[0])
    return sharing[0] if sharing else None


def _opt_out_type(params: Mapping[str, str]) -> str | None:
    """Twilio's ``OptOutType``; absent (or "" in a text kept before it was kept) unless the
    line's Messaging Service has Advanced Opt-Out. Without one, "" for a text that came through
    a Messaging Service (``MessagingServiceSid``): kept with the text, so its handling, and the
    clock's retry of it, know Twilio's default keywords on a long code did not apply to it
    (``sms.advanced_opt_out``: then only ``OptOutType`` opts in or out). None otherwise."""
    if params.get("OptOutType"):
        return twilio_params.choice(params, "OptOutType", OPT_OUT_TYPES)
    return "" if params.get("MessagingServiceSid") else None


def store_inbound(
    document: RoutingDocument,
    params: Mapping[str, str],
    *,
    line_number: str | None,
    received_at: datetime | None = None,
) -> Message | None:
    """Store one inbound text (Twilio's webhook parameters) before anything is done with it;
    None for a duplicate delivery (stored already: handled, or being retried by the sweep).
    ``line_number``: the line's own, for a text whose ``To`` is unreadable. ``received_at``:
    when a text kept through an outage arrived (its retention counts from it)."""
    # A withheld or unreadable sender cannot be answered, but what they wrote is still kept.
    sender = caller_number(params.get("From"))
    responder = _whose_phone(document, sender) if sender else None
    # A supervisor answering an alert is staff, not a texter: never put through the menus.
    supervisor = document.supervisor_by_phone(sender) if sender and not responder else None
    staff = responder or supervisor
    texter = convo.find_or_create_texter(sender, phone_hash(sender)) if sender and not staff else None
    body = params.get("Body", "")  # as written, whole: sealed, never trimmed
    inbound = inserted_row(
        Message,
        {
            "direction": "in",
            "party": "counselor" if responder else "supervisor" if supervisor else "texter",
            "message_sid": twilio_params.message_key(params.get("MessageSid", "")),
            "responder_id": staff.id if staff else None,  # a supervisor's own texts: their config id
            "texter_id": texter.id if texter else None,
            "line_number": caller_number(params.get("To")) or line_number,
            "num_media": twilio_params.count(params, "NumMedia", highest=twilio_params.MAX_MEDIA),
            "opt_out_type": _opt_out_type(params),
            "sealed_body": outbox.vault().seal(body, context=outbox.BODY_CONTEXT),
            "segments": segment_count(body) if body else 0,
            "status": "received",
            "status_rank": 5,
            "created_at": convo.now(),
            "received_at": received_at,
        },
    )
    commit_keeping_loaded()  # stored before anything is done with it; the texter and it stay loaded
    return inbound


def receive_kept(document: RoutingDocument, kept: KeptText, *, line_number: str | None) -> bool:
    """A text kept in Redis while the database was away (``sms.unstored``): stored now, then
    handled; True if it was stored now (False: stored already, by another run or by the
    webhook's late handler). Stored as arriving now, not when it was sent, so the sweep's
    retry and escalation windows (``sms.conversations``) count from here: if handling fails,
    the sweep retries it like any other text, and never while it is being handled here. When
    it was sent is kept too: the purge counts its retention from then."""
    inbound = store_inbound(document, kept.params, line_number=line_number, received_at=kept.received_at)
    if inbound is None:
        return False
    try:
        handle_inbound(document, inbound, kept.params.get("Body", ""))
    except Exception as error:  # class name only: the text may be in it
        log.error("kept text %s stored, its handling failed (the sweep retries it): %s", inbound.id,
                  type(error).__name__)  # fmt: skip
        db.session.rollback()
    return True


@convo.handles_inbound
def handle_inbound(
    document: RoutingDocument, inbound: Message, body: str, *, texter_handler: TexterHandler = handle_texter_message
) -> None:
    """Handle one stored inbound text, then mark it handled. Safe to run again for the same
    text: every reply and relay it sends is keyed on the text's id, and every state change
    is conditional. ``texter_handler``: the webhook passes the one it imported."""
    if inbound.party == "supervisor":
        supervisor = document.supervisor(inbound.responder_id)
        if supervisor is not None:
            outbox.send_text(
                key=f"staff:{inbound.id}", to_number=supervisor.phone, from_number=inbound.line_number or "",
                body=document.staff_prompt("sms_supervisor_text"), party="supervisor",
            )  # fmt: skip
    elif inbound.responder_id is not None:
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
            texter_handler(document, texter, inbound, body, inbound.num_media, inbound.line_number)
    db.session.execute(_HANDLED, {"message": inbound.id, "at": convo.now()})
    db.session.commit()


# Built once: every inbound text runs it (``crisisline.db``, "Statements built once").
_HANDLED = (
    update(Message)
    .where(Message.id == bindparam("message"))
    .values(handled_at=bindparam("at"))
    .execution_options(synchronize_session=False)
)
