"""A callback always has a next step: an attempt's end, the callback's next state and the next
contact's row are one transaction, committed before anyone is told; an open callback left with
no search and nothing due (as a crash between two commits left it) is repaired by the clock,
once, and is never handed to a new request as it is; a retry's search has its own give-up time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select, update

from callbacks import attempts
from crisisline.db import db
from crisisline.models import Callback, ScheduledContact, Transfer
from tests.callbacks.test_callbacks import (
    CALLER,
    TRIED_TEXT,
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
from workers.upkeep import tend_callbacks

pytestmark = pytest.mark.usefixtures("clean_redis")


def scheduling_fails(*_: Any, **__: Any) -> bool:
    raise RuntimeError("the database went away before the contact was stored")


def searches(app: Flask) -> list[Transfer]:
    with app.app_context():
        return list(db.session.scalars(select(Transfer).where(Transfer.mode == "callback").order_by(Transfer.id)))


def tend_at(app: Flask, moment: Any) -> dict[str, int]:
    with time_machine.travel(moment), app.app_context():
        return tend_callbacks()


@pytest.mark.usefixtures("rota")
def test_an_attempt_whose_retry_cannot_be_stored_is_not_ended_and_the_clock_then_schedules_the_retry(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    ask_for_callback(phone)
    run_worker()
    phone.answer(ringing_responder(fake).sid, [Keys("1")])
    monkeypatch.setattr(attempts, "schedule", scheduling_fails)
    fake.advance_call(person_legs(fake)[-1].sid, "no-answer")  # its status callback fails storing the retry

    (callback,) = callbacks(app)
    (search,) = searches(app)
    assert (search.state, callback.state) == ("connecting", "calling"), (
        f"half committed: the attempt {search.state}, the callback {callback.state}, no retry stored"
    )
    assert len(contacts(app, "callback")) == 1

    monkeypatch.undo()
    tend_at(app, fake_now() + timedelta(minutes=3))  # the lost status: Twilio is asked

    (callback,) = callbacks(app)
    retry = contacts(app, "callback")[-1]
    assert (callback.state, retry.attempt, retry.state) == ("retry_wait", 2, "pending")


def test_a_give_up_whose_text_cannot_be_stored_leaves_the_search_and_the_callback_open_until_it_can(
    app: Flask,
    phone: Phone,
    rota: Callable[..., None],
    run_worker: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rota(on_call=())
    ask_for_callback(phone)
    run_worker()  # nobody free: the search waits
    monkeypatch.setattr(attempts, "schedule", scheduling_fails)
    with pytest.raises(RuntimeError):
        tend_at(app, fake_now() + timedelta(minutes=121))

    (callback,) = callbacks(app)
    (search,) = searches(app)
    assert (search.state, callback.state) == ("waiting", "waiting"), (
        f"half committed: the search {search.state}, the callback {callback.state}, no text stored"
    )
    monkeypatch.undo()
    assert tend_at(app, fake_now() + timedelta(minutes=122))["gave_up"] == 1
    run_worker()

    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("gave_up", "nobody_free")
    assert [contact.state for contact in contacts(app, "callback_missed")] == ["sent"]


def orphan_after_first_attempt(
    app: Flask, phone: Phone, run_worker: Callable[..., None], ended: tuple[str, str] = ("ended", "person_no_answer"),
    **callback: Any,
) -> int:  # fmt: skip
    """The state a crash between two commits left behind before they were one: the first
    attempt's search ended (``ended``: its state and reason; unanswered by default), the
    callback moved on (``callback`` values), and no contact stored for what comes next."""
    ask_for_callback(phone)
    run_worker()  # attempt 1's search starts (nobody on call: it waits)
    with app.app_context():
        (search,) = db.session.scalars(select(Transfer).where(Transfer.mode == "callback")).all()
        (search.state, search.end_reason), search.ended_at = ended, fake_now()
        db.session.execute(update(Callback).values(**callback))
        db.session.commit()
        return search.id


def test_an_open_callback_left_with_nothing_due_is_given_its_next_attempt_by_the_clock_once(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    rota(on_call=())
    orphan_after_first_attempt(app, phone, run_worker, state="retry_wait", attempts=1)
    rota()  # everyone on call again

    assert tend_at(app, fake_now() + timedelta(minutes=1))["repaired"] == 0  # a step may be under way
    first = tend_at(app, fake_now() + timedelta(minutes=3))
    second = tend_at(app, fake_now() + timedelta(minutes=3, seconds=30))

    assert (first["repaired"], second["repaired"]) == (1, 0)
    retry = contacts(app, "callback")[-1]
    assert (retry.attempt, retry.state) == (2, "pending")
    waited = (retry.due_at - searches(app)[0].ended_at).total_seconds()  # type: ignore[operator]
    assert waited == pytest.approx(5 * 60, abs=2)  # the retry's own wait, from the attempt's end
    with time_machine.travel(retry.due_at + timedelta(seconds=1)):
        assert run_contact(app, retry) == "sent"
    ringing_responder(fake)  # attempt 2 rings a counselor
    (callback,) = callbacks(app)
    assert (callback.state, callback.attempts) == ("waiting", 2)


def test_two_clocks_that_find_the_same_orphaned_callback_schedule_one_attempt(
    app: Flask, phone: Phone, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    rota(on_call=())
    orphan_after_first_attempt(app, phone, run_worker, state="calling", attempts=1)
    later = fake_now() + timedelta(minutes=3)
    with time_machine.travel(later), app.app_context():
        document = attempts._active_document()
        assert document is not None
        seen_by_one, seen_by_other = attempts._orphaned_callbacks(later), attempts._orphaned_callbacks(later)
        done = [attempts.repair(callback, document, newest) for callback, newest in seen_by_one + seen_by_other]

    assert done == ["attempt", None]
    with app.app_context():
        due = db.session.scalars(select(ScheduledContact).where(ScheduledContact.state == "pending")).all()
    assert [contact.attempt for contact in due] == [2]


def test_an_orphaned_callback_with_no_tries_left_is_given_up_with_the_we_tried_text(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    rota(on_call=())
    orphan_after_first_attempt(app, phone, run_worker, state="calling", attempts=3)

    assert tend_at(app, fake_now() + timedelta(minutes=3))["repaired"] == 1
    run_worker()

    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("gave_up", "no_answer")
    assert [m.body for m in fake.messages.values() if m.to == CALLER] == [TRIED_TEXT]


def test_an_orphaned_callback_whose_person_the_failsafe_put_through_to_the_backup_line_ends_there(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    rota(on_call=())
    orphan_after_first_attempt(app, phone, run_worker, ("to_backup", "failsafe"), state="calling", attempts=1)

    assert tend_at(app, fake_now() + timedelta(minutes=3))["repaired"] == 1

    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("canceled", "to_backup")
    assert contacts(app, "callback_missed") == []
    assert len(contacts(app, "callback")) == 1  # nobody rings them again


def test_asking_again_with_an_orphaned_callback_gets_it_made(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    rota(on_call=())
    orphan_after_first_attempt(app, phone, run_worker, state="retry_wait", attempts=1)
    rota()

    again = ask_for_callback(phone)  # at once: no clock has repaired it yet
    assert "We will call you back" in again.heard_text()

    (callback,) = callbacks(app)
    with app.app_context():
        assert attempts.has_next_step(callback.id), "promised again over a callback nothing will make"
    run_worker()
    ringing_responder(fake)  # a counselor is rung for it now
    (callback,) = callbacks(app)
    assert (callback.state, callback.attempts) == ("waiting", 2)


@pytest.mark.usefixtures("rota")
def test_a_retry_starting_near_the_end_of_the_give_up_window_is_not_given_up_while_a_counselor_is_rung(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    ask_for_callback(phone)
    run_worker()
    with time_machine.travel(fake_now() + timedelta(minutes=114), tick=True) as clock:
        counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])  # taken late: nobody was free
        fake.advance_call(person_legs(fake)[-1].sid, "no-answer")
        phone.resume(counselor)
        retry = contacts(app, "callback")[-1]
        clock.move_to(retry.due_at + timedelta(seconds=1))  # 5 minutes later: 119 minutes after asking
        assert run_contact(app, retry) == "sent"
        ringing = ringing_responder(fake)
        clock.shift(timedelta(minutes=3))
        with app.app_context():
            counts = tend_callbacks()
        assert counts["gave_up"] == 0, "the retry was given up within minutes of starting"
        assert ringing_responder(fake).sid == ringing.sid
        clock.shift(timedelta(minutes=120))  # its own window past: given up as a first attempt is
        with app.app_context():
            assert tend_callbacks()["gave_up"] == 1

    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome, callback.attempts) == ("gave_up", "nobody_free", 2)
