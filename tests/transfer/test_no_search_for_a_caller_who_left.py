"""A counselor left; the request that restarts the caller's search (Twilio's staff-left
redirect, or their answer to the check-in question, both sent while they were still on the
line) is handled after their hang-up's status callback. Nobody may be rung for them, and they
are not texted later as a caller the line missed: ``restart_for_person`` reads the call's
status after its commit, as the first search does (``flow.begin``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call, ScheduledContact, Transfer
from tests.rota import BEN, leg_to, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "clean_redis")


def _talk_with_ben_then_hang_up(app: Flask, phone: Phone, fake: FakeTwilio, digits: str | None) -> tuple[int, dict]:
    """The caller talks with Ben; the request Twilio sends while they are still on is kept,
    and their hang-up is handled first. Returns their first round's id and that request."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference is not None
    with app.app_context():
        (transfer,) = db.session.scalars(select(Transfer)).all()
        first_round = transfer.id
    params = caller.identity.voice_params("in-progress", **({"Digits": digits} if digits else {}))
    phone.hang_up(caller)
    with app.app_context():
        assert db.session.scalars(select(Call)).one().status == "completed"
    return first_round, params


@pytest.mark.usefixtures("wednesday_evening")
@pytest.mark.parametrize("route", ["transfer/staff-left", "checkin/consent"])
def test_no_counselor_is_rung_for_a_caller_whose_hang_up_was_handled_first(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing, route: str
) -> None:
    publish_routing(lambda d: d["followups"].update({"checkins": route == "checkin/consent"}))
    first_round, params = _talk_with_ben_then_hang_up(app, phone, fake, "2" if route == "checkin/consent" else None)

    phone.post(f"{phone.base_url}/voice/{route}?transfer={first_round}", params)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert [leg.to for leg in legs(fake)] == [BEN], "a counselor was rung for a caller who had hung up"
    with app.app_context():
        states = {t.round: (t.state, t.end_reason) for t in db.session.scalars(select(Transfer))}
    assert states[2] == ("abandoned", "caller_left")


def test_a_caller_who_talked_and_hung_up_is_not_texted_as_missed(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing, wednesday_evening, clock_tick
) -> None:
    publish_routing(lambda d: d["followups"].update({"checkins": False}))
    first_round, params = _talk_with_ben_then_hang_up(app, phone, fake, None)
    phone.post(f"{phone.base_url}/voice/transfer/staff-left?transfer={first_round}", params)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    wednesday_evening.shift(timedelta(seconds=150))  # past the clock's repair of stale searches
    clock_tick()

    with app.app_context():
        kinds = [contact.kind for contact in db.session.scalars(select(ScheduledContact))]
    assert "missed_contact" not in kinds
