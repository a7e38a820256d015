"""Commands responders text to the line from their registered phone: ON, OFF, STATUS."""

from __future__ import annotations

from datetime import UTC, datetime

from crisisline.db import db
from routing.document import Responder, RoutingDocument
from transfer import state
from transfer.availability import availability

COMMANDS = ("ON", "OFF", "STATUS")


def parse_command(body: str) -> str | None:
    """The command in a text ("on", " Status. " …), or None if it is not one."""
    word = body.strip().strip(".!").upper()
    return word if word in COMMANDS else None


def run_command(document: RoutingDocument, responder: Responder, command: str) -> str:
    """Carry out ``command`` for ``responder`` and return the reply text. Idempotent."""
    if command == "ON":
        state.set_paused(responder.id, False, None)
        db.session.commit()
        return document.staff_prompt("on_sms")
    if command == "OFF":
        state.set_paused(responder.id, True, "self")
        db.session.commit()
        return document.staff_prompt("off_sms")
    return document.staff_prompt("status_sms", status=availability(document, responder, datetime.now(UTC)))
