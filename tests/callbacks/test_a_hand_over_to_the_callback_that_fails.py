"""The callback key is pressed and the callback stored, then the hold's hand-over to it fails
(a database blip, the process killed between the two commits): the caller never hears the
promise and holds on. The clock's repair finds the callback with nothing due and schedules its
first attempt. Found by review: that attempt left the call it was asked on out of "reached
since" altogether, so a counselor was rung to call back someone a counselor had just talked with
on that very call. Now a counselor joining them on it after the promise counts (``called_in``),
and their still holding on it postpones the attempt, as a later call's would."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from crisisline.db import db
from crisisline.models import Transfer
from tests.callbacks.test_callbacks import callbacks, contacts, fake_now, responder_legs, run_contact
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("clean_redis", "rota")


def _key_whose_hand_over_fails(app: Flask, phone: Phone, monkeypatch: pytest.MonkeyPatch) -> PhoneCall:
    """A caller holding live presses the callback key: the callback is stored, then the
    database fails the hand-over of their hold to it. They hold on, promised nothing."""
    from callbacks import requests
    from routing.store import active_routing

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    with app.app_context():
        active = active_routing()
        assert active is not None
        holding = db.session.scalars(select(Transfer)).one()

        def blip(*args: object, **kwargs: object) -> bool:
            raise OperationalError("UPDATE", {}, Exception("server closed the connection unexpectedly"))

        with monkeypatch.context() as patch:
            patch.setattr(requests.state, "move_transfer", blip)
            with pytest.raises(OperationalError):
                requests.request_from_hold(holding, active.document)
        db.session.rollback()
    (stored,) = callbacks(app)
    assert stored.state == "waiting" and contacts(app, "callback") == []  # nothing due: the clock's to repair
    return caller


def _repaired_attempt(app: Flask) -> str:
    """The clock's callback tending, past the orphan wait, and the attempt it schedules."""
    from workers.upkeep import tend_callbacks

    with time_machine.travel(fake_now() + timedelta(minutes=3)), app.app_context():
        tend_callbacks()
        (attempt,) = contacts(app, "callback")
        assert (attempt.attempt, attempt.state) == (1, "pending")
        return run_contact(app, attempt)


def test_a_callback_whose_hand_over_failed_is_not_made_once_a_counselor_has_talked_with_them_on_that_call(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = _key_whose_hand_over_fails(app, phone, monkeypatch)
    counselor = phone.answer(responder_legs(fake)[-1].sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference is not None and caller.conference == counselor.conference
    phone.hang_up(caller)  # a conversation, then they hang up
    phone.hang_up(counselor)
    legs_before = len(responder_legs(fake))

    assert _repaired_attempt(app) == "not_needed"

    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("canceled", "called_in")
    assert len(responder_legs(fake)) == legs_before  # no counselor rung to call them back
    with app.app_context():
        assert db.session.scalars(select(Transfer).where(Transfer.mode == "callback")).all() == []


def test_a_callback_whose_hand_over_failed_waits_while_they_still_hold_on_that_call(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    _key_whose_hand_over_fails(app, phone, monkeypatch)

    assert _repaired_attempt(app) == "not_needed"

    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("waiting", None)  # theirs still, should they hang up unheard
    with app.app_context():
        assert db.session.scalars(select(Transfer).where(Transfer.mode == "callback")).all() == []
    recheck = [c for c in contacts(app, "callback") if c.state == "pending"]
    assert [c.attempt for c in recheck] == [1]  # the same attempt, a minute later
