"""A holding caller presses a key (not the callback key) while the database blips: they stay
in the queue, held one more turn as a failed hold turn holds them (``hold_failsafe``), and are
not put on the backup line at once."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import transfer.flow
from crisisline.db import db
from crisisline.models import Transfer
from tests.rota import around_the_clock
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "clean_redis")


def test_a_key_pressed_during_a_database_blip_keeps_the_caller_in_the_queue(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_routing(around_the_clock)  # the callback key is offered from the first hold turn
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    gather = caller.last_twiml.find("Gather")
    assert gather is not None and "/voice/callback/request" in gather.get("action", "")

    real_hold_step = transfer.flow.hold_step
    failures = [OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))]

    def blip(*args: object, **kwargs: object) -> transfer.flow.HoldStep:
        if failures:
            raise failures.pop()
        return real_hold_step(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(transfer.flow, "hold_step", blip)
    reply = phone.post(phone.base_url + gather.get("action"), caller.identity.voice_params("in-progress", Digits="5"))
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert "<Dial" not in reply.body, "one database blip put a holding caller on the backup line"
    assert "late=1" in reply.body  # one more hold turn, counted
    with app.app_context():
        (held,) = db.session.scalars(select(Transfer)).all()
    assert (held.state, held.end_reason) == ("waiting", None)
