"""Twilio's calls-per-second queue, as the line records it: a responder's leg (or a called-back
person's) that Twilio queued carries its ``queue_time`` into the caller's event log, so a surge's
late rings can be seen after the fact; a leg placed at once writes nothing extra."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import CallEvent
from tests.rota import BEN, around_the_clock, leg_to, legs
from transfer.dispatch import queue_time_ms
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

CALLER = "+13125550123"  # the phone fixture's default caller
SOMEONE_ELSE = "+16175551212"


@pytest.fixture
def cps(fake: FakeTwilio) -> Iterator[Callable[[float], None]]:
    """Set the fake account's calls per second for this test only (the fake outlives it)."""
    yield fake.set_calls_per_second
    fake.set_calls_per_second(None)


def events(app: Flask, kind: str) -> list[dict[str, Any]]:
    with app.app_context():
        return [dict(e.detail) for e in db.session.scalars(select(CallEvent).where(CallEvent.kind == kind))]


def occupy_the_queue(fake: FakeTwilio) -> None:
    """Another call placed just now: the line's next call waits for the following slot."""
    fake.create_call(SOMEONE_ELSE, "+13125550100", twiml="<Response/>")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_responder_leg_twilio_queued_records_its_queue_time(
    app: Flask, phone: Phone, fake: FakeTwilio, cps: Callable[[float], None]
) -> None:
    cps(0.2)  # a slot every 5 s: the line's leg lands in the next one however slow this machine is
    occupy_the_queue(fake)

    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # English, thoughts of suicide: Ben first

    leg = leg_to(fake, BEN)
    assert 0 < leg.queue_time_ms <= 5000
    (queued,) = events(app, "offer.queued")
    assert queued["queue_time_ms"] == leg.queue_time_ms
    assert queued["responder"] == "ben-carter"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_responder_leg_placed_at_once_records_no_queue_event(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    assert leg_to(fake, BEN).queue_time_ms == 0
    assert events(app, "offer.queued") == []


@pytest.mark.usefixtures("clean_redis")
def test_a_called_back_person_whose_call_twilio_queued_has_its_queue_time_on_the_dialled_event(
    app: Flask,
    phone: Phone,
    fake: FakeTwilio,
    publish_routing: Callable[..., int],
    run_worker: Callable[..., None],
    cps: Callable[[float], None],
) -> None:
    publish_routing(lambda document: around_the_clock(document))
    phone.call([Keys("1"), Keys("2"), Keys("9")], identity=phone.identity(CALLER))  # asks for a callback
    run_worker()
    (counselor_leg,) = [leg for leg in legs(fake) if leg.status in ("queued", "initiated", "ringing")]
    cps(0.2)
    occupy_the_queue(fake)

    phone.answer(counselor_leg.sid, [Keys("1")])  # the counselor accepts: the person is dialled

    (person_leg,) = [leg for leg in legs(fake) if leg.to == CALLER]
    assert 0 < person_leg.queue_time_ms <= 5000
    (dialled,) = events(app, "callback.dialled")
    assert dialled["queue_time_ms"] == person_leg.queue_time_ms


def test_an_absent_or_unreadable_queue_time_counts_as_not_queued() -> None:
    class Placed:
        def __init__(self, queue_time: object) -> None:
            self.queue_time = queue_time

    assert queue_time_ms(Placed("1500")) == 1500
    assert queue_time_ms(Placed("0")) == 0
    assert queue_time_ms(Placed(None)) == 0
    assert queue_time_ms(Placed("soon")) == 0
    assert queue_time_ms(object()) == 0  # a resource without the field
