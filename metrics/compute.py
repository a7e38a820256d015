"""The metrics, as pure functions over plain facts (``metrics.facts``): no database, no Flask.

``report(facts, period, channel, breakdown)`` gives one row for the whole period and, with a
breakdown, one row per language, need, hour of day or day of week (the line's local time).
Every metric's exact rule is in ``docs/metrics.md``; its name here is its anchor there.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from metrics.facts import (
    ABANDONED,
    ANSWERED,
    BACKUP,
    BREAKDOWNS,
    CALLBACK,
    CHANNELS,
    CallbackRequest,
    Contact,
    Facts,
    FollowUp,
    Period,
    SurveyAnswer,
)

EARLY_ABANDON_SECONDS = 30  # 988 reports calls abandoned within the first 30 s apart
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
Value = int | float | None


@dataclass(frozen=True)
class Metric:
    """``kind``: count, rate (0-1), seconds, score or ratio. ``inputs``: the counts a derived
    value is computed from; when one of them is withheld from an export, so is the value."""

    name: str
    label: str
    kind: str
    inputs: tuple[str, ...] = ()
    channels: tuple[str, ...] = CHANNELS


METRICS: tuple[Metric, ...] = (
    Metric("offered", "Contacts offered", "count"),
    Metric("answered", "Answered", "count"),
    Metric("answered_by_counselor", "Answered by a counselor", "count"),
    Metric("answered_by_co_responder", "Answered by a co-responder unit", "count", channels=("voice",)),
    Metric("answer_rate", "Answer rate", "rate", ("offered", "answered")),
    Metric("speed_to_answer_mean", "Speed to answer, mean (s)", "seconds", ("answered",)),
    Metric("speed_to_answer_median", "Speed to answer, median (s)", "seconds", ("answered",)),
    Metric("speed_to_answer_p90", "Speed to answer, 90th percentile (s)", "seconds", ("answered",)),
    Metric("abandoned", "Abandoned", "count"),
    Metric("abandoned_within_30s", "Abandoned within 30 s", "count"),
    Metric("abandonment_rate", "Abandonment rate", "rate", ("offered", "abandoned")),
    Metric(
        "abandonment_rate_after_30s",
        "Abandonment rate, 30 s and over",
        "rate",
        ("offered", "abandoned", "abandoned_within_30s"),
    ),
    Metric("to_backup", "Rolled over to the backup line", "count"),
    Metric("backup_rate", "Backup-line rate", "rate", ("offered", "to_backup")),
    Metric("chose_callback", "Chose a callback instead of waiting", "count"),
    Metric("rollovers", "Rollovers to the next responder", "count"),
    Metric("rollovers_per_contact", "Rollovers per contact offered", "ratio", ("offered", "rollovers")),
    Metric("co_responder_involved", "Co-responder involvements", "count", channels=("voice",)),
    Metric("ended_in_menu", "Ended in the menus (not offered)", "count", channels=("voice",)),
    Metric("first_response_mean", "First response, mean (s)", "seconds", ("first_responses",), ("sms",)),
    Metric("first_response_median", "First response, median (s)", "seconds", ("first_responses",), ("sms",)),
    Metric("first_response_p90", "First response, 90th percentile (s)", "seconds", ("first_responses",), ("sms",)),
    Metric("first_responses", "Texters who got a first response", "count", channels=("sms",)),
    Metric("callbacks_requested", "Callbacks requested", "count"),
    Metric("callbacks_completed", "Callbacks completed", "count"),
    Metric("callbacks_gave_up", "Callbacks given up", "count"),
    Metric("callbacks_canceled", "Callbacks canceled", "count"),
    Metric("time_to_callback_mean", "Time to callback, mean (s)", "seconds", ("callbacks_completed",)),
    Metric("time_to_callback_median", "Time to callback, median (s)", "seconds", ("callbacks_completed",)),
    Metric("time_to_callback_p90", "Time to callback, 90th percentile (s)", "seconds", ("callbacks_completed",)),
    Metric("followups_due", "Follow-ups due", "count"),
    Metric("followups_sent", "Follow-ups sent", "count"),
    Metric("followups_reached", "Follow-ups that reached the person", "count"),
    Metric("followups_escalated", "Follow-ups escalated to a supervisor", "count"),
    Metric("survey_answers", "Survey answers", "count"),
    Metric("survey_mean_score", "Survey score, mean (1-5)", "score", ("survey_answers",)),
)
METRICS_BY_NAME = {metric.name: metric for metric in METRICS}


def metrics_for(channel: str) -> tuple[Metric, ...]:
    return tuple(metric for metric in METRICS if channel in metric.channels)


@dataclass(frozen=True)
class Row:
    """The metrics of one group: ``all``, or one language / need / hour / weekday."""

    group: str
    values: dict[str, Value]


@dataclass(frozen=True)
class DayPoint:
    day: date
    offered: int
    answered: int

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.offered if self.offered else None


@dataclass(frozen=True)
class Report:
    period: Period
    channel: str
    breakdown: str | None
    timezone: str
    rows: tuple[Row, ...]
    daily: tuple[DayPoint, ...]
    speed_to_answer_seconds: tuple[float, ...]  # every answered contact's, for the distribution

    @property
    def overall(self) -> Row:
        return self.rows[0]

    def metrics(self) -> tuple[Metric, ...]:
        return metrics_for(self.channel)


def report(facts: Facts, period: Period, channel: str, breakdown: str | None = None) -> Report:
    """The metrics of ``channel`` for contacts that started in ``period`` (local dates)."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    if breakdown is not None and breakdown not in BREAKDOWNS:
        raise ValueError(f"breakdown must be one of {', '.join(BREAKDOWNS)}")
    tz = facts.timezone
    start, end = period.utc_bounds(tz)

    def within(moment: datetime) -> bool:
        return start <= moment < end

    contacts = [c for c in facts.contacts if c.channel == channel and within(c.started_at)]
    callbacks = [c for c in facts.callbacks if c.channel == channel and within(c.requested_at)]
    followups = [f for f in facts.followups if f.channel == channel and within(f.due_at)]
    surveys = [s for s in facts.surveys if s.channel == channel and within(s.answered_at)]

    rows = [Row("all", _values(contacts, callbacks, followups, surveys))]
    if breakdown is not None:
        key = _group_key(breakdown, tz)
        groups = sorted(
            {key(c.language, c.need, c.started_at) for c in contacts}
            | {key(c.language, c.need, c.requested_at) for c in callbacks}
            | {key(f.language, f.need, f.due_at) for f in followups}
            | {key(s.language, s.need, s.answered_at) for s in surveys},
            key=_group_order(breakdown),
        )
        for group in groups:
            rows.append(
                Row(
                    group,
                    _values(
                        [c for c in contacts if key(c.language, c.need, c.started_at) == group],
                        [c for c in callbacks if key(c.language, c.need, c.requested_at) == group],
                        [f for f in followups if key(f.language, f.need, f.due_at) == group],
                        [s for s in surveys if key(s.language, s.need, s.answered_at) == group],
                    ),
                )
            )
    speeds = tuple(
        sorted(c.speed_to_answer_seconds for c in contacts if c.speed_to_answer_seconds is not None and _answered(c))
    )
    return Report(
        period=period,
        channel=channel,
        breakdown=breakdown,
        timezone=str(tz),
        rows=tuple(Row(row.group, {m.name: row.values.get(m.name) for m in metrics_for(channel)}) for row in rows),
        daily=_daily(contacts, period, tz),
        speed_to_answer_seconds=speeds,
    )


def _answered(contact: Contact) -> bool:
    return contact.offered and contact.outcome == ANSWERED


def _values(
    contacts: Sequence[Contact],
    callbacks: Sequence[CallbackRequest],
    followups: Sequence[FollowUp],
    surveys: Sequence[SurveyAnswer],
) -> dict[str, Value]:
    offered = [c for c in contacts if c.offered]
    answered = [c for c in offered if c.outcome == ANSWERED]
    abandoned = [c for c in offered if c.outcome == ABANDONED]
    early = [c for c in abandoned if c.waited_seconds is not None and c.waited_seconds < EARLY_ABANDON_SECONDS]
    backup = [c for c in offered if c.outcome == BACKUP]
    speeds = [c.speed_to_answer_seconds for c in answered if c.speed_to_answer_seconds is not None]
    first = [c.first_response_seconds for c in offered if c.first_response_seconds is not None]
    rollovers = sum(c.rollovers for c in offered)
    completed = [c for c in callbacks if c.outcome == "connected"]
    to_callback = [c.seconds_to_callback for c in completed if c.seconds_to_callback is not None]
    ratings = [s.rating for s in surveys]
    n = len(offered)
    return {
        "offered": n,
        "answered": len(answered),
        "answered_by_counselor": sum(1 for c in answered if c.answered_by != "co_responder"),
        "answered_by_co_responder": sum(1 for c in answered if c.answered_by == "co_responder"),
        "answer_rate": _ratio(len(answered), n),
        "speed_to_answer_mean": _mean(speeds),
        "speed_to_answer_median": _median(speeds),
        "speed_to_answer_p90": percentile(speeds, 90),
        "abandoned": len(abandoned),
        "abandoned_within_30s": len(early),
        "abandonment_rate": _ratio(len(abandoned), n),
        # 988 style: short abandons (often misdials) leave both the numerator and the denominator.
        "abandonment_rate_after_30s": _ratio(len(abandoned) - len(early), n - len(early)),
        "to_backup": len(backup),
        "backup_rate": _ratio(len(backup), n),
        "chose_callback": sum(1 for c in offered if c.outcome == CALLBACK),
        "rollovers": rollovers,
        "rollovers_per_contact": _ratio(rollovers, n),
        "co_responder_involved": sum(1 for c in offered if c.co_responder_involved),
        "ended_in_menu": sum(1 for c in contacts if not c.offered),
        "first_response_mean": _mean(first),
        "first_response_median": _median(first),
        "first_response_p90": percentile(first, 90),
        "first_responses": len(first),
        "callbacks_requested": len(callbacks),
        "callbacks_completed": len(completed),
        "callbacks_gave_up": sum(1 for c in callbacks if c.outcome == "gave_up"),
        "callbacks_canceled": sum(1 for c in callbacks if c.outcome == "canceled"),
        "time_to_callback_mean": _mean(to_callback),
        "time_to_callback_median": _median(to_callback),
        "time_to_callback_p90": percentile(to_callback, 90),
        "followups_due": len(followups),
        "followups_sent": sum(1 for f in followups if f.sent),
        "followups_reached": sum(1 for f in followups if f.reached),
        "followups_escalated": sum(1 for f in followups if f.escalated),
        "survey_answers": len(ratings),
        "survey_mean_score": _mean([float(r) for r in ratings]),
    }


def percentile(values: Iterable[float], pct: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``pct`` % of values at or
    below it (so it is always a value that happened). None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole > 0 else None


def local(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz)


def _group_key(breakdown: str, tz: ZoneInfo) -> Callable[[str | None, str | None, datetime], str]:
    def key(language: str | None, need: str | None, moment: datetime) -> str:
        if breakdown == "language":
            return language or "unknown"
        if breakdown == "need":
            return need or "unknown"
        if breakdown == "hour":
            return f"{local(moment, tz).hour:02d}"
        return WEEKDAYS[local(moment, tz).weekday()]

    return key


def _group_order(breakdown: str) -> Callable[[str], tuple[int, str]]:
    if breakdown == "weekday":
        return lambda group: (WEEKDAYS.index(group), group)
    return lambda group: (group == "unknown", group)


def _daily(contacts: Sequence[Contact], period: Period, tz: ZoneInfo) -> tuple[DayPoint, ...]:
    offered: dict[date, int] = {}
    answered: dict[date, int] = {}
    for contact in contacts:
        if not contact.offered:
            continue
        day = local(contact.started_at, tz).date()
        offered[day] = offered.get(day, 0) + 1
        if contact.outcome == ANSWERED:
            answered[day] = answered.get(day, 0) + 1
    return tuple(DayPoint(day, offered.get(day, 0), answered.get(day, 0)) for day in period.days())
