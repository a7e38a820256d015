"""When a counselor's phone drops, the leaving leg's status callback and the clock's minute
repair can both find nobody from the line with the caller. Found by review: both redirected
the caller, and the second pulled them out of the room of the counselor who had taken them
since, telling them "disconnected" again. The move is now claimed once (``flow.move_on_after_staff_left``),
and a late staff-left turn for a round already handled sends the caller back to their room."""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Offer, Transfer
from tests.rota import BEN, DIEGO, legs
from transfer import dispatch, flow, state
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio
from workers.upkeep import reconcile_transfers


def staff_left_redirects(fake: FakeTwilio, caller: PhoneCall) -> int:
    return sum(1 for r in fake.get_call(caller.identity.call_sid).redirects if r.url and "staff-left" in r.url)


def ben_connected_then_his_phone_drops(app: Flask, phone: Phone, fake: FakeTwilio) -> tuple[PhoneCall, int]:
    """Ben took the caller; his leg ended, and its status callback has closed his offer: it is
    about to move the caller on (``flow._after_staff_left``)."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = phone.answer(next(leg for leg in legs(fake) if leg.to == BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    fake.leave_conference(ben.conference or "", ben.identity.call_sid)
    fake.calls[ben.identity.call_sid].status = "completed"
    with app.app_context():
        first = db.session.scalars(select(Transfer)).one()
        assert first.state == "connected"
        offer = db.session.scalars(select(Offer).where(Offer.transfer_id == first.id)).one()
        assert state.finish_offer(offer, "completed", from_states=("accepted",))
        db.session.commit()
        return caller, first.id


@pytest.mark.usefixtures("wednesday_evening")
def test_the_minutes_repair_does_not_pull_a_caller_out_of_the_room_of_the_counselor_who_took_them_since(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller, first_id = ben_connected_then_his_phone_drops(app, phone, fake)
    webhook_done = threading.Event()

    def the_status_callback_carries_on() -> None:
        # Another process: Ben's status callback moves the caller on, and Diego takes them.
        with app.app_context():
            flow._after_staff_left(db.session.get(Transfer, first_id))  # type: ignore[arg-type]
        phone.resume(caller, max_hold_turns=1)  # told; the search for them begins again
        for _ in range(100):
            if any(leg.to == DIEGO for leg in legs(fake)):
                break
            time.sleep(0.05)
        phone.answer(next(leg for leg in legs(fake) if leg.to == DIEGO).sid, [Keys("1")])
        phone.resume(caller, max_hold_turns=1)
        webhook_done.set()

    real_dial_legs, asked = dispatch.caller_dial_legs, []

    def twilio_slow_to_answer_the_repair(call_sid: str | None) -> list[str] | None:
        asked.append(call_sid)
        if len(asked) == 1:  # the repair's question: the status callback runs while Twilio answers
            other = threading.Thread(target=the_status_callback_carries_on)
            other.start()
            other.join(30)
        return real_dial_legs(call_sid)

    monkeypatch.setattr(dispatch, "caller_dial_legs", twilio_slow_to_answer_the_repair)

    with app.app_context():
        reconcile_transfers()

    assert webhook_done.is_set()
    with app.app_context():
        rounds = [(t.state, t.end_reason) for t in db.session.scalars(select(Transfer).order_by(Transfer.id))]
    assert rounds == [("ended", "staff_left"), ("connected", None)]
    assert staff_left_redirects(fake, caller) == 1  # one counselor left once: moved on once
    assert fake.get_call(caller.identity.call_sid).conference_sid is not None  # still with Diego


@pytest.mark.usefixtures("wednesday_evening")
def test_a_late_staff_left_turn_sends_the_caller_back_to_the_counselor_who_took_them_since(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller, first_id = ben_connected_then_his_phone_drops(app, phone, fake)
    with app.app_context():
        assert flow._after_staff_left(db.session.get(Transfer, first_id))  # type: ignore[arg-type]
    phone.resume(caller, max_hold_turns=1)
    phone.answer(next(leg for leg in legs(fake) if leg.to == DIEGO).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=1)
    with app.app_context():
        second = db.session.scalars(select(Transfer).order_by(Transfer.id.desc())).first()
        assert second is not None and second.state == "connected"
        room = second.conference_name

    told_before = caller.heard_text().lower().count("disconnected")
    assert told_before == 1  # when Ben left

    with app.app_context():  # a move for Ben's leaving that Twilio carries out late
        dispatch.redirect_caller(db.session.get(Transfer, first_id), "transfer.staff_left")  # type: ignore[arg-type]
    phone.resume(caller, max_hold_turns=1)

    assert caller.heard_text().lower().count("disconnected") == told_before  # not told again
    assert caller.conference == room  # straight back to Diego
    with app.app_context():
        rounds = [(t.state, t.end_reason) for t in db.session.scalars(select(Transfer).order_by(Transfer.id))]
    assert rounds == [("ended", "staff_left"), ("connected", None)]


@pytest.mark.usefixtures("wednesday_evening")
def test_two_movers_past_their_checks_at_once_redirect_the_caller_once(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim itself: the status callback and the repair both past their checks before
    either redirect has run the staff-left turn (found by the review of this fix: the tests
    above pass on the re-read alone)."""
    caller, first_id = ben_connected_then_his_phone_drops(app, phone, fake)
    real_redirect, redirects = dispatch.redirect_caller, []

    def the_other_mover_arrives_meanwhile(transfer: Transfer, endpoint: str) -> str:
        redirects.append(endpoint)
        if len(redirects) == 1:

            def other() -> None:
                with app.app_context():
                    flow.move_on_after_staff_left(db.session.get(Transfer, first_id))  # type: ignore[arg-type]

            thread = threading.Thread(target=other)
            thread.start()
            thread.join(30)
        return real_redirect(transfer, endpoint)

    monkeypatch.setattr(dispatch, "redirect_caller", the_other_mover_arrives_meanwhile)
    with app.app_context():
        outcome = flow.move_on_after_staff_left(db.session.get(Transfer, first_id))  # type: ignore[arg-type]

    assert outcome == dispatch.REDIRECTED and redirects == ["transfer.staff_left"]
    assert staff_left_redirects(fake, caller) == 1


@pytest.mark.usefixtures("wednesday_evening")
def test_a_move_twilio_refused_leaves_the_caller_to_the_minutes_repair(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Found by the review of this fix: a refused redirect kept its claim, so the repair a few
    seconds later was told "moved already" and the caller sat in the silent room a minute more."""
    caller, first_id = ben_connected_then_his_phone_drops(app, phone, fake)
    sid = caller.identity.call_sid
    fake.inject_fault("POST", rf"/Calls/{sid}\.json$", status=503, code=20503, message="Service Unavailable", times=1)
    with app.app_context():  # Ben's status callback: Twilio refuses its redirect (it created nothing)
        assert not flow._after_staff_left(db.session.get(Transfer, first_id))  # type: ignore[arg-type]
    assert staff_left_redirects(fake, caller) == 0

    with app.app_context():
        reconcile_transfers()

    assert staff_left_redirects(fake, caller) == 1
