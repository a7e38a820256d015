"""A whole call over real HTTP, signed for the URL the phone actually requests (port included)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import requests
import time_machine

from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from twilio_fake.phone import Keys, Phone, RequestsTransport, Words
from twilio_fake.rest_api import FakeTwilio


def test_a_spanish_caller_reaches_a_counselor_over_real_http(phone: Phone, fake: FakeTwilio) -> None:
    with time_machine.travel(datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("America/Chicago")), tick=True):
        call = phone.call([Words("español"), Words("quiero morir")], max_hold_turns=0)
        (leg,) = [c for c in fake.calls.values() if c.direction == "outbound-api"]
        counselor = phone.answer(leg.sid, [Keys("1")])
        phone.resume(call, max_hold_turns=0)

    assert all(step.status == 200 for step in call.steps)
    assert all(step.content_type.startswith("text/xml") for step in call.steps)
    assert leg.to == "+13125550101"
    assert call.conference is not None
    assert call.conference == counselor.conference


def test_unsigned_request_over_http_is_refused(live_server: str) -> None:
    response = requests.post(f"{live_server}/voice/incoming", data={"CallSid": "CA1"}, timeout=5)

    assert response.status_code == 403


def test_health_check_answers_without_the_database(live_server: str) -> None:
    assert requests.get(f"{live_server}/healthz", timeout=5).json() == {"status": "ok"}


def test_phone_uses_fallback_url_when_the_app_errors(live_server: str) -> None:
    phone = Phone(RequestsTransport(), live_server, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER)

    call = phone.call([], path="/voice/no-such-route", dial_outcomes=["completed"])

    assert [step.status for step in call.steps] == [404, 200]
    assert call.steps[1].url.endswith("/voice/fallback")
    assert call.steps[1].params["ErrorCode"] == "11200"
    assert call.dials[0].numbers
