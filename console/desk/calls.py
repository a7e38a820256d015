"""The counselor's live call on their page: which call it is, where it stands with the
co-responder unit, and the button that asks the unit to join (``transfer.joining``)."""

from __future__ import annotations

from dataclasses import dataclass

from console.audit.log import record
from console.models import User
from crisisline.db import db
from crisisline.models import Offer, ResponderState, Transfer
from routing.document import Responder, RoutingDocument
from transfer import joining

UNIT_WORDS = {
    "": "",
    "requested": "The line is calling the co-responder unit.",
    "ringing": "The co-responder unit's phone is ringing.",
    "joined": "The co-responder unit has joined the call.",
    "left": "The co-responder unit joined and has left the call.",
}


@dataclass(frozen=True)
class LiveCall:
    transfer_id: int
    unit_state: str  # see ``joining.UnitStatus``
    unit_name: str | None
    units_on_shift: bool

    @property
    def unit_words(self) -> str:
        return UNIT_WORDS.get(self.unit_state, "")

    @property
    def can_ask(self) -> bool:
        return self.unit_state in ("", "left")

    @property
    def signature(self) -> str:
        """Changes when the call starts or ends or the unit's part in it moves on: the desk
        page reloads then, so its buttons match the call."""
        return f"call:{self.transfer_id}:{self.unit_state}"


def live_call(document: RoutingDocument, responder: Responder) -> LiveCall | None:
    """The call this counselor is connected to now (accepted, caller with them), or None."""
    state = db.session.get(ResponderState, responder.id)
    offer = db.session.get(Offer, state.engaged_offer_id) if state and state.engaged_offer_id else None
    if offer is None or offer.state != "accepted" or offer.purpose != "answer":
        return None
    transfer = db.session.get(Transfer, offer.transfer_id)
    if transfer is None or not joining.counselor_on_call(transfer, responder.id):
        return None
    status = joining.unit_status(transfer)
    unit = document.responder(status.unit_id) if status.unit_id else None
    return LiveCall(transfer.id, status.state, unit.name if unit else None, bool(joining.units_on_shift(document)))


def refusal(document: RoutingDocument, outcome: str) -> str:
    """What to tell the counselor when the unit cannot be asked, and what to do instead."""
    instead = (
        f"If someone is in danger, call emergency services, or transfer the caller to the backup line "
        f"({document.backup_number})."
    )
    return {
        joining.NOT_ON_CALL: "You are not connected to that call any more, so the unit was not called.",
        joining.NO_UNIT_ON_SHIFT: f"No co-responder unit is on shift now. {instead}",
        joining.UNITS_BUSY: f"Every co-responder unit on shift is busy or paused. {instead}",
    }.get(outcome, f"The co-responder unit could not be called. {instead}")


def bring_in_unit(user: User, document: RoutingDocument, responder: Responder, transfer_id: int) -> tuple[bool, str]:
    """Ask the unit to join ``transfer_id`` for this counselor: (asked, what to tell them).
    A new request is audited (the unit's id, never a number)."""
    result = joining.request_unit_join(transfer_id, responder.id, document)
    unit = document.responder(result.unit_id) if result.unit_id else None
    name = unit.name if unit else "The co-responder unit"
    if result.outcome == joining.RINGING:
        record("unit_requested", actor=user, target=f"call:{transfer_id}", responder=result.unit_id)
        db.session.commit()
        if result.rung is False:
            return False, refusal(document, "not_rung")
        return True, f"Calling {name} to join your call. They hear who the caller is, then press 1 to join."
    if result.outcome == joining.ALREADY:
        return True, f"Already done: {name} is being called or is on the call (nobody was called twice)."
    return False, refusal(document, result.outcome)
