"""A callback attempt whose run fails part way (a database blip) is run again a minute later:
starting an attempt is safe to repeat. Found by review: the new handling of interrupted runs
sent it to ``needs_human``, leaving it to a later repair with a false alarm in the logs."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.exc import OperationalError

from callbacks import attempts as callback_attempts
from tests.callbacks.test_callbacks import ask_for_callback, callbacks, contacts, ringing_responder, run_contact
from tests.faults import failing_once_on_the_database
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = [pytest.mark.usefixtures("clean_redis"), pytest.mark.usefixtures("rota")]


def test_a_callback_attempt_that_hits_a_database_blip_is_run_again(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    ask_for_callback(phone)
    (attempt,) = contacts(app, "callback")
    blip = failing_once_on_the_database(callback_attempts._reached_us_since)
    monkeypatch.setattr(callback_attempts, "_reached_us_since", blip)
    with pytest.raises(OperationalError):
        run_contact(app, attempt)

    (again,) = contacts(app, "callback")
    assert (again.state, again.outcome) == ("pending", "interrupted:1")
    assert run_contact(app, again) == "sent"
    assert ringing_responder(fake) is not None  # a counselor is rung for them
    (callback,) = callbacks(app)
    assert callback.attempts == 1
