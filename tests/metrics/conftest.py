"""Metrics fixtures: scheduled contacts run in this process under the travelled clock, and the
report of the published routing over a period. Tests that drive the line use ``clean_redis``
(callbacks and check-ins are scheduled contacts); the pure ones need no service at all."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import ScheduledContact
from metrics import BREAKDOWNS, Report, build_report, report_from_events
from metrics.facts import Period
from routing.store import active_routing

WEDNESDAY = Period(date(2026, 12, 2), date(2026, 12, 3))  # tests.rota's Wednesday, local dates
WEDNESDAY_AND_THURSDAY = Period(date(2026, 12, 2), date(2026, 12, 4))


@pytest.fixture
def run_due(app: Flask) -> Callable[[], list[str]]:
    """Run every pending scheduled contact due by the (travelled) clock, as its RQ job does."""

    def run() -> list[str]:
        from workers.contacts import now, run_scheduled_contact

        with app.app_context():
            due = db.session.scalars(
                select(ScheduledContact.id)
                .where(ScheduledContact.state == "pending", ScheduledContact.due_at <= now())
                .order_by(ScheduledContact.due_at, ScheduledContact.id)
            ).all()
            return [run_scheduled_contact(contact_id) for contact_id in due]

    return run


@pytest.fixture
def metrics_of(app: Flask) -> Callable[..., Report]:
    """The report the console page and the CLI build (the rollup, aggregated in SQL), from what
    the line recorded; checked against the same report replayed from the event log in Python,
    for every breakdown, so each hand-worked test holds on both paths."""

    def build(channel: str, period: Period = WEDNESDAY, breakdown: str | None = None) -> Report:
        with app.app_context():
            active = active_routing()
            assert active is not None
            built = build_report(db.session, active.document, period, channel, breakdown)
            for other in {breakdown, *BREAKDOWNS}:
                assert_same_report(
                    build_report(db.session, active.document, period, channel, other),
                    report_from_events(db.session, active.document, period, channel, other),
                )
            return built

    return build


def assert_same_report(rolled_up: Report, replayed: Report) -> None:
    """Every row, value, day and speed the same, to the last bit (on PostgreSQL the means,
    medians and percentiles are computed in SQL: ``metrics.query._summaries``)."""
    assert [row.group for row in rolled_up.rows] == [row.group for row in replayed.rows]
    for mine, theirs in zip(rolled_up.rows, replayed.rows, strict=True):
        assert mine.values == theirs.values, mine.group
    assert rolled_up.daily == replayed.daily
    assert rolled_up.speed_to_answer_counts == replayed.speed_to_answer_counts


def number(value: object) -> float:
    """A metric's value that must be there (not withheld, not undefined)."""
    assert isinstance(value, int | float), value
    return float(value)
