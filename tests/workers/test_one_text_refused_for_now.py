"""A contact whose one text Twilio refused for now (a 429, a 503: Twilio created nothing) is
tried again a minute, then 5, then 15 minutes later as a new contact, never twice if it went
out. Before, the "we tried to call you back" text and the text to a caller who hung up waiting
were failed at the first refusal: the person was never told how to reach the line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import ScheduledContact
from tests.callbacks.test_callbacks import TRIED_TEXT, ask_for_callback
from tests.followups.conftest import due_contacts_runner
from tests.rota import around_the_clock
from tests.workers.test_scheduled_contacts import MISSED_ES, wait_then_hang_up
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("clean_redis")
MESSAGES = r"/Messages\.json$"
CALLER = "+13125550123"  # the phone fixture's default caller


def kinds_and_outcomes(app: Flask, kind: str) -> list[tuple[str, str | None]]:
    with app.app_context():
        rows = db.session.scalars(
            select(ScheduledContact).where(ScheduledContact.kind == kind).order_by(ScheduledContact.id)
        )
        return [(contact.state, contact.outcome) for contact in rows]


def texts_to(fake: FakeTwilio, number: str) -> list[str]:
    return [m.body for m in fake.messages.values() if m.to == number and m.status != "failed"]


def a_callback_given_up(
    app: Flask, phone: Phone, clock: time_machine.Coordinates, publish_routing: Callable[..., int]
) -> Callable[[], list[str]]:
    """Nobody on call: the callback's search waits, then gives up at the next tend. The
    supervisors' alert of it is sent at once, so what is left due is the "we tried" text."""
    publish_routing(lambda document: around_the_clock(document, on_call=()))
    ask_for_callback(phone)
    run_due = due_contacts_runner(app)
    run_due()  # the first attempt: nobody to ring
    clock.shift(timedelta(minutes=121))
    with app.app_context():
        from callbacks.attempts import UNREACHED_ALERT
        from workers.contacts import run_scheduled_contact
        from workers.upkeep import tend_callbacks

        assert tend_callbacks()["gave_up"] == 1
        alerts = db.session.scalars(select(ScheduledContact.id).where(ScheduledContact.kind == UNREACHED_ALERT)).all()
        assert [run_scheduled_contact(alert) for alert in alerts] == ["sent"]
    return run_due


@pytest.mark.parametrize("code", [20429, 14107], ids=["twilios-429-code", "another-rate-limit-code"])
def test_a_we_tried_text_refused_for_now_is_sent_a_minute_later_once(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    publish_routing: Callable[..., int], code: int,
) -> None:  # fmt: skip
    """A 429 is a refusal for now whatever Twilio's code in it (before, one carrying a code not
    listed, such as 14107, failed the text at once)."""
    run_due = a_callback_given_up(app, phone, wednesday_evening, publish_routing)
    fake.inject_fault("POST", MESSAGES, status=429, code=code, message="Too Many Requests")

    assert run_due() == ["postponed"]
    assert run_due() == []  # not before its minute
    wednesday_evening.shift(timedelta(seconds=61))
    assert run_due() == ["sent"]
    assert run_due() == []

    assert texts_to(fake, CALLER) == [TRIED_TEXT]
    assert kinds_and_outcomes(app, "callback_missed") == [("canceled", "postponed"), ("sent", "sent")]


def test_a_we_tried_text_refused_at_every_try_fails_after_three_more_tries(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    run_due = a_callback_given_up(app, phone, wednesday_evening, publish_routing)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, message="Service Unavailable", times=None)

    outcomes = run_due()
    for wait in (1, 5, 15):
        wednesday_evening.shift(timedelta(minutes=wait, seconds=1))
        outcomes += run_due()
    wednesday_evening.shift(timedelta(hours=1))
    outcomes += run_due()

    assert outcomes == ["postponed", "postponed", "postponed", "send_failed"]
    assert texts_to(fake, CALLER) == []


@pytest.mark.parametrize(("status", "code"), [(400, 21211), (502, None)])
def test_a_we_tried_text_refused_for_good_or_perhaps_sent_is_not_tried_again(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    publish_routing: Callable[..., int], status: int, code: Any,
) -> None:  # fmt: skip
    """An invalid number is refused for good; a 502 came from a gateway that may have passed
    the request on, so the text may have gone out: never a second one."""
    run_due = a_callback_given_up(app, phone, wednesday_evening, publish_routing)
    fake.inject_fault("POST", MESSAGES, status=status, code=code, message="refused")

    assert run_due() == ["send_failed"]
    wednesday_evening.shift(timedelta(minutes=2))
    assert run_due() == []


def test_a_missed_call_text_refused_for_now_is_sent_a_minute_later(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    wait_then_hang_up(phone, wednesday_evening, "+13125550167", spanish=True)
    run_due = due_contacts_runner(app)
    wednesday_evening.shift(timedelta(minutes=2))
    fake.inject_fault("POST", MESSAGES, status=429, code=20429, message="Too Many Requests")

    assert run_due() == ["postponed"]
    wednesday_evening.shift(timedelta(seconds=61))
    assert run_due() == ["sent"]

    assert texts_to(fake, "+13125550167") == [MISSED_ES]
