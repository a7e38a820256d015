"""Staffing: demand by hour of day and day of week against the responders on shift, per
language, over the last N weeks, so a coordinator sees where to add shifts.

Demand is contacts offered per week (the average over the weeks); on shift is the average
number of responders on call at half past each hour (weekly rota and one-off overrides of the
routing given, i.e. the live one), counting only those who speak the language.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from metrics.compute import WEEKDAYS
from metrics.facts import Contact, Period
from routing.document import RoutingDocument
from routing.schedule import is_on_call

HOURS = tuple(range(24))


@dataclass(frozen=True)
class Cell:
    weekday: int  # 0 = Monday
    hour: int
    demand_per_week: float
    on_shift: float

    @property
    def demand_per_responder(self) -> float | None:
        """Contacts per week per responder on shift; None where nobody is (a gap if demand > 0)."""
        return self.demand_per_week / self.on_shift if self.on_shift else None

    @property
    def gap(self) -> bool:
        return self.demand_per_week > 0 and self.on_shift == 0


@dataclass(frozen=True)
class StaffingGrid:
    language: str | None  # None: every language
    weeks: int
    period: Period
    cells: tuple[Cell, ...]  # 7 x 24, Monday 00h first

    def cell(self, weekday: int, hour: int) -> Cell:
        return self.cells[weekday * 24 + hour]

    @property
    def busiest(self) -> float:
        return max((cell.demand_per_week for cell in self.cells), default=0.0)


def staffing_period(end: date, weeks: int) -> Period:
    """The ``weeks`` whole weeks before ``end`` (excluded)."""
    if weeks < 1:
        raise ValueError("weeks must be at least 1")
    return Period(end - timedelta(weeks=weeks), end)


def staffing(
    document: RoutingDocument, contacts: Iterable[Contact], end: date, weeks: int = 4, language: str | None = None
) -> StaffingGrid:
    """The grid from contacts (facts); ``staffing_grid`` from counts (the rollup's)."""
    period = staffing_period(end, weeks)
    start_utc, end_utc = period.utc_bounds(document.timezone)
    demand = [[0] * 24 for _ in WEEKDAYS]
    for contact in contacts:
        if not contact.offered or not (start_utc <= contact.started_at < end_utc):
            continue
        if language is not None and contact.language != language:
            continue
        moment = contact.started_at.astimezone(document.timezone)
        demand[moment.weekday()][moment.hour] += 1
    return staffing_grid(document, demand, end, weeks, language)


def staffing_grid(
    document: RoutingDocument, demand: list[list[int]], end: date, weeks: int = 4, language: str | None = None
) -> StaffingGrid:
    """``demand[weekday][hour]``: contacts offered over the ``weeks`` before ``end``."""
    period = staffing_period(end, weeks)
    responders = [r for r in document.responders if language is None or language in r.languages]
    on_shift = [[0] * 24 for _ in WEEKDAYS]
    for day in period.days():
        for hour in HOURS:
            wall_clock = datetime.combine(day, time(hour, 30))
            on_shift[day.weekday()][hour] += sum(1 for r in responders if is_on_call(r, wall_clock))
    cells = tuple(
        Cell(weekday, hour, demand[weekday][hour] / weeks, on_shift[weekday][hour] / weeks)
        for weekday in range(7)
        for hour in HOURS
    )
    return StaffingGrid(language, weeks, period, cells)
