"""Ringing responders happens off the caller's request path: a slow Twilio REST API never adds
to a caller's silence, and a call Twilio placed although our request for it timed out is
adopted when answered, or cancelled once nobody needs it."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

import transfer.views
from crisisline.db import db
from crisisline.failsafe import note_answered_by_failsafe
from crisisline.models import CallEvent, Offer, ResponderState, Transfer
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from tests.rota import BEN, DIEGO, leg_to, legs
from tests.transfer.test_acceptance_past_the_deadline import slower_than_the_deadline
from twilio_fake.phone import Keys, Phone, PhoneCall, RequestsTransport
from twilio_fake.rest_api import CallRecord, FakeTwilio
from workers.upkeep import reconcile_transfers

pytestmark = pytest.mark.usefixtures("fake", "wednesday_evening")
REST_TIMEOUT = 3.0  # transfer.dispatch.INLINE_REST_TIMEOUT_SECONDS
PRODUCTION_DEADLINE = 2.0  # VOICE_DEADLINE_SECONDS by default (the tests' app allows 5 s)


@pytest.fixture
def phone(live_server: str, fake: FakeTwilio) -> Phone:
    """Twilio's view exactly: each webhook's answer, without waiting for the ringing it started."""
    return Phone(RequestsTransport(), live_server, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)


def wait_for(condition: Callable[[], object], seconds: float = 10.0) -> None:
    ends = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < ends, "timed out waiting for the line to ring"
        time.sleep(0.05)


def leg_to_exists(fake: FakeTwilio, number: str) -> Callable[[], bool]:
    return lambda: any(leg.to == number for leg in legs(fake))


def offers(app: Flask) -> dict[str, Offer]:
    with app.app_context():
        return {offer.responder_id: offer for offer in db.session.scalars(select(Offer).order_by(Offer.id))}


def timed_call(phone: Phone, actions: list[Keys]) -> tuple[PhoneCall, float]:
    started = time.perf_counter()
    call = phone.call(actions, max_hold_turns=0)
    return call, time.perf_counter() - started


def test_a_slow_twilio_api_leaves_the_caller_holding_while_their_counselor_is_rung(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    settings = app.extensions["crisisline.settings"]
    budget = settings.voice_deadline_seconds / 2
    # Placing a call takes 2.5 s: answered within our REST timeout, but slower than the budget.
    fake.inject_fault("POST", r"/Calls\.json$", status=200, delay=budget + 0.5, times=1)
    started = time.perf_counter()

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    answered_after = time.perf_counter() - started
    wait_for(leg_to_exists(fake, BEN))
    rung_after = time.perf_counter() - started

    assert caller.ended_by == "on-hold" and not caller.dials  # holding, not sent to the backup line
    assert "Please stay on the line while we find someone to talk with you." in caller.heard_text()
    assert answered_after < budget + 1.5  # the whole menu walk, with the need answer capped by the budget
    assert rung_after >= budget + 0.5
    counselor = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=1)
    assert caller.conference is not None and caller.conference == counselor.conference
    print(f"\nslow Twilio ({budget + 0.5:.1f} s per call placed): the caller heard the hold prompt after "
          f"{answered_after:.2f} s; Ben's phone rang after {rung_after:.2f} s")  # fmt: skip


def _lost_leg(fake: FakeTwilio, number: str) -> CallRecord:
    wait_for(leg_to_exists(fake, number), seconds=REST_TIMEOUT + 5)
    return leg_to(fake, number)


def test_a_call_placed_after_our_request_timed_out_is_adopted_when_its_counselor_answers(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    # Twilio places Ben's call only after our request for it gave up: its answer is lost.
    fake.inject_fault("POST", r"/Calls\.json$", status=200, delay=REST_TIMEOUT + 1, times=1)

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    stray = _lost_leg(fake, BEN)
    assert offers(app)["ben-carter"].outcome == "rest_lost"
    wait_for(leg_to_exists(fake, DIEGO))  # the next pass rang Diego at once

    ben = phone.answer(stray.sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=1)

    assert ben.heard[0].text.startswith("Crisis line: English-speaking caller")  # briefed, not turned away
    assert caller.conference is not None and caller.conference == ben.conference
    adopted = offers(app)["ben-carter"]
    assert adopted.call_sid == stray.sid and adopted.state == "accepted"
    assert fake.get_call(leg_to(fake, DIEGO).sid).status in ("canceled", "completed")
    with app.app_context():
        kinds = set(db.session.scalars(select(CallEvent.kind)))
    assert "offer.adopted" in kinds


def test_a_call_placed_after_our_request_timed_out_is_cancelled_once_the_caller_is_connected(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    fake.inject_fault("POST", r"/Calls\.json$", status=200, delay=REST_TIMEOUT + 1, times=1)
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    wait_for(leg_to_exists(fake, DIEGO))
    diego = phone.answer(leg_to(fake, DIEGO).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=1)
    assert caller.conference == diego.conference
    stray = _lost_leg(fake, BEN)
    assert fake.get_call(stray.sid).status in ("queued", "ringing")

    with app.app_context():
        first = reconcile_transfers()
        again = reconcile_transfers()

    assert first["stray_legs_cancelled"] == 1
    assert again["stray_legs_cancelled"] == 0
    assert fake.get_call(stray.sid).status == "canceled"
    with app.app_context():
        (transfer,) = db.session.scalars(select(Transfer))
        assert transfer.state == "connected"


def test_a_need_answer_that_finishes_after_the_failsafe_answered_rings_nobody(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    # The need answer ran past its deadline: this process answered with the backup line
    # (``crisisline.deadline``), and the late handler now reaches ``flow.begin``.
    caller = phone.identity("+13125550177")
    note_answered_by_failsafe(caller.call_sid)

    call = phone.call([Keys("1"), Keys("2")], identity=caller, dial_outcomes=["completed"])

    assert legs(fake) == []  # no counselor rung for a caller already on the backup line
    assert call.dials and call.dials[0].numbers == ["+18002738255"]  # the routing's backup line
    with app.app_context():
        (transfer,) = db.session.scalars(select(Transfer))
        assert (transfer.state, transfer.end_reason) == ("to_backup", "failsafe")


def test_a_lost_ring_answered_by_a_whisper_past_its_deadline_is_not_revived_with_no_leg_behind_it(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: Ben's ring was given up as lost (Twilio placed it after our request
    timed out), he picked up, the whisper outlasted its deadline (2 s, as in production), which
    apologised and hung him up; the late handler then revived his offer as ringing. Nothing was
    behind it, and while it "rang" the caller's search counted it as someone being rung."""
    fake.inject_fault("POST", r"/Calls\.json$", status=200, delay=REST_TIMEOUT + 1, times=1)
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    stray = _lost_leg(fake, BEN)
    assert offers(app)["ben-carter"].outcome == "rest_lost"
    monkeypatch.setattr(app.extensions["crisisline.deadline"], "seconds", PRODUCTION_DEADLINE)
    # a slow database read before the adoption
    finished = slower_than_the_deadline(monkeypatch, transfer.views, "active_document", PRODUCTION_DEADLINE + 0.6)

    ben = phone.answer(stray.sid, [Keys("1")])  # the apology, and his hang-up
    wait_for(lambda: finished == ["done"])  # the late handler's turn
    time.sleep(0.5)  # and what follows it

    assert "something went wrong" in ben.heard_text()
    lost = offers(app)["ben-carter"]
    assert (lost.state, lost.outcome) == ("ended", "rest_lost")
    with app.app_context():
        state = db.session.get(ResponderState, "ben-carter")
        assert state is None or state.engaged_offer_id is None
