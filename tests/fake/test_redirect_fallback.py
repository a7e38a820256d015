"""A live call redirected over REST whose new URL fails runs its fallback URL's TwiML, as
Twilio does: requested at once, signed, with ``ErrorCode`` 11200 and ``ErrorUrl``."""

from __future__ import annotations

from twilio.rest import Client

from tests.fake.conftest import WebhookReceiver
from twilio_fake.server import FakeTwilioServer

HOTLINE = "+14155550199"
CALLER = "+16175551213"
HOLD = '<?xml version="1.0" encoding="UTF-8"?><Response><Play loop="0">hold.mp3</Play></Response>'
JOIN = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Joining</Say></Response>'


def live_call(server: FakeTwilioServer, client: Client, **create: str) -> str:
    call = client.calls.create(to=CALLER, from_=HOTLINE, twiml="<Response><Pause/></Response>", **create)
    server.fake.advance_call(call.sid, "in-progress")
    return str(call.sid)


def test_a_redirect_whose_url_fails_runs_the_fallback_urls_twiml(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    receiver.reply("/join", "oops", status=500, content_type="text/plain")
    receiver.reply("/fallback", HOLD)
    sid = live_call(server, client)

    client.calls(sid).update(url=receiver.url("/join"), fallback_url=receiver.url("/fallback"))

    (fallback,) = receiver.at("/fallback")
    assert fallback.signature_valid(server.auth_token)
    assert (fallback.form["ErrorCode"], fallback.form["ErrorUrl"]) == ("11200", receiver.url("/join"))
    assert fallback.form["CallSid"] == sid
    assert server.fake.get_call(sid).redirects[-1].twiml == HOLD


def test_a_redirect_answered_with_something_other_than_twiml_falls_back_too(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    receiver.reply("/join", "<html>proxy error</html>", content_type="text/html")
    receiver.reply("/fallback", HOLD)
    sid = live_call(server, client)

    client.calls(sid).update(url=receiver.url("/join"), fallback_url=receiver.url("/fallback"))

    assert len(receiver.at("/fallback")) == 1
    assert server.fake.get_call(sid).redirects[-1].twiml == HOLD


def test_a_redirect_falls_back_to_the_fallback_url_the_call_was_created_with(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    receiver.reply("/join", "", status=503, content_type="text/plain")
    receiver.reply("/fallback", HOLD)
    sid = live_call(server, client, fallback_url=receiver.url("/fallback"))

    client.calls(sid).update(url=receiver.url("/join"))

    assert len(receiver.at("/fallback")) == 1
    assert server.fake.get_call(sid).redirects[-1].twiml == HOLD


def test_a_redirect_that_answers_twiml_never_requests_the_fallback(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    receiver.reply("/join", JOIN)
    receiver.reply("/fallback", HOLD)
    sid = live_call(server, client)

    client.calls(sid).update(url=receiver.url("/join"), fallback_url=receiver.url("/fallback"))

    assert receiver.at("/fallback") == []
    assert server.fake.get_call(sid).redirects[-1].twiml == JOIN
