"""Twilio refusing for a moment to place the person's call (429, 503, a connection never
made) is not a try: their phone never rang. The same attempt runs again a minute later, a
few times at most; a refusal for good (an invalid number) ends the callback
(``test_a_number_twilio_refuses_for_good.py``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from flask import Flask

from callbacks.attempts import NOT_PLACED_AT_MOST, NOT_PLACED_RETRY_AFTER
from tests.callbacks.test_callbacks import (
    ask_for_callback,
    callbacks,
    contacts,
    fake_now,
    person_legs,
    ringing_responder,
    run_contact,
)
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = [pytest.mark.usefixtures("clean_redis"), pytest.mark.usefixtures("rota")]


def accept_while_twilio_refuses(phone: Phone, fake: FakeTwilio, *, status: int, code: int) -> str:
    """The counselor rung for the callback presses 1; Twilio refuses the person's call once."""
    fake.inject_fault("POST", r"/Calls\.json$", status=status, code=code, times=1)
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    phone.resume(counselor)
    return counselor.heard_text()


@pytest.mark.parametrize(("status", "code"), [(503, 20503), (429, 20429)])
def test_a_momentary_refusal_to_place_the_persons_call_costs_them_no_try_and_is_tried_a_minute_later(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], status: int, code: int
) -> None:
    ask_for_callback(phone)
    run_worker()
    with time_machine.travel(fake_now(), tick=True) as clock:
        heard = accept_while_twilio_refuses(phone, fake, status=status, code=code)

        assert "We will try again later" in heard and "last try" not in heard
        again = contacts(app, "callback")[-1]
        assert (again.attempt, again.state) == (1, "pending")  # the same attempt, not the next
        assert again.due_at - again.created_at <= NOT_PLACED_RETRY_AFTER + timedelta(seconds=1)
        clock.shift(NOT_PLACED_RETRY_AFTER + timedelta(seconds=1))
        assert run_contact(app, again) == "sent"  # a counselor is rung again for them
        phone.answer(ringing_responder(fake).sid, [Keys("1")])

    assert len(person_legs(fake)) == 1  # their phone rings now
    (callback,) = callbacks(app)
    assert (callback.state, callback.attempts) == ("calling", 1)


def test_a_twilio_that_keeps_refusing_ends_in_used_tries_not_an_endless_round_of_counselors(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    ask_for_callback(phone)
    run_worker()
    with time_machine.travel(fake_now(), tick=True) as clock:
        for _ in range(NOT_PLACED_AT_MOST):
            accept_while_twilio_refuses(phone, fake, status=503, code=20503)
            again = contacts(app, "callback")[-1]
            assert again.attempt == 1
            clock.shift(NOT_PLACED_RETRY_AFTER + timedelta(seconds=1))
            run_contact(app, again)

        accept_while_twilio_refuses(phone, fake, status=503, code=20503)

    (callback,) = callbacks(app)
    assert contacts(app, "callback")[-1].attempt == 2  # this refusal counted as attempt 1
    assert callback.attempts == 1 and callback.state == "retry_wait"
