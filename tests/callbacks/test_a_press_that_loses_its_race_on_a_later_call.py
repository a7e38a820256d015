"""A person promised a callback on one call (its first attempt not run yet: the workers are
behind) calls again, holds, and presses the callback key; the request is handed their open
callback, and in that moment the second call's hold ends (they hang up, or a counselor takes
them live). Found by review: the lost press cancelled the first call's callback as its own
(``caller_gone``, ``answered_live``), and the promise was dropped with no attempt, no "we tried"
text and no supervisor alert. Only a callback the pressing call asked for is cancelled now; the
earlier one stays open with its promise as before, and is ended only by a counselor having the
person since (``called_in``), when its attempt comes."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Transfer
from tests.callbacks.test_callbacks import ask_for_callback, callbacks, contacts, responder_legs, run_contact
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("clean_redis", "rota")


def _press_on_the_holding_call(app: Flask) -> str:
    """The callback key on the second call's hold, as its webhook hands it on."""
    from callbacks.requests import request_from_hold
    from routing.store import active_routing

    with app.app_context():
        active = active_routing()
        assert active is not None
        live = select(Transfer).where(Transfer.mode == "live").order_by(Transfer.id.desc())
        holding = db.session.scalars(live).first()
        assert holding is not None
        return request_from_hold(holding, active.document)


def test_a_key_pressed_on_a_second_call_as_they_hang_up_leaves_the_callback_promised_on_the_first_to_be_made(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    ask_for_callback(phone)
    (first,) = callbacks(app)
    again = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    with app.app_context():  # their hang-up handled a moment before the key
        holding = db.session.scalars(select(Transfer).where(Transfer.mode == "live", Transfer.state == "waiting")).one()
        holding.state = "abandoned"
        db.session.commit()

    assert _press_on_the_holding_call(app) == "impossible"

    (callback,) = callbacks(app)
    assert (callback.id, callback.state, callback.outcome) == (first.id, "waiting", None)
    assert callback.promised_since == first.promised_since  # the lost press promised nothing
    phone.hang_up(again)
    (attempt,) = contacts(app, "callback")
    legs_before = len(responder_legs(fake))
    assert run_contact(app, attempt) == "sent"  # its first attempt is made
    assert len(responder_legs(fake)) > legs_before  # a counselor is rung to call them back
    with app.app_context():
        assert db.session.scalars(select(Transfer.state).where(Transfer.callback_id == first.id)).all() == ["waiting"]


def test_a_key_pressed_on_a_second_call_as_a_counselor_takes_it_ends_the_first_calls_callback_only_as_called_in(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    ask_for_callback(phone)
    again = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    counselor = phone.answer(responder_legs(fake)[-1].sid, [Keys("1")])  # a counselor's 1, a moment before the key

    assert _press_on_the_holding_call(app) == "join"

    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("waiting", None)  # still theirs until a counselor has them
    phone.resume(again, max_hold_turns=0)
    assert again.conference is not None and again.conference == counselor.conference
    (attempt,) = contacts(app, "callback")
    legs_before = len(responder_legs(fake))
    assert run_contact(app, attempt) == "not_needed"

    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("canceled", "called_in")  # reached since they asked
    assert len(responder_legs(fake)) == legs_before  # nobody rung to call back someone on with a counselor


def test_a_key_pressed_on_a_second_call_whose_acceptance_is_withdrawn_leaves_the_first_callback_to_wait_while_they_hold(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    ask_for_callback(phone)
    (first,) = callbacks(app)
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    with app.app_context():  # a counselor's 1, a moment before the key
        holding = db.session.scalars(select(Transfer).where(Transfer.mode == "live", Transfer.state == "waiting")).one()
        holding.state, holding_id = "connecting", holding.id
        db.session.commit()
    assert _press_on_the_holding_call(app) == "join"
    with app.app_context():  # that acceptance withdrawn: they hold on
        withdrawn = db.session.get(Transfer, holding_id)
        assert withdrawn is not None
        withdrawn.state = "waiting"
        db.session.commit()

    (attempt,) = contacts(app, "callback")
    legs_before = len(responder_legs(fake))
    assert run_contact(app, attempt) == "not_needed"

    (callback,) = callbacks(app)
    assert (callback.id, callback.state, callback.outcome) == (first.id, "waiting", None)
    assert len(responder_legs(fake)) == legs_before  # no counselor rung to call a phone holding on our line
    recheck = [c for c in contacts(app, "callback") if c.state == "pending"]
    assert [c.attempt for c in recheck] == [1]  # the same attempt, once they stop holding
