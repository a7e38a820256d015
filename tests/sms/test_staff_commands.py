"""Responders text ON / OFF / STATUS from their registered phone; nobody else can."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crisisline.db import db
from crisisline.models import ResponderState
from tests.conftest import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from tests.rota import ANA, BEN, DIEGO, leg_to, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import signed_headers, sms_params

LINE = "+13125550100"


@pytest.fixture
def text(client: FlaskClient) -> Callable[[str, str], str]:
    """Send a signed inbound SMS webhook; returns the body of the TwiML reply."""

    def send(sender: str, body: str) -> str:
        url = "http://localhost/sms/incoming"
        params = sms_params(TEST_ACCOUNT_SID, sender, LINE, body)
        response = client.post(
            url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params, voice=False)
        )
        assert response.status_code == 200
        assert response.mimetype == "text/xml"
        message = ET.fromstring(response.data).find("Message")  # noqa: S314
        assert message is not None
        return message.text or ""

    return send


def paused(app: Flask, responder_id: str) -> bool:
    with app.app_context():
        state = db.session.get(ResponderState, responder_id)
        return bool(state and state.paused)


@pytest.mark.usefixtures("wednesday_morning")
def test_off_on_and_status_from_a_registered_phone(app: Flask, text: Callable[[str, str], str]) -> None:
    assert text(ANA, "status") == "Crisis line: you are available. Reply ON to take calls, OFF to pause."

    assert text(ANA, "OFF") == "Crisis line: you are paused. Reply ON when you are ready."
    assert paused(app, "ana-ruiz")
    assert "you are paused" in text(ANA, "Status.")

    assert text(ANA, " on ") == "Crisis line: you are available for calls."
    assert not paused(app, "ana-ruiz")


@pytest.mark.usefixtures("wednesday_morning")
def test_status_says_off_shift_outside_the_rota(text: Callable[[str, str], str]) -> None:
    assert "you are off shift" in text(BEN, "STATUS")  # Ben works evenings


@pytest.mark.parametrize("body", ["ON", "OFF", "STATUS"])
def test_commands_from_an_unknown_number_are_refused_and_change_nothing(
    app: Flask, text: Callable[[str, str], str], body: str
) -> None:
    reply = text("+13125550199", body)

    assert reply.startswith("This number is for calls.")
    with app.app_context():
        assert db.session.query(ResponderState).count() == 0


def test_a_paused_counselor_is_not_rung_until_they_text_on(
    app: Flask, phone: Phone, fake: FakeTwilio, text: Callable[[str, str], str], wednesday_evening: object
) -> None:
    text(BEN, "OFF")

    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    assert [leg.to for leg in legs(fake)] == [DIEGO]

    text(BEN, "ON")
    phone.call([Keys("1"), Keys("2")], identity=phone.identity("+13125550125"), max_hold_turns=0)
    assert leg_to(fake, BEN).to == BEN


def test_status_while_with_a_caller_says_on_a_call(
    phone: Phone, fake: FakeTwilio, text: Callable[[str, str], str], wednesday_morning: object
) -> None:
    caller = phone.call([Keys("1"), Keys("3")], max_hold_turns=0)
    phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)

    assert "you are on a call" in text(ANA, "STATUS")
