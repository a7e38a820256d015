"""One stored inbound text, handled: a responder's (``sms.staff``) or a texter's (``sms.texting``).

The webhook (``sms.views``) stores each text once and hands it here; the clock's sweep
(``sms.conversations``) hands back any text whose handling never finished, through the
handler registered below (this module is above ``sms.conversations``, which cannot import it).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import bindparam, update

from crisisline.db import db
from crisisline.models import Message, Texter
from routing.document import RoutingDocument
from sms import conversations as convo
from sms import outbox
from sms.staff import handle_staff_message
from sms.texting import handle_texter_message

# (document, texter, text, body, number of media, line number)
TexterHandler = Callable[[RoutingDocument, Texter, Message, str, int, str | None], None]


@convo.handles_inbound
def handle_inbound(
    document: RoutingDocument, inbound: Message, body: str, *, texter_handler: TexterHandler = handle_texter_message
) -> None:
    """Handle one stored inbound text, then mark it handled. Safe to run again for the same
    text: every reply and relay it sends is keyed on the text's id, and every state change
    is conditional. ``texter_handler``: the webhook passes the one it imported."""
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
