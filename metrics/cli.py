"""``flask metrics report`` and ``flask metrics staffing``: aggregates only, never a person.

    flask --app crisisline metrics report --from 2026-11-01 --to 2026-12-01 --channel voice --by language --format csv

Dates are the line's local dates (its routing's time zone); ``--to`` is excluded. CSV and
JSON suppress counts under ``--min-count`` (default 5, or ``METRICS_MIN_COUNT``) and every
value computed over them.
"""

from __future__ import annotations

from datetime import date, datetime

import click
from flask import Flask
from flask.cli import AppGroup

from crisisline.db import db
from metrics import build_report, build_staffing, refresh
from metrics.compute import WEEKDAYS
from metrics.export import DEFAULT_MIN_COUNT, to_csv, to_json, to_table
from metrics.facts import BREAKDOWNS, CHANNELS, Period
from routing.document import RoutingDocument
from routing.store import active_routing

metrics_cli = AppGroup("metrics", help="The line's 988-style metrics (definitions: docs/metrics.md).")


def register(app: Flask) -> None:
    app.cli.add_command(metrics_cli)


def _document() -> RoutingDocument:
    active = active_routing()
    if active is None:
        raise click.ClickException("no routing is published: the line's time zone and rota are unknown")
    return active.document


def _day(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise click.BadParameter("use YYYY-MM-DD") from error


@metrics_cli.command("report")
@click.option("--from", "start", required=True, callback=_day, help="First local date (YYYY-MM-DD), included.")
@click.option("--to", "end", required=True, callback=_day, help="Last local date (YYYY-MM-DD), excluded.")
@click.option("--channel", type=click.Choice(CHANNELS), default="voice", show_default=True)
@click.option("--by", "breakdown", type=click.Choice(BREAKDOWNS), default=None, help="One row per group as well.")
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option(
    "--min-count", type=click.IntRange(min=1), default=DEFAULT_MIN_COUNT, envvar="METRICS_MIN_COUNT",
    show_default=True, help="CSV/JSON: counts below this (and values computed over them) are withheld.",
)  # fmt: skip
def report_command(start: date, end: date, channel: str, breakdown: str | None, output: str, min_count: int) -> None:
    """Contacts offered, answered, speed to answer, abandonment, backup, callbacks, follow-ups…"""
    if end <= start:
        raise click.BadParameter("--to must be after --from", param_hint="--to")
    result = build_report(db.session, _document(), Period(start, end), channel, breakdown)
    if output == "csv":
        click.echo(to_csv(result, min_count), nl=False)
    elif output == "json":
        click.echo(to_json(result, min_count), nl=False)
    else:
        click.echo(to_table(result), nl=False)


@metrics_cli.command("rollup")
def rollup_command() -> None:
    """Bring the metrics rollup up to now (a first build after an upgrade; the clock does it too)."""
    done = refresh(db.session, _document())
    if not done.claimed:
        raise click.ClickException("another refresh is running; try again in a minute")
    click.echo(f"looked at {done.looked_at} calls, conversations, check-ins and survey questions; "
               f"{done.written} facts written")  # fmt: skip


@metrics_cli.command("staffing")
@click.option("--weeks", type=click.IntRange(1, 52), default=4, show_default=True)
@click.option("--to", "end", callback=_day, default=None, help="Local date the weeks end on (excluded); default today.")
@click.option("--language", default=None, help="A language code of the routing; default every language.")
def staffing_command(weeks: int, end: date | None, language: str | None) -> None:
    """Contacts per week against responders on shift, by weekday and hour (local time)."""
    document = _document()
    last = end or datetime.now(document.timezone).date()
    grid = build_staffing(db.session, document, last, weeks, language)
    click.echo(
        f"contacts a week / responders on shift, {language or 'all languages'}, {grid.period.start} to "
        f"{grid.period.end} (excluded); ! = contacts and nobody on shift"
    )
    click.echo("     " + " ".join(f"{hour:>7}" for hour in range(24)))
    for weekday, name in enumerate(WEEKDAYS):
        cells = []
        for hour in range(24):
            cell = grid.cell(weekday, hour)
            cells.append(f"{cell.demand_per_week:>3.1f}/{cell.on_shift:<2g}{'!' if cell.gap else ' '}".rjust(7))
        click.echo(f"{name:<4} " + " ".join(cells))
