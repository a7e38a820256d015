"""A callback given up without reaching its person is put before a person.

Before: a callback nobody took within ``give_up_after_minutes``, that was never answered, or
whose number Twilio will not call ended with (at most) the "we tried" text to the person, and
no supervisor was told (only a check-in's "2" was flagged): someone who asked for a call,
thoughts of suicide among them, was never put before a human. Now every supervisor is texted
the callback's case id and why, never a number or a need; once, however often it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from flask import Flask

from tests.callbacks.test_callbacks import (
    CALLER,
    TRIED_TEXT,
    ask_for_callback,
    callbacks,
    contacts,
    fake_now,
    ringing_responder,
    run_contact,
)
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("clean_redis")
SUPERVISOR = "+13125550190"


def supervisor_texts(fake: FakeTwilio) -> list[str]:
    return [m.body for m in fake.messages.values() if m.to == SUPERVISOR]


def test_a_suicide_callback_nobody_was_free_to_make_is_told_to_the_supervisors_by_case_only(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    rota(on_call=())
    ask_for_callback(phone)  # keys 1 (English), 2 (thoughts of suicide), 9
    run_worker()
    with time_machine.travel(fake_now() + timedelta(minutes=121)), app.app_context():
        from workers.upkeep import tend_callbacks

        tend_callbacks()
    run_worker()
    (callback,) = callbacks(app)
    assert (callback.state, callback.need) == ("gave_up", "suicide")
    assert [m.body for m in fake.messages.values() if m.to == CALLER] == [TRIED_TEXT]
    assert supervisor_texts(fake) == [
        f"Crisis line: callback case CB{callback.id} never reached the person who asked for it: no counselor was"
        " free to call them back in time. Please follow up: the emergency unmask page lists it for a day."
    ]
    (alert,) = contacts(app, "callback_unreached")
    assert run_contact(app, alert) == "not pending"  # a duplicated job tells nobody twice
    assert len(supervisor_texts(fake)) == 1
    assert "suicide" not in supervisor_texts(fake)[0] and "5550123" not in supervisor_texts(fake)[0]


@pytest.mark.usefixtures("rota")
def test_a_callback_to_a_number_twilio_refuses_for_good_is_told_to_the_supervisors(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    ask_for_callback(phone)
    run_worker()
    fake.inject_fault("POST", r"/Calls\.json$", status=400, code=21211, times=1)
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    phone.resume(counselor)
    run_worker()
    (callback,) = callbacks(app)
    assert supervisor_texts(fake) == [
        f"Crisis line: callback case CB{callback.id} never reached the person who asked for it: their number is not"
        " a valid phone number. Please follow up: the emergency unmask page lists it for a day."
    ]
