"""Time to a human: the seconds of prompts before the first counselor's phone rings.

Targets (issue 9) on the example routing: at most 20 s for a caller who answers each menu
when it ends, at most 8 s for one who presses keys during the prompts. The numbers are
checked from the module, from ``flask routing timing``'s output, and against the sentences
the voice webhooks actually answer with.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
import yaml
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call
from crisisline.settings import DEFAULT_ROUTING_FILE
from routing.document import RoutingDocument
from routing.timing import PathTiming, before_ring, path_timings
from routing.validation import load_document
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

FOLLOWING_TARGET = 20.0
BARGE_IN_TARGET = 8.0
ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\d+\.\d)\s+(\d+\.\d)(\s+over the limit)?$")
WEDNESDAY_MORNING = datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("America/Chicago"))
ANA = "+13125550101"


def example() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    return loaded


def document_of(raw: dict[str, Any]) -> RoutingDocument:
    return load_document(yaml.safe_dump(raw, allow_unicode=True))


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def rows_of(output: str) -> list[PathTiming]:
    rows = []
    for line in output.splitlines():
        match = ROW.match(line.strip())
        if match:
            rows.append(PathTiming(match[1], match[2], float(match[3]), float(match[4])))
    return rows


def with_old_prompts(raw: dict[str, Any]) -> None:
    """The example's menus as they were before issue 9 (long intro, "For X, press N")."""
    english, spanish = raw["languages"]
    english["prompts"].update(
        greeting="Thank you for calling the Riverside County Crisis Line.",
        confidentiality="This call is confidential. If you are in immediate danger, you can also call 9 1 1.",
        need_menu_intro="So we can connect you with the right person, tell us what is happening, or press a number.",
        need_option="For {label}, press {digit}.",
    )
    spanish["prompts"].update(
        need_menu_intro="Para conectarle con la persona adecuada, díganos qué está pasando u oprima un número.",
        need_option="Para {label}, oprima {digit}.",
    )


# --- the module -------------------------------------------------------------------------------


def test_every_path_of_the_example_routing_meets_the_targets() -> None:
    document = load_document(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))

    paths = path_timings(document)

    assert {(p.language, p.need) for p in paths} == {
        (language.code, need.key) for language in document.languages for need in document.needs
    }
    for path in paths:
        assert 0 < path.following_seconds <= FOLLOWING_TARGET, path
        assert path.barge_in_seconds <= BARGE_IN_TARGET, path


def test_seconds_are_the_words_said_at_the_given_speed() -> None:
    document = load_document(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    english = document.language("en")
    words = sum(len(spoken.text.split()) for spoken in before_ring(document, english))

    assert path_timings(document)[0].following_seconds == round(words / 2.5, 1)
    assert path_timings(document, words_per_second=5)[0].following_seconds == round(words / 5, 1)


def test_the_old_example_prompts_were_over_the_target() -> None:
    raw = example()
    with_old_prompts(raw)

    assert all(path.following_seconds > FOLLOWING_TARGET for path in path_timings(document_of(raw)))


def test_the_confidentiality_notice_is_counted_once_in_the_callers_language() -> None:
    document = load_document(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))

    spanish = [spoken.text for spoken in before_ring(document, document.language("es"))]

    assert spanish.count("Esta llamada es confidencial.") == 1
    assert not any("This call is confidential" in text for text in spanish)


def test_without_the_need_menu_only_the_language_menu_comes_before_the_ring() -> None:
    raw = example()
    raw["menu"]["ask_need"] = False
    document = document_of(raw)

    paths = path_timings(document)

    assert {p.need for p in paths} == {"something_else"}
    # "Riverside County Crisis Line." "For English, press 1." "Para español, oprima 2.": 12 words.
    assert all(p.following_seconds == round(12 / 2.5, 1) for p in paths)


def test_a_one_language_line_without_the_need_menu_rings_on_arrival() -> None:
    raw = example()
    raw["languages"] = raw["languages"][:1]
    raw["menu"]["ask_need"] = False
    for need in raw["needs"]:
        need["labels"].pop("es")
        need["speech_words"].pop("es")
    for person in raw["counselors"] + raw["co_responder_units"]:
        person["languages"] = ["en"]

    assert path_timings(document_of(raw)) == [PathTiming("en", "something_else", 0.0, 0.0)]


# --- flask routing timing / check ----------------------------------------------------------


def test_timing_command_prints_every_path_within_the_targets(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["routing", "timing", str(DEFAULT_ROUTING_FILE)])

    assert result.exit_code == 0, result.output
    assert "2.5 words a second, limit 20 s" in result.output
    rows = rows_of(result.output)
    assert rows == path_timings(load_document(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8")))
    assert len(rows) == 12
    assert all(row.following_seconds <= FOLLOWING_TARGET for row in rows)
    assert all(row.barge_in_seconds <= BARGE_IN_TARGET for row in rows)
    assert "over the limit" not in result.output


def test_timing_command_reads_the_active_routing_without_a_path(app: Flask) -> None:
    runner = app.test_cli_runner()

    active = runner.invoke(args=["routing", "timing"])
    from_file = runner.invoke(args=["routing", "timing", str(DEFAULT_ROUTING_FILE)])

    assert active.exit_code == 0
    assert rows_of(active.output) == rows_of(from_file.output) != []


def test_timing_command_takes_the_speaking_speed(app: Flask) -> None:
    runner = app.test_cli_runner()

    normal = rows_of(runner.invoke(args=["routing", "timing", str(DEFAULT_ROUTING_FILE)]).output)
    fast = rows_of(
        runner.invoke(args=["routing", "timing", str(DEFAULT_ROUTING_FILE), "--words-per-second", "5"]).output
    )

    assert [row.following_seconds for row in fast] == [round(row.following_seconds / 2, 1) for row in normal]


def test_timing_command_marks_slow_paths_and_check_warns_about_them(app: Flask, tmp_path: Path) -> None:
    raw = example()
    with_old_prompts(raw)
    path = write(tmp_path, raw)
    runner = app.test_cli_runner()

    timing = runner.invoke(args=["routing", "timing", str(path)])
    check = runner.invoke(args=["routing", "check", str(path)])

    assert timing.exit_code == 0
    assert all(line.endswith("over the limit") for line in timing.output.splitlines()[2:])
    assert check.exit_code == 0  # a warning, not an error
    warnings = [line for line in check.output.splitlines() if "warning: menu.max_seconds_to_ring" in line]
    assert len(warnings) == 2  # one per language
    assert "English-speaking callers who follow the menus hear" in warnings[0]


def test_check_warns_past_a_configured_limit_and_not_before(app: Flask, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    shipped = runner.invoke(args=["routing", "check", str(DEFAULT_ROUTING_FILE)])
    raw = example()
    raw["menu"]["max_seconds_to_ring"] = 10

    strict = runner.invoke(args=["routing", "check", str(write(tmp_path, raw))])

    assert "warning: menu.max_seconds_to_ring" not in shipped.output
    assert strict.exit_code == 0
    assert strict.output.count("warning: menu.max_seconds_to_ring") == 2
    assert "(limit 10 s)" in strict.output


def test_check_warns_when_the_default_need_would_ring_a_unit_unasked(app: Flask, tmp_path: Path) -> None:
    raw = example()
    raw["menu"]["default_need"] = "danger_now"

    result = app.test_cli_runner().invoke(args=["routing", "check", str(write(tmp_path, raw))])

    assert "warning: menu.default_need: 'danger_now' rings co-responder units" in result.output


def test_timing_command_refuses_an_invalid_file(app: Flask, tmp_path: Path) -> None:
    raw = example()
    raw["menu"]["max_seconds_to_ring"] = 1

    result = app.test_cli_runner().invoke(args=["routing", "timing", str(write(tmp_path, raw))])

    assert result.exit_code == 1
    assert "menu.max_seconds_to_ring: must be between 5 and 120, not 1" in result.output


# --- what the webhooks say ------------------------------------------------------------------


@pytest.mark.parametrize(("key", "code"), [("1", "en"), ("2", "es")])
def test_the_timing_counts_exactly_what_the_webhooks_say_before_the_ring(
    app: Flask, phone: Phone, fake: FakeTwilio, key: str, code: str
) -> None:
    document = load_document(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    with time_machine.travel(WEDNESDAY_MORNING, tick=True):
        call = phone.call([Keys(key), Keys("3")], max_hold_turns=0)

    before_the_choice = [step.twiml for step in call.steps[:2]]
    said = [
        (say.text, say.get("language")) for twiml in before_the_choice if twiml is not None for say in twiml.iter("Say")
    ]
    outside = [say for twiml in before_the_choice if twiml is not None for say in twiml.findall("Say")]
    script = before_ring(document, document.language(code))
    assert said == [(spoken.text, spoken.language.twilio_language) for spoken in script]
    assert outside == [] and all(spoken.in_gather for spoken in script)
    # Rung by the need webhook itself: nothing more is said before the ring.
    assert [leg.to for leg in fake.calls.values() if leg.direction == "outbound-api"] == [ANA]


def test_the_greeting_is_nested_in_the_first_gather(app: Flask, phone: Phone) -> None:
    call = phone.call([], hang_up_after_requests=1)

    first = call.last_twiml[0]
    assert first.tag == "Gather"
    assert (first[0].tag, first[0].text) == ("Say", "Riverside County Crisis Line.")


def test_without_the_need_menu_the_phone_rings_as_soon_as_the_language_is_known(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    publish_routing(lambda raw: raw["menu"].update(ask_need=False))

    with time_machine.travel(WEDNESDAY_MORNING, tick=True):
        call = phone.call([Keys("2")], max_hold_turns=0)

    assert call.requested_paths()[:2] == ["voice/incoming", "voice/menu/language?attempt=1"]
    assert [leg.to for leg in fake.calls.values() if leg.direction == "outbound-api"] == [ANA]
    # The notice is still said once, in Spanish, while the phone rings.
    assert call.heard[-2].text.startswith("Esta llamada es confidencial")
    with app.app_context():
        row = db.session.scalars(select(Call).where(Call.call_sid == call.identity.call_sid)).one()
        assert (row.language, row.need) == ("es", "something_else")
        assert "menu.need.not_asked" in [event.kind for event in row.events]
