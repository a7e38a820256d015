"""The one queue of everyone waiting for a human: live callers, people waiting for a callback,
and text conversations waiting for a counselor.

- ``waiting``: reading the queue (its head in order, a contact's place, an honest wait).
- ``matching``: offering free responders the first eligible waiting contacts, on the events
  that change who is free or who waits (``crisisline.events``), never by sweeping everything.
- ``responders``: each responder's live availability (claimed, paused, missed in a row), shared
  by voice and texts; freeing one notes ``responder_freed`` for the queue.

Voice (``transfer``) and texts (``sms``) register how a contact of theirs is offered
(``offers_for``); callbacks are voice contacts. So this package depends on neither: they meet
here, and each depends only downward.
"""

from line_queue.matching import (
    anyone_can_take,
    call_queue,
    fill,
    fill_soon,
    offers_allowed,
    offers_for,
    rung_in_another_language,
    safety_net_due,
)
from line_queue.waiting import CHECKIN_PRIORITY, WaitingContact, expected_wait_minutes, head, position

__all__ = [
    "CHECKIN_PRIORITY", "WaitingContact", "anyone_can_take", "call_queue", "expected_wait_minutes", "fill",
    "fill_soon", "head", "offers_allowed", "offers_for", "position", "rung_in_another_language", "safety_net_due",
]  # fmt: skip
