"""Who counts as having missed a call (``missed_in_a_row``, which pauses a counselor after
``pause_after_missed``): only a counselor who did not answer, was busy, or answered and pressed
nothing. Found by a review of the responder's leg: a press of 2 crossing the leg's end, a leg
Twilio failed whose callback was lost, and a whisper the line itself failed to serve were all
counted as the counselor's miss, and a pass did not break the row."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import transfer.flow
import transfer.state as state_module
from crisisline.db import db
from crisisline.models import Offer, ResponderState
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID
from tests.rota import BEN, DIEGO, leg_to, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity

pytestmark = pytest.mark.usefixtures("fake")


def missed_in_a_row(app: Flask, responder_id: str) -> int:
    with app.app_context():
        state = db.session.get(ResponderState, responder_id)
        return state.missed_in_a_row if state else 0


def offer_of(app: Flask, call_sid: str) -> Offer:
    with app.app_context():
        return db.session.scalars(select(Offer).where(Offer.call_sid == call_sid)).one()


@pytest.mark.usefixtures("wednesday_evening")
def test_a_press_of_2_whose_leg_end_is_handled_first_is_a_pass_not_a_miss(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Ben presses 2 and puts his phone down at once: Twilio sends the Gather action and, a
    moment later, the leg's final status callback; the two cross (Law 3)."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN)
    fake.advance_call(ben_leg.sid, "in-progress")  # Ben hears the whisper
    fake.advance_call(ben_leg.sid, "completed")  # ...presses 2 and hangs up: the end is handled first
    offer_id = offer_of(app, ben_leg.sid).id
    ben = CallIdentity(TEST_ACCOUNT_SID, LINE_NUMBER, BEN, call_sid=ben_leg.sid, direction="outbound-api")

    phone.post(f"{phone.base_url}/voice/offer/decide?offer={offer_id}", ben.voice_params("in-progress", Digits="2"))

    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]
    assert offer_of(app, ben_leg.sid).outcome == "passed", "a deliberate 2 was recorded as no decision"
    assert missed_in_a_row(app, "ben-carter") == 0, "a counselor who pressed 2 was counted as missing the call"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_whisper_the_line_failed_to_serve_is_not_the_counselors_miss(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ben picks up; our whisper webhook fails (a database blip): he hears the apology and is
    hung up. That is the line's failure, not Ben's: three of them must not pause him."""

    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("database went away")

    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    monkeypatch.setattr(transfer.flow, "offer_answered", broken)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert "something went wrong" in ben.heard_text()
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]  # the caller is not dropped
    assert offer_of(app, ben.identity.call_sid).outcome not in ("no_answer", "no_decision", "busy")
    assert missed_in_a_row(app, "ben-carter") == 0, "the line's own failure was counted as the counselor's miss"


@pytest.mark.usefixtures("wednesday_evening")
def test_the_minutes_repair_of_a_lost_failed_callback_does_not_count_a_miss(
    app: Flask, phone: Phone, fake: FakeTwilio, clock_tick: object, wednesday_evening: time_machine.Coordinates
) -> None:
    """Ben's leg failed at Twilio (unreachable number); its status callback was lost (a deploy
    restart). The clock's repair asks Twilio and closes the offer: as ``failed``, not as a miss."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN)
    fake.calls[ben_leg.sid].status = "failed"  # its final status callback never arrives

    wednesday_evening.shift(timedelta(minutes=3))  # past ring + accept + 60 s
    clock_tick()  # type: ignore[operator]

    assert offer_of(app, ben_leg.sid).outcome == "failed"
    assert missed_in_a_row(app, "ben-carter") == 0, "a call Twilio failed to place was counted as Ben's miss"


@pytest.mark.usefixtures("wednesday_morning")
def test_a_pass_between_two_misses_breaks_the_row(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: object
) -> None:
    """Ana misses a call, answers the next and presses 2 (she is there, deciding), then misses
    one: that is not two misses "in a row", and she must not be paused."""
    from tests.rota import ANA

    publish_routing(lambda document: document["transfer"].update(pause_after_missed=2))  # type: ignore[operator]
    phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550130"), max_hold_turns=0)
    fake.advance_call(legs(fake)[-1].sid, "no-answer")
    phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550131"), max_hold_turns=0)
    phone.answer(legs(fake)[-1].sid, [Keys("2")])
    phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550132"), max_hold_turns=0)
    fake.advance_call(legs(fake)[-1].sid, "no-answer")

    assert [leg.to for leg in legs(fake)] == [ANA, ANA, ANA]
    with app.app_context():
        state = db.session.get(ResponderState, "ana-ruiz")
        assert state is not None
        assert not state.paused, f"paused after {state.missed_in_a_row} misses 'in a row' with a pass between"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_press_of_2_crossing_the_hang_up_does_not_leave_the_counselor_paused(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    """Found by the review of the fix above: with ``pause_after_missed: 1`` the leg's end,
    handled first, had paused Ben for the miss it counted; the late 2 reset the count only."""
    publish_routing(lambda document: document["transfer"].update(pause_after_missed=1))
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN)
    fake.advance_call(ben_leg.sid, "in-progress")
    fake.advance_call(ben_leg.sid, "completed")  # the end is handled first: no_decision, paused
    offer_id = offer_of(app, ben_leg.sid).id
    ben = CallIdentity(TEST_ACCOUNT_SID, LINE_NUMBER, BEN, call_sid=ben_leg.sid, direction="outbound-api")

    phone.post(f"{phone.base_url}/voice/offer/decide?offer={offer_id}", ben.voice_params("in-progress", Digits="2"))

    assert offer_of(app, ben_leg.sid).outcome == "passed"
    with app.app_context():
        state = db.session.get(ResponderState, "ben-carter")
        assert state is not None
        assert (state.missed_in_a_row, state.paused) == (0, False)


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_paused_for_misses_is_never_seen_free_and_unpaused_by_another_process(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review of the responder's leg: the miss freed Ben in one commit and paused him
    in the next, so another process's queue pass could ring him in between. Now one commit."""
    publish_routing(lambda document: document["transfer"].update(pause_after_missed=1))
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN)
    seen_by_another_process: list[tuple[bool, int | None]] = []
    real_set_paused = transfer.state.set_paused

    def another_process_looks_first(responder_id: str, paused: bool, reason: str | None) -> bool:
        with db.engine.connect() as other:  # its own connection: only what is committed
            row = other.execute(
                select(ResponderState.paused, ResponderState.engaged_offer_id).where(
                    ResponderState.responder_id == responder_id
                )
            ).one()
        seen_by_another_process.append((row.paused, row.engaged_offer_id))
        return real_set_paused(responder_id, paused, reason)

    monkeypatch.setattr(transfer.state, "set_paused", another_process_looks_first)

    fake.advance_call(ben_leg.sid, "no-answer")

    ((paused, engaged),) = seen_by_another_process
    assert not (paused is False and engaged is None), "Ben was free and unpaused for another process's pass"
    with app.app_context():
        state = db.session.get(ResponderState, "ben-carter")
        assert state is not None and (state.paused, state.paused_reason) == (True, "missed_offers")


def database_went_away(*_args: object, **_kwargs: object) -> object:
    raise OperationalError("SELECT offers", {}, Exception("database went away"))


@pytest.mark.usefixtures("wednesday_evening")
def test_a_press_of_1_the_line_failed_to_take_is_not_the_counselors_miss(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch, publish_routing: Callable[..., int]
) -> None:
    """Found by a review: Ben is briefed and presses 1; his press's webhook fails on the database
    before anything is stored, he hears the apology and is hung up, and his leg's end found the
    offer still answered: ``no_decision``, his miss. A few minutes of slow database paused
    every counselor that way."""
    publish_routing(lambda document: document["transfer"].update(pause_after_missed=1))
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    monkeypatch.setattr(transfer.flow, "offer_decided", database_went_away)

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert "something went wrong" in ben.heard_text()
    assert fake.get_call(ben.identity.call_sid).status == "completed"  # hung up: his leg's end was heard
    assert offer_of(app, ben.identity.call_sid).outcome == transfer.flow.DEADLINE_PASSED
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]  # the caller's next person, rung once
    with app.app_context():
        state = db.session.get(ResponderState, "ben-carter")
        assert state is not None
        assert (state.missed_in_a_row, state.paused) == (0, False), "the line's failure paused the counselor"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_press_of_1_whose_webhook_failed_at_twilio_is_not_the_counselors_miss(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """The same press answered by Twilio's fallback for his leg (a 502 from the proxy while a
    worker restarts): the apology, then his leg's end."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN).sid
    fake.advance_call(ben_leg, "in-progress")  # briefed: the offer is answered
    offer_id = offer_of(app, ben_leg).id
    ben = CallIdentity(TEST_ACCOUNT_SID, LINE_NUMBER, BEN, call_sid=ben_leg, direction="outbound-api")
    failed = f"{phone.base_url}/voice/offer/decide?offer={offer_id}"

    reply = phone.post(
        f"{phone.base_url}/voice/offer/fallback?offer={offer_id}",
        ben.voice_params("in-progress", Digits="1", ErrorCode="11200", ErrorUrl=failed),
    )
    fake.advance_call(ben_leg, "completed")

    assert "something went wrong" in reply.body
    assert offer_of(app, ben_leg).outcome == transfer.flow.DEADLINE_PASSED
    assert missed_in_a_row(app, "ben-carter") == 0
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]


@pytest.mark.usefixtures("wednesday_evening")
def test_an_offer_the_line_failed_is_ended_once(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    """The line's end of the offer run twice (a retry, or the fallback and the handler's own
    fail-safe), then the leg's end: one winner, the next person rung once, no miss."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN).sid
    fake.advance_call(ben_leg, "in-progress")
    offer_id = offer_of(app, ben_leg).id

    with app.app_context():
        transfer.flow.line_failed_the_leg(offer_id, transfer.flow.DEADLINE_PASSED)
        transfer.flow.line_failed_the_leg(offer_id, state_module.NOT_BRIEFED)
    fake.advance_call(ben_leg, "completed")

    assert offer_of(app, ben_leg).outcome == transfer.flow.DEADLINE_PASSED
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]
    assert missed_in_a_row(app, "ben-carter") == 0


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_who_picks_up_and_presses_nothing_still_misses_the_call(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """The guard on the fixes above: a whisper served in time and never answered (they put the
    phone down, or a voicemail greeting took it) is their miss, as before."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    ben = phone.answer(leg_to(fake, BEN).sid, [])

    assert "something went wrong" not in ben.heard_text()
    assert fake.get_call(ben.identity.call_sid).status == "completed"
    assert offer_of(app, ben.identity.call_sid).outcome == "no_decision"
    assert missed_in_a_row(app, "ben-carter") == 1
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]


@pytest.mark.usefixtures("wednesday_evening")
def test_the_lines_end_of_an_offer_the_database_failed_is_tried_again(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database that failed Ben's press fails its end too: tried again a second later."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN).sid
    fake.advance_call(ben_leg, "in-progress")
    offer_id = offer_of(app, ben_leg).id
    real_finish = state_module.finish_offer
    failures = [OperationalError("UPDATE offers", {}, Exception("database went away"))]

    def fails_once(*args: Any, **kwargs: Any) -> bool:
        if failures:
            raise failures.pop()
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(state_module, "finish_offer", fails_once)
    with app.app_context():
        transfer.flow.line_failed_the_leg(offer_id, transfer.flow.DEADLINE_PASSED)
        assert offer_of(app, ben_leg).outcome is None  # not yet: the database failed it
        give_up = time.monotonic() + 10
        while offer_of(app, ben_leg).outcome is None and time.monotonic() < give_up:
            time.sleep(0.05)
        app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert offer_of(app, ben_leg).outcome == transfer.flow.DEADLINE_PASSED
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]


@pytest.mark.usefixtures("wednesday_evening")
def test_when_the_database_fails_after_the_lines_end_of_an_offer_the_retry_still_rings_the_next_person(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the review of the fix above: the offer's end was stored, then ringing the next
    person failed on the database; the retry found the offer ended and did nothing more."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN).sid
    fake.advance_call(ben_leg, "in-progress")
    offer_id = offer_of(app, ben_leg).id
    real_ring_next = transfer.flow.ring_next
    failures = [OperationalError("SELECT transfers", {}, Exception("database went away"))]

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_ring_next(*args, **kwargs)

    monkeypatch.setattr(transfer.flow, "ring_next", fails_once)
    with app.app_context():
        transfer.flow.line_failed_the_leg(offer_id, transfer.flow.DEADLINE_PASSED)
        assert offer_of(app, ben_leg).outcome == transfer.flow.DEADLINE_PASSED  # stored; the ringing failed
        assert [leg.to for leg in legs(fake)] == [BEN]
        give_up = time.monotonic() + 10
        while len(legs(fake)) < 2 and time.monotonic() < give_up:
            time.sleep(0.05)
        app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]
    assert failures == []
