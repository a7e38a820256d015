"""Calling people back instead of keeping them on hold: counselor first, then the person.

Callbacks sit above the channels: a texter's CALL arrives through ``sms.texting.call_requested``,
an accepted callback search through ``transfer.flow.callback_accepted``, and the person calling
the line live while their callback's search rings through ``transfer.flow.live_search_started``,
each connected when the module that reacts is imported. Importing any part of the package
imports them all, so no process (web, worker, clock) can load callbacks without its reactions.
"""

from callbacks import attempts, requests

__all__ = ["attempts", "requests"]
