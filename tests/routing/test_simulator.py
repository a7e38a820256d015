"""Issue 11, the simulator: who would be rung, in what order, what the caller hears and for
how long before the first ring (``flask routing who``), and the week's coverage per language
and need with every gap (``flask routing coverage``). Both use the real engine."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from flask import Flask

from crisisline.settings import DEFAULT_ROUTING_FILE
from routing.coverage import COVERED, NOBODY, OTHER_LANGUAGE, gaps_opened, hourly_grid, week_coverage
from routing.document import RoutingDocument
from routing.simulator import UnknownChoice, who_would_be_rung
from routing.timing import path_timings
from routing.validation import load_document

CHICAGO = ZoneInfo("America/Chicago")
SATURDAY_3AM = datetime(2026, 12, 5, 3, 0, tzinfo=CHICAGO)
WEDNESDAY_5PM = datetime(2026, 12, 2, 17, 0, tzinfo=CHICAGO)


def example() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    return loaded


def document_of(raw: dict[str, Any]) -> RoutingDocument:
    return load_document(yaml.safe_dump(raw, allow_unicode=True))


@pytest.fixture(scope="module")
def document() -> RoutingDocument:
    return load_document(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))


def test_a_spanish_caller_with_thoughts_of_suicide_at_3am_on_saturday(document: RoutingDocument) -> None:
    result = who_would_be_rung(document, "es", "suicide", SATURDAY_3AM)

    assert [rung.id for rung in result.rings] == ["chloe-nguyen"]
    assert not result.language_matched and result.reason == "no_language_match"
    spanish = document.language("es")
    assert result.heard_after_choice == (spanish.prompt("no_language_match"), spanish.prompt("hold"))
    assert "Para español, oprima 2." in result.heard_before_ring
    timing = next(row for row in path_timings(document) if (row.language, row.need) == ("es", "suicide"))
    assert result.seconds_before_ring == timing.following_seconds == 17.6
    assert result.seconds_before_ring_barge_in == timing.barge_in_seconds


def test_menu_keys_choose_the_language_and_need_as_a_caller_would(document: RoutingDocument) -> None:
    by_key = who_would_be_rung(document, "2", "2", WEDNESDAY_5PM)

    assert (by_key.language, by_key.need) == ("es", "suicide")
    assert [rung.id for rung in by_key.rings] == ["diego-morales"] and by_key.language_matched


def test_parallel_ringing_puts_several_responders_in_one_round() -> None:
    raw = example()
    raw["transfer"]["strategy"] = "parallel"
    raw["transfer"]["parallel_max"] = 2
    around = document_of(raw)

    result = who_would_be_rung(around, "en", "suicide", datetime(2026, 12, 2, 23, 30, tzinfo=CHICAGO))

    assert [(rung.round, rung.id) for rung in result.rings] == [(1, "ben-carter"), (1, "chloe-nguyen")]


def test_nobody_on_call_means_the_backup_line_and_the_callback_offer(document: RoutingDocument) -> None:
    result = who_would_be_rung(document, "en", "substance_use", SATURDAY_3AM)

    assert result.rings == () and result.target == "backup"
    assert result.backup_number == document.backup_number
    english = document.language("en")
    assert result.heard_after_choice == (
        english.prompt("nobody_available"),
        english.prompt("callback_offer", digit=document.callbacks.digit),
    )


def test_an_unknown_language_or_need_is_a_clear_error(document: RoutingDocument) -> None:
    with pytest.raises(UnknownChoice, match="'fr' is not one of the line's languages: en \\(1\\), es \\(2\\)"):
        who_would_be_rung(document, "fr", "suicide", SATURDAY_3AM)
    with pytest.raises(UnknownChoice, match="'9' is not one of the line's needs"):
        who_would_be_rung(document, "en", "9", SATURDAY_3AM)


def test_coverage_of_the_weekly_rota_finds_every_gap(document: RoutingDocument) -> None:
    rows = {(row.language, row.need): row for row in week_coverage(document)}

    assert rows[("en", "suicide")].gaps == ()
    substance = rows[("en", "substance_use")]
    assert [(gap.label, gap.status) for gap in substance.gaps] == [
        (f"{day} 00:00–08:00", NOBODY) for day in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    ]
    spanish = [(gap.label, gap.status, gap.responders) for gap in rows[("es", "suicide")].gaps]
    assert ("Sun 22:00–Mon 08:00", OTHER_LANGUAGE, ("chloe-nguyen", "erin-walsh")) in spanish
    assert ("Mon 16:00–Tue 08:00", OTHER_LANGUAGE, ("ben-carter",)) in spanish
    assert hourly_grid(substance)[0] == "." * 8 + "#" * 16


def test_adding_a_shift_closes_the_gap_it_covers() -> None:
    raw = example()
    chloe = next(c for c in raw["counselors"] if c["id"] == "chloe-nguyen")
    chloe["skills"].append("substance_use")

    rows = {(row.language, row.need): row for row in week_coverage(document_of(raw))}

    assert rows[("en", "substance_use")].gaps == ()
    assert all(stretch.status == COVERED for stretch in rows[("en", "substance_use")].stretches)


def test_a_dated_week_includes_its_overrides(document: RoutingDocument) -> None:
    christmas = {(row.language, row.need): row for row in week_coverage(document, date(2026, 12, 24))}
    usual = {(row.language, row.need): row for row in week_coverage(document)}

    # Ana (the only Spanish speaker on weekday mornings) is on leave Thursday and Friday;
    # Erin covers in English, so the night's gap runs on until Diego starts at noon.
    holiday = [gap.label for gap in christmas[("es", "suicide")].gaps]
    assert "Wed 20:00–Thu 12:00" in holiday and "Thu 20:00–Sat 08:00" in holiday
    assert "Wed 20:00–Thu 08:00" in [gap.label for gap in usual[("es", "suicide")].gaps]


def test_who_command_prints_order_prompts_and_seconds(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        args=["routing", "who", "--language", "es", "--need", "suicide", "--at", "2026-12-05 03:00"]
    )

    assert result.exit_code == 0, result.output
    assert "Spanish-speaking caller, need suicide, at Sat 2026-12-05 03:00 CST" in result.output
    assert "Before the first ring: 17.6 s of prompts following the menus" in result.output
    assert "  1. Chloe Nguyen (chloe-nguyen, counselor, speaks en)" in result.output
    assert "nobody on call speaks Spanish: they are told so" in result.output


def test_who_and_coverage_read_a_draft_file_too(app: Flask, tmp_path: Path) -> None:
    raw = example()
    chloe = next(c for c in raw["counselors"] if c["id"] == "chloe-nguyen")
    chloe["languages"] = ["en", "es"]
    path = tmp_path / "draft.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    runner = app.test_cli_runner()

    who = runner.invoke(
        args=["routing", "who", "--language", "es", "--need", "2", "--at", "2026-12-05 03:00", "--file", str(path)]
    )
    coverage = runner.invoke(args=["routing", "coverage", "--file", str(path)])
    live_coverage = runner.invoke(args=["routing", "coverage"])

    assert "nobody on call speaks" not in who.output and "Chloe Nguyen" in who.output
    assert "Spanish (es) / suicide: gaps" in coverage.output
    assert "gap Sun 22:00–Mon 08:00" not in coverage.output.split("Spanish (es) / suicide")[1].split("(es) /")[0]
    assert "  Mon ........################" in live_coverage.output
    assert "gap Mon 00:00–08:00: nobody: the backup line" in live_coverage.output


def test_who_refuses_a_time_it_cannot_read(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        args=["routing", "who", "--language", "es", "--need", "suicide", "--at", "saturday night"]
    )

    assert result.exit_code == 1 and "is not a time like" in result.output


def test_leaving_a_responder_out_names_each_stretch_it_leaves_worse_even_over_sunday_midnight(
    document: RoutingDocument,
) -> None:
    """The unit is the only Spanish speaker for danger now at night: without it, Spanish
    callers get someone in another language, Sunday 22:00 to Monday 02:00 as one stretch."""
    opened = gaps_opened(document, {"unit-north"})

    spanish_danger = [(gap.label, gap.status) for gap in opened if (gap.language, gap.need) == ("es", "danger_now")]
    assert ("Sun 22:00–Mon 02:00", OTHER_LANGUAGE) in spanish_danger
    assert ("Mon 16:00–Tue 02:00", OTHER_LANGUAGE) in spanish_danger
    assert all(gap.status != NOBODY for gap in opened)  # counselors still answer: nobody goes to the backup
    assert gaps_opened(document, {"unit-north"}, already_without={"unit-north"}) == []  # nothing changes twice
