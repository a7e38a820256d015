"""``flask routing check|load|export|history``: the operator's way to change who gets called."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import AppGroup
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import RoutingVersion
from routing import store
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
    click.echo(
        f"{path}: valid ({len(document.languages)} languages, {len(document.needs)} needs, "
        f"{len(document.responders)} responders)"
    )


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
