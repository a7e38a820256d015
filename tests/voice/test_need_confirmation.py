"""Spoken needs through the signed webhooks: negations ask again, and a need that rings a
co-responder unit (police-involved) is confirmed by key before anything is rung.

Wednesday 10:00 in Chicago: Ana (en, es) is on shift, and so is the co-responder unit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call, CallEvent
from twilio_fake.phone import Keys, Phone, PhoneCall, Silence, Words
from twilio_fake.rest_api import FakeTwilio

CHICAGO = ZoneInfo("America/Chicago")
ANA = "+13125550101"
UNIT_NORTH = "+13125550150"
CONFIRM_1 = "voice/menu/confirm?lang=en&need=danger_now&attempt=1&asked=1"
CONFIRM_EN = "You said someone in danger right now. If that's right, press 1. To choose again, press 2."


@pytest.fixture(autouse=True)
def _wednesday_morning() -> Any:
    with time_machine.travel(datetime(2026, 12, 2, 10, 0, tzinfo=CHICAGO), tick=True):
        yield


def rung(fake: FakeTwilio) -> list[str]:
    return [leg.to for leg in fake.calls.values() if leg.direction == "outbound-api"]


def events_of(app: Flask, call: PhoneCall) -> list[CallEvent]:
    with app.app_context():
        row = db.session.scalars(select(Call).where(Call.call_sid == call.identity.call_sid)).one()
        return list(row.events)


def need_of(app: Flask, call: PhoneCall) -> str | None:
    with app.app_context():
        return db.session.scalars(select(Call.need).where(Call.call_sid == call.identity.call_sid)).one()


def said_in(call: PhoneCall, step: int) -> list[str]:
    """The sentences of the response to request number ``step`` (0-based), in order."""
    twiml = call.steps[step].twiml
    assert twiml is not None
    return [say.text or "" for say in twiml.iter("Say")]


def test_spoken_danger_is_confirmed_by_key_before_the_unit_is_rung(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    call = phone.call([Keys("1"), Words("there is a man with a gun outside"), Keys("1")], max_hold_turns=0)

    assert call.requested_paths()[:4] == [
        "voice/incoming",
        "voice/menu/language?attempt=1",
        "voice/menu/need?lang=en&attempt=1",
        CONFIRM_1,
    ]
    confirmation = call.steps[2].twiml
    assert confirmation is not None
    gather = confirmation.find("Gather")
    assert gather is not None and confirmation.findall("Say") == []
    assert [say.text for say in gather.findall("Say")] == [CONFIRM_EN]
    assert gather.get("action") == "/" + CONFIRM_1
    assert gather.get("numDigits") == "1"
    redirect = confirmation.find("Redirect")
    assert redirect is not None and redirect.text == "/" + CONFIRM_1  # silence comes back to ask again
    assert rung(fake) == [UNIT_NORTH]
    assert need_of(app, call) == "danger_now"
    events = events_of(app, call)
    assert [e.kind for e in events] == [
        "call.started",
        "menu.language.chosen",
        "menu.need.confirming",
        "menu.need.chosen",
        "route.decided",
        "transfer.started",
    ]
    chosen = next(e for e in events if e.kind == "menu.need.chosen")
    assert chosen.detail["confirmed"] is True and chosen.detail["via"] == "keypad"
    confirming = next(e for e in events if e.kind == "menu.need.confirming")
    assert "gun" not in str(confirming.detail) and confirming.sealed_detail is not None


def test_nothing_is_rung_while_the_confirmation_waits(phone: Phone, fake: FakeTwilio) -> None:
    phone.call([Keys("1"), Words("this is an emergency")], hang_up_after_requests=3)

    assert rung(fake) == []


def test_a_spoken_number_is_speech_too_and_is_confirmed(phone: Phone, fake: FakeTwilio) -> None:
    call = phone.call([Keys("1"), Words("one")], hang_up_after_requests=3)

    assert CONFIRM_EN in said_in(call, 2)
    assert rung(fake) == []


def test_the_key_alone_rings_the_unit_at_once(phone: Phone, fake: FakeTwilio) -> None:
    call = phone.call([Keys("1"), Keys("1")], max_hold_turns=0)

    assert not any("confirm" in path for path in call.requested_paths())
    assert rung(fake) == [UNIT_NORTH]


def test_two_goes_back_to_the_need_menu_and_nothing_is_rung_until_a_choice(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    call = phone.call([Keys("1"), Words("there's a gun"), Keys("2"), Keys("3")], max_hold_turns=0)

    assert call.requested_paths()[3:5] == [CONFIRM_1, "voice/menu/need?lang=en&attempt=2"]
    assert said_in(call, 3)[0] == "Tell us what's happening, or press:"  # no "sorry": they chose to
    assert rung(fake) == [ANA]
    assert need_of(app, call) == "mental_health"
    assert "menu.confirm.declined" in [e.kind for e in events_of(app, call)]


def test_a_spoken_no_goes_back_to_the_need_menu(phone: Phone, fake: FakeTwilio) -> None:
    call = phone.call([Keys("1"), Words("emergency"), Words("no, that's wrong"), Keys("6")], max_hold_turns=0)

    assert call.requested_paths()[4] == "voice/menu/need?lang=en&attempt=2"
    assert rung(fake) == [ANA]


def test_a_spoken_yes_is_asked_for_the_key_then_the_key_confirms(phone: Phone, fake: FakeTwilio) -> None:
    call = phone.call([Keys("1"), Words("emergency"), Words("yes"), Keys("1")], max_hold_turns=0)

    assert call.requested_paths()[3:5] == [CONFIRM_1, CONFIRM_1.replace("asked=1", "asked=2")]
    assert said_in(call, 3) == ["To be sure, please answer with your keypad.", CONFIRM_EN]
    assert rung(fake) == [UNIT_NORTH]


def test_silence_repeats_the_confirmation_once_then_the_need_menu_and_never_rings_the_unit(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    call = phone.call([Keys("1"), Words("someone is in danger"), Silence(), Silence()], max_hold_turns=0)

    assert call.requested_paths()[:7] == [
        "voice/incoming",
        "voice/menu/language?attempt=1",
        "voice/menu/need?lang=en&attempt=1",
        CONFIRM_1,
        CONFIRM_1.replace("asked=1", "asked=2"),
        "voice/menu/need?lang=en&attempt=2",
        "voice/menu/need?lang=en&attempt=3",
    ]
    assert said_in(call, 3) == ["I didn't hear anything. Take your time.", CONFIRM_EN]
    assert said_in(call, 4)[0] == "Sorry, I'm not sure I understood. Please press the number that fits best."
    # Silence on every menu after that: the configured default, never the unit.
    assert rung(fake) == [ANA]
    assert need_of(app, call) == "something_else"


def test_on_the_last_attempt_spoken_danger_is_still_confirmed_and_choosing_again_is_still_allowed(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    actions = [Keys("1"), Silence(), Silence(), Words("emergency"), Keys("2"), Keys("5")]
    call = phone.call(actions, max_hold_turns=0)

    assert call.requested_paths()[4:7] == [
        "voice/menu/need?lang=en&attempt=3",
        "voice/menu/confirm?lang=en&need=danger_now&attempt=3&asked=1",
        "voice/menu/need?lang=en&attempt=4",
    ]
    assert rung(fake) == [ANA]
    assert need_of(app, call) == "domestic_violence"
    chosen = [e for e in events_of(app, call) if e.kind == "menu.need.chosen"]
    assert [(e.detail["attempt"], e.detail["digits"]) for e in chosen] == [(4, "5")]


def test_a_caller_who_never_confirms_spoken_danger_past_the_last_attempt_goes_with_the_default_need(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Someone who cannot press keys is not looped between the need menu and the confirmation."""
    last = [Words("someone is in danger"), Silence(), Silence()]  # asked twice, never confirmed
    actions = [Keys("1"), Silence(), Silence(), *last, Words("someone is in danger")]
    call = phone.call(actions, max_hold_turns=0)

    assert call.requested_paths()[4:8] == [
        "voice/menu/need?lang=en&attempt=3",
        "voice/menu/confirm?lang=en&need=danger_now&attempt=3&asked=1",
        "voice/menu/confirm?lang=en&need=danger_now&attempt=3&asked=2",
        "voice/menu/need?lang=en&attempt=4",
    ]
    assert need_of(app, call) == "something_else"
    assert rung(fake) == [ANA]  # a counselor, never the unit on speech alone
    (defaulted,) = [e for e in events_of(app, call) if e.kind == "menu.need.defaulted"]
    assert defaulted.detail["attempt"] == 4


def test_spanish_confirmation_is_in_spanish(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    call = phone.call([Keys("2"), Words("hay un hombre con una pistola"), Keys("1")], max_hold_turns=0)

    confirmation = call.steps[2].twiml
    assert confirmation is not None
    (say,) = confirmation.iter("Say")
    assert say.text == "Usted dijo alguien en peligro ahora. Si es correcto, oprima 1. Para elegir de nuevo, oprima 2."
    assert say.get("language") == "es-US"
    assert rung(fake) == [UNIT_NORTH]


@pytest.mark.parametrize(
    ("language_key", "speech", "attempt_2"),
    [
        ("1", "I'm not in danger", "voice/menu/need?lang=en&attempt=2"),
        ("2", "no estoy en peligro", "voice/menu/need?lang=es&attempt=2"),
        ("1", "I don't want to kill myself, but", "voice/menu/need?lang=en&attempt=2"),
    ],
)
def test_speech_that_only_denies_a_need_is_asked_again_with_a_request_to_press(
    app: Flask, phone: Phone, fake: FakeTwilio, language_key: str, speech: str, attempt_2: str
) -> None:
    call = phone.call([Keys(language_key), Words(speech)], hang_up_after_requests=4)

    assert call.requested_paths()[3] == attempt_2
    sorry = said_in(call, 2)[0]
    assert sorry in (
        "Sorry, I'm not sure I understood. Please press the number that fits best.",
        "Perdón, no estoy seguro de haberle entendido. Oprima el número que mejor le corresponda.",
    )
    assert rung(fake) == []
    assert "menu.need.unclear" in [e.kind for e in events_of(app, call)]


def test_a_routing_change_under_the_call_asks_the_need_menu_again(phone: Phone, fake: FakeTwilio) -> None:
    call = phone.call(
        [Keys("3")], path="/voice/menu/confirm?lang=en&need=no_such_need&attempt=2&asked=1", max_hold_turns=0
    )

    assert call.requested_paths()[1] == "voice/menu/need?lang=en&attempt=2"
    assert rung(fake) == []
