"""Responders text ON / OFF / STATUS from their registered phone; nobody else can."""

from __future__ import annotations

import pytest
from flask import Flask

from crisisline.db import db
from crisisline.models import ResponderState
from tests.conftest import TextingPhone
from tests.rota import ANA, BEN, DIEGO, leg_to, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio


def paused(app: Flask, responder_id: str) -> bool:
    with app.app_context():
        state = db.session.get(ResponderState, responder_id)
        return bool(state and state.paused)


@pytest.mark.usefixtures("wednesday_morning")
def test_off_on_and_status_from_a_registered_phone(app: Flask, texting: TextingPhone) -> None:
    assert texting.send(ANA, "status") == ["Crisis line: you are available. Reply ON to take calls, OFF to pause."]

    assert texting.send(ANA, "OFF") == ["Crisis line: you are paused. Reply ON when you are ready."]
    assert paused(app, "ana-ruiz")
    assert "you are paused" in texting.send(ANA, "Status.")[0]

    assert texting.send(ANA, " on ") == ["Crisis line: you are available for calls."]
    assert not paused(app, "ana-ruiz")


@pytest.mark.usefixtures("wednesday_morning")
def test_status_says_off_shift_outside_the_rota(texting: TextingPhone) -> None:
    assert "you are off shift" in texting.send(BEN, "STATUS")[0]  # Ben works evenings


@pytest.mark.parametrize("body", ["ON", "OFF"])
def test_commands_from_an_unknown_number_change_nothing(app: Flask, texting: TextingPhone, body: str) -> None:
    replies = texting.send("+13125550199", body)

    assert not any("Crisis line: you are" in reply for reply in replies)
    with app.app_context():
        assert db.session.query(ResponderState).count() == 0


def test_a_paused_counselor_is_not_rung_until_they_text_on(
    phone: Phone, fake: FakeTwilio, texting: TextingPhone, wednesday_evening: object
) -> None:
    texting.send(BEN, "OFF")

    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    assert [leg.to for leg in legs(fake)] == [DIEGO]

    texting.send(BEN, "ON")
    phone.call([Keys("1"), Keys("2")], identity=phone.identity("+13125550125"), max_hold_turns=0)
    assert leg_to(fake, BEN).to == BEN


def test_status_while_with_a_caller_says_on_a_call(
    phone: Phone, fake: FakeTwilio, texting: TextingPhone, wednesday_morning: object
) -> None:
    caller = phone.call([Keys("1"), Keys("3")], max_hold_turns=0)
    phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)

    assert "you are on a call" in texting.send(ANA, "STATUS")[0]
