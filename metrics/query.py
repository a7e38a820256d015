"""The metrics of a period from the rollup (``metric_facts``), aggregated in SQL.

Counts are GROUP BY aggregates (by local day and the breakdown's group, in one scan); the
seconds a median or a 90th percentile needs are fetched as one narrow column, only for the
contacts they are over, so every value is exactly what ``compute.report`` gives over the same
facts (the same ``compute.values`` turns a group's tally into its metrics).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select

from crisisline.models import MetricFact
from metrics.compute import (
    EARLY_ABANDON_SECONDS,
    WEEKDAYS,
    DayPoint,
    Report,
    Tally,
    assemble,
    check,
    group_order,
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

    # The seconds behind the means and percentiles: one narrow column, of the contacts they are over.
    speed = case((answered, F.speed_to_answer_seconds), else_=None)
    for raw, seconds, first in session.execute(
        select(group, speed, F.first_response_seconds).where(
            contacts, in_period, offered, or_(speed.is_not(None), F.first_response_seconds.is_not(None))
        )
    ):
        tally = groups[label(raw)]
        if seconds is not None:
            tally.speeds.append(seconds)
        if first is not None:
            tally.first_responses.append(first)

    callbacks = and_(F.source == "callback", F.channel == channel, in_period)
    connected = F.outcome == "connected"
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
    for raw, seconds in session.execute(
        select(group, F.seconds_to_callback).where(callbacks, connected, F.seconds_to_callback.is_not(None))
    ):
        groups[label(raw)].to_callback.append(seconds)

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
    tallies = {"all": overall}
    if breakdown is not None:
        tallies.update((name, groups[name]) for name in sorted(groups, key=group_order(breakdown)))
    daily = tuple(
        DayPoint(day, daily_offered.get(day.isoformat(), 0), daily_answered.get(day.isoformat(), 0))
        for day in period.days()
    )
    return assemble(period, channel, breakdown, timezone.key, tallies, daily)


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
