"""Warm transfer end to end: signed webhooks, the fake Twilio REST API over real HTTP, and
every responder leg played out (ring, answer, whisper, key, conference)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

import transfer.dispatch
from crisisline.db import db
from crisisline.models import Call, CallEvent, Offer, ResponderState, Transfer
from tests.rota import ANA, BEN, DIEGO, UNIT, leg_to, legs
from twilio_fake.phone import Keys, Phone, PhoneCall, Silence
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake")


def events(app: Flask, call: PhoneCall) -> list[CallEvent]:
    with app.app_context():
        row = db.session.scalars(select(Call).where(Call.call_sid == call.identity.call_sid)).one()
        return list(row.events)


def kinds(app: Flask, call: PhoneCall) -> list[str]:
    return [event.kind for event in events(app, call)]


def transfers(app: Flask) -> list[Transfer]:
    with app.app_context():
        return list(db.session.scalars(select(Transfer).order_by(Transfer.id)))


def responder_state(app: Flask, responder_id: str) -> ResponderState | None:
    with app.app_context():
        return db.session.get(ResponderState, responder_id)


@pytest.mark.usefixtures("wednesday_evening")
def test_happy_path_bridges_caller_and_counselor_in_one_conference(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    counselor = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)

    whisper = counselor.heard[0].text
    assert whisper.startswith("Crisis line: English-speaking caller, thoughts of suicide, waiting ")
    assert whisper.endswith("Press 1 to accept, 2 to pass.")
    assert caller.conference is not None
    assert caller.conference == counselor.conference
    room = fake.get_conference(caller.conference)
    assert set(room.participants) == {caller.identity.call_sid, counselor.identity.call_sid}
    assert [leg.to for leg in legs(fake)] == [BEN]  # Diego was never disturbed
    (transfer,) = transfers(app)
    assert transfer.state == "connected"
    accepted = next(e for e in events(app, caller) if e.kind == "offer.accepted")
    assert accepted.detail["responder"] == "ben-carter"
    assert accepted.detail["speed_to_answer_seconds"] >= 0


@pytest.mark.usefixtures("wednesday_evening")
@pytest.mark.parametrize("how", ["no-answer", "busy", "failed", "pass", "voicemail"])
def test_a_missed_offer_rolls_over_to_the_next_person(app: Flask, phone: Phone, fake: FakeTwilio, how: str) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    first = leg_to(fake, BEN)

    if how == "pass":
        phone.answer(first.sid, [Keys("2")])
    elif how == "voicemail":
        phone.answer(first.sid, [Silence()])  # a voicemail greeting presses nothing
    else:
        fake.advance_call(first.sid, how)

    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]
    counselor = phone.answer(leg_to(fake, DIEGO).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference == counselor.conference
    outcome = {"no-answer": "no_answer", "pass": "passed", "voicemail": "no_decision"}.get(how, how)
    with app.app_context():
        ben_offer = db.session.scalars(select(Offer).where(Offer.responder_id == "ben-carter")).one()
    assert ben_offer.outcome == outcome


@pytest.mark.usefixtures("wednesday_evening")
def test_duplicated_and_reordered_leg_callbacks_ring_nobody_twice(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    first = leg_to(fake, BEN)
    fake.advance_call(first.sid, "no-answer")
    (sent,) = [w for w in fake.webhooks("call-status", first.sid) if w.params.get("CallStatus") == "no-answer"]

    for _ in range(3):  # Twilio delivering the same callback again
        phone.post(sent.url, sent.params)
    earlier = {**sent.params, "CallStatus": "ringing", "SequenceNumber": "0"}
    phone.post(sent.url, earlier)  # and an older one, late

    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]
    state = responder_state(app, "ben-carter")
    assert state is not None and state.missed_in_a_row == 1


@pytest.mark.usefixtures("wednesday_evening")
def test_invalid_responder_number_is_skipped_and_logged_without_the_number(
    app: Flask, phone: Phone, fake: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    fake.inject_fault("POST", r"/Calls\.json$", status=400, code=21211, message="Invalid 'To' Phone Number")

    with caplog.at_level("WARNING"):
        phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    assert [leg.to for leg in legs(fake)] == [DIEGO]
    assert "Twilio error 21211" in caplog.text
    assert "5550102" not in caplog.text
    with app.app_context():
        ben = db.session.scalars(select(Offer).where(Offer.responder_id == "ben-carter")).one()
    assert ben.outcome == "rest_error_21211"


@pytest.mark.usefixtures("wednesday_morning")
def test_one_rate_limited_ring_of_the_only_counselor_on_shift_does_not_cost_the_caller_them(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_morning: time_machine.Coordinates
) -> None:
    """Before, one 429 placing Ana's call barred her from this caller for good: "All of our
    counselors are helping other callers", then the backup line, with Ana free."""
    fake.inject_fault("POST", r"/Calls\.json$", status=429, code=20429, message="Too Many Requests", times=1)
    caller = phone.call([Keys("1"), Keys("3")], max_hold_turns=1)
    assert legs(fake) == []  # refused once
    assert caller.dials == [] and "helping other callers" not in caller.heard_text()

    wednesday_morning.shift(timedelta(seconds=61))  # past the re-offer cooldown
    phone.resume(caller, max_hold_turns=1)

    assert [leg.to for leg in legs(fake)] == [ANA]  # rung again
    assert caller.dials == []


def test_twilio_outage_on_ringing_still_gets_the_caller_to_the_backup_line(
    phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    """Each ring refused for a moment is tried once more after the cooldown; refused again,
    nobody counts as reachable and the caller moves on, well before the hold limit."""
    fake.inject_fault("POST", r"/Calls\.json$", status=503, times=None)
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=1)
    assert caller.dials == []

    wednesday_evening.shift(timedelta(seconds=61))
    phone.resume(caller, dial_outcomes=["completed"])

    assert caller.dials[0].numbers == ["+18002738255"]
    assert "All of our counselors are helping other callers" in caller.heard_text()


def test_everyone_missing_keeps_the_caller_in_line_and_offers_them_again_after_the_cooldown(
    phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    fake.advance_call(leg_to(fake, BEN).sid, "no-answer")
    fake.advance_call(leg_to(fake, DIEGO).sid, "busy")

    phone.resume(caller, max_hold_turns=2)  # both still on shift: the caller waits, not the backup line
    assert caller.ended_by == "on-hold"
    assert caller.dials == []
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]

    wednesday_evening.shift(timedelta(seconds=61))  # queue.reoffer_after_seconds: 60
    phone.resume(caller, max_hold_turns=1)

    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO, BEN]  # the least recently offered first
    counselor = phone.answer(legs(fake)[-1].sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference == counselor.conference


def test_parallel_ringing_with_two_accepts_at_once_has_exactly_one_winner(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], wednesday_evening: Any
) -> None:
    publish_routing(lambda document: document["transfer"].update(strategy="parallel"))
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    assert sorted(leg.to for leg in legs(fake)) == [BEN, DIEGO]
    # Both answer and hear the whisper; then both press 1 at the same moment.
    presses = [_answer_and_get_key_request(fake, number) for number in (BEN, DIEGO)]
    barrier = threading.Barrier(len(presses))
    replies: list[str] = []

    def press_one(url: str, params: dict[str, str]) -> None:
        barrier.wait()
        replies.append(phone.post(url, params).body)

    threads = [threading.Thread(target=press_one, args=press) for press in presses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    joined = [reply for reply in replies if "<Conference" in reply]
    told = [reply for reply in replies if "This caller has already been connected" in reply]
    assert (len(joined), len(told)) == (1, 1)
    with app.app_context():
        accepted = db.session.scalars(select(Offer).where(Offer.state == "accepted")).all()
        (transfer,) = db.session.scalars(select(Transfer)).all()
    assert len(accepted) == 1
    assert transfer.accepted_offer_id == accepted[0].id
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference == f"transfer-{transfer.id}"


def _answer_and_get_key_request(fake: FakeTwilio, number: str) -> tuple[str, dict[str, str]]:
    """Answer a responder's leg and return the signed-able request their pressing 1 makes."""
    import xml.etree.ElementTree as ET
    from urllib.parse import urljoin

    from twilio_fake.signing import CallIdentity, gather_digits_params

    leg = leg_to(fake, number)
    fake.advance_call(leg.sid, "ringing")
    whisper = ET.fromstring(fake.advance_call(leg.sid, "in-progress") or "")  # noqa: S314
    gather = whisper.find("Gather")
    assert gather is not None
    identity = CallIdentity(fake.account_sid, leg.from_, leg.to, call_sid=leg.sid, direction="outbound-api")
    return urljoin(leg.url or "", gather.get("action", "")), gather_digits_params(identity, "1")


def test_caller_hanging_up_while_ringing_cancels_every_leg(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], wednesday_evening: Any
) -> None:
    publish_routing(lambda document: document["transfer"].update(strategy="parallel"))
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    phone.answer(leg_to(fake, DIEGO).sid, [])  # Diego is hearing the whisper

    phone.hang_up(caller)

    assert fake.get_call(leg_to(fake, BEN).sid).status == "canceled"
    assert fake.get_call(leg_to(fake, DIEGO).sid).status == "completed"
    (transfer,) = transfers(app)
    assert transfer.state == "abandoned"
    abandoned = next(e for e in events(app, caller) if e.kind == "transfer.abandoned")
    assert abandoned.detail["waited_seconds"] >= 0
    assert responder_state(app, "ben-carter").engaged_offer_id is None  # type: ignore[union-attr]


@pytest.mark.usefixtures("wednesday_evening")
def test_responder_who_answers_after_the_caller_hung_up_hears_so(phone: Phone, fake: FakeTwilio) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN)
    phone.hang_up(caller)

    assert fake.get_call(ben_leg.sid).status == "canceled"
    assert fake.get_call(ben_leg.sid).status_updates == ["canceled"]  # one REST request, not two
    assert [leg.to for leg in legs(fake)] == [BEN]  # nobody else is rung for a caller who left


def test_a_leg_answered_after_the_line_read_it_as_ringing_is_still_hung_up(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], wednesday_evening: Any
) -> None:
    publish_routing(lambda document: document["transfer"].update(strategy="parallel"))
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ringing, answered = leg_to(fake, BEN), leg_to(fake, DIEGO)
    fake.advance_call(ringing.sid, "ringing")
    fake.advance_call(answered.sid, "in-progress")  # picked up just after the line decided to cancel it

    with app.app_context():
        for leg in (ringing, answered):
            transfer.dispatch.hang_up_call(leg.sid, answered=False)

    assert (fake.get_call(ringing.sid).status, fake.get_call(ringing.sid).status_updates) == ("canceled", ["canceled"])
    after = fake.get_call(answered.sid)
    assert (after.status, after.status_updates) == ("completed", ["canceled", "completed"])


def test_hold_limit_sends_the_waiting_caller_to_backup_without_any_worker(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=1)
    assert caller.ended_by == "on-hold"

    wednesday_evening.shift(timedelta(seconds=241))  # past max_hold_seconds (240)
    phone.resume(caller, dial_outcomes=["completed"], max_hold_turns=1)

    assert caller.dials[0].numbers == ["+18002738255"]
    assert fake.get_call(leg_to(fake, BEN).sid).status == "canceled"
    (transfer,) = transfers(app)
    assert (transfer.state, transfer.end_reason) == ("to_backup", "hold_limit")


@pytest.mark.usefixtures("wednesday_morning")
def test_a_counselor_with_a_caller_is_not_offered_a_second_one_who_waits_for_her(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    first = phone.call([Keys("1"), Keys("3")], max_hold_turns=0)
    ana = phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(first, max_hold_turns=0)

    second = phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550124"), max_hold_turns=2)

    assert [leg.to for leg in legs(fake)] == [ANA]
    assert second.ended_by == "on-hold"  # Ana is on shift, only busy: the caller waits for her
    assert second.dials == []
    assert "You are number 1 in line." in second.heard_text()

    phone.hang_up(ana)  # her call ends: she is offered the next caller at once, by that event
    assert [leg.to for leg in legs(fake)] == [ANA, ANA]


@pytest.mark.usefixtures("wednesday_morning")
def test_missing_offers_in_a_row_pauses_the_counselor_and_texts_them(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    for index in range(3):
        phone.call([Keys("1"), Keys("3")], identity=phone.identity(f"+1312555013{index}"), max_hold_turns=0)
        fake.advance_call(legs(fake)[-1].sid, "no-answer")

    state = responder_state(app, "ana-ruiz")
    assert state is not None
    assert (state.paused, state.paused_reason, state.missed_in_a_row) == (True, "missed_offers", 3)
    (text,) = [m for m in fake.messages.values() if m.to == ANA]
    assert "you missed 3 calls in a row" in text.body
    assert text.from_ == "+13125550100"

    phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550139"), dial_outcomes=["completed"])
    assert len(legs(fake)) == 3  # a paused counselor is not rung


@pytest.mark.usefixtures("wednesday_evening")
def test_counselor_leaving_keeps_the_caller_and_searches_again(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)

    phone.hang_up(ben)
    phone.resume(caller, max_hold_turns=0)

    assert caller.conference is None
    assert "The person you were talking with has been disconnected." in caller.heard_text()
    assert caller.ended_by == "on-hold"
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]
    first, second = transfers(app)
    assert (first.state, first.end_reason) == ("ended", "staff_left")
    assert (second.state, second.round) == ("waiting", 2)


@pytest.mark.usefixtures("wednesday_morning")
def test_co_responder_unit_joins_a_live_call_and_stays_with_the_caller_when_the_counselor_leaves(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller = phone.call([Keys("1"), Keys("3")], max_hold_turns=0)
    ana = phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)

    # Ana presses * (leaves the room to her menu), then 1: bring in the co-responder unit.
    fake.leave_conference(ana.conference or "", ana.identity.call_sid)
    phone.resume(ana, [Keys("1")])
    assert ana.conference == caller.conference
    unit = phone.answer(leg_to(fake, UNIT).sid, [Keys("1")])
    assert "a counselor asks the co-responder unit to join" in unit.heard[0].text
    assert unit.conference == caller.conference

    phone.hang_up(ana)
    phone.resume(caller, max_hold_turns=0)

    assert caller.conference is not None  # still with the unit
    room = fake.get_conference(caller.conference)
    assert set(room.participants) == {caller.identity.call_sid, unit.identity.call_sid}
    (transfer,) = transfers(app)
    assert transfer.state == "connected"


@pytest.mark.usefixtures("wednesday_evening")
def test_waiting_caller_hears_updates_not_endless_music(phone: Phone, fake: FakeTwilio) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=2)

    assert caller.ended_by == "on-hold"
    said = [heard.text for heard in caller.heard]
    assert "Please stay on the line while we find someone to talk with you." in said
    assert "You are next. Someone will be with you very soon." in said  # alone in the queue, Ben ringing
    pauses = [step.twiml.find("Pause") for step in caller.steps if step.twiml is not None]
    assert any(pause is not None for pause in pauses)


@pytest.mark.usefixtures("wednesday_evening")
def test_a_second_waiting_caller_hears_their_place_in_line(phone: Phone, fake: FakeTwilio) -> None:
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    second = phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550126"), max_hold_turns=2)

    said = [heard.text for heard in second.heard]
    assert any(text.startswith("You are number 2 in line.") for text in said)
    assert "You are next. Someone will be with you very soon." not in said


def test_a_waiting_caller_behind_others_hears_an_honest_expected_wait(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_morning: time_machine.Coordinates
) -> None:
    # History: Ana (the only counselor on for this need) talked with an earlier caller for 4 minutes.
    earlier = phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550140"), max_hold_turns=0)
    ana = phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(earlier, max_hold_turns=0)
    wednesday_morning.shift(timedelta(minutes=4))
    phone.hang_up(earlier)
    phone.resume(ana)
    # Now she is with another caller, and two more wait behind.
    talking = phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550141"), max_hold_turns=0)
    phone.answer(legs(fake)[-1].sid, [Keys("1")])
    phone.resume(talking, max_hold_turns=0)
    phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550142"), max_hold_turns=0)
    second = phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550143"), max_hold_turns=2)

    # Two people up to and including them, one counselor, about 4 minutes each.
    said = [heard.text for heard in second.heard]
    assert "You are number 2 in line. The wait is about 8 minutes. Please stay on the line." in said


@pytest.mark.usefixtures("wednesday_evening")
def test_a_repeated_key_press_request_from_the_winner_joins_them_again(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    url, params = _answer_and_get_key_request(fake, BEN)

    first = phone.post(url, params).body
    again = phone.post(url, params).body  # Twilio retrying the same request

    assert "<Conference" in first
    assert "<Conference" in again
    with app.app_context():
        assert len(db.session.scalars(select(Offer).where(Offer.state == "accepted")).all()) == 1
