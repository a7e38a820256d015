"""The charts are valid, accessible SVG with the expected marks, drawn from plain reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from crisisline.settings import DEFAULT_ROUTING_FILE
from metrics.compute import report
from metrics.facts import ABANDONED, ANSWERED, Contact, Facts, Period
from metrics.staffing import staffing
from metrics.svg import contacts_over_time, histogram_bins, speed_to_answer_histogram, staffing_heatmap
from routing.validation import load_document

SVG = "{http://www.w3.org/2000/svg}"
CHICAGO = ZoneInfo("America/Chicago")
WEEK = Period(date(2026, 11, 30), date(2026, 12, 7))  # Monday to Monday


def parsed(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and title.text and desc is not None and desc.text
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    return root


def marks(root: ET.Element, css_class: str) -> list[ET.Element]:
    return [el for el in root.iter() if (el.get("class") or "").split()[:1] == [css_class]]


def texts(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter(f"{SVG}text")]


def week_of_calls() -> Facts:
    tuesday = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # 09:00 in Chicago
    contacts = [
        Contact("voice", tuesday, "en", "suicide", True, ANSWERED, speed_to_answer_seconds=s) for s in (5, 20, 25, 400)
    ]
    contacts.append(Contact("voice", tuesday + timedelta(days=2), "es", "suicide", True, ABANDONED, waited_seconds=9))
    return Facts(contacts=tuple(contacts), timezone=CHICAGO)


def test_contacts_over_time_has_one_bar_per_day_and_a_point_per_day_with_contacts() -> None:
    root = parsed(contacts_over_time(report(week_of_calls(), WEEK, "voice")))

    bars = marks(root, "bar")
    assert len(bars) == 7
    assert [float(bar.get("height", "0")) > 0 for bar in bars] == [False, True, False, True, False, False, False]
    assert len(marks(root, "rate-point")) == 2
    assert "01 Dec" in texts(root) and "100%" in texts(root)
    assert "5 contacts offered over 7 days, 4 answered (80%)" in (root.find(f"{SVG}desc").text or "")  # type: ignore[union-attr]


def test_speed_to_answer_histogram_bins_every_answered_contact() -> None:
    result = report(week_of_calls(), WEEK, "voice")
    root = parsed(speed_to_answer_histogram(result))

    bars = marks(root, "bar")
    assert len(bars) == 21  # 0-15 s … 285-300 s, and 300 s and over
    counted = dict(histogram_bins(result.speed_to_answer_counts))
    assert (counted["0-15s"], counted["15-30s"], counted["300s+"]) == (1, 2, 1)
    assert [bar.find(f"{SVG}title").text for bar in bars[:2]] == ["0-15s: 1", "15-30s: 2"]  # type: ignore[union-attr]


def test_staffing_heatmap_has_a_cell_per_hour_and_weekday_and_outlines_gaps() -> None:
    document = load_document(DEFAULT_ROUTING_FILE.read_text())
    friday_3am = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)  # Chicago 03:00: only Chloe on the rota
    contacts = [Contact("voice", friday_3am, "es", "suicide", True, ANSWERED)]
    grid = staffing(document, contacts, date(2026, 12, 7), weeks=1, language="es")
    root = parsed(staffing_heatmap(grid, language_name="Spanish"))

    cells = marks(root, "cell")
    assert len(cells) == 7 * 24
    gaps = [cell for cell in cells if "gap" in (cell.get("class") or "").split()]
    assert [gap.find(f"{SVG}title").text for gap in gaps] == [  # type: ignore[union-attr]
        "Fri 03:00-04:00: 1.0 contacts a week, 0.0 on shift"  # the unit's shift ends at 02:00
    ]
    assert "Fri 03h" in (root.find(f"{SVG}desc").text or "")  # type: ignore[union-attr]
    assert "Spanish" in (root.find(f"{SVG}title").text or "")  # type: ignore[union-attr]


def test_staffing_counts_speakers_of_the_language_on_shift_from_the_rota() -> None:
    document = load_document(DEFAULT_ROUTING_FILE.read_text())
    grid = staffing(document, [], date(2026, 12, 7), weeks=1, language="es")
    assert grid.cell(2, 10).on_shift == 2  # Wednesday 10:00: Ana and the unit speak Spanish
    assert grid.cell(4, 3).on_shift == 0  # Friday 03:00: only Chloe, who speaks English only
    assert not any(cell.gap for cell in grid.cells)  # no Spanish contacts at all: no gap


def test_text_from_the_routing_is_escaped() -> None:
    document = load_document(DEFAULT_ROUTING_FILE.read_text())
    grid = staffing(document, [], date(2026, 12, 7), weeks=1)
    root = parsed(staffing_heatmap(grid, language_name="<English & Spanish>"))
    assert "<English & Spanish>" in (root.find(f"{SVG}title").text or "")  # type: ignore[union-attr]
