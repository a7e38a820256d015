"""The line's own 988-style metrics, computed from the events and rows it records.

Plain functions a page or a command calls (definitions: ``docs/metrics.md``):

- :func:`build_report` (database → :class:`Report`), or ``compute.report`` over plain facts;
- :func:`build_staffing` (demand against responders on shift, per language, last N weeks);
- ``export.to_table`` / ``to_csv`` / ``to_json`` (small counts suppressed in exports);
- ``svg.contacts_over_time``, ``svg.speed_to_answer_histogram``, ``svg.staffing_heatmap``.

Nothing here writes to the database or reads personal data.
"""

from __future__ import annotations

from datetime import date

from metrics.compute import METRICS, Metric, Report, Row, report
from metrics.facts import BREAKDOWNS, CHANNELS, Facts, Period
from metrics.load import DbSession, load_facts
from metrics.query import demand, report_from_rollup
from metrics.rollup import Refreshed, refresh
from metrics.staffing import StaffingGrid, staffing_grid, staffing_period
from routing.document import RoutingDocument

__all__ = [
    "BREAKDOWNS",
    "CHANNELS",
    "METRICS",
    "Facts",
    "Metric",
    "Period",
    "Refreshed",
    "Report",
    "Row",
    "StaffingGrid",
    "build_report",
    "build_staffing",
    "load_facts",
    "refresh",
    "report",
    "report_from_events",
]


def build_report(
    session: DbSession, document: RoutingDocument, period: Period, channel: str, breakdown: str | None = None,
    budget: int | None = None,
) -> Report:  # fmt: skip
    """The metrics of ``channel`` over ``period`` (local dates of the routing's time zone): the
    rollup is brought up to now (at most ``budget`` sources looked at; 0: the caller just did),
    then aggregated in SQL."""
    if budget != 0:
        refresh(session, document, budget=budget)
    return report_from_rollup(session, period, channel, breakdown, document.timezone)


def report_from_events(
    session: DbSession, document: RoutingDocument, period: Period, channel: str, breakdown: str | None = None
) -> Report:
    """The same report replayed from the event log in Python: the reference, and the bench's baseline."""
    return report(load_facts(session, period, document), period, channel, breakdown)


def build_staffing(
    session: DbSession, document: RoutingDocument, end: date, weeks: int = 4, language: str | None = None,
    channel: str | None = None, budget: int | None = None,
) -> StaffingGrid:  # fmt: skip
    """Demand (contacts offered, both channels unless ``channel``) against responders on shift."""
    if budget != 0:
        refresh(session, document, budget=budget)
    start, stop = staffing_period(end, weeks).utc_bounds(document.timezone)
    return staffing_grid(document, demand(session, start, stop, channel, language), end, weeks, language)
