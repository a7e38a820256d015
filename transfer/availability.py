"""A responder's availability, as the transfer engine sees it: one function, one truth."""

from __future__ import annotations

from datetime import datetime

from crisisline.db import db
from crisisline.models import ResponderState
from routing.document import Responder, RoutingDocument
from routing.schedule import is_on_call, local_time

AVAILABLE, ON_A_CALL, PAUSED, OFF_SHIFT = "available", "on a call", "paused", "off shift"


def availability(document: RoutingDocument, responder: Responder, moment: datetime) -> str:
    """``available``, ``on a call``, ``paused`` or ``off shift`` (in that order of precedence:
    someone on a call is on a call even if their shift just ended)."""
    state = db.session.get(ResponderState, responder.id)
    if state is not None and state.engaged_offer_id is not None:
        return ON_A_CALL
    if state is not None and state.paused:
        return PAUSED
    if not is_on_call(responder, local_time(document, moment)):
        return OFF_SHIFT
    return AVAILABLE
