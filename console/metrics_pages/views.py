"""``/console/metrics``: a period's numbers, plots and staffing; CSV with small counts withheld."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flask import Blueprint, Response, render_template, request
from markupsafe import Markup

from console.access import allow
from console.inputs import calendar_day, whole_number
from console.metrics_pages.definitions import defined_names, definitions
from console.models import ADMIN, SUPERVISOR
from crisisline.db import db
from metrics import BREAKDOWNS, CHANNELS, Period, build_report, build_staffing, refresh
from metrics.export import DEFAULT_MIN_COUNT, to_csv
from metrics.svg import contacts_over_time, speed_to_answer_histogram, staffing_heatmap
from routing.document import RoutingDocument
from routing.store import active_routing

bp = Blueprint("metrics", __name__)
DEFAULT_DAYS = 28
# The longest periods asked for: a page's numbers are computed while someone waits (a thousand
# years took 5.5 s of one web worker); the CSV, for reports over several years, may take longer.
MAX_PAGE_DAYS = 366
MAX_CSV_DAYS = 3 * 366
# Sources the page's own refresh may look at: the clock's job keeps the rollup current, so
# this is the last few minutes' tail; a first build of a long history is left to the clock.
PAGE_BUDGET = 5000
BEHIND = (
    "Older contacts are still being counted (a first build runs in the background): the numbers are not complete yet."
)


def _refresh(document: RoutingDocument) -> list[str]:
    """The rollup brought up to now before the numbers are read; a note if it is not there yet."""
    done = refresh(db.session, document, budget=PAGE_BUDGET)
    return [BEHIND] if done.claimed and not done.caught_up else []


def _document() -> RoutingDocument | None:
    active = active_routing()
    return active.document if active else None


def _day(name: str, default: date) -> tuple[date, str | None]:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default, None
    try:
        return calendar_day(raw), None
    except ValueError as problem:
        return default, f"{name}: {problem}"


def _chosen(document: RoutingDocument, max_days: int) -> tuple[Period, str, str | None, list[str]]:
    """The period (at most ``max_days`` long), channel and breakdown asked for, with a message
    for each bad field (the page then shows the default instead of failing)."""
    today = datetime.now(document.timezone).date()
    end, end_problem = _day("to", today + timedelta(days=1))
    start, start_problem = _day("from", end - timedelta(days=DEFAULT_DAYS))
    problems = [problem for problem in (start_problem, end_problem) if problem]
    if end <= start:
        problems.append("the period must end after it starts")
        start, end = end - timedelta(days=DEFAULT_DAYS), end
    elif (end - start).days > max_days:
        problems.append(f"the period can be at most {max_days} days long")
        start, end = end - timedelta(days=DEFAULT_DAYS), end
    channel = request.args.get("channel", "voice")
    if channel not in CHANNELS:
        problems.append(f"channel: one of {', '.join(CHANNELS)}")
        channel = "voice"
    breakdown = request.args.get("by") or None
    if breakdown is not None and breakdown not in BREAKDOWNS:
        problems.append(f"by: one of {', '.join(BREAKDOWNS)}")
        breakdown = None
    return Period(start, end), channel, breakdown, problems


@bp.get("/metrics")
@allow(ADMIN, SUPERVISOR)
def page() -> str | tuple[str, int]:
    document = _document()
    if document is None:
        return render_template("console/metrics.html", report=None, problems=["No routing is published yet."]), 200
    period, channel, breakdown, problems = _chosen(document, MAX_PAGE_DAYS)
    notices = _refresh(document)
    report = build_report(db.session, document, period, channel, breakdown, budget=0)
    charts = {
        # Our own SVG, built from aggregates; every text in it is escaped by metrics.svg.
        "contacts": Markup(contacts_over_time(report)),  # noqa: S704
        "speed": Markup(speed_to_answer_histogram(report)),  # noqa: S704
    }
    return render_template(
        "console/metrics.html", report=report, charts=charts, problems=problems, breakdowns=BREAKDOWNS,
        channels=CHANNELS, defined=defined_names(), min_count=DEFAULT_MIN_COUNT, notices=notices,
    )  # fmt: skip


@bp.get("/metrics.csv")
@allow(ADMIN, SUPERVISOR)
def download() -> Response:
    """Aggregates only, counts under the threshold (and what is computed over them) withheld."""
    document = _document()
    if document is None:
        return Response("No routing is published yet.\n", status=409, mimetype="text/plain")
    period, channel, breakdown, problems = _chosen(document, MAX_CSV_DAYS)
    if problems:
        return Response("; ".join(problems) + "\n", status=400, mimetype="text/plain")
    report = build_report(db.session, document, period, channel, breakdown, budget=PAGE_BUDGET)
    name = f"metrics-{channel}-{period.start}-{period.end}{'-by-' + breakdown if breakdown else ''}.csv"
    return Response(
        to_csv(report, DEFAULT_MIN_COUNT), mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )  # fmt: skip


@bp.get("/metrics/staffing")
@allow(ADMIN, SUPERVISOR)
def staffing() -> str:
    document = _document()
    if document is None:
        return render_template("console/staffing.html", grid=None, chart=None, problems=["No routing is published."])
    weeks_raw = request.args.get("weeks", "4")
    weeks = whole_number(weeks_raw, 52) or 4  # anything else (0, 5,000 digits, "٣"): the default
    codes = [language.code for language in document.languages]
    language = request.args.get("language") or None
    if language not in (None, *codes):
        language = None
    end = datetime.now(document.timezone).date() + timedelta(days=1)
    notices = _refresh(document)
    grid = build_staffing(db.session, document, end, weeks, language, budget=0)
    names = {lang.code: lang.staff_name for lang in document.languages}
    chart = Markup(staffing_heatmap(grid, language_name=names.get(language or "")))  # noqa: S704 - our own SVG
    return render_template(
        "console/staffing.html",
        grid=grid,
        chart=chart,
        weeks=weeks,
        language=language,
        languages=names,
        problems=[],
        notices=notices,
    )


@bp.get("/metrics/definitions")
@allow(ADMIN, SUPERVISOR)
def definitions_page() -> str:
    return render_template("console/metric_definitions.html", definitions=definitions())
