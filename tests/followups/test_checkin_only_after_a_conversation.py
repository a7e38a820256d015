"""A counselor pressed 1 but dropped before the caller reached the room. The caller never
talked with anyone: they are not asked the after-conversation check-in question (whose 1
thanks them and ends the call), nor told the person they were talking with was disconnected;
they keep holding while the line searches again."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import CheckIn, Transfer
from tests.rota import BEN, leg_to
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "clean_redis")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_who_never_reached_anyone_keeps_holding(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    # Twilio fails the redirect that would bring the caller into Ben's room, once.
    fake.inject_fault("POST", rf"/Calls/{caller.identity.call_sid}\.json$", status=500, times=1)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.hang_up(ben)  # and Ben's phone drops the instant after he pressed 1

    phone.resume(caller, [Keys("1")], max_hold_turns=2)  # they press 1 at whatever they hear next

    heard = caller.heard_text()
    assert "check how you are doing" not in heard
    assert "The person you were talking with has been disconnected" not in heard
    assert caller.ended_by != "hangup"
    with app.app_context():
        transfers = list(db.session.scalars(select(Transfer).order_by(Transfer.id)))
        assert db.session.scalars(select(CheckIn)).first() is None
    assert transfers[0].connected_at is None
    assert transfers[-1].state == "waiting"
