"""Issue 11, the routing config: duplicate keys refused, every problem at its YAML line,
unknown voices, whole-day shifts, durations with units, and the warnings that need more than
the text (past overrides, coverage gaps, two backup numbers)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import pytest
import yaml

from crisisline.settings import DEFAULT_ROUTING_FILE
from routing.review import check_text
from routing.schedule import is_on_call
from routing.validation import InvalidRoutingDocument, Problem, load_document, parse_duration, validate_text
from tests.rota import around_the_clock

EXAMPLE = DEFAULT_ROUTING_FILE.read_text(encoding="utf-8")
BEFORE_THE_EXAMPLE_OVERRIDES = datetime(2026, 11, 1, tzinfo=UTC)
AFTER_THE_EXAMPLE_OVERRIDES = datetime(2027, 1, 15, tzinfo=UTC)
BACKUP_KEY = '  backup_number: "'  # the key itself, not the comments that name it


def line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    """1-based number of the line holding the ``occurrence``-th ``fragment``."""
    found = [number for number, line in enumerate(text.splitlines(), start=1) if fragment in line]
    return found[occurrence - 1]


def errors_of(text: str) -> list[Problem]:
    document, problems = validate_text(text)
    errors = [problem for problem in problems if problem.severity == "error"]
    assert document is None and errors, "expected the text to be refused"
    return errors


def example() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(EXAMPLE)
    return loaded


def dump(raw: dict[str, Any]) -> str:
    return yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)


# --- duplicate keys ---------------------------------------------------------------------------


def test_a_second_backup_number_is_refused_at_its_line() -> None:
    first = '  backup_number: "+1 800 273 8255"'
    text = EXAMPLE.replace(first, f'{first}\n  backup_number: "+1 312 555 0199"')

    (error,) = errors_of(text)

    assert error.path == "line.backup_number"
    assert error.line == line_of(text, BACKUP_KEY, 2) and error.column == 3
    assert f"first at line {line_of(text, BACKUP_KEY)}" in error.message


def test_a_second_overrides_block_is_refused_not_silently_merged() -> None:
    anchor = '    overrides:\n      - {start: "2026-12-24T08:00", end: "2026-12-26T08:00", on_call: false}'
    assert anchor in EXAMPLE
    second = '\n    overrides:\n      - {start: "2026-12-31T08:00", end: "2027-01-01T08:00", on_call: false}'
    text = EXAMPLE.replace(anchor, anchor + second)

    (error,) = errors_of(text)

    assert error.path == "counselors[0].overrides"
    assert error.line == line_of(text, "    overrides:", 2)
    assert "appears twice" in error.describe()


def test_a_duplicate_key_deep_inside_a_list_is_refused_too() -> None:
    text = EXAMPLE.replace("    digit: 2\n    name: Español", "    digit: 2\n    digit: 3\n    name: Español")

    assert [error.path for error in errors_of(text)] == ["languages[1].digit"]


def test_a_published_version_with_a_duplicate_key_still_loads_for_the_live_line() -> None:
    text = EXAMPLE.replace("  mode: normal", "  mode: normal\n  mode: normal")

    with pytest.raises(InvalidRoutingDocument):
        load_document(text)
    assert load_document(text, strict=False).mode == "normal"


# --- every problem at its line ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "path", "value", "occurrence"),
    [
        ('"+1 312 555 0103"', '"12"', "counselors[2].phone", '"12"', 1),
        ("    digit: 2\n    name: Español", "    digit: 1\n    name: Español", "languages[1].digit", "digit: 1", 2),
        ("  retries: 2 ", "  retries: 40 ", "menu.retries", "retries: 40", 1),
        ('start: "16:00", end: "24:00"', 'start: "4pm", end: "24:00"', "counselors[1].shifts[0].start", '"4pm"', 1),
    ],
)
def test_each_problem_carries_the_line_and_column_of_its_value(
    old: str, new: str, path: str, value: str, occurrence: int
) -> None:
    text = EXAMPLE.replace(old, new, 1)

    (error,) = [problem for problem in errors_of(text) if problem.path == path]

    line = line_of(text, value, occurrence)
    assert error.line == line
    assert error.column == text.splitlines()[line - 1].index(value.split(": ")[-1]) + 1
    assert error.describe().startswith(f"line {line}, column {error.column}: {path}: ")


def test_a_missing_key_is_placed_at_the_mapping_it_is_missing_from() -> None:
    text = EXAMPLE.replace("    name: Chloe Nguyen\n", "", 1)

    (error,) = errors_of(text)

    assert error.path == "counselors[2].name" and error.message == "missing"
    assert error.line == line_of(text, "id: chloe-nguyen")


def test_a_yaml_syntax_error_keeps_its_line_and_column() -> None:
    (error,) = errors_of("line:\n  name: [unclosed\n")

    assert (error.line, error.path) == (3, "")
    assert error.describe().startswith("line 3, column 1: YAML syntax error")


def test_a_text_nested_too_deeply_is_refused_with_a_clear_error() -> None:
    (error,) = errors_of("line: " + "[" * 5000 + "]" * 5000)

    assert error.describe() == "YAML error: nested too deeply"


# --- voices -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voice", "expected"),
    [
        ("Polly.Joana", "'Polly.Joana' is not an Amazon Polly voice (for es-US: Polly.Lupe, Polly.Miguel"),
        ("Polly.Joanna", "Polly.Joanna speaks en-US, not es-US"),
        ("Google.en-US-Neural2-F", "Google.en-US-Neural2-F speaks en-US, not es-US"),
        ("Lupe", "'Lupe' is not a Twilio voice name like 'Polly.Joanna'"),
    ],
)
def test_a_voice_that_does_not_speak_its_language_is_refused(voice: str, expected: str) -> None:
    text = EXAMPLE.replace("voice: Polly.Lupe", f"voice: {voice}")

    (error,) = errors_of(text)

    assert error.path == "languages[1].voice"
    assert expected in error.message
    assert error.line == line_of(text, f"voice: {voice}", 2 if voice == "Polly.Joanna" else 1)


@pytest.mark.parametrize("voice", ["Polly.Lupe-Neural", "Polly.Penelope", "Google.es-US-Neural2-A", None])
def test_real_voices_for_the_language_are_accepted(voice: str | None) -> None:
    raw = example()
    raw["languages"][1]["voice"] = voice  # None: Twilio's default voice for the account

    document, problems = validate_text(dump(raw))

    assert document is not None, [str(p) for p in problems]
    assert not [p for p in problems if p.path == "languages[1].voice"]


def test_a_voice_of_another_country_is_only_a_warning() -> None:
    raw = example()
    raw["languages"][1]["voice"] = "Polly.Mia"  # Mexican Spanish, with es-US

    document, problems = validate_text(dump(raw))

    assert document is not None
    assert [(p.severity, p.path) for p in problems] == [("warning", "languages[1].voice")]


# --- shifts and durations ---------------------------------------------------------------------


def test_a_whole_day_shift_from_00_00_to_24_00_is_accepted_and_covers_every_minute() -> None:
    raw = example()
    raw["counselors"][1]["shifts"] = [{"days": "mon", "start": "00:00", "end": "24:00"}]

    document = load_document(dump(raw))

    ben = document.responder("ben-carter")
    assert ben is not None and ben.shifts[0].start == time(0) and ben.shifts[0].end is None
    monday = datetime(2026, 11, 30)
    assert is_on_call(ben, monday) and is_on_call(ben, monday.replace(hour=23, minute=59))
    assert not is_on_call(ben, datetime(2026, 12, 1, 0, 0))


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("00:00", "00:00", "start and end are the same time (for the whole day write 00:00 to 24:00)"),
        ("24:00", "08:00", "'24:00' is only an end"),
    ],
)
def test_empty_or_backwards_whole_day_shifts_are_refused(start: str, end: str, expected: str) -> None:
    raw = example()
    raw["counselors"][1]["shifts"] = [{"days": "mon", "start": start, "end": end}]

    assert any(expected in error.message for error in errors_of(dump(raw)))


@pytest.mark.parametrize(
    ("value", "unit", "seconds"),
    [("90s", "s", 90), ("15m", "s", 900), ("2h", "h", 7200), ("3d", "h", 259200), ("1h30m", "s", 5400),
     (240, "s", 240), (24, "h", 86400), ("12", "m", 720), ("5 minutes", "s", None), ("2x", "s", None),
     (True, "s", None), ("", "s", None)],
)  # fmt: skip
def test_durations_take_units_and_plain_numbers_keep_their_old_unit(value: object, unit: str, seconds: int) -> None:
    assert parse_duration(value, unit) == seconds


def test_a_check_in_can_follow_thirty_minutes_after_a_contact() -> None:
    raw = example()
    raw["followups"]["checkin_after_hours"] = {"default": "30m", "suicide": "2h", "danger_now": 12}
    raw["transfer"]["max_hold_seconds"] = "4m"
    raw["callbacks"]["retry_after_minutes"] = ["5m", "1h"]

    document = load_document(dump(raw))

    assert document.followups.checkin_hours("something_else") == 0.5
    assert document.followups.checkin_hours("suicide") == 2 and document.followups.checkin_hours("danger_now") == 12
    assert document.transfer.max_hold_seconds == 240
    assert document.callbacks.retry_after_minutes == (5, 60)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("transfer", "max_hold_seconds", "a while", "must be a duration like 90s, 15m, 2h or 3d (or a number of sec"),
        ("sms", "idle_close_minutes", "10m30s", "must be whole minutes, not 10m30s"),
        ("transfer", "max_hold_seconds", "2h", "must be between 30s and 30m, not 2h"),
        ("transfer", "max_hold_seconds", 5, "must be between 30 and 1800, not 5"),
    ],
)
def test_bad_durations_say_what_is_expected(section: str, key: str, value: object, expected: str) -> None:
    raw = example()
    raw[section][key] = value

    (error,) = errors_of(dump(raw))

    assert error.path == f"{section}.{key}" and expected in error.message


# --- warnings that need the clock, the environment or the whole rota ---------------------------


def warnings_of(text: str, *, now: datetime = BEFORE_THE_EXAMPLE_OVERRIDES, backup: str | None = None) -> list[str]:
    report = check_text(text, now=now, environment_backup_number=backup)
    assert report.valid, [p.describe() for p in report.errors]
    return [problem.describe() for problem in report.warnings]


def test_overrides_dated_in_the_past_are_warned_about_at_their_line() -> None:
    before = warnings_of(EXAMPLE, now=BEFORE_THE_EXAMPLE_OVERRIDES)
    after = warnings_of(EXAMPLE, now=AFTER_THE_EXAMPLE_OVERRIDES)

    past = [warning for warning in after if "in the past" in warning]
    assert not [warning for warning in before if "in the past" in warning]
    assert len(past) == 2
    line = line_of(EXAMPLE, "holiday leave")
    assert past[0].startswith(f"line {line}, column 9: warning: counselors[0].overrides[0]: ended 2026-12-26 08:00")


def test_a_weekday_gap_names_the_days_the_hours_the_language_and_the_need() -> None:
    warnings = warnings_of(EXAMPLE)

    assert any(
        "coverage gap daily 00:00–08:00, English (en) / substance_use: nobody on call: callers go to the backup line"
        in warning
        for warning in warnings
    ), warnings
    assert any(
        "coverage gap Mon, Tue, Fri 16:00–08:00 (next day), Spanish (es) / suicide, mental_health, something_else: "
        "nobody on call speaks it" in warning
        for warning in warnings
    ), warnings


def test_a_rota_covering_every_hour_has_no_gap_warning() -> None:
    raw = example()
    around_the_clock(raw)
    for counselor in raw["counselors"]:
        counselor["skills"] = [need["key"] for need in raw["needs"]]

    assert not [warning for warning in warnings_of(dump(raw)) if "coverage gap" in warning]


def test_only_the_default_need_is_checked_when_the_menu_does_not_ask() -> None:
    raw = example()
    raw["menu"]["ask_need"] = False  # everyone is "something_else", which Chloe and Ben cover

    gaps = [warning for warning in warnings_of(dump(raw)) if "coverage gap" in warning]

    assert gaps and all("/ something_else:" in warning for warning in gaps)


def test_two_different_backup_numbers_are_warned_about_and_one_is_not() -> None:
    differ = warnings_of(EXAMPLE, backup="+18005550199")
    agree = warnings_of(EXAMPLE, backup="+18002738255")

    (warning,) = [warning for warning in differ if "BACKUP_NUMBER" in warning]
    assert warning.startswith(f"line {line_of(EXAMPLE, BACKUP_KEY)}, column 18: warning: line.backup_number:")
    assert "+18002738255 here, but BACKUP_NUMBER in the environment is +18005550199" in warning
    assert not [warning for warning in agree if "BACKUP_NUMBER" in warning]


def test_a_responders_overlapping_shifts_are_warned_about_at_the_later_one() -> None:
    raw = example()
    raw["counselors"][3]["shifts"].append({"days": "sat", "start": "20:00", "end": "02:00"})
    text = dump(raw)

    (warning,) = [w for w in warnings_of(text) if "overlaps" in w]

    assert "warning: counselors[3].shifts[2]: overlaps shifts[0] (2 h a week, from Sat 20:00)" in warning
    days_line = line_of(text, "start: '20:00'") - 1  # the new shift's first line, "- days: sat"
    assert warning.startswith(f"line {days_line}, ")


# --- the referral directory -------------------------------------------------------------------


def test_the_referral_directory_is_read_and_filtered_by_language_and_need() -> None:
    document = load_document(EXAMPLE)

    assert [service.id for service in document.referrals("es", "substance_use")] == ["riverside-detox"]
    assert [service.id for service in document.referrals("es", "suicide")] == []  # the team speaks English only
    assert document.referrals()[2].phone == "+13125550172"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"phone": "555"}, "services[0].phone: not a valid phone number"),
        ({"languages": ["French"]}, "services[0].languages[0]: 'French' is not a language code like 'en' or 'es'"),
        ({"description": "x" * 161}, "services[0].description: 161 characters: at most 160"),
    ],
)
def test_a_bad_directory_entry_is_refused_at_its_line(change: dict[str, Any], expected: str) -> None:
    raw = example()
    raw["services"][0].update(change)
    text = dump(raw)

    described = [error.describe() for error in errors_of(text)]

    assert any(expected in line and line.startswith("line ") for line in described), described


def test_two_directory_entries_with_one_id_are_refused() -> None:
    raw = example()
    raw["services"][1]["id"] = raw["services"][0]["id"]

    (error,) = errors_of(dump(raw))

    assert error.describe().endswith("services[1].id: 'riverside-detox' is already used by services[0]")


def test_a_service_may_speak_a_language_the_line_does_not_but_an_unknown_need_is_warned_about() -> None:
    raw = example()
    raw["services"][0]["languages"] = ["en", "vi"]
    raw["services"][0]["needs"] = ["housing"]

    document, problems = validate_text(dump(raw))

    assert document is not None and document.services[0].languages == ("en", "vi")
    assert [(p.severity, p.path) for p in problems] == [("warning", "services[0].needs[0]")]


def test_a_config_written_before_the_stuck_text_alert_stays_valid_with_an_english_stand_in() -> None:
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    del raw["staff_prompts"]["text_stuck_sms"]

    document, problems = validate_text(yaml.safe_dump(raw, allow_unicode=True))

    assert document is not None and [str(p) for p in problems] == []
    alert = document.staff_prompt("text_stuck_sms", case="T12", minutes=3)
    assert alert.startswith("Crisis line: text T12 could not be handled for 3 minutes.")


@pytest.mark.parametrize(
    ("key", "stand_in"),
    [
        ("caller_on_backup", "The caller has been passed to our backup line. Thank you."),
        ("sms_line_trouble", "Crisis line: the line is having trouble with your text."),
        ("sms_line_lost", "Crisis line: the line could not take your text just now."),
    ],
)
def test_a_config_written_before_a_later_staff_prompt_stays_valid_with_an_english_stand_in(
    key: str, stand_in: str
) -> None:
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    del raw["staff_prompts"][key]

    document, problems = validate_text(yaml.safe_dump(raw, allow_unicode=True))

    assert document is not None and [str(p) for p in problems] == []
    assert document.staff_prompt(key).startswith(stand_in)


def test_a_config_written_before_the_still_waiting_text_stays_valid_with_a_warning_of_what_it_misses() -> None:
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    for language in raw["languages"]:
        del language["sms"]["still_waiting"]

    document, problems = validate_text(yaml.safe_dump(raw, allow_unicode=True))

    assert document is not None
    assert [(p.severity, p.path) for p in problems] == [
        ("warning", "languages[0].sms.still_waiting"), ("warning", "languages[1].sms.still_waiting"),
    ]  # fmt: skip
    assert "gets no reply until it is added" in str(problems[0])
    assert all("still_waiting" not in language.sms for language in document.languages)


def test_a_stuck_text_alert_without_its_case_number_is_refused() -> None:
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    raw["staff_prompts"]["text_stuck_sms"] = "A text could not be handled for {minutes} minutes."

    document, problems = validate_text(yaml.safe_dump(raw, allow_unicode=True))

    assert document is None
    assert any("text_stuck_sms" in str(p) and "{case}" in str(p) for p in problems)


# --- placeholders that would fail on a live call ---------------------------------------------


@pytest.mark.parametrize(
    ("path", "text", "placeholder"),
    [
        (["languages", 1, "prompts", "hold_position"], "Es el número {position:º} ({minutes}).", "position"),
        (["languages", 0, "sms", "queued"], "A counselor will text you in about {minutes:.1f} min.", "minutes"),
        (["languages", 0, "prompts", "need_option"], "For {label!z}, press {digit}.", "label"),
        (["staff_prompts", "whisper"], "Crisis line: {language} caller, {need}, waited {wait:{width}}.", "wait"),
    ],
)  # fmt: skip
def test_a_placeholder_with_a_format_is_refused_at_its_line_not_left_to_fail_on_a_call(
    path: list[Any], text: str, placeholder: str
) -> None:
    """Before, ``{position:º}`` passed: the publish went through and every Spanish caller who
    was not first in line was sent to the backup line by a hold turn that failed."""
    raw = example()
    target: Any = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = text
    where = ".".join(str(key) for key in path).replace(".1.", "[1].").replace(".0.", "[0].")

    messages = [f"{problem.path}: {problem.message}" for problem in errors_of(dump(raw))]

    assert f"{where}: write {{{placeholder}}} alone: a placeholder takes no ':' or '!' after its name" in messages
    assert check_text(dump(raw), now=datetime.now(UTC)).document is None  # the review does not crash on it


@pytest.mark.parametrize(("value", "kind"), [(5, "a number"), (["America/Chicago"], "a list")])
def test_a_time_zone_that_is_not_text_is_refused_with_a_message(value: object, kind: str) -> None:
    raw = example()
    raw["line"]["timezone"] = value

    messages = [f"{problem.path}: {problem.message}" for problem in errors_of(dump(raw))]

    assert f"line.timezone: must be an IANA time zone like 'America/Chicago', not {kind}" in messages


def test_a_version_published_before_the_format_check_is_read_with_its_placeholders_bare() -> None:
    raw = example()
    raw["languages"][1]["prompts"]["hold_position"] = "Es el número {position:º} ({minutes!r}), {{sic}}."

    document, problems = validate_text(dump(raw), strict=False)

    assert document is not None
    assert document.language("es").prompt("hold_position", position=2, minutes=5) == "Es el número 2 (5), {sic}."
    assert [p.severity for p in problems if p.path == "languages[1].prompts.hold_position"] == ["warning", "warning"]


def test_two_responders_sharing_a_phone_is_a_warning_at_the_second() -> None:
    raw = example()
    raw["counselors"][1]["phone"] = raw["counselors"][0]["phone"]

    document, problems = validate_text(dump(raw))

    assert document is not None  # a shared on-call phone is allowed
    (shared,) = [problem for problem in problems if problem.path == "counselors[1].phone"]
    assert shared.severity == "warning"
    assert shared.message.startswith("the same phone as counselors[0] (ana-ruiz):")
