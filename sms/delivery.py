"""What became of a text the line sent a texter, in staff's words: delivered, not delivered
(and why), or possibly never sent. The counselor's thread and the supervisors' board say it.

A text the line claimed but never heard of from Twilio (unreachable, the process died sending
it, a TwiML reply whose answer or callbacks were lost) is not sent again blindly, since it may
have gone out (``sms.outbox``): after ``UNSURE_AFTER`` a person is told instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_

from crisisline.db import constant
from crisisline.models import Message
from sms.outbox import OPTED_OUT, REFUSED_FOR_NOW, RETRYING, UNSENT_STATUSES

UNSURE_AFTER = timedelta(minutes=2)
DELIVERED_STATUSES = ("delivered", "read")
# Final statuses of a text that did not (wholly) reach the phone.
NOT_ARRIVED = (*UNSENT_STATUSES, "partially_delivered")
# Why a text did not reach the texter's phone, for someone deciding what to do next (Twilio's
# error pages: https://www.twilio.com/docs/api/errors/<code>). Others show Twilio's code.
FAILURE_REASONS = {
    OPTED_OUT: "they texted STOP, so the line cannot text them until they text START",
    30003: "their phone is off or out of signal",
    30005: "their carrier does not know the number",
    30006: "the number cannot receive texts (a landline?)",
    30007: "their carrier filtered it",
    # Refused for now (busy, failing), then through every retry (``sms.conversations``).
    **dict.fromkeys(REFUSED_FOR_NOW, "Twilio was busy or failing and kept refusing it for several minutes"),
}


@dataclass(frozen=True)
class Delivery:
    kind: str  # delivered | failed | unsure
    text: str


def taken(status: str) -> bool:
    """Whether Twilio took a text and nothing says it failed to arrive (on its way, or there)."""
    return status not in ("claimed", RETRYING, *NOT_ARRIVED)


def delivery_of(status: str, error_code: int | None, sent_at: datetime, moment: datetime) -> Delivery | None:
    """What a text to the texter became; None while it is on its way."""
    if status in DELIVERED_STATUSES:
        return Delivery("delivered", "Delivered")
    if status == "partially_delivered":
        return Delivery("failed", "Only partly delivered: part of it may be missing.")
    if status in UNSENT_STATUSES:
        reason = FAILURE_REASONS.get(error_code or 0)
        if reason is None:
            reason = f"Twilio error {error_code}" if error_code else "no reason given"
        return Delivery("failed", f"Not delivered: {reason}.")
    if status == "claimed" and moment - sent_at >= UNSURE_AFTER:
        return Delivery("unsure", "May not have been sent: the line does not know whether Twilio took it. "
                                  "Check with the texter.")  # fmt: skip
    return None


def not_delivered(moment: datetime) -> ColumnElement[bool]:
    """Texts sent that did not reach their phone, or may not have gone out (``delivery_of``)."""
    return and_(
        Message.direction == "out",
        # As ``ix_messages_not_delivered`` has it, written in so SQLite sees it (``constant``).
        Message.status.in_([constant(status) for status in ("claimed", *NOT_ARRIVED)]),
        or_(Message.status != "claimed", Message.created_at <= moment - UNSURE_AFTER),
    )
