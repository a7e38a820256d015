"""Domain events: how one feature reacts to another without importing it.

``responder_freed`` fires when a counselor or unit may be able to take a contact again (their
call or conversation ended, they passed or missed an offer, they texted ON). The queue
(``line_queue``) subscribes and offers them the first eligible waiting contact.

Senders *note* an event where it happens (often mid-transaction) and the events are
*published* once the unit of work is over: after each request (``crisisline.app``), after
each job, or explicitly. So a subscriber never runs inside someone else's half-done change.

``texter_opted_out`` and ``conversation_ended_by_counselor`` are sent at once, where they
happen (after the change is committed), for reactions of features above the channels
(``followups``); ``responder_paused`` too, for voice (``transfer``) to stop a phone that rings
for a caller while its counselor paused by text or at the desk. ``stored_promises_due`` is the
clock's, every minute: the console keeps the check-ins wrap-ups promised. Hooks whose
receivers return a value that steers a channel's own flow live beside the code that asks, in
that channel: ``transfer.flow.callback_accepted``,
``transfer.views.staff_left_caller``, ``sms.texting.text_between_conversations`` and
``sms.texting.call_requested``. Packages depend only downward (see the README): a feature
reacts by connecting a receiver when its module is imported, never by being imported from below.
"""

from __future__ import annotations

import logging

from blinker import Namespace

from crisisline.db import db

log = logging.getLogger(__name__)
signals = Namespace()
# Sent with the responder's config id as sender.
responder_freed = signals.signal("responder-freed")
# Sent with the Texter as sender, right after their STOP is recorded: nothing more may be
# sent to them (e.g. pending check-ins are canceled).
texter_opted_out = signals.signal("texter-opted-out")
# Sent with the Conversation as sender and ``document`` (the routing document), right after a
# counselor ended it (END): e.g. the texter is asked whether we may check in later.
conversation_ended_by_counselor = signals.signal("conversation-ended-by-counselor")
# Sent with the responder's config id as sender, right after a pause they asked for (their
# ``OFF``, the desk's switch) or their phone's blocking the line's texts (error 21610) is
# committed (:func:`send_responder_paused`): a phone of theirs
# still ringing for a caller stops, and that caller's next person is rung (``transfer.flow``).
responder_paused = signals.signal("responder-paused")
# Sent every minute by the clock (``workers.upkeep.keep_stored_promises``), with no sender: a
# feature above the core that stores a promise before it keeps it (the console's wrap-up, the
# person's consent to a check-in) keeps those a request that died in between left unkept.
# Receivers are idempotent and return ``(name, how many they kept)``.
stored_promises_due = signals.signal("stored-promises-due")

_PENDING_FREED = "crisisline.pending_freed"


def note_responder_freed(responder_id: str) -> None:
    """Remember that ``responder_id`` became free; published by :func:`publish_pending`."""
    pending: set[str] = db.session.info.setdefault(_PENDING_FREED, set())
    pending.add(responder_id)


def publish_pending() -> int:
    """Publish the events noted so far, and those their subscribers note in turn (a freed
    counselor offered a caller whose ring failed frees someone else), each responder once: a
    ring that fails again at once is left to the hold loop and the clock, never retried in a
    loop here. A subscriber's failure is logged by class name only and never reaches the
    caller of this function: the hold loop and the clock are the safety nets. Returns how
    many were published."""
    published: set[str] = set()
    while pending := db.session.info.pop(_PENDING_FREED, set()) - published:
        for responder_id in sorted(pending):
            try:
                responder_freed.send(responder_id)
            except Exception as error:
                log.error("responder-freed subscriber failed: %s", type(error).__name__)
                db.session.rollback()
        published |= pending
    return len(published)


def send_responder_paused(responder_id: str) -> None:
    """Tell the channels ``responder_id`` is paused (committed already). A receiver's
    failure is logged by class name only and never reaches the pause: the phone then rings
    out its own timeout, and the caller's next person is rung after it, as before."""
    try:
        responder_paused.send(responder_id)
    except Exception as error:
        log.error("responder-paused subscriber failed: %s", type(error).__name__)
        db.session.rollback()
