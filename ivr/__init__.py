"""Voice: the IVR a caller hears, from the greeting to a human.

- ``views``: the Twilio webhooks (thin: parse the request, call the domain, return TwiML).
- ``menu``: where a caller's keypress or spoken answer is handled.
- ``twiml``: the TwiML each step answers with, built with ``twilio.twiml`` builders.
- ``call_log``: the call record and its events (idempotent under duplicated webhooks).
"""
