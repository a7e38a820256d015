"""A person who asks for a callback again is given their callback still to be made. Found by
review: the request read it open, then wrote its new promise whatever had happened to it since;
a callback given up in between (its last attempt, the clock) was promised again, its attempt
was never scheduled (its key existed), and nobody called. The new promise is now a conditional
UPDATE: a callback that ended meanwhile is not promised again, and the request gets a new one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import update

from callbacks import requests
from crisisline.db import db
from crisisline.models import Callback
from tests.callbacks.test_callbacks import ask_for_callback, callbacks, contacts
from twilio_fake.phone import Phone

pytestmark = pytest.mark.usefixtures("clean_redis", "wednesday_evening")
PROMISED = "We will call you back at this number as soon as someone is free."


def test_a_callback_given_up_as_the_person_asks_again_is_not_promised_again_they_get_a_new_one(
    app: Flask, phone: Phone, rota: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    ask_for_callback(phone)
    (first,) = callbacks(app)
    found_open = requests.their_open_callback

    def given_up_just_after_it_was_found(caller_hash: str) -> Callback | None:
        callback = found_open(caller_hash)
        # The clock gives it up now (its last attempt went unanswered), between the read and the write.
        db.session.execute(update(Callback).where(Callback.id == first.id).values(state="gave_up"))
        return callback

    monkeypatch.setattr(requests, "their_open_callback", given_up_just_after_it_was_found)
    second_call = ask_for_callback(phone)

    assert PROMISED in second_call.heard_text()
    assert [(c.id, c.state) for c in callbacks(app)] == [(first.id, "gave_up"), (first.id + 1, "waiting")]
    assert first.id + 1 in [c.callback_id for c in contacts(app, "callback") if c.state == "pending"]  # to be made


def test_a_callback_still_open_when_the_person_asks_again_is_the_one_they_are_promised(
    app: Flask, phone: Phone, rota: Callable[..., None]
) -> None:
    ask_for_callback(phone)
    (first,) = callbacks(app)

    again = ask_for_callback(phone)

    assert PROMISED in again.heard_text()
    (only,) = callbacks(app)
    assert (only.id, only.state) == (first.id, "waiting")
    assert only.promised_at is not None and only.promised_at >= first.requested_at
