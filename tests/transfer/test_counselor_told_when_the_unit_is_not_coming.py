"""A counselor who pressed ``*`` then 1 heard "We are calling the co-responder unit" and went back
to the caller. Before, when that unit then passed, did not answer, or its call failed (Twilio
refusing it after the menu had stopped waiting for it), nothing followed: no other unit on shift
was asked, and nothing told the counselor, who went on telling a person in crisis that help was
coming. And a unit whose call Twilio refused (a wrong number) was the only one ever asked, each
``*1`` again asking it again, while other units sat free on shift.

Now the next free unit on shift is rung; with none left, the counselor hears it on their own
leg and is put back with the caller, once per request.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import CallEvent, Offer
from crisisline.settings import Settings
from tests.conftest import (
    LINE_NUMBER,
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    TextingPhone,
    settings_for,
    settle_after_callbacks,
)
from tests.rota import ANA, UNIT, leg_to, legs
from tests.transfer.test_counselor_star_menu import CALLING, NOBODY_FREE, ana_with_the_caller, join_offers, wait_for
from twilio_fake.phone import Keys, Phone, RequestsTransport
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "wednesday_morning")
NOT_COMING = "The co-responder unit did not answer, and no other unit is free"
SOUTH = "+13125550151"


@pytest.fixture
def settings(database_url: str, redis_url: str, fake_twilio_server: Any, app_port: int) -> Settings:
    return settings_for(
        database_url, redis_url, TWILIO_API_BASE_URL=fake_twilio_server.base_url,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{app_port}", VOICE_DEADLINE_SECONDS="2",  # production default
    )  # fmt: skip


@pytest.fixture
def two_units(publish_routing: Any) -> None:
    def add_south(document: dict[str, Any]) -> None:
        second = dict(document["co_responder_units"][0], id="unit-south", name="Unit South", phone=SOUTH)
        document["co_responder_units"].append(second)

    publish_routing(add_south)


def settle(app: Flask) -> None:
    assert app.extensions["crisisline.background"].wait_idle(timeout=30)


def ana_asks_for_the_unit(phone: Phone, fake: FakeTwilio) -> tuple[Any, Any]:
    caller, ana = ana_with_the_caller(phone, fake)
    assert phone.press_star(ana)
    phone.resume(ana, [Keys("1")])
    assert CALLING in ana.heard_text()
    return caller, ana


def told_on_her_leg(fake: FakeTwilio) -> list[str]:
    """What the line put on Ana's leg over REST since she answered (inline TwiML)."""
    return [redirect.twiml or "" for redirect in fake.get_call(leg_to(fake, ANA).sid).redirects]


@pytest.mark.parametrize("outcome", ["no-answer", "busy", "failed"])
def test_the_only_unit_not_answering_is_told_to_the_counselor_who_stays_with_the_caller(
    app: Flask, phone: Phone, fake: FakeTwilio, outcome: str
) -> None:
    caller, ana = ana_asks_for_the_unit(phone, fake)

    fake.advance_call(leg_to(fake, UNIT).sid, outcome)
    settle(app)

    told = told_on_her_leg(fake)
    assert len(told) == 1 and NOT_COMING in told[0], told
    phone.resume(ana)  # Twilio runs that TwiML on her leg: she hears it, and is back in the room
    assert NOT_COMING in ana.heard_text()
    assert ana.conference == caller.conference


def test_the_unit_pressing_2_is_told_to_the_counselor(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    caller, ana = ana_asks_for_the_unit(phone, fake)

    unit = phone.answer(leg_to(fake, UNIT).sid, [Keys("2")])
    settle(app)

    assert unit.conference is None
    phone.resume(ana)
    assert NOT_COMING in ana.heard_text()
    assert ana.conference == caller.conference


@pytest.mark.usefixtures("two_units")
def test_a_unit_not_answering_rings_the_next_unit_on_shift_and_the_counselor_hears_nothing_yet(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller, ana = ana_asks_for_the_unit(phone, fake)
    first = next(leg for leg in legs(fake) if leg.to in (UNIT, SOUTH))

    fake.advance_call(first.sid, "no-answer")
    settle(app)

    rung = [leg.to for leg in legs(fake) if leg.to in (UNIT, SOUTH)]
    assert sorted(rung) == sorted([UNIT, SOUTH])  # the other unit, once
    assert told_on_her_leg(fake) == []
    second = next(leg for leg in legs(fake) if leg.to in (UNIT, SOUTH) and leg.sid != first.sid)
    unit = phone.answer(second.sid, [Keys("1")])
    assert unit.conference == caller.conference == ana.conference


@pytest.mark.usefixtures("two_units")
def test_every_unit_missing_tells_the_counselor_once(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    caller, ana = ana_asks_for_the_unit(phone, fake)
    for _ in range(2):
        ringing = next(leg for leg in legs(fake) if leg.to in (UNIT, SOUTH) and leg.status in ("queued", "ringing"))
        fake.advance_call(ringing.sid, "no-answer")
        fake.advance_call(ringing.sid, "no-answer")  # Twilio repeats a callback now and then
        settle(app)

    assert len([leg for leg in legs(fake) if leg.to in (UNIT, SOUTH)]) == 2
    assert len(told_on_her_leg(fake)) == 1
    phone.resume(ana)
    assert ana.conference == caller.conference


@pytest.mark.usefixtures("two_units")
def test_a_unit_whose_call_twilio_refuses_does_not_keep_the_other_unit_from_being_asked(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller, ana = ana_with_the_caller(phone, fake)
    fake.inject_fault("POST", r"/Calls\.json$", status=400, code=21211, times=1)  # the first unit's number

    assert phone.press_star(ana)
    phone.resume(ana, [Keys("1")])
    settle(app)

    assert CALLING in ana.heard_text() and NOBODY_FREE not in ana.heard_text()
    assert [state for _unit, state in join_offers(app)] == ["ended", "ringing"]
    assert ana.conference == caller.conference


def test_a_ring_refused_after_the_menu_said_calling_is_told_to_the_counselor(
    app: Flask, live_server: str, fake: FakeTwilio
) -> None:
    """The menu waits half the voice deadline for the unit's call; Twilio answers later, with a
    refusal. The counselor had heard "calling": they are told on their leg now."""
    settle_after_callbacks(fake, app)
    # Twilio's view exactly: each webhook's answer, without waiting for the ringing it started.
    twilios_view = Phone(RequestsTransport(), live_server, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
    caller, ana = ana_with_the_caller(twilios_view, fake)
    fake.inject_fault("POST", r"/Calls\.json$", status=500, delay=2.5, times=1)

    assert twilios_view.press_star(ana)
    twilios_view.resume(ana, [Keys("1")])
    assert CALLING in ana.heard_text()
    settle(app)

    wait_for(lambda: told_on_her_leg(fake))
    twilios_view.resume(ana)
    assert NOT_COMING in ana.heard_text()
    assert ana.conference == caller.conference
    with app.app_context():
        kinds = db.session.scalars(select(CallEvent.kind).where(CallEvent.kind.like("unit.%"))).all()
    assert sorted(kinds) == ["unit.not_reached", "unit.not_rung", "unit.requested", "unit.told"]


def test_the_counselor_is_not_told_once_the_caller_has_gone(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    caller, _ana = ana_asks_for_the_unit(phone, fake)
    phone.hang_up(caller)
    settle(app)

    fake.advance_call(leg_to(fake, UNIT).sid, "no-answer")
    settle(app)

    assert not any(NOT_COMING in twiml for twiml in told_on_her_leg(fake))
    with app.app_context():
        assert db.session.scalars(select(Offer.state).where(Offer.purpose == "join")).all() == ["ended"]


def test_the_counselor_is_told_once_twilio_takes_the_news_after_failing_to(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Telling them is claimed once per request, before Twilio is asked. Before, when Twilio
    failed that one request (a 503), the claim kept anything else from telling them: the
    counselor went on promising the caller a unit that was not coming."""
    caller, ana = ana_asks_for_the_unit(phone, fake)
    her_leg = leg_to(fake, ANA).sid
    fake.inject_fault("POST", rf"/Calls/{her_leg}\.json$", status=503, times=2)

    fake.advance_call(leg_to(fake, UNIT).sid, "no-answer")
    settle(app)
    assert told_on_her_leg(fake) == []  # Twilio refused the first try

    wait_for(lambda: told_on_her_leg(fake))  # the second fails too; the third, 3 s on, is taken
    told = told_on_her_leg(fake)
    assert len(told) == 1 and NOT_COMING in told[0], told
    phone.resume(ana)
    assert NOT_COMING in ana.heard_text()
    assert ana.conference == caller.conference


def test_news_retried_after_the_counselor_asked_again_is_not_told(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    """Twilio failed to take "the unit is not coming"; before its retry, Ana asked again (``*``
    then 1) and the unit is ringing: the retry must not tell her that news over the new
    request's (review: it checked only that she was still with the caller)."""
    caller, ana = ana_asks_for_the_unit(phone, fake)
    her_leg = leg_to(fake, ANA).sid
    fake.inject_fault("POST", rf"/Calls/{her_leg}\.json$", status=503, times=2)
    fake.advance_call(leg_to(fake, UNIT).sid, "no-answer")
    settle(app)

    assert phone.press_star(ana)
    phone.resume(ana, [Keys("1")])
    assert CALLING in ana.heard_text()
    wait_for(lambda: len([leg for leg in legs(fake) if leg.to == UNIT]) == 2)  # the unit rung again
    time.sleep(3.5)  # past the third try, which Twilio would have taken
    settle(app)

    assert told_on_her_leg(fake) == []
    assert ana.conference == caller.conference


@pytest.mark.usefixtures("two_units")
def test_a_unit_that_pauses_while_its_phone_rings_to_join_hands_the_request_to_the_next_unit_at_once(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone
) -> None:
    """A unit texting OFF while it is rung to join a call stops ringing, and the next unit on
    shift is rung at once, as after its press of 2 (before, it rang out its timeout)."""
    caller, ana = ana_asks_for_the_unit(phone, fake)
    first = next(leg for leg in legs(fake) if leg.to in (UNIT, SOUTH))

    texting.send(first.to, "OFF")
    settle(app)

    assert fake.get_call(first.sid).status == "canceled"
    second = next(leg for leg in legs(fake) if leg.to in (UNIT, SOUTH) and leg.sid != first.sid)
    assert told_on_her_leg(fake) == []
    unit = phone.answer(second.sid, [Keys("1")])
    assert unit.conference == caller.conference == ana.conference
