"""The metrics of a period from the rollup (``metric_facts``), aggregated in SQL.

Counts are GROUP BY aggregates (by local day and the breakdown's group, in one scan). The
means, medians and 90th percentiles are, on PostgreSQL, ordered-set aggregates and exact
integer sums (``_summaries``: a year's half million seconds are never fetched), and on SQLite
one narrow column fetched and ranked in Python. Either way every value is exactly what
``compute.report`` gives over the same facts (the same ``compute.values`` turns a group's tally
into its metrics), to the last bit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, ColumnElement, and_, case, cast, func, literal, select

from crisisline.models import MetricFact
from metrics.compute import (
    EARLY_ABANDON_SECONDS,
    WEEKDAYS,
    DayPoint,
    Report,
    Summary,
    Tally,
    assemble,
    check,
    group_order,
    summarize,
)
from metrics.facts import ABANDONED, ANSWERED, BACKUP, CALLBACK, Period
from metrics.load import DbSession

CONTACT_SOURCE = {"voice": "call", "sms": "conversation"}
F = MetricFact
CONTACT_COUNTS = (
    "offered", "answered", "answered_by_co_responder", "abandoned", "abandoned_within_30s", "to_backup",
    "chose_callback", "rollovers", "co_responder_involved", "ended_in_menu",
)  # fmt: skip


def _count(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _group_column(breakdown: str | None) -> Any:
    if breakdown is None:
        return literal("all")
    return {"language": F.language, "need": F.need, "hour": F.local_hour, "weekday": F.local_weekday}[breakdown]


def _label(breakdown: str | None) -> Callable[[Any], str]:
    """The group a stored value belongs to, as ``compute`` names it."""
    if breakdown == "hour":
        return lambda hour: f"{int(hour):02d}"
    if breakdown == "weekday":
        return lambda weekday: WEEKDAYS[int(weekday)]
    return lambda value: value or "unknown"


def report_from_rollup(
    session: DbSession, period: Period, channel: str, breakdown: str | None, timezone: ZoneInfo
) -> Report:
    """The report ``compute.report`` would give over the facts of ``period`` (local dates)."""
    check(channel, breakdown)
    start, end = period.utc_bounds(timezone)
    group, label = _group_column(breakdown), _label(breakdown)
    contacts = F.source == CONTACT_SOURCE[channel]
    in_period = and_(F.at >= start, F.at < end)
    groups: dict[str, Tally] = defaultdict(Tally)
    daily_offered: dict[str, int] = defaultdict(int)
    daily_answered: dict[str, int] = defaultdict(int)

    offered, answered = F.offered.is_(True), and_(F.offered.is_(True), F.outcome == ANSWERED)
    abandoned = and_(offered, F.outcome == ABANDONED)
    for row in session.execute(
        select(
            group, F.local_day, _count(offered), _count(answered),
            _count(and_(answered, F.answered_by == "co_responder")), _count(abandoned),
            _count(and_(abandoned, F.waited_seconds < EARLY_ABANDON_SECONDS)),
            _count(and_(offered, F.outcome == BACKUP)), _count(and_(offered, F.outcome == CALLBACK)),
            func.coalesce(func.sum(case((offered, F.rollovers), else_=0)), 0),
            _count(and_(offered, F.co_responder_involved.is_(True))), _count(F.offered.is_(False)),
        )
        .where(contacts, in_period)
        .group_by(group, F.local_day)
    ):  # fmt: skip
        counts = Tally()
        for name, value in zip(CONTACT_COUNTS, row[2:], strict=True):
            setattr(counts, name, int(value))
        groups[label(row[0])].add(counts)
        daily_offered[row[1]] += counts.offered
        daily_answered[row[1]] += counts.answered

    callbacks = and_(F.source == "callback", F.channel == channel, in_period)
    connected = F.outcome == "connected"
    # The seconds behind the means and percentiles, of the contacts they are over.
    seconds = (
        ("speeds", F.speed_to_answer_seconds, and_(contacts, in_period, answered)),
        ("first_responses", F.first_response_seconds, and_(contacts, in_period, offered)),
        ("to_callback", F.seconds_to_callback, and_(callbacks, connected)),
    )
    overall_summaries: dict[str, Summary] = {}
    speed_counts: tuple[tuple[int, int], ...] = ()
    if session.get_bind().dialect.name == "postgresql":
        # In SQL: a year's half million seconds are never fetched.
        for name, column, where in seconds:
            if name == "first_responses" and channel != "sms":
                continue  # calls have none
            by_group = _summaries(session, group, column, where)
            if by_group is None:  # a value SQL cannot sum exactly (never from timestamps): in Python
                _fetch(session, group, label, name, column, where, groups)
                continue
            for raw, summary in by_group.items():
                groups[label(raw)].summaries[name] = summary
            whole = by_group if breakdown is None else _summaries(session, None, column, where) or {}
            overall_summaries[name] = next(iter(whole.values()), summarize([]))
        speed_counts = tuple(
            (int(second), int(count))
            for second, count in session.execute(
                select(func.floor(F.speed_to_answer_seconds).label("second"), func.count())
                .where(seconds[0][2], F.speed_to_answer_seconds.is_not(None))
                .group_by("second")
                .order_by("second")
            )
        )
    else:  # SQLite: one narrow column, ranked in Python
        for name, column, where in seconds:
            _fetch(session, group, label, name, column, where, groups)

    for raw, requested, completed, gave_up, canceled in session.execute(
        select(group, func.count(), _count(connected), _count(F.outcome == "gave_up"), _count(F.outcome == "canceled"))
        .where(callbacks)
        .group_by(group)
    ):
        tally = groups[label(raw)]
        tally.callbacks_requested += requested
        tally.callbacks_completed += int(completed)
        tally.callbacks_gave_up += int(gave_up)
        tally.callbacks_canceled += int(canceled)
    for raw, due, sent, reached, escalated in session.execute(
        select(group, func.count(), _count(F.sent.is_(True)), _count(F.reached.is_(True)),
               _count(F.escalated.is_(True)))
        .where(F.source == "checkin", F.channel == channel, in_period)
        .group_by(group)
    ):  # fmt: skip
        tally = groups[label(raw)]
        tally.followups_due += due
        tally.followups_sent += int(sent)
        tally.followups_reached += int(reached)
        tally.followups_escalated += int(escalated)
    for raw, answers, total in session.execute(
        select(group, func.count(), func.coalesce(func.sum(F.rating), 0))
        .where(F.source == "survey", F.channel == channel, in_period)
        .group_by(group)
    ):
        tally = groups[label(raw)]
        tally.survey_answers += answers
        tally.survey_total += int(total)

    overall = Tally()
    for part in groups.values():
        overall.add(part)
    overall.summaries.update(overall_summaries)
    overall.speed_counts = speed_counts
    tallies = {"all": overall}
    if breakdown is not None:
        tallies.update((name, groups[name]) for name in sorted(groups, key=group_order(breakdown)))
    daily = tuple(
        DayPoint(day, daily_offered.get(day.isoformat(), 0), daily_answered.get(day.isoformat(), 0))
        for day in period.days()
    )
    return assemble(period, channel, breakdown, timezone.key, tallies, daily)


def _fetch(
    session: DbSession, group: Any, label: Callable[[Any], str], name: str, column: Any, where: Any,
    groups: dict[str, Tally],
) -> None:  # fmt: skip
    """Every value of one kind of seconds, appended to its group's list (ranked in Python)."""
    for raw, value in session.execute(select(group, column).where(where, column.is_not(None))):
        getattr(groups[label(raw)], name).append(value)


def _summaries(session: DbSession, group: Any, column: Any, where: Any) -> dict[Any, Summary] | None:
    """PostgreSQL: each group's count, mean, median and 90th percentile of ``column``, exactly
    the values ``compute.summarize`` gives over the same floats (None: one value can't be).

    - 90th percentile: ``percentile_disc(0.9)`` is the nearest rank, ``ceil(0.9 * n)``, the
      same float product as ``compute.percentile`` (``percentile_cont`` would interpolate).
    - Median: the middle value, or the mean of the two middle ones (``statistics.median``):
      ``percentile_disc(0.5)`` in ascending and in descending order.
    - Mean: ``statistics.fmean`` is the correctly rounded sum (``math.fsum``) over n; SQL's
      float sum rounds at every step. So each value is split into two exact integers, its
      2⁻²⁰ s and its 2⁻⁷² s: a value of whole microseconds (any difference of two timestamps)
      has no finer bit, and integer sums are exact; the sum is rounded once, in Python.
    """
    scaled = column * literal(float(2**20))
    high = func.floor(scaled)
    low = (scaled - high) * literal(float(2**52))
    columns = (
        func.count(column), func.sum(cast(high, BigInteger)), func.sum(cast(low, BigInteger)),
        func.coalesce(func.sum(case((low != func.floor(low), 1), else_=0)), 0),
        func.percentile_disc(0.5).within_group(column.asc()), func.percentile_disc(0.5).within_group(column.desc()),
        func.percentile_disc(0.9).within_group(column.asc()),
    )  # fmt: skip
    query = select(literal("all") if group is None else group, *columns).where(where, column.is_not(None))
    if group is not None:
        query = query.group_by(group)
    found: dict[Any, Summary] = {}
    for raw, count, high_sum, low_sum, inexact, lower, upper, p90 in session.execute(query):
        if not count:
            continue
        if inexact:
            return None
        total = float(Fraction(int(high_sum) * 2**52 + int(low_sum), 2**72))  # = math.fsum of the values
        median = lower if count % 2 else (lower + upper) / 2
        found[raw] = Summary(count, total / count, float(median), p90)
    return found


def demand(
    session: DbSession, start: datetime, end: datetime, channel: str | None, language: str | None
) -> list[list[int]]:
    """Contacts offered by local weekday (Monday first) and hour, between two instants."""
    sources = [CONTACT_SOURCE[channel]] if channel else list(CONTACT_SOURCE.values())
    query = (
        select(F.local_weekday, F.local_hour, func.count())
        .where(F.source.in_(sources), F.offered.is_(True), F.at >= start, F.at < end)
        .group_by(F.local_weekday, F.local_hour)
    )
    if language is not None:
        query = query.where(F.language == language)
    grid = [[0] * 24 for _ in WEEKDAYS]
    for weekday, hour, count in session.execute(query):
        grid[int(weekday)][int(hour)] = int(count)
    return grid
