"""``flask routing check|load|export``: every problem reported with its place in the file, and a
broken file never replaces the active routing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask

from crisisline.settings import DEFAULT_ROUTING_FILE
from tests.conftest import table_row_counts

Edit = Callable[[dict[str, Any]], None]


def _set(path: list[Any], value: Any) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _delete(path: list[Any]) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


BROKEN: list[tuple[str, Edit, str]] = [
    ("duplicate need digit", _set(["needs", 2, "digit"], 1), "needs[2].digit: 1 is already used by needs[0]"),
    (
        "bad counselor phone",
        _set(["counselors", 4, "phone"], "555-12"),
        "counselors[4].phone: not a valid phone number",
    ),
    (
        "missing prompt",
        _delete(["languages", 1, "prompts", "need_option"]),
        "languages[1]: prompt 'need_option' missing",
    ),
    (
        "prompt without placeholder",
        _set(["languages", 0, "prompts", "need_option"], "Press a key."),
        "languages[0].prompts.need_option: must contain {digit}",
    ),
    (
        "unknown target",
        _set(["needs", 0, "target"], "police"),
        "needs[0].target: 'police' is not one of counselors, co_responders, backup",
    ),
    (
        "unknown time zone",
        _set(["line", "timezone"], "Mars/Olympus"),
        "line.timezone: 'Mars/Olympus' is not an IANA time zone",
    ),
    (
        "bad shift time",
        _set(["counselors", 0, "shifts", 0, "start"], "25:00"),
        "counselors[0].shifts[0].start: '25:00' is not a time of day",
    ),
    (
        "unknown day",
        _set(["counselors", 1, "shifts", 0, "days"], ["funday"]),
        "counselors[1].shifts[0].days[0]: 'funday' is not a day",
    ),
    (
        "unknown language on counselor",
        _set(["counselors", 2, "languages"], ["en", "fr"]),
        "counselors[2].languages[1]: 'fr' is not one of the line's languages",
    ),
    (
        "unknown skill",
        _set(["counselors", 0, "skills"], ["suicide", "juggling"]),
        "counselors[0].skills[1]: 'juggling' is not a need key",
    ),
    (
        "duplicate responder id",
        _set(["counselors", 1, "id"], "ana-ruiz"),
        "counselors[1].id: 'ana-ruiz' is already used by counselors[0]",
    ),
    (
        "default need unknown",
        _set(["menu", "default_need"], "nothing"),
        "menu.default_need: 'nothing' is not a need key",
    ),
    ("retries out of range", _set(["menu", "retries"], 40), "menu.retries: must be between 0 and 5, not 40"),
    ("ask_need not true/false", _set(["menu", "ask_need"], "sometimes"), "menu.ask_need: must be true or false"),
    (
        "max seconds to ring out of range",
        _set(["menu", "max_seconds_to_ring"], 2),
        "menu.max_seconds_to_ring: must be between 5 and 120, not 2",
    ),
    (
        "spoken digit not a key",
        _set(["languages", 0, "words", "digits", "two"], 12),
        "languages[0].words.digits.two: must be a keypad digit 0-9, not 12",
    ),
    (
        "misspelt word list",
        _set(["languages", 1, "words", "negatons"], ["nunca"]),
        "languages[1].words.negatons: unknown key (check the spelling)",
    ),
    (
        "empty negation word",
        _set(["languages", 0, "words", "negations"], ["not", " "]),
        "languages[0].words.negations[1]: must be non-empty text",
    ),
    (
        "confirmation without the need",
        _set(["languages", 0, "prompts", "need_confirm"], "Press 1 if that is right."),
        "languages[0].prompts.need_confirm: must contain {label}",
    ),
    (
        "override ends before start",
        _set(["counselors", 0, "overrides", 0, "end"], "2026-12-01T08:00"),
        "counselors[0].overrides[0]: end must be after start",
    ),
    ("misspelt key", _set(["line", "nmae"], "x"), "line.nmae: unknown key (check the spelling)"),
    (
        "label missing for a language",
        _delete(["needs", 3, "labels", "es"]),
        "needs[3].labels: missing for language 'es'",
    ),
    (
        "same speech word for two needs",
        _set(["needs", 1, "speech_words", "en"], ["drugs"]),
        "needs[3].speech_words.en: 'drugs' is already used by needs[1]",
    ),
]


def live_version(app: Flask) -> str:
    """The live routing version's number, as the CLI takes it."""
    from routing import publishing

    with app.app_context():
        return str(publishing.history()[0].number)


def _write(tmp_path: Path, edit: Edit | None = None, text: str | None = None) -> Path:
    if text is None:
        document = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text())
        if edit:
            edit(document)
        text = yaml.safe_dump(document, allow_unicode=True)
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "edit", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_check_reports_each_problem_with_its_place(
    app: Flask, tmp_path: Path, name: str, edit: Edit, expected: str
) -> None:
    path = _write(tmp_path, edit)

    result = app.test_cli_runner().invoke(args=["routing", "check", str(path)])

    assert result.exit_code == 1
    assert expected in result.output, result.output
    assert "would be refused" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("line: [unclosed", "line 1, column 16: YAML syntax error"),
        ("- just\n- a list\n", "must be a mapping, not a list"),
        ("", "must be a mapping, not nothing"),
        ("line:\n  name: x\n", "languages: missing"),
    ],
)
def test_check_reports_unreadable_documents(app: Flask, tmp_path: Path, text: str, expected: str) -> None:
    result = app.test_cli_runner().invoke(args=["routing", "check", str(_write(tmp_path, text=text))])

    assert result.exit_code == 1
    assert expected in result.output


def test_check_accepts_the_shipped_example(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["routing", "check", str(DEFAULT_ROUTING_FILE)])

    assert result.exit_code == 0
    assert "valid (2 languages, 6 needs, 6 responders)" in result.output


def test_check_shows_the_queue_policy_written_in_the_config(app: Flask, tmp_path: Path) -> None:
    def shared_queue_with_urgent_dv(document: dict[str, Any]) -> None:
        document["queue"] = {"channels": "shared", "reoffer_after_seconds": 90}
        next(n for n in document["needs"] if n["key"] == "domestic_violence")["priority"] = 8

    result = app.test_cli_runner().invoke(args=["routing", "check", str(_write(tmp_path, shared_queue_with_urgent_dv))])

    assert result.exit_code == 0
    assert "queue order: danger_now (priority 9); then suicide, domestic_violence (priority 8); then " in result.output
    assert "texts and calls wait in one line" in result.output
    assert "offered it again after 90 s" in result.output


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        ({"channels": "together"}, "queue.channels: 'together' is not one of shared, separate"),
        ({"reoffer_after_seconds": -1}, "queue.reoffer_after_seconds"),
        ({"order": "fifo"}, "queue.order"),
    ],
)
def test_check_refuses_a_bad_queue_section(app: Flask, tmp_path: Path, queue: dict[str, Any], expected: str) -> None:
    result = app.test_cli_runner().invoke(
        args=["routing", "check", str(_write(tmp_path, lambda document: document.update(queue=queue)))]
    )

    assert result.exit_code == 1
    assert expected in result.output, result.output


def test_check_warns_about_a_language_nobody_speaks_but_accepts_it(app: Flask, tmp_path: Path) -> None:
    def nobody_speaks_spanish(document: dict[str, Any]) -> None:
        for person in document["counselors"] + document["co_responder_units"]:
            person["languages"] = ["en"]

    result = app.test_cli_runner().invoke(args=["routing", "check", str(_write(tmp_path, nobody_speaks_spanish))])

    assert result.exit_code == 0
    assert "warning: languages[1]: nobody on the rota speaks Español" in result.output


def test_loading_a_broken_file_leaves_the_active_routing_unchanged(app: Flask, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    before_export = runner.invoke(args=["routing", "export"]).output
    before_rows = table_row_counts(app)

    result = runner.invoke(
        args=["routing", "load", str(_write(tmp_path, BROKEN[0][1])), "--note", "x", "--base", live_version(app)]
    )

    assert result.exit_code == 1
    assert "refused: 1 error(s); the live routing is unchanged" in result.output
    assert runner.invoke(args=["routing", "export"]).output == before_export
    assert table_row_counts(app) == before_rows


def test_load_publishes_a_new_version_and_export_prints_it_exactly(app: Flask, tmp_path: Path) -> None:
    path = _write(tmp_path, _set(["menu", "retries"], 1))
    runner = app.test_cli_runner()

    result = runner.invoke(
        args=["routing", "load", str(path), "--note", "fewer retries", "--base", live_version(app), "--author", "kim"]
    )

    assert result.exit_code == 0, result.output
    assert "published routing version" in result.output
    assert runner.invoke(args=["routing", "export"]).output == path.read_text(encoding="utf-8")
    history = runner.invoke(args=["routing", "history"]).output.splitlines()
    assert len(history) == 2
    assert "kim" in history[0] and "fewer retries" in history[0] and history[0].endswith("(live)")


def test_loading_the_same_file_twice_publishes_one_version(app: Flask, tmp_path: Path) -> None:
    path = _write(tmp_path, _set(["menu", "retries"], 1))
    runner = app.test_cli_runner()

    base = live_version(app)
    first = runner.invoke(args=["routing", "load", str(path), "--note", "one", "--base", base]).output
    second = runner.invoke(args=["routing", "load", str(path), "--note", "two", "--base", base]).output

    assert "published routing version" in first
    assert "unchanged: this is the live version" in second
    assert len(runner.invoke(args=["routing", "history"]).output.splitlines()) == 2


def test_published_routing_is_stored_encrypted(app: Flask) -> None:
    from sqlalchemy import select

    from crisisline.db import db
    from crisisline.models import RoutingVersion

    with app.app_context():
        stored = db.session.scalars(select(RoutingVersion)).first()
    assert stored is not None
    assert "555 0101" not in stored.sealed_source and "Ana Ruiz" not in stored.sealed_source


def test_bootstrap_publishes_only_when_nothing_was_published(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["line", "bootstrap"])

    assert "already published" in result.output


def test_check_warns_when_a_text_prompt_would_cost_ucs2_segments(app: Flask, tmp_path: Path) -> None:
    def accented(document: dict[str, Any]) -> None:
        document["languages"][1]["sms"]["closed"] = "Esta conversación ha terminado."

    result = app.test_cli_runner().invoke(args=["routing", "check", str(_write(tmp_path, accented))])

    assert result.exit_code == 0
    assert "warning: languages[1].sms.closed: 'ó' is not in GSM-7" in result.output
