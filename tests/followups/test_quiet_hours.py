"""Quiet hours: no check-in or survey text reaches a person at night; one due then goes when
they end, while a flag to the supervisors on call keeps its time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
import yaml
from flask import Flask

from crisisline.settings import DEFAULT_ROUTING_FILE
from routing.schedule import after_quiet_hours
from routing.validation import load_document, validate_text
from tests.conftest import TextingPhone
from tests.followups.conftest import checkins, contacts
from tests.followups.test_checkins import CHECKIN_EN, TEXTER, consent_by_text
from workers.clock import run_due_contacts

CHICAGO = ZoneInfo("America/Chicago")
HOURS = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def quiet(start: str, end: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["followups"]["quiet_hours"] = {"start": start, "end": end}

    return change


def test_a_check_in_falling_due_at_night_waits_for_the_end_of_the_quiet_hours(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(quiet("21:00", "08:00"))
    consent_by_text(app, texting)  # Wednesday 17:00 in Chicago; suicide: 12 h, so 05:00 Thursday

    (checkin,) = checkins(app)
    assert checkin.due_at is not None
    assert checkin.due_at.astimezone(CHICAGO).replace(tzinfo=None) == datetime(2026, 12, 3, 8, 0)
    wednesday_evening.shift(15 * HOURS - MINUTE)  # 07:59 Thursday
    assert run_due() == []
    wednesday_evening.shift(2 * MINUTE)
    assert run_due() == ["sent"]
    assert texting.inbox(TEXTER)[-1] == CHECKIN_EN


def test_the_second_check_in_text_waits_out_quiet_hours_but_the_supervisors_flag_does_not(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    # Quiet in the late morning: the first text (05:00) goes, the second (09:00) waits to 11:00,
    # and the flag, 4 h later at 15:00, falls in the afternoon's quiet hours and goes anyway.
    publish_routing(lambda d: d["followups"].update(quiet_hours={"start": "08:30", "end": "11:00"}))
    consent_by_text(app, texting)
    wednesday_evening.shift(12 * HOURS + MINUTE)
    assert run_due() == ["sent"]

    wednesday_evening.shift(4 * HOURS)  # 09:01
    assert run_due() == []
    wednesday_evening.shift(2 * HOURS)  # 11:01
    assert run_due() == ["sent"]
    assert checkins(app)[0].state == "second_sent"

    publish_routing(quiet("14:00", "20:00"))
    wednesday_evening.shift(4 * HOURS)  # 15:01, inside the new quiet hours
    assert run_due() == ["sent"]  # the flag, to the supervisors
    assert checkins(app)[0].state == "flagged"


def test_a_survey_due_in_quiet_hours_waits_for_their_end(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(lambda d: d["followups"].update(survey=True, quiet_hours={"start": "17:30", "end": "19:00"}))
    consent_by_text(app, texting)  # 17:00: the survey, an hour later, falls at 18:00

    wednesday_evening.shift(90 * MINUTE)
    assert run_due() == []
    wednesday_evening.shift(35 * MINUTE)  # 19:05
    assert run_due() == ["sent"]


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (datetime(2026, 12, 2, 20, 59), datetime(2026, 12, 2, 20, 59)),  # before: unchanged
        (datetime(2026, 12, 2, 21, 0), datetime(2026, 12, 3, 8, 0)),  # evening part: tomorrow
        (datetime(2026, 12, 3, 3, 0), datetime(2026, 12, 3, 8, 0)),  # early hours: today
        (datetime(2026, 12, 3, 8, 0), datetime(2026, 12, 3, 8, 0)),  # the end itself is not quiet
        # A daylight-saving night (Chicago, 8 March 2026): 08:00 is still 08:00 on the wall.
        (datetime(2026, 3, 8, 1, 30), datetime(2026, 3, 8, 8, 0)),
    ],
)
def test_quiet_hours_past_midnight_move_a_time_to_their_end_on_the_right_day(
    local: datetime, expected: datetime
) -> None:
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    raw["followups"]["quiet_hours"] = {"start": "21:00", "end": "08:00"}
    document = load_document(yaml.safe_dump(raw))

    moved = after_quiet_hours(document, local.replace(tzinfo=CHICAGO))

    assert moved.astimezone(CHICAGO).replace(tzinfo=None) == expected


def test_the_repeated_hour_of_the_night_the_clocks_go_back_is_quiet_both_times() -> None:
    """2026-11-01 in Chicago: 01:00-02:00 comes twice. A check-in due at the second 01:15 (CST)
    waited for an end computed in the first pass, an hour in the past, and went at once
    (found by a bug hunt; compared in UTC, where ``fold`` counts)."""
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    raw["followups"]["quiet_hours"] = {"start": "21:00", "end": "01:30"}
    document = load_document(yaml.safe_dump(raw))
    utc = ZoneInfo("UTC")

    for fold in (0, 1):
        moment = datetime(2026, 11, 1, 1, 15, fold=fold, tzinfo=CHICAGO)
        moved = after_quiet_hours(document, moment).astimezone(utc)
        assert moved > moment.astimezone(utc)
        assert moved - moment.astimezone(utc) == timedelta(minutes=15)  # 01:30 of the same pass


def test_quiet_hours_ending_in_the_hour_the_clocks_skip_end_after_it_never_before() -> None:
    """2026-03-08 in Chicago: 02:00 becomes 03:00, so an end of 02:30 does not exist; read with
    the later offset it came out at 01:30, still inside the quiet hours (found by review)."""
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    raw["followups"]["quiet_hours"] = {"start": "21:00", "end": "02:30"}
    document = load_document(yaml.safe_dump(raw))

    moved = after_quiet_hours(document, datetime(2026, 3, 8, 1, 15, tzinfo=CHICAGO))

    assert moved.astimezone(CHICAGO).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 30)


@pytest.mark.parametrize(
    ("quiet_hours", "message"),
    [
        ({"start": "21:00", "end": "21:00"}, "start and end are the same time"),
        ({"start": "9pm", "end": "08:00"}, "is not a time of day"),
        ({"start": "21:00"}, "missing"),
        ({"start": "21:00", "end": "08:00", "days": "weekdays"}, "unknown key"),
        ("21:00-08:00", "must be a mapping"),
    ],
)
def test_quiet_hours_that_cannot_be_read_are_refused_at_their_line(quiet_hours: object, message: str) -> None:
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    raw["followups"]["quiet_hours"] = quiet_hours

    document, problems = validate_text(yaml.safe_dump(raw))

    assert document is None
    assert any(p.path.startswith("followups.quiet_hours") and message in p.message for p in problems), problems


# --- quiet hours are kept when a text goes, not only when it was scheduled ----------------------


def pending_due_local(app: Flask, kind: str) -> list[datetime]:
    """When each pending contact of ``kind`` is due, on the line's wall clock (Chicago), to the
    minute (the travelled clock ticks)."""
    return [
        contact.due_at.astimezone(CHICAGO).replace(tzinfo=None, second=0, microsecond=0)
        for contact in contacts(app)
        if contact.kind == kind and contact.state == "pending"
    ]


def test_a_check_in_due_before_the_quiet_hours_that_no_worker_sent_in_time_waits_for_their_end(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """Due 21:50, quiet from 22:00: the workers were down and the clock runs it at 02:30. It
    was texted then, waking the person; it waits for 08:00 now, and goes then, once."""

    def change(document: dict[str, Any]) -> None:
        quiet("22:00", "08:00")(document)
        document["followups"]["checkin_after_hours"]["suicide"] = "4h50m"

    publish_routing(change)
    consent_by_text(app, texting)  # Wednesday 17:00 in Chicago: due 21:50, before the quiet hours
    assert pending_due_local(app, "checkin") == [datetime(2026, 12, 2, 21, 50)]
    before = len(texting.inbox(TEXTER))

    wednesday_evening.shift(9 * HOURS + 30 * MINUTE)  # 02:30 Thursday: a worker is back
    with app.app_context():
        assert run_due_contacts() == {"postponed": 1}  # the clock's own run of overdue contacts

    assert len(texting.inbox(TEXTER)) == before  # nothing texted at 02:30
    assert checkins(app)[0].state == "consented"
    assert pending_due_local(app, "checkin") == [datetime(2026, 12, 3, 8, 0)]
    assert run_due() == []  # nothing else due meanwhile, and the postponed one not twice

    wednesday_evening.shift(5 * HOURS + 31 * MINUTE)  # 08:01
    assert run_due() == ["sent"]
    assert texting.inbox(TEXTER)[before:] == [CHECKIN_EN]
    assert checkins(app)[0].state == "sent"


def test_quiet_hours_set_after_a_check_in_was_scheduled_hold_its_text_back(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing()  # no quiet hours when they agree
    consent_by_text(app, texting)  # Wednesday 17:00: due 05:00 Thursday
    assert pending_due_local(app, "checkin") == [datetime(2026, 12, 3, 5, 0)]
    before = len(texting.inbox(TEXTER))
    publish_routing(quiet("22:00", "08:00"))  # an administrator sets them that evening

    wednesday_evening.shift(12 * HOURS + MINUTE)  # 05:01
    assert run_due() == ["postponed"]

    assert len(texting.inbox(TEXTER)) == before
    assert pending_due_local(app, "checkin") == [datetime(2026, 12, 3, 8, 0)]
    wednesday_evening.shift(3 * HOURS)  # 08:01
    assert run_due() == ["sent"]
    assert texting.inbox(TEXTER)[before:] == [CHECKIN_EN]


def test_a_survey_question_overdue_into_the_quiet_hours_waits_for_their_end(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(lambda d: d["followups"].update(survey=True))
    consent_by_text(app, texting)  # 17:00: the survey is due at 18:00
    before = len(texting.inbox(TEXTER))
    publish_routing(lambda d: d["followups"].update(survey=True, quiet_hours={"start": "22:00", "end": "08:00"}))

    wednesday_evening.shift(6 * HOURS)  # 23:00, no worker ran it at 18:00
    assert run_due() == ["postponed"]

    assert len(texting.inbox(TEXTER)) == before
    assert pending_due_local(app, "survey") == [datetime(2026, 12, 3, 8, 0)]
    wednesday_evening.shift(9 * HOURS + MINUTE)  # 08:01: the check-in (05:00) and the survey
    assert sorted(run_due()) == ["sent", "sent"]
    assert len(texting.inbox(TEXTER)) == before + 2
