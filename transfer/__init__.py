"""Warm transfer: from the menu to a counselor or co-responder unit, with no caller left alone.

Topology: the caller waits in a hold loop of their own requests (``/voice/hold``), which is
the safety net: it moves them to the backup line when the hold limit passes, with or without
a worker. Responders are rung over the REST API and hear a whisper; only when one presses 1
(an atomic UPDATE: one winner) are both put into a conference named for the transfer.

- ``state``: the database side — claims, acceptance, outcomes (all atomic, all idempotent).
- ``dispatch``: who to ring next and placing those calls (the one place that rings anyone).
- ``twiml``: what the caller on hold and the responders hear.
- ``views``: the Twilio webhooks of all of the above.
"""
