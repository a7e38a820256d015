"""A counselor presses 1 and the caller is redirected into the room over REST; should the
room's TwiML then fail as Twilio fetches it (a 502 while a web process restarts), Twilio asks
the line's voice fallback, and the caller reaches the backup line: never Twilio's
"application error" and a dropped call. End to end: the fake Twilio follows ``FallbackUrl``
as Twilio does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, Response

from tests.conftest import TEST_BACKUP_NUMBER
from tests.rota import BEN, leg_to
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "wednesday_evening")


@pytest.fixture
def room_fails(app: Flask) -> Iterator[None]:
    """The caller's way into the room answers 502, as a proxy does while its app is down."""
    endpoint = "transfer.caller_join"
    working = app.view_functions[endpoint]
    app.view_functions[endpoint] = lambda **_: Response("Bad Gateway", status=502, mimetype="text/html")
    yield
    app.view_functions[endpoint] = working


@pytest.mark.usefixtures("room_fails")
def test_a_caller_whose_way_into_the_room_fails_reaches_the_backup_line(phone: Phone, fake: FakeTwilio) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    redirect = fake.get_call(caller.identity.call_sid).redirects[-1]
    assert redirect.url is not None and "/voice/transfer/join" in redirect.url
    assert redirect.status_code == 200  # the fallback's answer, not the 502
    assert f">{TEST_BACKUP_NUMBER}</Dial>" in (redirect.twiml or ""), redirect.twiml
    fallbacks = [entry for entry in fake.webhook_log if entry.kind == "call-fallback"]
    assert [(entry.params["ErrorCode"], entry.url.endswith("/voice/fallback")) for entry in fallbacks] == [
        ("11200", True)
    ]
