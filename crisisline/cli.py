"""Operator commands: ``flask line …`` (bootstrap, keys) and ``flask blocklist …``."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import delete, func, select

from crisisline.db import db
from crisisline.models import BlockedNumber, RoutingVersion
from crisisline.phone import InvalidPhoneNumber, to_e164
from crisisline.settings import Settings, new_data_encryption_key
from ivr.call_log import phone_hash
from routing import store

line_cli = AppGroup("line", help="Set up and look after the line.")
blocklist_cli = AppGroup("blocklist", help="Numbers that get a polite message and the backup line.")


def register(app: Flask) -> None:
    app.cli.add_command(line_cli)
    app.cli.add_command(blocklist_cli)


@line_cli.command("keygen")
def keygen() -> None:
    """Print a new DATA_ENCRYPTION_KEY (keep it secret; losing it loses stored data)."""
    click.echo(new_data_encryption_key())


@line_cli.command("purge")
def purge() -> None:
    """Scrub personal data past its retention period now (the clock also runs this hourly)."""
    from workers.upkeep import purge_personal_data

    counts = purge_personal_data()
    click.echo(f"scrubbed {counts['calls']} call(s) and {counts['events']} event(s)")


@line_cli.command("bootstrap")
def bootstrap() -> None:
    """Publish ROUTING_FILE if no routing has ever been published (used by the run command)."""
    if db.session.scalar(select(func.count(RoutingVersion.id))):
        click.echo("routing already published; leaving it alone")
        return
    settings: Settings = current_app.extensions["crisisline.settings"]
    version = store.publish(
        settings.routing_file.read_text(encoding="utf-8"),
        published_by="bootstrap",
        note=f"first start: {settings.routing_file.name}",
    )
    click.echo(f"published {settings.routing_file.name} as routing version {version.id}")


def _number_argument(raw: str | None) -> str:
    raw = raw or click.prompt("Phone number", hide_input=True)
    settings: Settings = current_app.extensions["crisisline.settings"]
    try:
        return to_e164(raw, settings.default_region)
    except InvalidPhoneNumber as error:
        raise click.ClickException("not a valid phone number") from error


@blocklist_cli.command("add")
@click.argument("number", required=False)
@click.option("--reason", help="Why (no personal details).")
@click.option("--by", "added_by", default="cli", show_default=True)
def blocklist_add(number: str | None, reason: str | None, added_by: str) -> None:
    """Block NUMBER (asked for if omitted, so it stays out of shell history). Idempotent."""
    hashed = phone_hash(_number_argument(number))
    if db.session.scalar(select(BlockedNumber.id).where(BlockedNumber.number_hash == hashed)):
        click.echo("already blocked")
        return
    db.session.add(BlockedNumber(number_hash=hashed, reason=reason, added_by=added_by))
    db.session.commit()
    click.echo("blocked")


@blocklist_cli.command("remove")
@click.argument("number", required=False)
def blocklist_remove(number: str | None) -> None:
    """Unblock NUMBER."""
    hashed = phone_hash(_number_argument(number))
    removed = db.session.execute(delete(BlockedNumber).where(BlockedNumber.number_hash == hashed))
    db.session.commit()
    click.echo("unblocked" if removed.rowcount else "was not blocked")  # type: ignore[attr-defined]


@blocklist_cli.command("count")
def blocklist_count() -> None:
    """How many numbers are blocked (the numbers themselves are not stored)."""
    click.echo(str(db.session.scalar(select(func.count(BlockedNumber.id)))))
