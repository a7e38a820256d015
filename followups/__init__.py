"""Follow-ups after a contact: check-ins the person agreed to, and the optional survey.

Follow-ups sit above the channels: they react to texts and calls through the channels' events
and hooks (``crisisline.events``, ``sms.texting``, ``transfer.views``), connected when the
module that reacts is imported. Importing any part of the package imports them all, so no
process (web, worker, clock) can load follow-ups without its reactions.
"""

from followups import checkins, replies, views

__all__ = ["checkins", "replies", "views"]
