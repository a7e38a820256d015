"""Signed webhooks carrying Twilio's full parameter set walk every path through the voice menu.

The TwiML is parsed and checked (verbs, attributes, languages, action URLs), never compared
as a string. Times are fixed with time-machine so the on-call rota is known.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call, CallEvent
from tests.conftest import LINE_NUMBER, TEST_BACKUP_NUMBER
from twilio_fake.phone import HUNG_UP_AT_ONCE, Keys, Phone, Silence, Words
from twilio_fake.rest_api import FakeTwilio

CHICAGO = ZoneInfo("America/Chicago")
# Wednesday 10:00 in Chicago: Ana (en, es) is on shift, and so is the co-responder unit.
WEDNESDAY_MORNING = datetime(2026, 12, 2, 10, 0, tzinfo=CHICAGO)
ANA = "+13125550101"
UNIT_NORTH = "+13125550150"


@pytest.fixture(autouse=True)
def _wednesday_morning() -> Any:
    with time_machine.travel(WEDNESDAY_MORNING, tick=True):
        yield


def rung(fake: FakeTwilio) -> list[str]:
    """The numbers the line rang over the REST API, in order."""
    return [leg.to for leg in fake.calls.values() if leg.direction == "outbound-api"]


def events_of(app: Flask, call_sid: str) -> list[CallEvent]:
    with app.app_context():
        call = db.session.scalars(select(Call).where(Call.call_sid == call_sid)).one()
        return list(call.events)


def call_row(app: Flask, call_sid: str) -> Call:
    with app.app_context():
        return db.session.scalars(select(Call).where(Call.call_sid == call_sid)).one()


def test_incoming_call_hears_the_greeting_then_the_language_menu_all_inside_the_gather(phone: Phone) -> None:
    call = phone.call([], hang_up_after_requests=1)

    twiml = call.last_twiml
    # Nothing is said outside the first <Gather>: a caller who knows the menu presses at once.
    assert twiml.findall("Say") == []
    gather = twiml.find("Gather")
    assert gather is not None
    assert twiml[0] is gather
    greeting = gather.findall("Say")[0]
    assert greeting.text == "Riverside County Crisis Line."
    assert (greeting.get("language"), greeting.get("voice")) == ("en-US", "Polly.Joanna")
    # The confidentiality notice waits for the caller's language (it is said once, in theirs).
    assert "confidential" not in " ".join(say.text or "" for say in gather.iter("Say"))
    assert gather.get("input") == "dtmf speech"
    assert gather.get("numDigits") == "1"
    assert gather.get("action") == "/voice/menu/language?attempt=1"
    assert "español" in (gather.get("hints") or "")
    options = {(say.get("language"), say.get("voice")): say.text for say in gather.findall("Say")[1:]}
    assert options[("en-US", "Polly.Joanna")] == "For English, press 1."
    assert options[("es-US", "Polly.Lupe")] == "Para español, oprima 2."
    # Silence falls through the Gather to a Redirect: never dead air, never a hang-up.
    redirect = twiml.find("Redirect")
    assert redirect is not None and redirect.text == "/voice/menu/language?attempt=1"


@pytest.mark.parametrize(
    ("answer", "language", "twilio_language"),
    [
        (Keys("1"), "en", "en-US"),
        (Keys("2"), "es", "es-US"),
        (Words("English please"), "en", "en-US"),
        (Words("Español"), "es", "es-US"),
        (Words("spanish"), "es", "es-US"),
        (Words("dos"), "es", "es-US"),
    ],
)
def test_language_is_chosen_by_key_or_by_speech(
    app: Flask, phone: Phone, answer: Keys | Words, language: str, twilio_language: str
) -> None:
    call = phone.call([answer], hang_up_after_requests=2)

    need_menu = call.last_twiml.find("Gather")
    assert need_menu is not None
    assert need_menu.get("language") == twilio_language
    assert need_menu.get("action") == f"/voice/menu/need?lang={language}&attempt=1"
    assert all(say.get("language") == twilio_language for say in need_menu.findall("Say"))
    assert call_row(app, call.identity.call_sid).language == language
    chosen = [e for e in events_of(app, call.identity.call_sid) if e.kind == "menu.language.chosen"]
    assert chosen[0].detail["language"] == language
    assert chosen[0].detail["via"] == ("keypad" if isinstance(answer, Keys) else "speech")


@pytest.mark.parametrize(
    ("key", "notice", "twilio_language"),
    [("1", "This call is confidential.", "en-US"), ("2", "Esta llamada es confidencial.", "es-US")],
)
def test_the_confidentiality_notice_is_said_once_in_the_callers_language_inside_the_need_menu(
    phone: Phone, key: str, notice: str, twilio_language: str
) -> None:
    call = phone.call([Keys(key)], hang_up_after_requests=2)

    need_menu = call.last_twiml.find("Gather")
    assert need_menu is not None
    assert call.last_twiml.findall("Say") == []  # all of it inside the <Gather>: keys barge in
    first = need_menu.findall("Say")[0]
    assert (first.text, first.get("language")) == (notice, twilio_language)
    said = [item.text for item in call.heard]
    assert sum("confiden" in text for text in said) == 1


NEEDS_BY_DIGIT = {
    "1": ("danger_now", [UNIT_NORTH]),
    "2": ("suicide", [ANA]),
    "3": ("mental_health", [ANA]),
    "4": ("substance_use", [ANA]),
    "5": ("domestic_violence", [ANA]),
    "6": ("something_else", [ANA]),
}


@pytest.mark.parametrize("digit", sorted(NEEDS_BY_DIGIT))
def test_each_need_by_key_rings_the_on_call_responder_for_it_while_the_caller_holds(
    app: Flask, phone: Phone, fake: FakeTwilio, digit: str
) -> None:
    need, numbers = NEEDS_BY_DIGIT[digit]

    call = phone.call([Keys("2"), Keys(digit)], max_hold_turns=0)

    assert call.ended_by == "on-hold"
    assert rung(fake) == numbers
    leg = fake.get_call(rung_sid(fake, numbers[0]))
    assert leg.from_ == LINE_NUMBER  # the responder never sees the caller's number
    assert leg.timeout == 20
    assert "Por favor, no cuelgue mientras buscamos" in call.heard_text()
    redirect = call.last_twiml.find("Redirect")
    assert redirect is not None
    assert (redirect.text or "").startswith("/voice/hold?transfer=")
    row = call_row(app, call.identity.call_sid)
    assert (row.language, row.need) == ("es", need)
    kinds = [e.kind for e in events_of(app, call.identity.call_sid)]
    assert kinds == [
        "call.started",
        "menu.language.chosen",
        "menu.need.chosen",
        "route.decided",
        "transfer.started",
    ]


@pytest.mark.parametrize(
    ("speech", "need"),
    [
        ("I want to kill myself", "suicide"),
        ("my friend took an overdose", "substance_use"),
        ("I'm having a panic attack", "mental_health"),
        ("I'm not in danger, I just need to talk to someone", "something_else"),
    ],
)
def test_need_is_recognised_from_speech(app: Flask, phone: Phone, speech: str, need: str) -> None:
    call = phone.call([Keys("1"), Words(speech)], max_hold_turns=0)

    assert call_row(app, call.identity.call_sid).need == need
    chosen = next(e for e in events_of(app, call.identity.call_sid) if e.kind == "menu.need.chosen")
    assert chosen.detail["via"] == "speech"
    # The transcript is kept only sealed, never in the plain detail column.
    assert chosen.sealed_detail is not None and speech not in chosen.sealed_detail
    assert speech not in str(chosen.detail)


def test_spanish_speech_is_matched_with_spanish_words_ignoring_accents(app: Flask, phone: Phone) -> None:
    call = phone.call([Keys("2"), Words("tengo panico")], max_hold_turns=0)

    assert call_row(app, call.identity.call_sid).need == "mental_health"


def test_silence_and_bad_keys_reprompt_then_take_the_default_routes(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    call = phone.call([Silence(), Keys("9"), Keys("*"), Silence(), Keys("0"), Words("banana")], max_hold_turns=0)

    paths = call.requested_paths()
    assert paths == [
        "voice/incoming",
        "voice/menu/language?attempt=1",
        "voice/menu/language?attempt=2",
        "voice/menu/language?attempt=3",
        "voice/menu/need?lang=en&attempt=1",
        "voice/menu/need?lang=en&attempt=2",
        "voice/menu/need?lang=en&attempt=3",
    ]
    assert "I didn't hear anything. Take your time." in call.heard_text()
    assert "Sorry, I didn't get that." in call.heard_text()
    assert rung(fake) == [ANA]
    row = call_row(app, call.identity.call_sid)
    assert (row.language, row.need, row.language_attempts, row.need_attempts) == (
        "en",
        "something_else",
        3,
        3,
    )
    kinds = [e.kind for e in events_of(app, call.identity.call_sid)]
    assert kinds.count("menu.language.no_input") == 1
    assert kinds.count("menu.language.invalid") == 1
    assert "menu.language.defaulted" in kinds
    assert "menu.need.defaulted" in kinds


def test_retries_are_configurable(phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]) -> None:
    def no_retries(document: dict[str, Any]) -> None:
        document["menu"]["retries"] = 0

    publish_routing(no_retries)

    call = phone.call([Keys("7"), Keys("8")], max_hold_turns=0)

    assert call.requested_paths()[1:3] == [
        "voice/menu/language?attempt=1",
        "voice/menu/need?lang=en&attempt=1",
    ]
    assert rung(fake) == [ANA]


def test_one_language_line_skips_the_language_menu(
    app: Flask, phone: Phone, publish_routing: Callable[..., int]
) -> None:
    def english_only(document: dict[str, Any]) -> None:
        document["languages"] = document["languages"][:1]
        for need in document["needs"]:
            need["labels"].pop("es")
            need["speech_words"].pop("es")
        for person in document["counselors"] + document["co_responder_units"] + document.get("services", []):
            person["languages"] = ["en"]

    publish_routing(english_only)

    call = phone.call([Keys("2")], max_hold_turns=0)

    first = call.steps[0].twiml
    assert first is not None
    gather = first.find("Gather")
    assert gather is not None
    assert gather.get("action") == "/voice/menu/need?lang=en&attempt=1"
    assert "Para español" not in call.heard_text()
    assert call_row(app, call.identity.call_sid).need == "suicide"


def test_unanswered_responder_rolls_over_to_the_backup_line_then_retry_then_last_resort(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    # One miss pauses a responder here: with nobody else on call for this need, nobody is left
    # who could take the caller, so they move on at once rather than wait in line.
    publish_routing(lambda document: document["transfer"].update(pause_after_missed=1))
    call = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    (ana_leg,) = [c for c in fake.calls.values() if c.to == ANA]

    fake.advance_call(ana_leg.sid, "no-answer")
    phone.resume(call, dial_outcomes=["busy", "failed", "no-answer"])

    assert [d.numbers for d in call.dials] == [["+18002738255"]] * 3
    assert "All of our counselors are helping other callers" in call.heard_text()
    assert "trying again" in call.heard_text()
    assert call.heard[-1].text.startswith("We could not connect your call")
    kinds = [e.kind for e in events_of(app, call.identity.call_sid)]
    assert kinds.count("backup.dialled") == 3
    assert "transfer.to_backup" in kinds
    assert kinds[-1] == "backup.unreachable" or "backup.unreachable" in kinds


def test_backup_line_answering_ends_the_flow(
    phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    publish_routing(lambda document: document["transfer"].update(pause_after_missed=1))
    call = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    fake.advance_call(rung_sid(fake, ANA), "busy")  # a miss: Ana is paused, nobody else is on

    phone.resume(call, dial_outcomes=["completed"])

    assert len(call.dials) == 1
    assert call.ended_by == "hangup"


def rung_sid(fake: FakeTwilio, number: str) -> str:
    return next(c.sid for c in fake.calls.values() if c.to == number and c.direction == "outbound-api")


def test_nobody_on_call_sends_the_caller_to_the_backup_line_with_a_message(phone: Phone) -> None:
    # Sunday 03:00: only Chloe (overnight, no substance-use skill) is on; nobody covers need 4.
    with time_machine.travel(datetime(2026, 12, 6, 3, 0, tzinfo=CHICAGO)):
        call = phone.call([Keys("1"), Keys("4")], dial_outcomes=["completed"])

    assert call.dials[0].numbers == ["+18002738255"]
    assert call.ended_by == "hangup"
    assert "All of our counselors are helping other callers" in call.heard_text()


def test_spanish_caller_is_told_when_only_english_speakers_are_on_call(phone: Phone, fake: FakeTwilio) -> None:
    # Monday 17:00: Ben (English only) is on; Ana's shift has ended and Diego is off.
    with time_machine.travel(datetime(2026, 11, 30, 17, 0, tzinfo=CHICAGO)):
        call = phone.call([Keys("2"), Keys("2")], max_hold_turns=0)

    assert rung(fake) == ["+13125550102"]
    assert "nadie disponible que hable español" in call.heard_text()


def test_system_down_mode_sends_every_caller_straight_to_the_backup_line(
    app: Flask, phone: Phone, publish_routing: Callable[..., int]
) -> None:
    publish_routing(lambda document: document["line"].update(mode="system_down"))

    call = phone.call([], dial_outcomes=["completed"])

    assert call.requested_paths() == ["voice/incoming", "voice/backup-result?lang=en&attempt=1"]
    assert call.heard[0].text.startswith("Our centre cannot take calls right now")
    assert call.dials[0].numbers == ["+18002738255"]
    assert call_row(app, call.identity.call_sid).route == "backup"


def test_a_backup_line_that_answers_and_hangs_up_at_once_is_tried_again(
    app: Flask, phone: Phone, publish_routing: Callable[..., int]
) -> None:
    """A full voicemail box or an auto-attendant saying "we are closed" answers the backup
    ``<Dial>`` and hangs up with our caller still on the line: that was not a conversation."""
    publish_routing(lambda document: document["line"].update(mode="system_down"))

    call = phone.call([], dial_outcomes=[HUNG_UP_AT_ONCE, "completed"])

    assert [dial.numbers for dial in call.dials] == [["+18002738255"], ["+18002738255"]]
    assert "we are trying again" in call.heard_text()
    assert call.requested_paths()[-1] == "voice/backup-result?lang=en&attempt=2"
    assert call.ended_by == "hangup"  # the second answer was a conversation: done


def test_a_backup_line_that_keeps_hanging_up_at_once_ends_with_where_to_turn(
    phone: Phone, publish_routing: Callable[..., int]
) -> None:
    publish_routing(lambda document: document["line"].update(mode="system_down"))

    call = phone.call([], dial_outcomes=[HUNG_UP_AT_ONCE] * 3)

    assert len(call.dials) == 3  # the routing's backup_attempts
    assert "Please call or text 9 8 8 right now" in call.heard[-1].text


def test_blocklisted_caller_gets_a_polite_message_and_the_backup_line(app: Flask, phone: Phone) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["blocklist", "add", "(312) 555-0166"])
    assert result.output.strip() == "blocked"

    call = phone.call([], identity=phone.identity("+13125550166"), dial_outcomes=["completed"])

    assert call.heard[0].text == "We are connecting you to our partner crisis line. Please stay on the line."
    assert call.dials[0].numbers == ["+18002738255"]
    assert call_row(app, call.identity.call_sid).route == "blocked"


def test_unblocked_caller_is_not_affected_by_the_blocklist(app: Flask, phone: Phone) -> None:
    app.test_cli_runner().invoke(args=["blocklist", "add", "+13125550166"])

    call = phone.call([], hang_up_after_requests=1)

    assert call.last_twiml.find("Gather") is not None


def test_caller_number_is_stored_only_encrypted_and_hashed(app: Flask, phone: Phone) -> None:
    call = phone.call([], identity=phone.identity("+13125550177"), hang_up_after_requests=1)

    row = call_row(app, call.identity.call_sid)
    assert row.sealed_caller is not None and "5550177" not in row.sealed_caller
    assert row.caller_hash is not None and "5550177" not in row.caller_hash
    with app.app_context():
        vault = app.extensions["crisisline.vault"]
        assert vault.open(row.sealed_caller, context="phone") == "+13125550177"


def test_withheld_caller_id_is_routed_normally(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    call = phone.call([Keys("1"), Keys("2")], identity=phone.identity("anonymous"), max_hold_turns=0)

    assert rung(fake) == [ANA]
    assert call_row(app, call.identity.call_sid).caller_hash is None


def test_fallback_url_dials_the_backup_number_from_settings(phone: Phone) -> None:
    call = phone.call([], path="/voice/fallback", dial_outcomes=["no-answer", "completed"])

    dials = call.last_twiml.findall("Dial")
    assert [d.text for d in dials] == [TEST_BACKUP_NUMBER, TEST_BACKUP_NUMBER]
    assert call.ended_by == "end-of-twiml"


def test_a_backup_dial_ending_because_the_caller_hung_up_is_not_tried_again(
    app: Flask, phone: Phone, publish_routing: Callable[..., int]
) -> None:
    """Twilio requests the ``<Dial>``'s action even when the caller hung up while the backup line
    rang (``CallStatus=completed``): nobody is there to try again for, nor to call unreachable."""
    publish_routing(lambda document: document["line"].update(mode="system_down"))
    call = phone.call([], dial_outcomes=["no-answer"], hang_up_after_requests=1)
    hung_up = call.identity.voice_params("completed", DialCallStatus="no-answer", DialCallSid="CA" + "1" * 32)

    reply = phone.post(phone.base_url + "/voice/backup-result?lang=en&attempt=1", hung_up)

    assert "<Dial" not in reply.body and "<Say" not in reply.body
    with app.app_context():
        kinds = list(db.session.scalars(select(CallEvent.kind).order_by(CallEvent.id)))
    assert kinds.count("backup.dialled") == 1
    assert "backup.unreachable" not in kinds
    assert "backup.result" in kinds  # what the backup line did is still recorded
