"""A join redirect whose REST answer timed out is carried out by Twilio late, after the
counselor dropped and the staff-left turn began a new search for the caller. The old round's
hold turn must follow the new search, not send the caller to the backup line while counselors
are still being rung for them (``flow.current_round``)."""

from __future__ import annotations

import time

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Transfer
from tests.rota import BEN, leg_to, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "clean_redis")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_late_join_redirect_keeps_a_searched_for_caller_holding(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing
) -> None:
    publish_routing(lambda d: d["followups"].update({"checkins": False}))
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    # Twilio takes 4 s to answer the redirect into Ben's room (longer than we wait for it).
    fake.inject_fault("POST", rf"/Calls/{caller.identity.call_sid}\.json$", status=200, delay=4.0)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.hang_up(ben)  # Ben's phone drops before the caller is in
    deadline = time.monotonic() + 10
    while len(fake.get_call(caller.identity.call_sid).redirects) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake.get_call(caller.identity.call_sid).redirects) == 2  # the join, then the staff-left turn

    phone.resume(caller, max_hold_turns=2)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert not caller.dials, "sent to the backup line while a new search for them was under way"
    with app.app_context():
        rounds = {t.round: t.state for t in db.session.scalars(select(Transfer))}
    assert rounds[2] == "waiting"
    assert len([leg for leg in legs(fake) if leg.to != BEN]) >= 1  # the new search rang someone else
