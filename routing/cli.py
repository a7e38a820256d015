"""``flask routing check|load|export|history|timing``: the operator's way to change who gets called."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import AppGroup
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import RoutingVersion
from routing import store, timing
from routing.document import RoutingDocument
from routing.validation import InvalidRoutingDocument, validate_text

routing_cli = AppGroup("routing", help="Check, publish and export the line's routing config.")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise click.ClickException(f"{path}: cannot read file ({error.__class__.__name__})") from error


@routing_cli.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def check(path: str) -> None:
    """Validate PATH and print every problem with its place in the file. Changes nothing."""
    document, problems = validate_text(_read(path))
    for problem in problems:
        click.echo(f"{path}: {problem}", err=True)
    if document is None:
        errors = sum(1 for p in problems if p.severity == "error")
        click.echo(f"{path}: {errors} error(s); this file would be refused", err=True)
        sys.exit(1)
    for warning in _time_to_ring_warnings(document):
        click.echo(f"{path}: warning: {warning}", err=True)
    click.echo(
        f"{path}: valid ({len(document.languages)} languages, {len(document.needs)} needs, "
        f"{len(document.responders)} responders)"
    )
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


def _time_to_ring_warnings(document: RoutingDocument) -> list[str]:
    """Menus too long before the first ring, and a default that rings a unit unasked."""
    warnings = []
    slowest: dict[str, float] = {}
    for path in timing.slow_paths(document):
        slowest[path.language] = max(slowest.get(path.language, 0.0), path.following_seconds)
    for code, seconds in slowest.items():
        who = f"{document.language(code).staff_name}-speaking callers"
        warnings.append(
            f"menu.max_seconds_to_ring: {who} who follow the menus hear {seconds:.1f} s of prompts "
            f"before the first ring (limit {document.menu.max_seconds_to_ring} s); "
            "shorten the prompts or labels (see `flask routing timing`)"
        )
    default = document.need(document.menu.default_need)
    if default is not None and default.target == "co_responders":
        warnings.append(
            f"menu.default_need: {default.key!r} rings co-responder units for callers who never chose it by key"
        )
    return warnings


@routing_cli.command("load")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--note", help="Why this change was made (kept in the version history).")
@click.option("--by", "published_by", default="cli", show_default=True, help="Who published it.")
def load(path: str, note: str | None, published_by: str) -> None:
    """Validate PATH and publish it as the new active version. An invalid file changes nothing."""
    try:
        version = store.publish(_read(path), published_by=published_by, note=note)
    except InvalidRoutingDocument as error:
        for problem in error.problems:
            click.echo(f"{path}: {problem}", err=True)
        click.echo(f"{path}: refused; the active routing is unchanged", err=True)
        sys.exit(1)
    click.echo(f"published routing version {version.id}")


@routing_cli.command("export")
@click.option("--version", "version_id", type=int, help="A past version (default: the active one).")
def export(version_id: int | None) -> None:
    """Print the active (or a past) routing document as published."""
    query = select(RoutingVersion).order_by(RoutingVersion.id.desc())
    if version_id is not None:
        query = select(RoutingVersion).where(RoutingVersion.id == version_id)
    version = db.session.scalars(query.limit(1)).first()
    if version is None:
        raise click.ClickException("no routing version has been published")
    click.echo(store.source_of(version), nl=False)


@routing_cli.command("history")
def history() -> None:
    """List published versions, newest first."""
    for version in db.session.scalars(select(RoutingVersion).order_by(RoutingVersion.id.desc())):
        click.echo(
            f"{version.id:>4}  {version.published_at:%Y-%m-%d %H:%M}Z  {version.published_by:<16} {version.note or ''}"
        )


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


def _document_from(path: str | None) -> RoutingDocument:
    """The routing in PATH (refused if invalid), or the active one."""
    if path is None:
        active = store.active_routing()
        if active is None:
            raise click.ClickException("no routing version has been published")
        return active.document
    document, problems = validate_text(_read(path))
    if document is None:
        for problem in problems:
            click.echo(f"{path}: {problem}", err=True)
        raise click.ClickException(f"{path}: not a valid routing document")
    return document
