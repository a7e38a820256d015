"""One-off overrides count in the coverage warnings: a leave ("off call") that leaves a language
and need with nobody to ring on some date, where the weekly rota has someone, is warned of by
that date and those hours, up to 8 weeks ahead. Found by review: putting every responder off
call for a whole day three days ahead gave the same warnings as before, and every caller that
day would have gone to the backup line with nobody told."""

from __future__ import annotations

from datetime import UTC, datetime

from console.routing_pages import drafts
from routing.review import check_text
from routing.schedule import on_call
from tests.routing.test_config_checks import EXAMPLE, warnings_of

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # a Sunday, before the example's own overrides
EVERYONE = ("ana-ruiz", "ben-carter", "chloe-nguyen", "diego-morales", "erin-walsh", "unit-north")


def off_call(text: str, responders: tuple[str, ...], start: str, end: str) -> str:
    for responder in responders:
        text = drafts.add_override(text, responder, {"start": start, "end": end, "on_call": False})
    return text


def dated_gaps(text: str, now: datetime = NOW) -> list[str]:
    """The gaps warned of in November (the example's own holiday leave is in December)."""
    return [
        warning
        for warning in warnings_of(text, now=now)
        if "because of the one-off overrides" in warning and "2026-11-" in warning
    ]


def test_everyone_off_call_for_a_day_three_days_ahead_is_warned_of_by_its_date() -> None:
    text = off_call(EXAMPLE, EVERYONE, "2026-11-04T00:00", "2026-11-05T00:00")
    report = check_text(text, now=NOW)
    assert report.document is not None
    assert on_call(report.document, datetime(2026, 11, 4, 12, 0, tzinfo=report.document.timezone)) == []

    gaps = dated_gaps(text)

    assert any(
        "warning: counselors: coverage gap Wed 2026-11-04 00:00–24:00, English (en) / danger_now, suicide, "
        "mental_health, something_else: nobody on call: callers go to the backup line, because of the one-off "
        "overrides (off call) then (see `flask routing coverage --week 2026-11-04`)" in gap
        for gap in gaps
    ), gaps
    assert any("Wed 2026-11-04" in gap and "Spanish (es)" in gap for gap in gaps), gaps
    assert all("2026-11-04" in gap for gap in gaps), gaps
    # The weekly rota's own gaps are still told as before, and only once.
    assert set(warnings_of(EXAMPLE, now=NOW)) <= set(warnings_of(text, now=NOW))


def test_a_leave_that_others_on_call_cover_is_no_gap_but_the_same_leave_for_them_too_is() -> None:
    # Saturday 14:00-22:00: Erin and Diego both on call, each speaking English with every skill.
    erin_away = off_call(EXAMPLE, ("erin-walsh",), "2026-11-07T14:00", "2026-11-07T22:00")
    both_away = off_call(EXAMPLE, ("erin-walsh", "diego-morales"), "2026-11-07T14:00", "2026-11-07T22:00")

    assert dated_gaps(erin_away) == []
    assert any("coverage gap Sat 2026-11-07 14:00–22:00, English (en) /" in gap for gap in dated_gaps(both_away))


def test_a_leave_already_over_is_no_gap_but_the_same_leave_still_to_come_is() -> None:
    text = off_call(EXAMPLE, EVERYONE, "2026-11-04T00:00", "2026-11-05T00:00")

    assert dated_gaps(text, now=datetime(2026, 11, 6, tzinfo=UTC)) == []
    from_noon = dated_gaps(text, now=datetime(2026, 11, 4, 18, 0, tzinfo=UTC))  # 12:00 in Chicago
    assert any("Wed 2026-11-04 12:00–24:00, English (en) / danger_now" in gap for gap in from_noon), from_noon
    assert not any("Wed 2026-11-04 00:00" in gap for gap in from_noon), from_noon  # only what is still to come


def test_a_leave_over_a_weekend_is_one_gap_into_monday_and_a_cover_override_fills_it() -> None:
    away = off_call(EXAMPLE, EVERYONE, "2026-11-07T18:00", "2026-11-09T08:00")
    # Diego (Spanish and English, every skill) and the unit cover while the others are away.
    covered = off_call(EXAMPLE, EVERYONE[:3] + EVERYONE[4:5], "2026-11-07T18:00", "2026-11-09T08:00")
    for responder in ("diego-morales", "unit-north"):
        cover = {"start": "2026-11-07T18:00", "end": "2026-11-09T08:00", "on_call": True}
        covered = drafts.add_override(covered, responder, cover)

    assert any(
        "coverage gap Sat 2026-11-07 18:00–Mon 2026-11-09 08:00, English (en) / danger_now" in gap
        for gap in dated_gaps(away)
    ), dated_gaps(away)
    assert dated_gaps(covered) == []


def test_a_leave_beyond_eight_weeks_is_named_as_not_checked_yet() -> None:
    text = off_call(EXAMPLE, ("erin-walsh",), "2026-11-07T00:00", "2027-03-01T00:00")

    warnings = warnings_of(text, now=NOW)

    assert any(
        "counselors[4].overrides[1]: off call until 2027-03-01 00:00: coverage gaps are checked only 8 weeks ahead"
        in warning
        for warning in warnings
    ), warnings
