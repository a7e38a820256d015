"""The metrics, as pure functions over plain facts (``metrics.facts``): no database, no Flask.

``report(facts, period, channel, breakdown)`` gives one row for the whole period and, with a
breakdown, one row per language, need, hour of day or day of week (the line's local time).
Every metric's exact rule is in ``docs/metrics.md``; its name here is its anchor there.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
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
    # The distribution's chart: (whole seconds, answered contacts whose speed to answer is that
    # many seconds and a fraction), ascending; a year of 500,000 answers is a few thousand pairs.
    speed_to_answer_counts: tuple[tuple[int, int], ...]

    @property
    def overall(self) -> Row:
        return self.rows[0]

    def metrics(self) -> tuple[Metric, ...]:
        return metrics_for(self.channel)


def report(facts: Facts, period: Period, channel: str, breakdown: str | None = None) -> Report:
    """The metrics of ``channel`` for contacts that started in ``period`` (local dates)."""
    check(channel, breakdown)
    tz = facts.timezone
    start, end = period.utc_bounds(tz)

    def within(moment: datetime) -> bool:
        return start <= moment < end

    contacts = [c for c in facts.contacts if c.channel == channel and within(c.started_at)]
    callbacks = [c for c in facts.callbacks if c.channel == channel and within(c.requested_at)]
    followups = [f for f in facts.followups if f.channel == channel and within(f.due_at)]
    surveys = [s for s in facts.surveys if s.channel == channel and within(s.answered_at)]

    tallies = {"all": tally(contacts, callbacks, followups, surveys)}
    if breakdown is not None:
        key = _group_key(breakdown, tz)
        groups = sorted(
            {key(c.language, c.need, c.started_at) for c in contacts}
            | {key(c.language, c.need, c.requested_at) for c in callbacks}
            | {key(f.language, f.need, f.due_at) for f in followups}
            | {key(s.language, s.need, s.answered_at) for s in surveys},
            key=group_order(breakdown),
        )
        for group in groups:
            tallies[group] = tally(
                [c for c in contacts if key(c.language, c.need, c.started_at) == group],
                [c for c in callbacks if key(c.language, c.need, c.requested_at) == group],
                [f for f in followups if key(f.language, f.need, f.due_at) == group],
                [s for s in surveys if key(s.language, s.need, s.answered_at) == group],
            )
    return assemble(period, channel, breakdown, str(tz), tallies, _daily(contacts, period, tz))


def check(channel: str, breakdown: str | None) -> None:
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    if breakdown is not None and breakdown not in BREAKDOWNS:
        raise ValueError(f"breakdown must be one of {', '.join(BREAKDOWNS)}")


def assemble(
    period: Period, channel: str, breakdown: str | None, timezone: str, tallies: dict[str, Tally],
    daily: tuple[DayPoint, ...],
) -> Report:  # fmt: skip
    """The report from each group's tally (``all`` first, then the groups in order)."""
    names = [m.name for m in metrics_for(channel)]
    rows = []
    for group, t in tallies.items():
        computed = values(t)  # once per group: it sorts every second of the group
        rows.append(Row(group, {name: computed.get(name) for name in names}))
    return Report(
        period=period,
        channel=channel,
        breakdown=breakdown,
        timezone=timezone,
        rows=tuple(rows),
        daily=daily,
        speed_to_answer_counts=tallies["all"].speed_counts or whole_seconds(tallies["all"].speeds),
    )


def whole_seconds(samples: Iterable[float]) -> tuple[tuple[int, int], ...]:
    """How many samples fall in each whole second (floor), ascending."""
    return tuple(sorted(Counter(math.floor(value) for value in samples).items()))


@dataclass(frozen=True)
class Summary:
    """The mean, median and 90th percentile of a list of seconds, and how many there are: from
    the list (:func:`summarize`), or from SQL aggregates that give exactly the same values."""

    count: int
    mean: float | None
    median: float | None
    p90: float | None


def summarize(samples: Sequence[float]) -> Summary:
    return Summary(len(samples), _mean(samples), _median(samples), percentile(samples, 90))


@dataclass
class Tally:
    """What one group's metrics are computed from: counts, and the seconds the percentiles need.
    ``compute.tally`` fills it from facts; ``metrics.query`` from the rollup's SQL aggregates."""

    offered: int = 0
    answered: int = 0
    answered_by_co_responder: int = 0
    abandoned: int = 0
    abandoned_within_30s: int = 0
    to_backup: int = 0
    chose_callback: int = 0
    rollovers: int = 0
    co_responder_involved: int = 0
    ended_in_menu: int = 0
    speeds: list[float] = field(default_factory=list)  # answered contacts' speed to answer
    first_responses: list[float] = field(default_factory=list)
    callbacks_requested: int = 0
    callbacks_completed: int = 0
    callbacks_gave_up: int = 0
    callbacks_canceled: int = 0
    to_callback: list[float] = field(default_factory=list)
    followups_due: int = 0
    followups_sent: int = 0
    followups_reached: int = 0
    followups_escalated: int = 0
    survey_answers: int = 0
    survey_total: int = 0  # the sum of the ratings
    # Set by ``metrics.query`` on PostgreSQL instead of the lists above (``speeds``,
    # ``first_responses``, ``to_callback``): their summaries, computed in SQL, and the speeds'
    # whole-second counts. Not added up: a group's percentiles are not its parts' sum.
    summaries: dict[str, Summary] = field(default_factory=dict)
    speed_counts: tuple[tuple[int, int], ...] = ()

    def add(self, other: Tally) -> None:
        for name, value in vars(other).items():
            if name in ("summaries", "speed_counts"):
                continue
            mine = getattr(self, name)
            setattr(self, name, mine + value)

    def summary(self, name: str) -> Summary:
        """``speeds``, ``first_responses`` or ``to_callback``: its count, mean, median and p90."""
        return self.summaries.get(name) or summarize(getattr(self, name))


def tally(
    contacts: Sequence[Contact],
    callbacks: Sequence[CallbackRequest],
    followups: Sequence[FollowUp],
    surveys: Sequence[SurveyAnswer],
) -> Tally:
    offered = [c for c in contacts if c.offered]
    answered = [c for c in offered if c.outcome == ANSWERED]
    abandoned = [c for c in offered if c.outcome == ABANDONED]
    completed = [c for c in callbacks if c.outcome == "connected"]
    return Tally(
        offered=len(offered),
        answered=len(answered),
        answered_by_co_responder=sum(1 for c in answered if c.answered_by == "co_responder"),
        abandoned=len(abandoned),
        abandoned_within_30s=sum(
            1 for c in abandoned if c.waited_seconds is not None and c.waited_seconds < EARLY_ABANDON_SECONDS
        ),
        to_backup=sum(1 for c in offered if c.outcome == BACKUP),
        chose_callback=sum(1 for c in offered if c.outcome == CALLBACK),
        rollovers=sum(c.rollovers for c in offered),
        co_responder_involved=sum(1 for c in offered if c.co_responder_involved),
        ended_in_menu=sum(1 for c in contacts if not c.offered),
        speeds=[c.speed_to_answer_seconds for c in answered if c.speed_to_answer_seconds is not None],
        first_responses=[c.first_response_seconds for c in offered if c.first_response_seconds is not None],
        callbacks_requested=len(callbacks),
        callbacks_completed=len(completed),
        callbacks_gave_up=sum(1 for c in callbacks if c.outcome == "gave_up"),
        callbacks_canceled=sum(1 for c in callbacks if c.outcome == "canceled"),
        to_callback=[c.seconds_to_callback for c in completed if c.seconds_to_callback is not None],
        followups_due=len(followups),
        followups_sent=sum(1 for f in followups if f.sent),
        followups_reached=sum(1 for f in followups if f.reached),
        followups_escalated=sum(1 for f in followups if f.escalated),
        survey_answers=len(surveys),
        survey_total=sum(s.rating for s in surveys),
    )


def values(t: Tally) -> dict[str, Value]:
    """Every metric of one group (``docs/metrics.md``) from its tally."""
    n = t.offered
    speed, first, callback = t.summary("speeds"), t.summary("first_responses"), t.summary("to_callback")
    return {
        "offered": n,
        "answered": t.answered,
        "answered_by_counselor": t.answered - t.answered_by_co_responder,
        "answered_by_co_responder": t.answered_by_co_responder,
        "answer_rate": _ratio(t.answered, n),
        "speed_to_answer_mean": speed.mean,
        "speed_to_answer_median": speed.median,
        "speed_to_answer_p90": speed.p90,
        "abandoned": t.abandoned,
        "abandoned_within_30s": t.abandoned_within_30s,
        "abandonment_rate": _ratio(t.abandoned, n),
        # 988 style: short abandons (often misdials) leave both the numerator and the denominator.
        "abandonment_rate_after_30s": _ratio(t.abandoned - t.abandoned_within_30s, n - t.abandoned_within_30s),
        "to_backup": t.to_backup,
        "backup_rate": _ratio(t.to_backup, n),
        "chose_callback": t.chose_callback,
        "rollovers": t.rollovers,
        "rollovers_per_contact": _ratio(t.rollovers, n),
        "co_responder_involved": t.co_responder_involved,
        "ended_in_menu": t.ended_in_menu,
        "first_response_mean": first.mean,
        "first_response_median": first.median,
        "first_response_p90": first.p90,
        "first_responses": first.count,
        "callbacks_requested": t.callbacks_requested,
        "callbacks_completed": t.callbacks_completed,
        "callbacks_gave_up": t.callbacks_gave_up,
        "callbacks_canceled": t.callbacks_canceled,
        "time_to_callback_mean": callback.mean,
        "time_to_callback_median": callback.median,
        "time_to_callback_p90": callback.p90,
        "followups_due": t.followups_due,
        "followups_sent": t.followups_sent,
        "followups_reached": t.followups_reached,
        "followups_escalated": t.followups_escalated,
        "survey_answers": t.survey_answers,
        # Ratings are whole numbers: their exact sum over the count is fmean of them.
        "survey_mean_score": t.survey_total / t.survey_answers if t.survey_answers else None,
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


def group_order(breakdown: str) -> Callable[[str], tuple[int, str]]:
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
