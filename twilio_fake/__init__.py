"""A local stand-in for Twilio: signed webhooks, a TwiML-following phone and a fake REST API.

Nothing here is imported by the app itself. Tests and the local sandbox use it to play
Twilio's part over real HTTP, following Twilio's documented behaviour (what it does not
model is listed in ``twilio_fake.rest_api``). ``twilio_fake.web_phone`` puts those phones in a
browser page, served by the stand-in at ``/phone/``.
"""
