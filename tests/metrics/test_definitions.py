"""The definitions on hand-built event logs and facts, each expected value worked out by hand:
abandoned during the whisper, a second round after the counselor left, calls spanning
midnight and the night the clocks go back in the line's time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from metrics.compute import percentile, report
from metrics.facts import ABANDONED, ANSWERED, BACKUP, CALLBACK, Contact, Facts, Period
from metrics.load import voice_contact

CHICAGO = ZoneInfo("America/Chicago")
T0 = datetime(2026, 12, 2, 23, 0, tzinfo=UTC)  # 17:00 in Chicago
KINDS = {"ana": "counselor", "ben": "counselor", "unit-north": "co_responder"}
Event = tuple[str, datetime, dict[str, Any]]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def log(*events: tuple[str, float, dict[str, Any]]) -> list[Event]:
    return [("call.started", T0, {}), *((kind, at(seconds), detail) for kind, seconds, detail in events)]


def contact_of(events: list[Event], callback_searches: set[int] | None = None, status: str = "completed") -> Contact:
    found = voice_contact(events, T0, "en", "suicide", status, callback_searches or set(), KINDS)
    assert found is not None
    return found


ROUTED = ("route.decided", 10, {"target": "counselors"})
QUEUED = ("transfer.started", 10, {"transfer": 1})


def test_answered_speed_counts_from_joining_the_queue_not_from_the_greeting() -> None:
    contact = contact_of(log(ROUTED, QUEUED, ("offer.accepted", 52, {"transfer": 1, "responder": "ana"})))
    assert (contact.offered, contact.outcome, contact.answered_by) == (True, ANSWERED, "counselor")
    assert contact.speed_to_answer_seconds == 42


def test_a_caller_who_hangs_up_during_the_whisper_is_abandoned_not_answered() -> None:
    # Ben answered his phone and hears the whisper; the caller hangs up before he presses 1.
    contact = contact_of(
        log(ROUTED, QUEUED, ("transfer.abandoned", 25, {"transfer": 1, "waited_seconds": 15}),
            ("offer.ended", 26, {"transfer": 1, "responder": "ben", "outcome": "superseded"}))
    )  # fmt: skip
    assert (contact.outcome, contact.waited_seconds, contact.rollovers) == (ABANDONED, 15, 0)


def test_the_first_outcome_wins_and_a_second_round_after_the_counselor_left_changes_nothing() -> None:
    contact = contact_of(
        log(ROUTED, QUEUED,
            ("offer.missed", 30, {"transfer": 1, "responder": "ben", "outcome": "no_answer"}),
            ("offer.accepted", 40, {"transfer": 1, "responder": "ana"}),
            ("transfer.staff_left", 300, {"transfer": 1}),
            ("transfer.started", 301, {"transfer": 2}),
            ("offer.missed", 330, {"transfer": 2, "responder": "ben", "outcome": "no_answer"}),
            ("transfer.to_backup", 400, {"transfer": 2, "waited_seconds": 99}))
    )  # fmt: skip
    assert (contact.outcome, contact.speed_to_answer_seconds, contact.rollovers) == (ANSWERED, 30, 1)


def test_a_press_of_1_the_line_could_not_answer_in_time_is_a_rollover_and_the_next_acceptance_answers() -> None:
    contact = contact_of(
        log(ROUTED, QUEUED,
            ("offer.ended", 30, {"transfer": 1, "responder": "ben", "outcome": "deadline_passed"}),
            ("offer.accepted", 45, {"transfer": 1, "responder": "ana"}))
    )  # fmt: skip
    assert (contact.outcome, contact.speed_to_answer_seconds, contact.rollovers) == (ANSWERED, 35, 1)


def test_a_unit_joining_the_call_is_a_co_responder_involvement() -> None:
    contact = contact_of(
        log(ROUTED, QUEUED, ("offer.accepted", 20, {"transfer": 1, "responder": "ana"}),
            ("offer.accepted", 200, {"transfer": 1, "responder": "unit-north", "purpose": "join"}))
    )  # fmt: skip
    assert (contact.answered_by, contact.co_responder_involved) == ("counselor", True)


def test_a_callbacks_own_search_does_not_answer_the_call_it_came_from() -> None:
    contact = contact_of(
        log(ROUTED, QUEUED, ("callback.requested", 70, {"transfer": 1, "waited_seconds": 60}),
            ("transfer.started", 100, {"transfer": 2}),
            ("offer.accepted", 130, {"transfer": 2, "responder": "ana"})),
        callback_searches={2},
    )  # fmt: skip
    assert (contact.outcome, contact.waited_seconds, contact.speed_to_answer_seconds) == (CALLBACK, 60, None)


def test_blocked_and_system_down_callers_go_straight_to_backup_and_are_offered() -> None:
    contact = contact_of(log(("backup.dialled", 1, {"attempt": 1, "reason": "system_down"})))
    assert (contact.offered, contact.outcome, contact.waited_seconds) == (True, BACKUP, 0.0)


def test_a_record_without_call_started_is_a_callback_to_a_texter_not_a_contact() -> None:
    assert voice_contact([("callback.requested", T0, {})], T0, "en", None, "callback", set(), KINDS) is None


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 90) is None
    assert percentile([7], 90) == 7
    assert percentile(range(1, 11), 90) == 9  # ceil(0.9 x 10) = the 9th value
    assert percentile(range(1, 12), 90) == 10  # ceil(0.9 x 11) = the 10th


def voice(started: datetime, outcome: str = ANSWERED, **extra: Any) -> Contact:
    return Contact("voice", started, "en", "suicide", True, outcome, **extra)


def test_a_call_just_before_local_midnight_counts_on_its_local_day_and_weekday() -> None:
    late = datetime(2026, 12, 3, 5, 59, tzinfo=UTC)  # Wednesday 23:59 in Chicago, Thursday in UTC
    facts = Facts(contacts=(voice(late),), timezone=CHICAGO)

    wednesday = report(facts, Period(date(2026, 12, 2), date(2026, 12, 3)), "voice", "weekday")
    thursday = report(facts, Period(date(2026, 12, 3), date(2026, 12, 4)), "voice")

    assert [(row.group, row.values["offered"]) for row in wednesday.rows] == [("all", 1), ("Wed", 1)]
    assert thursday.overall.values["offered"] == 0
    assert [(d.day, d.offered) for d in wednesday.daily] == [(date(2026, 12, 2), 1)]


def test_the_night_the_clocks_go_back_has_25_hours_and_both_one_oclocks_count_as_hour_01() -> None:
    # 1 November 2026: Chicago goes from CDT (UTC-5) to CST (UTC-6) at 02:00.
    first_one, second_one = datetime(2026, 11, 1, 6, 30, tzinfo=UTC), datetime(2026, 11, 1, 7, 30, tzinfo=UTC)
    before, after = datetime(2026, 11, 1, 4, 59, tzinfo=UTC), datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    facts = Facts(contacts=tuple(voice(m) for m in (first_one, second_one, before, after)), timezone=CHICAGO)
    period = Period(date(2026, 11, 1), date(2026, 11, 2))

    start, end = period.utc_bounds(CHICAGO)
    result = report(facts, period, "voice", "hour")

    assert end - start == timedelta(hours=25)
    assert [(row.group, row.values["offered"]) for row in result.rows] == [("all", 2), ("01", 2)]


def test_rates_have_no_value_without_contacts() -> None:
    values = report(Facts(), Period(date(2026, 12, 1), date(2026, 12, 2)), "voice").overall.values
    assert values["offered"] == 0
    assert values["answer_rate"] is None and values["speed_to_answer_mean"] is None


def test_abandonment_after_30_s_leaves_short_abandons_out_of_both_sides() -> None:
    contacts = (
        voice(T0, ABANDONED, waited_seconds=29.9),
        voice(T0, ABANDONED, waited_seconds=30),
        voice(T0, ANSWERED, speed_to_answer_seconds=5),
        voice(T0, BACKUP, waited_seconds=240),
    )
    values = report(Facts(contacts=contacts, timezone=CHICAGO), Period(date(2026, 12, 2), date(2026, 12, 3)), "voice")
    row = values.overall.values
    assert (row["abandoned"], row["abandoned_within_30s"]) == (2, 1)
    assert row["abandonment_rate"] == pytest.approx(2 / 4)
    assert row["abandonment_rate_after_30s"] == pytest.approx(1 / 3)
    assert row["backup_rate"] == pytest.approx(1 / 4)


def test_an_unknown_channel_or_breakdown_is_refused() -> None:
    period = Period(date(2026, 12, 1), date(2026, 12, 2))
    with pytest.raises(ValueError, match="channel"):
        report(Facts(), period, "fax")
    with pytest.raises(ValueError, match="breakdown"):
        report(Facts(), period, "voice", "counselor")
    with pytest.raises(ValueError, match="end after"):
        Period(date(2026, 12, 2), date(2026, 12, 2))
