"""A counselor's press of 1 whose webhook outlasts its deadline (a slow Twilio API on the
caller's redirect, a slow database before the acceptance): the counselor hears what a timely
answer would have said, and the caller is never brought into a room nobody is in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Offer, ResponderState, Transfer
from tests.rota import BEN, DIEGO, leg_to, legs
from transfer import flow
from transfer.views import active_document
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

DEADLINE = 2.0  # VOICE_DEADLINE_SECONDS, the production default
SLOWER_THAN_THE_DEADLINE = DEADLINE + 0.6


@pytest.fixture
def production_deadline(app: Flask) -> Iterator[None]:
    """The tests' app allows 5 s; these need the 2 s a production line has."""
    voice_deadline = app.extensions["crisisline.deadline"]
    voice_deadline.seconds = DEADLINE
    yield
    voice_deadline.seconds = 5.0


def only_transfer(app: Flask) -> Transfer:
    with app.app_context():
        return db.session.scalars(select(Transfer)).one()


def offer_to(app: Flask, number: str, fake: FakeTwilio) -> Offer:
    with app.app_context():
        return db.session.scalars(select(Offer).where(Offer.call_sid == leg_to(fake, number).sid)).one()


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for the late handler, which finishes on its own thread after the deadline answered."""
    give_up = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < give_up, "the late handler did not finish in time"
        time.sleep(0.05)


@pytest.mark.usefixtures("wednesday_evening", "production_deadline")
def test_a_counselor_whose_acceptance_outlasts_the_deadline_on_a_slow_redirect_is_put_in_the_room_not_apologised_to(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Before: the deadline answered "Sorry, something went wrong" and hung Ben up, the late
    redirect then brought the caller into the empty room, and they were told their counselor
    had been disconnected and searched for again."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    caller_sid = caller.identity.call_sid
    fake.inject_fault("POST", rf"/Calls/{caller_sid}\.json$", status=200, delay=SLOWER_THAN_THE_DEADLINE)

    started = time.monotonic()
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert time.monotonic() - started < DEADLINE + 0.5
    assert "sorry" not in ben.heard_text().lower()
    assert ben.conference is not None
    eventually(lambda: [r.fetched for r in fake.get_call(caller_sid).redirects] == [True])
    phone.resume(caller, max_hold_turns=1)
    assert caller.conference == ben.conference
    assert only_transfer(app).state == "connected"
    assert fake.get_call(leg_to(fake, BEN).sid).status == "in-progress"


@pytest.mark.usefixtures("wednesday_evening", "production_deadline")
def test_a_counselor_put_in_the_room_by_the_deadline_is_told_there_when_the_slow_redirect_finds_the_caller_gone(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    caller_sid = caller.identity.call_sid
    fake.inject_fault(
        "POST", rf"/Calls/{caller_sid}\.json$", status=404, code=20404, delay=SLOWER_THAN_THE_DEADLINE
    )  # the caller hung up while the redirect was on its way

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert ben.conference is not None  # the deadline's answer: the room, as the acceptance stood
    ben_sid = leg_to(fake, BEN).sid
    eventually(lambda: fake.get_call(ben_sid).redirects != [])
    told = fake.get_call(ben_sid).redirects[-1].twiml or ""
    assert "The caller has hung up." in told
    assert "<Hangup" in told  # not left in the empty room
    eventually(lambda: only_transfer(app).state == "abandoned")
    assert fake.get_call(caller_sid).redirects == []


@pytest.mark.usefixtures("wednesday_evening")
def test_a_press_of_1_handled_after_the_deadline_apologised_is_no_acceptance_and_the_next_counselor_is_rung(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """The deadline answered Ben with its apology (his webhook was stuck before the acceptance),
    and his leg's end has not been heard yet: the late handler must not accept for him."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN).sid
    fake.advance_call(ben_leg, "ringing")
    fake.advance_call(ben_leg, "in-progress")  # Ben hears the whisper
    offer = offer_to(app, BEN, fake)
    assert offer.state == "answered"

    with app.app_context():
        offer, transfer = db.session.get_one(Offer, offer.id), db.session.get_one(Transfer, offer.transfer_id)
        decision = flow.offer_decided(offer, transfer, active_document(), "1", still_answering=lambda: False)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert decision.kind == "staff"
    assert (offer_to(app, BEN, fake).state, offer_to(app, BEN, fake).outcome) == ("ended", flow.DEADLINE_PASSED)
    assert only_transfer(app).state == "waiting"
    assert fake.get_call(caller.identity.call_sid).redirects == []
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_missed_deadline_before_the_acceptance_does_not_count_as_a_miss_of_the_counselors(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN).sid
    fake.advance_call(ben_leg, "ringing")
    fake.advance_call(ben_leg, "in-progress")

    with app.app_context():
        offer = db.session.scalars(select(Offer).where(Offer.call_sid == ben_leg)).one()
        flow.offer_decided(
            offer, db.session.get_one(Transfer, offer.transfer_id), active_document(), "1",
            still_answering=lambda: False,
        )  # fmt: skip
    fake.advance_call(ben_leg, "completed")  # his leg's end arrives afterwards

    with app.app_context():
        ben_state = db.session.scalars(select(ResponderState).where(ResponderState.responder_id == "ben-carter")).one()
        assert ben_state.missed_in_a_row == 0
