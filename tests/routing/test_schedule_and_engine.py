"""Who is on call, and who the engine rings, for a language and a need at a moment."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from crisisline.settings import DEFAULT_ROUTING_FILE
from routing.document import RoutingDocument
from routing.engine import decide_route
from routing.schedule import on_call
from routing.validation import load_document

CHICAGO = ZoneInfo("America/Chicago")


@pytest.fixture(scope="module")
def document() -> RoutingDocument:
    return load_document(DEFAULT_ROUTING_FILE.read_text())


def at(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=CHICAGO)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(2, 10), {"ana-ruiz", "unit-north"}),  # Wednesday morning
        (at(2, 15, 59), {"ana-ruiz", "diego-morales", "unit-north"}),
        (at(2, 16), {"ben-carter", "diego-morales", "unit-north"}),  # shift change on the minute
        (at(2, 23, 30), {"ben-carter", "chloe-nguyen", "unit-north"}),
        (at(3, 1, 30), {"chloe-nguyen", "unit-north"}),  # overnight shifts past midnight
        (at(3, 2), {"chloe-nguyen"}),
        (at(24, 10), {"erin-walsh", "unit-north"}),  # Ana on leave, Erin covering
    ],
)
def test_on_call_follows_shifts_overnight_windows_and_overrides(
    document: RoutingDocument, moment: datetime, expected: set[str]
) -> None:
    assert {r.id for r in on_call(document, moment)} == expected


def test_shifts_follow_the_line_time_zone_across_a_utc_day_boundary(document: RoutingDocument) -> None:
    utc_moment = datetime(2026, 12, 2, 16, 30, tzinfo=ZoneInfo("UTC"))  # 10:30 in Chicago

    assert "ana-ruiz" in {r.id for r in on_call(document, utc_moment)}


def test_engine_prefers_a_speaker_of_the_callers_language(document: RoutingDocument) -> None:
    need = document.need("suicide")
    assert need is not None

    decision = decide_route(document, "es", need, at(2, 17))

    assert [r.id for r in decision.responders] == ["diego-morales"]
    assert decision.language_matched


def test_engine_falls_back_to_any_language_and_says_so(document: RoutingDocument) -> None:
    need = document.need("suicide")
    assert need is not None

    decision = decide_route(document, "es", need, at(2, 23, 30))

    assert [r.id for r in decision.responders] == ["ben-carter", "chloe-nguyen"]
    assert not decision.language_matched
    assert decision.reason == "no_language_match"


def test_co_responder_need_falls_back_to_counselors_when_no_unit_is_on_call(
    document: RoutingDocument,
) -> None:
    need = document.need("danger_now")
    assert need is not None

    decision = decide_route(document, "en", need, at(3, 5))

    assert decision.target == "counselors"
    assert [r.id for r in decision.responders] == ["chloe-nguyen"]


def test_unavailable_responders_are_skipped_and_nobody_left_means_backup(document: RoutingDocument) -> None:
    need = document.need("substance_use")
    assert need is not None

    decision = decide_route(document, "en", need, at(2, 10), unavailable={"ana-ruiz"})

    assert decision.target == "backup"
    assert decision.responders == ()


def test_least_recently_offered_responder_comes_first(document: RoutingDocument) -> None:
    need = document.need("suicide")
    assert need is not None
    offered = {"ben-carter": at(2, 23, 0)}

    decision = decide_route(document, "en", need, at(2, 23, 30), last_offered=offered)

    assert [r.id for r in decision.responders] == ["chloe-nguyen", "ben-carter"]
