"""Promises of a callback kept whatever comes between: a new request reusing the person's open
callback counts from the new promise; a person who answers before the ring is recorded, or
hangs up during the greeting, leaves nothing open and nobody alone in a room."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from callbacks import attempts
from crisisline.db import db
from crisisline.models import Offer, Transfer
from tests.callbacks.test_callbacks import (
    ask_for_callback,
    callbacks,
    fake_now,
    person_legs,
    responder_legs,
    ringing_responder,
)
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from workers.upkeep import reconcile_transfers, tend_callbacks

pytestmark = pytest.mark.usefixtures("clean_redis")


@pytest.mark.usefixtures("rota")
def test_a_callback_asked_for_after_being_reached_on_a_later_call_is_not_cancelled_as_called_in(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    """Asked once (call 1); called again (call 2), was with a counselor who then dropped off;
    back on hold, pressed the key again and was told "we will call you back". The open callback
    from call 1 is reused, and its attempt then cancels it as "called in" because of call 2's
    first round, which happened BEFORE this new request."""
    ask_for_callback(phone)  # callback 1 (attempt not started yet: the worker has not run)
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    live_leg = [leg for leg in responder_legs(fake) if leg.status in ("queued", "initiated", "ringing")][-1]
    counselor = phone.answer(live_leg.sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference == counselor.conference is not None  # reached by a counselor
    phone.hang_up(counselor)  # the counselor drops off; the caller is put back on hold
    phone.resume(caller, [Keys("2"), Keys("9")], max_hold_turns=2)  # no check-in; then the callback key
    assert "We will call you back" in caller.heard_text()  # a NEW promise, made after being reached

    run_worker()

    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) != ("canceled", "called_in"), (
        "promised a callback after the contact, then cancelled it because of that contact"
    )


@pytest.mark.usefixtures("rota")
def test_a_callback_reused_for_a_new_request_is_not_given_up_a_minute_later(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    """A new request (told "we will call you back") gets the person's old open callback, whose
    give-up clock started with the OLD request: it is given up at the next minute."""
    rota(on_call=())
    ask_for_callback(phone, "+13125550123")
    run_worker()  # attempt 1 starts; nobody free, waits in the queue
    with time_machine.travel(fake_now() + timedelta(minutes=119), tick=True):
        again = ask_for_callback(phone, "+13125550123")  # asks again, nearly two hours later
        assert "We will call you back" in again.heard_text()
    with time_machine.travel(fake_now() + timedelta(minutes=121)), app.app_context():
        tend_callbacks()
    (callback,) = callbacks(app)
    assert callback.state != "gave_up", "a callback promised two minutes ago was given up at once"


@pytest.mark.usefixtures("rota")
def test_a_person_who_picks_up_before_calling_is_recorded_leaves_no_open_callback_behind(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The person's answer webhook is handled before the counselor's press of 1 has committed
    ``calling`` (a slow database, or the REST answer that timed out after Twilio placed the
    call): ``person_answered`` only moves ``calling`` → connected, so the callback is left
    ``calling`` for ever, and every later request from this person reuses it and is never made."""
    real_calling = attempts._calling

    def answered_first(transfer: Any, callback: Any, **detail: object) -> None:
        """Forces the interleaving: the person's answer webhook runs just before ``calling``."""
        db.session.commit()  # what the request wrote so far (the leg's SID) is visible
        (leg,) = person_legs(fake)
        fake.advance_call(leg.sid, "ringing")
        fake.advance_call(leg.sid, "in-progress", answered_by="human")  # /voice/callback/answer
        real_calling(transfer, callback, **detail)

    monkeypatch.setattr(attempts, "_calling", answered_first)
    ask_for_callback(phone)
    run_worker()
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    monkeypatch.setattr(attempts, "_calling", real_calling)
    (leg,) = person_legs(fake)
    fake.advance_call(leg.sid, "completed")  # the conversation happened and ended
    phone.resume(counselor)

    (callback,) = callbacks(app)
    with app.app_context():
        rounds = db.session.scalars(select(Transfer.state).where(Transfer.callback_id == callback.id)).all()
    # Next week they ask again: promised, but the stale "calling" callback is reused, never made.
    again = ask_for_callback(phone)
    assert "We will call you back" in again.heard_text()
    legs_before = len(responder_legs(fake))
    run_worker()
    print(
        "callbacks after the new request:",
        [(c.id, c.state) for c in callbacks(app)],
        "responders rung for it:",
        len(responder_legs(fake)) - legs_before,
    )
    assert callback.state not in ("waiting", "calling", "retry_wait"), (
        f"callback left open ({callback.state}) after its person was connected; transfers {rounds}"
    )


@pytest.mark.usefixtures("rota")
def test_a_person_who_hangs_up_during_the_greeting_does_not_leave_their_counselor_alone_in_the_room(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    """The person picks up (a human), hears "calling you back" and hangs up before entering the
    conference. Their leg's end moves the attempt connected → ended, but nobody tells the
    counselor waiting in the room (no ``release_staff``, unlike a live caller's ``leg_gone``)."""
    ask_for_callback(phone)
    run_worker()
    counselor_leg = ringing_responder(fake)
    counselor = phone.answer(counselor_leg.sid, [Keys("1")])
    (leg,) = person_legs(fake)
    fake.advance_call(leg.sid, "ringing")
    twiml = fake.advance_call(leg.sid, "in-progress", answered_by="human")
    assert twiml is not None and "<Conference" in twiml
    fake.advance_call(leg.sid, "completed")  # hung up during the greeting
    phone.resume(counselor, max_hold_turns=1)
    with app.app_context():
        reconcile_transfers()
        tend_callbacks()
    with app.app_context():
        offers = [(o.state, o.outcome) for o in db.session.scalars(select(Offer)).all()]
        attempt = db.session.scalars(select(Transfer).where(Transfer.mode == "callback")).one()
    print("attempt:", attempt.state, attempt.end_reason, "offers:", offers)
    print("counselor leg:", fake.calls[counselor_leg.sid].status, "heard:", counselor.heard_text()[-200:])
    assert fake.calls[counselor_leg.sid].status == "completed", "counselor left alone in the room, still engaged"
