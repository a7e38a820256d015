"""Exports are aggregates with small counts withheld; ``flask metrics report`` and
``flask metrics staffing`` on calls driven through the real line."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from flask import Flask

from metrics.compute import report
from metrics.export import suppressed_row, to_csv, to_json, to_table
from metrics.facts import ABANDONED, ANSWERED, Contact, Facts, Period
from tests.metrics.test_voice_metrics import MENTAL_HEALTH, answered_by, caller, hang_up_together
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio

CHICAGO = ZoneInfo("America/Chicago")
DAY = Period(date(2026, 12, 2), date(2026, 12, 3))
NOON = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)


def contacts(answered: int, abandoned: int, language: str = "en") -> list[Contact]:
    made = [Contact("voice", NOON, language, "suicide", True, ANSWERED, speed_to_answer_seconds=20.0)] * answered
    return made + [Contact("voice", NOON, language, "suicide", True, ABANDONED, waited_seconds=60.0)] * abandoned


def test_counts_under_the_threshold_and_values_computed_over_them_are_withheld() -> None:
    facts = Facts(contacts=(*contacts(9, 1), *contacts(2, 1, "es")), timezone=CHICAGO)
    result = report(facts, DAY, "voice", "language")
    rows = {row.group: suppressed_row(row, result.metrics(), 5) for row in result.rows}

    assert (rows["all"]["offered"], rows["all"]["answered"], rows["all"]["abandoned"]) == (13, 11, None)
    assert rows["all"]["answer_rate"] == pytest.approx(11 / 13)
    assert rows["en"]["answered"] == 9 and rows["en"]["speed_to_answer_mean"] == 20.0
    # Spanish: 3 contacts. Every count under 5, and every rate or time over them, is withheld.
    assert rows["es"]["offered"] is None and rows["es"]["answered"] is None
    assert rows["es"]["answer_rate"] is None and rows["es"]["speed_to_answer_mean"] is None
    assert rows["es"]["to_backup"] == 0  # zero singles nobody out


def test_csv_and_json_exports_suppress_and_the_table_shows_what_it_suppresses_only_when_asked() -> None:
    result = report(Facts(contacts=tuple(contacts(6, 2)), timezone=CHICAGO), DAY, "voice")

    (line,) = list(csv.DictReader(io.StringIO(to_csv(result))))
    document = json.loads(to_json(result))
    assert (line["offered"], line["answered"], line["abandoned"], line["abandonment_rate"]) == ("8", "6", "", "")
    assert line["answer_rate"] == "0.75"
    (row,) = document["rows"]
    assert row["values"]["abandoned"] is None and "abandoned" in row["suppressed"]
    assert document["min_count"] == 5 and document["definitions"] == "docs/metrics.md"
    assert "Abandoned  " in to_table(result) and "<5" in to_table(result, min_count=5)
    assert json.loads(to_json(result, min_count=1))["rows"][0]["values"]["abandoned"] == 2


def test_a_withheld_group_cannot_be_worked_out_as_all_minus_the_groups_shown() -> None:
    # Spanish: 2 contacts, withheld. Without more, all (30) - English (20) - French (8) = 2.
    facts = Facts(contacts=(*contacts(20, 0, "en"), *contacts(2, 0, "es"), *contacts(7, 1, "fr")), timezone=CHICAGO)
    result = report(facts, DAY, "voice", "language")

    rows = {line["group"]: line for line in csv.DictReader(io.StringIO(to_csv(result)))}
    document = {row["group"]: row for row in json.loads(to_json(result))["rows"]}

    assert (rows["all"]["offered"], rows["en"]["offered"]) == ("30", "20")
    assert rows["es"]["offered"] == ""  # small
    assert rows["fr"]["offered"] == ""  # the next-smallest, withheld with it: es + fr = 10, any split
    assert rows["fr"]["answer_rate"] == "" and rows["fr"]["speed_to_answer_mean"] == ""  # computed over it
    assert rows["en"]["answer_rate"] == "1.0"
    assert "offered" in document["fr"]["suppressed"] and document["fr"]["values"]["offered"] is None
    # Abandoned: French's 1 is withheld, and so is all's (the same 1); zeros single nobody out.
    assert (rows["all"]["abandoned"], rows["fr"]["abandoned"], rows["en"]["abandoned"]) == ("", "", "0")
    table = to_table(result, min_count=5)
    assert "<5" in table and "*" in table and "cannot be worked out" in table


def test_two_small_groups_are_not_each_given_away_by_their_sum() -> None:
    # 1 and 1 withheld with 22 - 20 shown would be 2: both 1. The 20 is withheld too.
    facts = Facts(contacts=(*contacts(20, 0, "en"), *contacts(1, 0, "es"), *contacts(1, 0, "fr")), timezone=CHICAGO)
    result = report(facts, DAY, "voice", "language")

    rows = {line["group"]: line for line in csv.DictReader(io.StringIO(to_csv(result)))}

    assert rows["all"]["offered"] == "22"
    assert (rows["en"]["offered"], rows["es"]["offered"], rows["fr"]["offered"]) == ("", "", "")


def test_a_report_without_small_groups_withholds_nothing() -> None:
    facts = Facts(contacts=(*contacts(20, 5, "en"), *contacts(6, 0, "es")), timezone=CHICAGO)
    result = report(facts, DAY, "voice", "language")

    rows = {line["group"]: line for line in csv.DictReader(io.StringIO(to_csv(result)))}

    assert (rows["all"]["offered"], rows["en"]["offered"], rows["es"]["offered"]) == ("31", "25", "6")
    assert (rows["en"]["abandoned"], rows["es"]["abandoned"]) == ("5", "0")
    assert "*" not in to_table(result, min_count=5)


@pytest.fixture
def two_calls(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Traveller, clean_redis: object
) -> None:
    """One caller answered after 12 s, one who hung up after 40 s."""
    first = caller(phone, 21, MENTAL_HEALTH, max_hold_turns=0)
    wednesday_evening.shift(timedelta(seconds=12))
    hang_up_together(phone, first, answered_by(phone, fake, first))
    waiting = caller(phone, 22, MENTAL_HEALTH, max_hold_turns=0)
    wednesday_evening.shift(timedelta(seconds=40))
    phone.hang_up(waiting)


def run_cli(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["metrics", *args])
    assert result.exit_code == 0, result.output
    return result.output


REPORT = ("report", "--from", "2026-12-02", "--to", "2026-12-03")


@pytest.mark.usefixtures("two_calls")
def test_cli_csv_withholds_small_counts_by_default_and_shows_them_with_min_count_1(app: Flask) -> None:
    (withheld,) = list(csv.DictReader(io.StringIO(run_cli(app, *REPORT, "--format", "csv"))))
    (shown,) = list(csv.DictReader(io.StringIO(run_cli(app, *REPORT, "--format", "csv", "--min-count", "1"))))

    assert (withheld["channel"], withheld["group"], withheld["offered"], withheld["answer_rate"]) == (
        "voice",
        "all",
        "",
        "",
    )
    assert (shown["offered"], shown["answered"], shown["abandoned"], shown["answer_rate"]) == ("2", "1", "1", "0.5")
    assert 12 <= float(shown["speed_to_answer_mean"]) < 20


@pytest.mark.usefixtures("two_calls")
def test_cli_json_by_hour_has_one_row_for_the_evening_and_no_personal_data(app: Flask) -> None:
    output = run_cli(app, *REPORT, "--format", "json", "--by", "hour", "--min-count", "1")
    document = json.loads(output)

    assert [row["group"] for row in document["rows"]] == ["all", "17"]  # 17:00 in Chicago
    assert document["rows"][1]["values"]["offered"] == 2
    assert "+1312" not in output and "CA" not in output.replace("CALL", "")  # no number, no call id


@pytest.mark.usefixtures("two_calls")
def test_cli_table_and_staffing(app: Flask) -> None:
    table = run_cli(app, *REPORT, "--channel", "voice")
    staffing = run_cli(app, "staffing", "--weeks", "1", "--to", "2026-12-03")

    assert "Contacts offered" in table and "times in America/Chicago" in table
    wednesday = next(line for line in staffing.splitlines() if line.startswith("Wed"))
    assert "2.0/3" in wednesday  # two contacts at 17h; Ben, Diego and the unit on shift


def test_cli_refuses_a_period_that_ends_before_it_starts(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["metrics", "report", "--from", "2026-12-03", "--to", "2026-12-02"])
    assert result.exit_code != 0 and "--to must be after --from" in result.output
