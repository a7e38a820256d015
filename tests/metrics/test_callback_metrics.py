"""Callback metrics and the ``callback.*`` events behind them, from callbacks driven through
the real line: one completed (counselor first, then the person), one given up by the clock
with nobody free, one canceled because the person called in again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import CallEvent, Transfer
from metrics import Report
from tests.metrics.conftest import number
from tests.metrics.test_voice_metrics import MENTAL_HEALTH, caller, pause_everyone, ringing
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

CALLBACK_KEY = Keys("9")

pytestmark = pytest.mark.usefixtures("clean_redis")


def callback_at_once(document: dict[str, Any]) -> None:
    document["callbacks"]["offer_after_seconds"] = 0  # the key is offered from the first hold turn


def person_leg(fake: FakeTwilio, number: str) -> str:
    (leg,) = [leg for leg in fake.calls.values() if leg.direction == "outbound-api" and leg.to == number]
    return leg.sid


def kinds(app: Flask, number: str) -> list[str]:
    from crisisline.models import Call
    from ivr.call_log import phone_hash

    with app.app_context():
        call = db.session.scalars(select(Call).where(Call.caller_hash == phone_hash(number))).one()
        found = select(CallEvent.kind).where(CallEvent.call_id == call.id).order_by(CallEvent.id)
        return list(db.session.scalars(found))


@pytest.fixture
def callbacks_of_the_evening(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Traveller,
    publish_routing: Callable[..., int], run_due: Callable[[], list[str]], metrics_of: Callable[..., Report],
) -> Report:  # fmt: skip
    publish_routing(callback_at_once)
    clock = wednesday_evening
    completed = caller(phone, 11, [*MENTAL_HEALTH, CALLBACK_KEY])
    assert "We will call you back" in completed.heard_text()
    clock.shift(timedelta(seconds=90))
    assert run_due() == ["sent"]  # the first attempt rings a counselor
    counselor = phone.answer(ringing(fake).sid, [Keys("1")])
    person = phone.answer(person_leg(fake, completed.identity.from_number))
    assert person.conference == counselor.conference
    phone.hang_up(person)
    phone.resume(counselor)

    pause_everyone(app)
    given_up = caller(phone, 12, [*MENTAL_HEALTH, CALLBACK_KEY])
    assert "We will call you back" in given_up.heard_text()
    assert run_due() == ["sent"]  # the attempt starts and finds nobody free
    clock.shift(timedelta(minutes=121))
    with app.app_context():
        from workers.upkeep import tend_callbacks

        assert tend_callbacks()["gave_up"] == 1
    return metrics_of("voice")


def test_callbacks_requested_completed_and_given_up_are_counted(callbacks_of_the_evening: Report) -> None:
    values = callbacks_of_the_evening.overall.values
    assert (values["callbacks_requested"], values["callbacks_completed"], values["callbacks_gave_up"]) == (2, 1, 1)
    assert values["chose_callback"] == 2


def test_time_to_callback_runs_from_the_request_to_the_person_joining_their_counselor(
    callbacks_of_the_evening: Report,
) -> None:
    values = callbacks_of_the_evening.overall.values
    assert 90 <= number(values["time_to_callback_mean"]) < 100
    assert values["time_to_callback_median"] == values["time_to_callback_p90"] == values["time_to_callback_mean"]


def test_a_callback_given_up_records_a_callback_outcome_not_the_backup_line(
    app: Flask, callbacks_of_the_evening: Report
) -> None:
    events = kinds(app, "+13125550312")
    assert events.count("callback.requested") == 1
    assert events.count("callback.gave_up") == 1
    assert "transfer.to_backup" not in events  # nobody was put through to the backup line
    with app.app_context():
        searches = db.session.scalars(select(Transfer).where(Transfer.mode == "callback")).all()
        assert sorted(t.end_reason or "" for t in searches) == ["callback_gave_up", "caller_left"]
    assert "callback.connected" in kinds(app, "+13125550311")


def test_a_callback_canceled_because_the_person_called_in_again_records_callback_canceled(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Traveller,
    publish_routing: Callable[..., int], run_due: Callable[[], list[str]], metrics_of: Callable[..., Report],
) -> None:  # fmt: skip
    publish_routing(callback_at_once)
    caller(phone, 13, [*MENTAL_HEALTH, CALLBACK_KEY])
    caller(phone, 13, MENTAL_HEALTH, max_hold_turns=0)  # the same number, holding live now
    phone.answer(ringing(fake).sid, [Keys("1")])  # and a counselor has them

    assert run_due() == ["not_needed"]

    with app.app_context():
        canceled = db.session.scalars(select(CallEvent).where(CallEvent.kind == "callback.canceled")).all()
        assert [(e.detail["outcome"], e.detail["origin"]) for e in canceled] == [("called_in", "call")]
    values = metrics_of("voice").overall.values
    assert (values["callbacks_requested"], values["callbacks_canceled"], values["callbacks_completed"]) == (1, 1, 0)
