"""The one queue: callers wait for a busy counselor, hear their real place, and are offered the
moment someone is free; priorities, callbacks and texts share it. Signed webhooks over real
HTTP, the fake Twilio REST API, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Callback, Conversation, Offer, Transfer
from routing.store import active_routing
from tests.conftest import TextingPhone
from tests.rota import ANA, BEN, DIEGO, around_the_clock, leg_to, legs
from transfer import state
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio

BACKUP = "+18002738255"
# Wednesday morning: Ana is the only counselor on for "a mental health crisis" (3), "something
# else" (6) and "thoughts of suicide" (2).
MENTAL_HEALTH, SUICIDE, SOMETHING_ELSE = [Keys("1"), Keys("3")], [Keys("1"), Keys("2")], [Keys("1"), Keys("6")]


def caller(phone: Phone, number: int, keys: list[Keys], **options: Any) -> PhoneCall:
    return phone.call(keys, identity=phone.identity(f"+131255502{number:02d}"), **options)


def transfers(app: Flask) -> list[Transfer]:
    with app.app_context():
        return list(db.session.scalars(select(Transfer).order_by(Transfer.id)))


def connect(phone: Phone, fake: FakeTwilio, person: PhoneCall) -> PhoneCall:
    """The newest responder leg is answered with 1; the waiting person is brought in."""
    counselor = phone.answer(legs(fake)[-1].sid, [Keys("1")])
    phone.resume(person, max_hold_turns=0)
    assert person.conference is not None and person.conference == counselor.conference
    return counselor


def end_call(phone: Phone, person: PhoneCall, counselor: PhoneCall) -> None:
    """The person hangs up and the counselor's leg ends."""
    phone.hang_up(person)
    phone.resume(counselor)  # their conference ended: the line tells them and ends their leg


def test_callers_wait_for_the_one_busy_counselor_in_order_hearing_their_place(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_morning: time_machine.Coordinates
) -> None:
    first = caller(phone, 1, MENTAL_HEALTH, max_hold_turns=0)
    ana_with_first = connect(phone, fake, first)
    second = caller(phone, 2, MENTAL_HEALTH, max_hold_turns=2)
    third = caller(phone, 3, MENTAL_HEALTH, max_hold_turns=2)
    assert "You are number 2 in line." in third.heard[-1].text

    wednesday_morning.shift(timedelta(seconds=60))  # Ana talks with the first caller for a minute
    phone.resume(second, max_hold_turns=1)
    phone.resume(third, max_hold_turns=1)
    turns_heard = len(second.heard), len(third.heard)
    end_call(phone, first, ana_with_first)

    # Offered on the path of the event that freed her: no hold turn, no clock. How soon is
    # measured by bench.ring_timing, not here.
    assert [leg.to for leg in legs(fake)] == [ANA, ANA]
    assert (len(second.heard), len(third.heard)) == turns_heard
    ana_with_second = connect(phone, fake, second)
    assert ana_with_second.heard[0].text.startswith("Crisis line: English-speaking caller, ")
    phone.resume(third, max_hold_turns=1)
    assert any(heard.text.startswith("You are number 1 in line.") for heard in third.heard[-2:])

    wednesday_morning.shift(timedelta(seconds=170))  # still inside max_hold_seconds (240) for the third
    phone.resume(third, max_hold_turns=1)
    end_call(phone, second, ana_with_second)
    connect(phone, fake, third)
    assert third.dials == [] and second.dials == []  # nobody was sent to the backup line
    assert [t.state for t in transfers(app)] == ["ended", "ended", "connected"]


def test_with_nobody_on_shift_the_caller_is_offered_a_callback_or_the_backup_line_at_once(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_morning: time_machine.Coordinates
) -> None:
    with app.app_context():
        active = active_routing()
        assert active is not None
        for responder in active.document.responders:
            state.set_paused(responder.id, True, "self")
        db.session.commit()

    call = caller(phone, 1, MENTAL_HEALTH, dial_outcomes=["completed"])

    assert legs(fake) == []
    assert "press 9" in call.heard_text()
    assert call.dials[0].numbers == [BACKUP]
    (transfer,) = transfers(app)
    assert (transfer.state, transfer.end_reason) == ("to_backup", "nobody_left")


def test_a_suicide_caller_who_came_later_is_offered_before_something_else(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_morning: time_machine.Coordinates
) -> None:
    first = caller(phone, 1, MENTAL_HEALTH, max_hold_turns=0)
    ana = connect(phone, fake, first)
    earlier = caller(phone, 2, SOMETHING_ELSE, max_hold_turns=2)
    wednesday_morning.shift(timedelta(seconds=20))
    urgent = caller(phone, 3, SUICIDE, max_hold_turns=2)

    assert urgent.heard[-1].text.startswith("You are number 1 in line.")  # priority 8 beats 0
    phone.resume(earlier, max_hold_turns=1)
    assert earlier.heard[-1].text.startswith("You are number 2 in line.")

    end_call(phone, first, ana)

    assert len(legs(fake)) == 2
    with app.app_context():
        _first_offer, next_offer = db.session.scalars(select(Offer).order_by(Offer.id)).all()
        offered_to = db.session.get(Transfer, next_offer.transfer_id)
        assert offered_to is not None and offered_to.need == "suicide"
    connect(phone, fake, urgent)


def _callback_waiting(app: Flask, phone: Phone, run_worker: Callable[..., None], fake: FakeTwilio) -> PhoneCall:
    """A caller on hold asks for a callback (key 9) and the worker starts its first attempt."""
    holding = caller(phone, 9, MENTAL_HEALTH, max_hold_turns=1)
    turn = holding.steps[-1]
    assert turn.twiml is not None and turn.twiml.find("Gather") is not None, "the callback key is offered"
    phone.resume(holding, [Keys("9")], max_hold_turns=1)
    assert "We will call you back" in holding.heard_text()
    run_worker()
    return holding


@pytest.mark.usefixtures("clean_redis")
def test_a_callback_everyone_passed_is_offered_again_after_the_cooldown(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_morning: time_machine.Coordinates,
    publish_routing: Callable[..., int], run_worker: Callable[..., None], clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz",)))
    _callback_waiting(app, phone, run_worker, fake)
    assert [leg.to for leg in legs(fake)] == [ANA, ANA]  # rung while holding, then for the callback
    passing = phone.answer(legs(fake)[-1].sid, [Keys("2")])  # Ana passes the callback
    assert passing.heard[0].text.startswith("Crisis line callback:")

    clock_tick()
    assert len(legs(fake)) == 2  # within the cooldown: not offered to her again yet
    wednesday_morning.shift(timedelta(seconds=61))
    clock_tick()

    assert [leg.to for leg in legs(fake)] == [ANA, ANA, ANA]
    again = phone.answer(legs(fake)[-1].sid, [])
    assert again.heard[0].text.startswith("Crisis line callback:")
    with app.app_context():
        (callback,) = db.session.scalars(select(Callback)).all()
        assert callback.state == "waiting"


@pytest.mark.usefixtures("clean_redis")
def test_a_live_caller_behind_a_callback_waits_for_the_counselor_rung_for_it(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_morning: time_machine.Coordinates,
    publish_routing: Callable[..., int], run_worker: Callable[..., None],
) -> None:  # fmt: skip
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz",)))
    _callback_waiting(app, phone, run_worker, fake)
    assert leg_to_count(fake, ANA) == 2  # ringing for the callback now

    live = caller(phone, 2, MENTAL_HEALTH, max_hold_turns=3)

    assert live.ended_by == "on-hold"  # not the backup line: Ana is on shift
    assert live.dials == []
    assert leg_to_count(fake, ANA) == 2  # and she is not rung twice
    assert any(h.text.startswith("You are number 2 in line.") for h in live.heard)


def leg_to_count(fake: FakeTwilio, number: str) -> int:
    return sum(1 for leg in legs(fake) if leg.to == number)


def test_a_counselor_freed_from_a_call_is_offered_the_text_first_in_line(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, publish_routing: Callable[..., int],
    wednesday_morning: time_machine.Coordinates,
) -> None:  # fmt: skip
    publish_routing(lambda document: document["queue"].update(channels="shared"))
    first = caller(phone, 1, MENTAL_HEALTH, max_hold_turns=0)
    ana = connect(phone, fake, first)
    texting.send("+13125550177", "I keep having panic attacks and I can't breathe")
    with app.app_context():
        (conversation,) = db.session.scalars(select(Conversation)).all()
    assert conversation.state == "queued"
    assert texting.inbox(ANA) == []  # she is on a call
    later = caller(phone, 2, MENTAL_HEALTH, max_hold_turns=1)  # a caller after the texter
    assert later.heard[-1].text.startswith("You are number 2 in line.")  # one line: the texter is ahead

    end_call(phone, first, ana)

    assert texting.inbox(ANA)[-1].startswith(f"New text #{conversation.id}")  # the text waited longer
    assert [leg.to for leg in legs(fake)] == [ANA]  # one offer at a time: not rung for the later caller
    texting.send(ANA, f"YES {conversation.id}")
    phone.resume(later, max_hold_turns=1)
    assert [leg.to for leg in legs(fake)] == [ANA, ANA]  # texting, she can take the call too


def test_separate_channels_offer_texts_and_calls_independently(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, wednesday_morning: time_machine.Coordinates
) -> None:
    first = caller(phone, 1, MENTAL_HEALTH, max_hold_turns=0)
    ana = connect(phone, fake, first)
    texting.send("+13125550177", "I keep having panic attacks and I can't breathe")
    later = caller(phone, 2, MENTAL_HEALTH, max_hold_turns=1)

    end_call(phone, first, ana)

    assert texting.inbox(ANA)[-1].startswith("New text #")
    assert [leg.to for leg in legs(fake)] == [ANA, ANA]  # and her phone rings for the later caller
    phone.resume(later, max_hold_turns=0)


def test_hold_estimates_learn_from_live_calls_only(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    from line_queue.waiting import DEFAULT_HANDLE_SECONDS, typical_handle_seconds

    with app.app_context():
        assert typical_handle_seconds() == DEFAULT_HANDLE_SECONDS
    first = phone.call(SUICIDE, max_hold_turns=0)
    ben = connect(phone, fake, first)
    wednesday_evening.shift(timedelta(minutes=3))
    end_call(phone, first, ben)
    with app.app_context():
        assert 180 <= typical_handle_seconds() < 190
        (transfer,) = db.session.scalars(select(Transfer)).all()
        assert transfer.mode == "live"
    assert leg_to(fake, BEN).to == BEN and DIEGO not in [leg.to for leg in legs(fake)]


def test_a_counselor_texting_on_is_offered_the_waiting_texter_by_that_text(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates
) -> None:
    texting.send(ANA, "OFF")
    texting.send("+13125550177", "I keep having panic attacks and I can't breathe")
    with app.app_context():
        (conversation,) = db.session.scalars(select(Conversation)).all()
    assert conversation.state == "queued"

    replies = texting.send(ANA, "ON")  # no clock, no other text: her ON frees her

    assert any(text.startswith(f"New text #{conversation.id}") for text in replies)
