"""A number Twilio refuses for good ends its callback at once.

Before: Twilio refusing the person's call with a permanent per-number error (21211 "invalid
'To' number", and the like) was counted as an unanswered try, so every retry rang, briefed
and engaged another counselor (while others waited in the queue) for a call that could never
be placed, and then texted "we tried to call you back" to a number that is not a number. Now
the callback ends on the first such refusal: no retry, no counselor rung again; the "we tried"
text goes only where a text can still arrive (a number Twilio will not call, not an invalid one).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from flask import Flask

from tests.callbacks.test_callbacks import (
    CALLER,
    ask_for_callback,
    callbacks,
    contacts,
    fake_now,
    responder_legs,
    ringing_responder,
    run_contact,
)
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = [pytest.mark.usefixtures("clean_redis"), pytest.mark.usefixtures("rota")]


@pytest.mark.parametrize(("code", "texted"), [(21211, False), (21217, False), (21214, True), (21216, True)])
def test_a_number_twilio_refuses_for_good_ends_the_callback_without_ringing_another_counselor(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], code: int, texted: bool
) -> None:
    ask_for_callback(phone)
    run_worker()
    with time_machine.travel(fake_now(), tick=True) as clock:
        fake.inject_fault("POST", r"/Calls\.json$", status=400, code=code, times=1)
        counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
        phone.resume(counselor)
        heard = counselor.heard_text()
        assert "try again later" not in heard and "did not answer" not in heard
        assert "will not call this number" in heard

        (callback,) = callbacks(app)
        assert callback.state == "gave_up" and callback.attempts == 1
        assert not [c for c in contacts(app, "callback") if c.state == "pending"]
        rung = len(responder_legs(fake))
        clock.shift(timedelta(minutes=20))
        for contact in contacts(app, "callback"):
            run_contact(app, contact)
        assert len(responder_legs(fake)) == rung  # nobody rung again for it

        tried = contacts(app, "callback_missed")
        assert len(tried) == (1 if texted else 0)
        for contact in tried:
            assert run_contact(app, contact) == "sent"
    assert len([m for m in fake.messages.values() if m.to == CALLER]) == (1 if texted else 0)


def test_a_refusal_for_now_still_costs_no_try(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    """Unchanged: a 503 is not a refusal for good."""
    ask_for_callback(phone)
    run_worker()
    fake.inject_fault("POST", r"/Calls\.json$", status=503, code=20503, times=1)
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    phone.resume(counselor)
    assert "We will try again later" in counselor.heard_text()
    assert callbacks(app)[0].state == "waiting"
