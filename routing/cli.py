"""``flask routing check|load|export|history|rollback|timing|who|coverage``: the operator's way
to change who gets called, and to see who would be.

Thin: the logic is in plain functions (``routing.review``, ``routing.publishing``,
``routing.simulator``, ``routing.coverage``) that the web console calls too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from datetime import UTC, date, datetime
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from crisisline.db import db
from routing import coverage, publishing, store, timing
from routing.document import RoutingDocument
from routing.review import check_text
from routing.simulator import NotRung, UnknownChoice, who_would_be_rung
from routing.validation import Problem, validate_text

routing_cli = AppGroup("routing", help="Check, publish and export the line's routing config.")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise click.ClickException(f"{path}: cannot read file ({error.__class__.__name__})") from error


# Where the app factory registers who the line does not ring whatever the routing says (responders
# whose console account was closed: ``line_queue.responders.closed_responder_ids``, a layer above).
NOT_RUNG = "routing.not_rung"


def _left_out() -> frozenset[str]:
    """Responders the line does not ring whatever the routing says: none if nothing registered."""
    not_rung: Callable[[], Collection[str]] | None = current_app.extensions.get(NOT_RUNG)
    return frozenset(not_rung()) if not_rung is not None else frozenset()


def _left_out_if_known() -> frozenset[str] | None:
    """``_left_out`` for ``check``, which reads only a file and must work without a database:
    None when no database can say (a SQLite file not created yet, which asking would create;
    a server that cannot be reached; tables not migrated), and the check goes on without."""
    url = db.engine.url
    file = url.database if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") else None
    if file is not None and not Path(file).exists():
        return None
    try:
        return _left_out()
    except SQLAlchemyError:
        db.session.rollback()
        return None


def _echo_problems(path: str, problems: list[Problem]) -> None:
    for problem in problems:
        click.echo(f"{path}: {problem.describe()}", err=True)


@routing_cli.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def check(path: str) -> None:
    """Validate PATH and print every problem with its line and place in the file. Changes nothing.

    With the line's database at hand, the coverage warnings leave out the responders the line
    does not ring (their console account was closed), as ``load`` does, and say who they are;
    without it, they count everyone and say so."""
    text = _read(path)  # before the database: an unreadable file is the first thing to hear
    left_out = _left_out_if_known()
    report = check_text(
        text, now=datetime.now(UTC), environment_backup_number=publishing.environment_backup_number(),
        left_out=left_out or frozenset(), line_number=publishing.line_phone_number(),
    )  # fmt: skip
    _echo_problems(path, report.errors + report.warnings)
    if report.document is None:
        click.echo(f"{path}: {len(report.errors)} error(s); this file would be refused", err=True)
        sys.exit(1)
    document = report.document
    click.echo(
        f"{path}: valid ({len(document.languages)} languages, {len(document.needs)} needs, "
        f"{len(document.responders)} responders)"
    )
    if left_out is None:
        click.echo(
            f"{path}: the line's database could not be read: the coverage warnings count every responder, "
            "a closed account's too",
            err=True,
        )
    for responder in document.responders:
        if left_out and responder.id in left_out:
            left = NotRung(responder.id, responder.name, document.entries(responder.id))
            click.echo(f"{path}: {left}; left out of the coverage warnings")
    for line in queue_policy(document):
        click.echo(f"{path}: {line}")


def queue_policy(document: RoutingDocument) -> list[str]:
    """The one queue's order and re-offer rules, as an administrator reads them."""
    tiers: dict[int, list[str]] = {}
    for need in document.needs:
        tiers.setdefault(need.priority, []).append(need.key)
    order = "; then ".join(
        f"{', '.join(keys)} (priority {priority})" for priority, keys in sorted(tiers.items(), reverse=True)
    )
    queue = document.queue
    together = (
        "texts and calls wait in one line; a counselor is offered one contact at a time"
        if queue.channels == "shared"
        else "texts and calls are offered independently (queue.channels: separate)"
    )
    return [
        f"queue order: {order}; within a priority, who has waited longest (a callback keeps its place)",
        f"queue: {together}; someone who passed or missed a contact may be offered it again after "
        f"{queue.reoffer_after_seconds} s; callers wait up to {document.transfer.max_hold_seconds} s while "
        "anyone who could take them is on shift"
        + ("; waiting callers hear their place in line" if queue.announce_position else ""),
    ]


@routing_cli.command("load")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--note", required=True, help="Why this change was made (kept in the version history).")
@click.option(
    "--base",
    type=int,
    help="The version this file was edited from (see `history`). Refused if the live version is newer.",
)
@click.option("--force", is_flag=True, help="Publish even over a live version newer than --base.")
@click.option("--author", "--by", "author", help="Who is publishing (default: your OS user name).")
def load(path: str, note: str, base: int | None, force: bool, author: str | None) -> None:
    """Show the diff against the live version and every warning, then publish PATH.

    An invalid file, or one edited from an older version than the live one, changes nothing.
    """
    text = _read(path)
    try:
        result = publishing.publish(
            text, base=base, note=note, author=author or publishing.default_author(), force=force, left_out=_left_out()
        )
    except publishing.PublishRefused as refused:
        if refused.preview is not None:
            _show_preview(path, refused.preview)
        click.echo(f"{path}: refused: {refused}; the live routing is unchanged", err=True)
        sys.exit(1)
    _show_preview(path, result.preview)
    if not result.created:
        click.echo(f"unchanged: this is the live version {result.version}")
        return
    based = f" (edited from version {base})" if base is not None else ""
    click.echo(f"published routing version {result.version}{based}")


def _show_preview(path: str, preview: publishing.Preview) -> None:
    if preview.diff:
        click.echo(preview.diff, nl=False)
        if not preview.diff.endswith("\n"):
            click.echo()
    _echo_problems(path, preview.problems + preview.warnings)


@routing_cli.command("export")
@click.option("--version", "version_id", type=int, help="A past version (default: the active one).")
def export(version_id: int | None) -> None:
    """Print the active (or a past) routing document as published."""
    found = publishing.live_version() if version_id is None else publishing.version(version_id)
    if found is None:
        raise click.ClickException("no such routing version" if version_id else "no routing version has been published")
    click.echo(store.source_of(found), nl=False)


@routing_cli.command("history")
@click.option("--diff", "diff_of", type=int, help="Show what version N changed instead.")
def history(diff_of: int | None) -> None:
    """List published versions, newest first: number, time (UTC), author, note."""
    if diff_of is not None:
        try:
            click.echo(publishing.version_diff(diff_of), nl=False)
        except publishing.PublishRefused as error:
            raise click.ClickException(str(error)) from error
        return
    for row in publishing.history():
        live = "  (live)" if row.live else ""
        click.echo(f"{row.number:>4}  {row.published_at:%Y-%m-%d %H:%M}Z  {row.author:<16} {row.note}{live}")


@routing_cli.command("rollback")
@click.argument("number", type=int)
@click.option("--note", help="Why (added to the version's note).")
@click.option("--author", "--by", "author", help="Who is rolling back (default: your OS user name).")
def rollback(number: int, note: str | None, author: str | None) -> None:
    """Publish version NUMBER again, as a new version (nothing in the history is changed)."""
    try:
        result = publishing.rollback(
            number, author=author or publishing.default_author(), note=note, left_out=_left_out()
        )
    except publishing.PublishRefused as refused:
        if refused.preview is not None:
            _show_preview(f"version {number}", refused.preview)
        click.echo(f"refused: {refused}; the live routing is unchanged", err=True)
        sys.exit(1)
    _show_preview(f"version {number}", result.preview)
    if not result.created:
        click.echo(f"unchanged: version {number}'s text is already live (version {result.version})")
        return
    click.echo(f"published routing version {result.version}: the text of version {number}")


@routing_cli.command("timing")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--words-per-second",
    type=click.FloatRange(min=0.5, max=10),
    default=timing.DEFAULT_WORDS_PER_SECOND,
    show_default=True,
    help="How fast the voices speak.",
)
def timing_command(path: str | None, words_per_second: float) -> None:
    """Seconds of prompts before the first counselor's phone rings, per language and need.

    Reads PATH, or the active routing. "following": a caller who presses each key when its
    menu ends; "barge-in": one who presses keys during the prompts.
    """
    document = _document_from(path)
    limit = document.menu.max_seconds_to_ring
    click.echo(f"Seconds of speech before the first ring ({words_per_second:g} words a second, limit {limit} s)")
    click.echo(f"{'language':<10}{'need':<22}{'following':>10}{'barge-in':>10}")
    for row in timing.path_timings(document, words_per_second):
        over = "  over the limit" if row.following_seconds > limit else ""
        click.echo(f"{row.language:<10}{row.need:<22}{row.following_seconds:>10.1f}{row.barge_in_seconds:>10.1f}{over}")


@routing_cli.command("who")
@click.option("--language", "language_choice", required=True, help="Language code or menu key (es, 2).")
@click.option("--need", "need_choice", required=True, help="Need key or menu key (suicide, 2).")
@click.option("--at", "at", help='Local time on the line, "2026-12-05 03:00" (default: now).')
@click.option("--file", "path", type=click.Path(dir_okay=False), help="A draft file instead of the live routing.")
def who(language_choice: str, need_choice: str, at: str | None, path: str | None) -> None:
    """Who would be rung for a caller, in what order, what they hear, and how long before the first ring."""
    document = _document_from(path)
    moment = _local_moment(document, at)
    try:
        result = who_would_be_rung(document, language_choice, need_choice, moment, left_out=_left_out())
    except UnknownChoice as error:
        raise click.ClickException(str(error)) from error
    language = document.language(result.language)
    click.echo(
        f"{language.staff_name}-speaking caller, need {result.need}, at {result.local_time:%a %Y-%m-%d %H:%M %Z}"
        + ("" if result.need_was_asked else " (no need menu: the default need)")
    )
    click.echo(
        f"Before the first ring: {result.seconds_before_ring:.1f} s of prompts following the menus, "
        f"{result.seconds_before_ring_barge_in:.1f} s pressing keys during them"
    )
    click.echo("They hear:")
    for sentence in result.heard_before_ring:
        click.echo(f"  {sentence}")
    if result.rings:
        how = "all at once per round" if result.strategy == "parallel" else "one at a time"
        click.echo(f"Rung ({result.target}, {how}; the least recently offered first, here in config order):")
        for rung in result.rings:
            click.echo(f"  {rung.round}. {rung.name} ({rung.id}, {rung.kind}, speaks {', '.join(rung.languages)})")
        if not result.language_matched:
            click.echo(f"  nobody on call speaks {language.staff_name}: they are told so")
    else:
        click.echo(f"Nobody is rung ({result.reason}): the backup line {result.backup_number}")
    for left in result.not_rung:
        click.echo(f"  {left}")
    click.echo("Then:")
    for sentence in result.heard_after_choice:
        click.echo(f"  {sentence}")


@routing_cli.command("coverage")
@click.option("--week", "week_of", help="A date (2026-12-24): that week with its overrides (default: the weekly rota).")
@click.option("--file", "path", type=click.Path(dir_okay=False), help="A draft file instead of the live routing.")
def coverage_command(week_of: str | None, path: str | None) -> None:
    """The week per language and need: # someone who speaks it, ~ another language, . nobody (backup)."""
    document = _document_from(path)
    week = None
    if week_of is not None:
        try:
            week = date.fromisoformat(week_of)
        except ValueError as error:
            raise click.ClickException(f"--week {week_of!r} is not a date like 2026-12-24") from error
    title = "the weekly rota (one-off overrides left out)" if week is None else f"the week of {week:%Y-%m-%d}"
    click.echo(f"Coverage of {title}; each character is an hour, 00 to 23")
    for row in coverage.week_coverage(document, week, left_out=_left_out()):
        who = document.language(row.language).staff_name
        click.echo(f"{who} ({row.language}) / {row.need}: " + ("covered all week" if not row.gaps else "gaps"))
        if not row.gaps:
            continue
        for day, hours in zip(coverage.DAY_NAMES, coverage.hourly_grid(row), strict=True):
            click.echo(f"  {day} {hours}")
        for gap in row.gaps:
            what = (
                "nobody: the backup line"
                if gap.status == coverage.NOBODY
                else "another language: " + ", ".join(gap.responders)
            )
            click.echo(f"  gap {gap.label}: {what}")


def _local_moment(document: RoutingDocument, at: str | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    try:
        wall_clock = datetime.fromisoformat(at)
    except ValueError as error:
        raise click.ClickException(f'--at {at!r} is not a time like "2026-12-05 03:00"') from error
    if wall_clock.tzinfo is not None:
        return wall_clock
    return wall_clock.replace(tzinfo=document.timezone)


def _document_from(path: str | None) -> RoutingDocument:
    """The routing in PATH (refused if invalid), or the active one."""
    if path is None:
        active = store.active_routing()
        if active is None:
            raise click.ClickException("no routing version has been published")
        return active.document
    document, problems = validate_text(_read(path))
    if document is None:
        _echo_problems(path, problems)
        raise click.ClickException(f"{path}: not a valid routing document")
    return document
