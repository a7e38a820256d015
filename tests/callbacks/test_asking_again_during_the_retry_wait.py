"""Asking again while a callback waits for its retry brings the retry forward to now.

Before: a person who missed the line's call and rang straight back, pressing the callback key
again, was told "we will call you back as soon as someone is free", yet their callback kept
waiting for its old retry time (5 or 15 minutes) with counselors free. Now the request that
reuses a callback in ``retry_wait`` moves its next attempt to now, once: the pending attempt is
cancelled by a conditional UPDATE and an attempt due now stored under an insert-once key, so a
duplicated webhook or a second request changes nothing more, and nothing runs at the old time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from flask import Flask

from tests.callbacks.test_callbacks import (
    ask_for_callback,
    callbacks,
    contacts,
    fake_now,
    person_legs,
    responder_legs,
    ringing_responder,
    run_contact,
)
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

RINGING = ("queued", "initiated", "ringing")


@pytest.mark.usefixtures("rota")
def test_asking_again_during_the_retry_wait_rings_a_free_counselor_now_and_nothing_at_the_old_time(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    with time_machine.travel(fake_now(), tick=True) as clock:
        ask_for_callback(phone)
        run_worker()
        counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
        fake.advance_call(person_legs(fake)[-1].sid, "no-answer")  # in the shower
        phone.resume(counselor)
        assert callbacks(app)[0].state == "retry_wait"  # attempt 2 due in 5 minutes
        (old,) = [c for c in contacts(app, "callback") if c.state == "pending"]

        # They see the missed call and ring the line at once, and press the key again, twice
        # (a duplicated request): "We will call you back ... as soon as someone is free."
        again = ask_for_callback(phone)
        assert "as soon as someone is free" in again.heard_text()
        ask_for_callback(phone)
        pending = [c for c in contacts(app, "callback") if c.state == "pending"]
        assert len(pending) == 1 and pending[0].attempt == 2
        assert (pending[0].due_at - pending[0].created_at).total_seconds() < 5
        run_worker()
        assert [leg for leg in responder_legs(fake) if leg.status in RINGING], "nobody rung with counselors free"
        assert (callbacks(app)[0].state, callbacks(app)[0].attempts) == ("waiting", 2)

        # The old retry time comes: the attempt it held is not run a second time.
        clock.shift(timedelta(minutes=5, seconds=1))
        rung = len(responder_legs(fake))
        assert run_contact(app, old) == "not pending"
        assert len(responder_legs(fake)) == rung
        assert len(person_legs(fake)) == 1
