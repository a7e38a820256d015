"""A callback attempt whose run fails part way (a database blip) is run again a minute later:
starting an attempt is safe to repeat. Found by review: the new handling of interrupted runs
sent it to ``needs_human``, leaving it to a later repair with a false alarm in the logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from callbacks import attempts as callback_attempts
from crisisline.db import db
from crisisline.models import ScheduledContact
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
from tests.faults import failing_once_on_the_database
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio
from workers.contacts import RERUNS_AFTER_INTERRUPTION, STUCK_AFTER, rebuild_schedule
from workers.upkeep import tend_callbacks

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


def a_bug_in_the_attempts_path(*_: object, **__: object) -> object:
    raise RuntimeError("a bug in the attempt's path")


def run_each_try_of_the_attempt(app: Flask) -> None:
    """Run the callback's attempt and each rerun, every one stopping part way (it raises)."""
    for _ in range(RERUNS_AFTER_INTERRUPTION + 1):
        (due,) = [contact for contact in contacts(app, "callback") if contact.state == "pending"]
        with pytest.raises(RuntimeError):
            run_contact(app, due)


def test_a_callback_whose_attempt_keeps_failing_ends_with_the_person_texted_not_repaired_for_ever(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: once its attempt's reruns were used up the callback stayed "waiting"
    with nothing to make it, nobody was told or texted, and the clock's repair handed the same
    failing attempt to a worker again every few minutes, for ever."""
    ask_for_callback(phone)
    monkeypatch.setattr(callback_attempts, "_reached_us_since", a_bug_in_the_attempts_path)
    run_each_try_of_the_attempt(app)

    assert [(c.state, c.outcome) for c in contacts(app, "callback")] == [("needs_human", "worker_died_mid_send")]
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("gave_up", callback_attempts.LINE_FAILED)
    (tried,) = contacts(app, "callback_missed")
    monkeypatch.undo()
    assert run_contact(app, tried) == "sent"
    assert [m.body for m in fake.messages.values() if m.to == CALLER] == [TRIED_TEXT]
    with time_machine.travel(fake_now() + timedelta(minutes=10)), app.app_context():
        assert tend_callbacks()["repaired"] == 0
    assert len(contacts(app, "callback")) == 1


def test_a_callback_attempt_that_failed_while_its_search_is_open_is_left_to_that_search(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    ask_for_callback(phone)
    (attempt,) = contacts(app, "callback")
    assert run_contact(app, attempt) == "sent"  # its search rings a counselor
    with app.app_context():
        callback_attempts._give_up_a_callback_the_line_could_not_make(attempt.id)
    (callback,) = callbacks(app)
    assert callback.state == "waiting"  # the open search still ends it, one way or the other
    assert contacts(app, "callback_missed") == []


def test_a_callback_whose_worker_dies_in_every_run_is_counted_and_ends_with_the_person_texted(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Found by review: the rebuild put a stuck callback attempt back without counting it, so
    one that killed its worker every time (out of memory, say) was rerun for ever."""
    ask_for_callback(phone)
    (attempt,) = contacts(app, "callback")
    for _ in range(RERUNS_AFTER_INTERRUPTION + 1):
        with app.app_context():  # claimed by a worker that died in the run
            db.session.execute(
                update(ScheduledContact).where(ScheduledContact.id == attempt.id)
                .values(state="sending", claimed_at=datetime.now(UTC) - 2 * STUCK_AFTER)
            )  # fmt: skip
            db.session.commit()
            rebuild_schedule()

    (again,) = contacts(app, "callback")
    assert (again.state, again.outcome) == ("needs_human", "worker_died_mid_send")
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("gave_up", callback_attempts.LINE_FAILED)
    assert [contact.state for contact in contacts(app, "callback_missed")] == ["pending"]
