"""The supervisors' alert of a callback nobody reached, when Twilio refuses their texts for now.

Before: a 429 or a 503 on the supervisors' texts (likely on the busy night that left the
callback unmade) ended the alert "send_failed", logged, and it was never tried again: nobody
was put before the person who asked for a call. Now it is scheduled again after 5, 15, 30 and
60 minutes, as a flagged check-in's is, each supervisor texted once; then it stops, logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask

from tests.callbacks.test_callbacks import ask_for_callback, callbacks, contacts, fake_now, run_contact
from tests.rota import around_the_clock
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("clean_redis")
SAM, ANA = "+13125550190", "+13125550191"
MESSAGES = r"/Messages\.json$"


def texts_to(fake: FakeTwilio, number: str) -> list[str]:
    return [m.body for m in fake.messages.values() if m.to == number]


def given_up_unreached(
    app: Flask, phone: Phone, run_worker: Callable[..., None], publish: Callable[..., int]
) -> datetime:
    """Nobody on call, a second supervisor (after Sam): the callback is given up two hours on."""

    def two_supervisors(document: dict[str, Any]) -> None:
        around_the_clock(document, on_call=())
        document["supervisors"].append({"id": "ana-reyes", "name": "Ana Reyes", "phone": "+1 312 555 0191"})

    publish(two_supervisors)
    ask_for_callback(phone)
    run_worker()
    moment: datetime = fake_now() + timedelta(minutes=121)
    with time_machine.travel(moment), app.app_context():
        from workers.upkeep import tend_callbacks

        tend_callbacks()
    return moment


def test_a_supervisor_twilio_refused_is_texted_again_later_and_each_once(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], publish_routing: Callable[..., int]
) -> None:
    moment = given_up_unreached(app, phone, run_worker, publish_routing)
    (callback,) = callbacks(app)
    fake.inject_fault("POST", MESSAGES, status=429, code=20429, message="Too Many Requests", times=1)  # Sam's
    (alert,) = contacts(app, "callback_unreached")
    with time_machine.travel(moment):
        assert run_contact(app, alert) == "sent"  # Ana's
        with app.app_context():  # a re-run of the same contact schedules the same next one
            from callbacks.attempts import tell_supervisors_unreached

            tell_supervisors_unreached(alert)
    assert (texts_to(fake, SAM), len(texts_to(fake, ANA))) == ([], 1)
    _, again = contacts(app, "callback_unreached")
    assert again.dedupe_key == f"callback_unreached:{callback.id}:again:1"
    assert timedelta(minutes=5) <= again.due_at - moment < timedelta(minutes=6)

    with time_machine.travel(moment + timedelta(minutes=5, seconds=1)):
        assert run_contact(app, again) == "sent"
        assert run_contact(app, again) == "not pending"
    assert len(texts_to(fake, SAM)) == len(texts_to(fake, ANA)) == 1  # each told once
    assert f"CB{callback.id}" in texts_to(fake, SAM)[0]
    assert len(contacts(app, "callback_unreached")) == 2  # nothing more


def test_an_alert_twilio_refuses_at_every_try_stops_after_the_last(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], publish_routing: Callable[..., int],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    moment = given_up_unreached(app, phone, run_worker, publish_routing)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, message="Service Unavailable", times=None)
    waits = [timedelta(0), timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=30), timedelta(hours=1)]
    outcomes = []
    with caplog.at_level(logging.ERROR, logger="callbacks.attempts"):
        for round_, wait in enumerate(waits):
            moment += wait + timedelta(seconds=1)
            alert = contacts(app, "callback_unreached")[round_]
            with time_machine.travel(moment):
                outcomes.append(run_contact(app, alert))
    assert outcomes == ["send_failed"] * 5
    assert len(contacts(app, "callback_unreached")) == 5  # no endless retries
    assert texts_to(fake, SAM) == texts_to(fake, ANA) == []
    assert [r.getMessage() for r in caplog.records if "not every supervisor" in r.getMessage()] == [
        f"callback {callbacks(app)[0].id} was given up unreached, and not every supervisor could be told"
        " (Twilio refused every try)"
    ]
