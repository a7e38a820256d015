"""Routing input an administrator can type but the line cannot use is refused with an error
naming the field, never a crash: a list where one value belongs, a time zone that is a folder
or too long a name, a number too big to read, YAML aliases, a shift with no days, a day name
that only begins like one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crisisline.settings import DEFAULT_ROUTING_FILE
from routing.review import check_text

EXAMPLE = DEFAULT_ROUTING_FILE.read_text(encoding="utf-8")


def errors_at(text: str) -> dict[str, str]:
    """Each refused field's path → its message (the document must be refused)."""
    report = check_text(text, now=datetime.now(UTC))
    assert report.document is None, "expected the text to be refused"
    return {problem.path: problem.message for problem in report.errors}


def edited(old: str, new: str, count: int = -1) -> str:
    text = EXAMPLE.replace(old, new, count)
    assert text != EXAMPLE, f"{old!r} is not in the example"
    return text


@pytest.mark.parametrize("value", ["[en]", "{en: 1}"])
def test_a_default_language_given_as_a_list_or_mapping_must_be_a_language_code(value: str) -> None:
    errors = errors_at(edited("  default_language: en", f"  default_language: {value}"))

    assert "must be a language code" in errors["menu.default_language"]


@pytest.mark.parametrize("value", ["[something_else]", "{something_else: 1}"])
def test_a_default_need_given_as_a_list_or_mapping_must_be_a_need_key(value: str) -> None:
    errors = errors_at(edited("  default_need: something_else", f"  default_need: {value}"))

    assert "must be a need key" in errors["menu.default_need"]


@pytest.mark.parametrize("zone", ["America", "Europe/" + "x" * 300])
def test_a_time_zone_that_is_a_region_or_too_long_a_name_is_an_error_at_line_timezone(zone: str) -> None:
    errors = errors_at(edited("  timezone: America/Chicago", f"  timezone: {zone}"))

    assert "is not an IANA time zone" in errors["line.timezone"]
