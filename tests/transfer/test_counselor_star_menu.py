"""The counselor's in-call menu (``*``, then 1 for the co-responder unit, anything else back).

Found in review: the menu's webhooks asked Twilio whether the caller was still on the line with
the REST client's 3 s timeout and rang the unit inline, so a slow Twilio API ran them past the
2 s voice deadline; the fail-safe then said "something went wrong" and hung up the counselor,
leaving the caller alone in the room. And ``*`` then 1 always said "We are calling the
co-responder unit", even when nobody was rung (no unit on shift, all busy), and a second ``*1``
rang a second unit: the phone did not go through the console's once-only request
(``transfer.joining.request_unit_join``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Offer
from crisisline.settings import Settings
from line_queue.responders import set_paused
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, settings_for, settle_after_callbacks
from tests.rota import ANA, UNIT, leg_to, legs
from transfer import dispatch
from twilio_fake.phone import Keys, Phone, PhoneCall, RequestsTransport, Silence
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "wednesday_morning")
CALLING = "We are calling the co-responder unit"
NOBODY_FREE = "No co-responder unit is free right now"
WENT_WRONG = "something went wrong"
# Every call fetch and placement (not the conference's own endpoints): the API is slow.
CALLS = r"/Calls(/[^/]+)?\.json$"


@pytest.fixture
def settings(database_url: str, redis_url: str, fake_twilio_server: Any, app_port: int) -> Settings:
    return settings_for(
        database_url, redis_url, TWILIO_API_BASE_URL=fake_twilio_server.base_url,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{app_port}", VOICE_DEADLINE_SECONDS="2",  # production default
    )  # fmt: skip


@pytest.fixture
def twilios_view(app: Flask, live_server: str, fake: FakeTwilio) -> Phone:
    """Twilio's view exactly: each webhook's answer, without waiting for the ringing it started."""
    settle_after_callbacks(fake, app)
    return Phone(RequestsTransport(), live_server, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)


def wait_for(condition: Callable[[], object], seconds: float = 15.0) -> None:
    ends = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < ends, "timed out"
        time.sleep(0.05)


def ana_with_the_caller(phone: Phone, fake: FakeTwilio) -> tuple[PhoneCall, PhoneCall]:
    caller = phone.call([Keys("1"), Keys("3")], max_hold_turns=0)
    wait_for(lambda: any(leg.to == ANA for leg in legs(fake)))  # rung off the request path
    ana = phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert ana.conference == caller.conference is not None
    return caller, ana


def unit_legs(fake: FakeTwilio) -> list[str]:
    return [leg.sid for leg in legs(fake) if leg.to == UNIT]


def join_offers(app: Flask) -> list[tuple[str, str]]:
    with app.app_context():
        return [(offer.responder_id, offer.state) for offer in db.session.scalars(select(Offer).where(
            Offer.purpose == "join").order_by(Offer.id))]  # fmt: skip


# --- a slow Twilio API -------------------------------------------------------------------------


def test_slow_twilio_api_while_counselor_presses_star_must_not_cut_them_off_the_caller(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller, ana = ana_with_the_caller(phone, fake)
    fake.inject_fault("*", CALLS, status=200, delay=4.0, times=None)  # "twilio slow"

    assert phone.press_star(ana)
    phone.resume(ana, [Keys("9")])  # not 1: "go back to the caller"
    fake.clear_faults()

    assert WENT_WRONG not in ana.heard_text()
    assert ana.conference == caller.conference


def test_star_then_one_with_a_slow_twilio_api_puts_the_counselor_back_in_time_and_rings_the_unit(
    app: Flask, twilios_view: Phone, fake: FakeTwilio
) -> None:
    caller, ana = ana_with_the_caller(twilios_view, fake)
    # Slower than the voice deadline, quicker than the REST timeout: the unit's call is placed.
    fake.inject_fault("*", CALLS, status=200, delay=2.5, times=None)

    assert twilios_view.press_star(ana)
    twilios_view.resume(ana, [Keys("1")])

    heard = ana.heard_text()
    assert WENT_WRONG not in heard
    assert CALLING in heard  # the menu's own answer: given within the deadline (past it, no word of the unit)
    assert ana.conference == caller.conference
    wait_for(lambda: unit_legs(fake))  # once Twilio answers, the unit's phone rings
    fake.clear_faults()
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    assert len(unit_legs(fake)) == 1
    assert join_offers(app) == [("unit-north", "ringing")]


@pytest.mark.parametrize("choice", [[Keys("1")], [Keys("2")], [Silence()]], ids=["unit", "back", "silence"])
def test_past_the_deadline_the_counselors_menu_answers_by_putting_them_back_with_the_caller(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch, choice: list[Keys | Silence]
) -> None:
    """Whatever keeps Twilio from answering past the deadline (here its answer never comes in
    time, timeout or not), a counselor with the caller is put back in the room, never told
    "something went wrong" and hung up."""
    caller, ana = ana_with_the_caller(phone, fake)
    has_ended = dispatch.call_has_ended

    def hangs(call_sid: str, **options: Any) -> bool | None:
        time.sleep(3.0)  # past the 2 s deadline
        return has_ended(call_sid, **options)

    monkeypatch.setattr(dispatch, "call_has_ended", hangs)
    assert phone.press_star(ana)
    phone.resume(ana, choice)

    assert WENT_WRONG not in ana.heard_text()
    assert ana.conference == caller.conference


# --- what ``*`` then 1 says ----------------------------------------------------------------------


def test_star_one_with_no_unit_free_does_not_tell_the_counselor_a_unit_is_coming(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Any
) -> None:
    publish_routing(lambda d: [u.update(shifts=[]) for u in d["co_responder_units"]])
    caller, ana = ana_with_the_caller(phone, fake)

    assert phone.press_star(ana)
    phone.resume(ana, [Keys("1")])

    assert unit_legs(fake) == []
    assert CALLING not in ana.heard_text()
    assert NOBODY_FREE in ana.heard_text()
    assert ana.conference == caller.conference  # and she is back with the caller


def test_star_one_with_the_unit_paused_does_not_tell_the_counselor_a_unit_is_coming(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller, ana = ana_with_the_caller(phone, fake)
    with app.app_context():
        set_paused("unit-north", True, "self")  # as a unit's OFF by text
        db.session.commit()

    assert phone.press_star(ana)
    phone.resume(ana, [Keys("1")])

    assert unit_legs(fake) == []
    assert CALLING not in ana.heard_text()
    assert NOBODY_FREE in ana.heard_text()
    assert ana.conference == caller.conference


def test_star_one_when_twilio_refuses_the_units_call_says_so(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    caller, ana = ana_with_the_caller(phone, fake)
    fake.inject_fault("POST", r"/Calls\.json$", status=500, times=None)

    assert phone.press_star(ana)
    phone.resume(ana, [Keys("1")])
    fake.clear_faults()

    assert CALLING not in ana.heard_text()
    assert NOBODY_FREE in ana.heard_text()
    assert ana.conference == caller.conference


def test_a_second_star_one_while_the_unit_rings_does_not_ring_a_second_unit(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Any
) -> None:
    def two_units(document: dict[str, Any]) -> None:
        second = dict(document["co_responder_units"][0], id="unit-south", name="Unit South", phone="+13125550151")
        document["co_responder_units"].append(second)

    publish_routing(two_units)
    caller, ana = ana_with_the_caller(phone, fake)
    assert phone.press_star(ana)
    phone.resume(ana, [Keys("1")])
    assert len(join_offers(app)) == 1

    assert phone.press_star(ana)
    phone.resume(ana, [Keys("1")])

    assert [offer for offer, _state in join_offers(app)] == ["unit-north"]
    assert [leg.to for leg in legs(fake) if leg.to != ANA] == [UNIT]
    assert ana.heard_text().count(CALLING) == 2  # it is being called: true both times
    assert ana.conference == caller.conference


def test_a_star_one_with_the_unit_already_on_the_call_rings_nobody(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    caller, ana = ana_with_the_caller(phone, fake)
    assert phone.press_star(ana)
    phone.resume(ana, [Keys("1")])
    unit = phone.answer(leg_to(fake, UNIT).sid, [Keys("1")])
    assert unit.conference == caller.conference

    assert phone.press_star(ana)
    phone.resume(ana, [Keys("1")])

    assert len(unit_legs(fake)) == 1
    assert ana.heard_text().count(CALLING) == 1  # the first time only: the unit is with them now
    assert NOBODY_FREE not in ana.heard_text()
    assert ana.conference == caller.conference
