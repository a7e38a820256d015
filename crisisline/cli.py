"""Operator commands: ``flask line …`` (bootstrap, keygen), ``flask keys …`` (rotation) and
``flask blocklist …``."""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import Column, Table, case, delete, func, select, update

from console.models import NOTE_CONTEXT as WRAP_UP_NOTE_CONTEXT
from console.models import UNMASK_REASON_CONTEXT
from crisisline.db import db
from crisisline.models import BlockedNumber, Call, RoutingVersion, Texter
from crisisline.phone import InvalidPhoneNumber, to_e164
from crisisline.privacy import (
    CIPHERTEXT_VERSION,
    KEY_ID_BYTES,
    LEGACY_VERSION,
    DecryptionError,
    Vault,
    derived_lookup_hash_key,
)
from crisisline.settings import Settings, new_data_encryption_key
from followups.checkins import REPLY_CONTEXT
from ivr.call_log import PHONE_CONTEXT, SPEECH_CONTEXT, phone_hash
from metrics.cli import metrics_cli
from routing import store
from sms.outbox import BODY_CONTEXT

line_cli = AppGroup("line", help="Set up and look after the line.")
keys_cli = AppGroup("keys", help="Data encryption keys: rotate them, see what each sealed.")
blocklist_cli = AppGroup("blocklist", help="Numbers that get a polite message and the backup line.")


def register(app: Flask) -> None:
    app.cli.add_command(line_cli)
    app.cli.add_command(keys_cli)
    app.cli.add_command(blocklist_cli)
    app.cli.add_command(metrics_cli)


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
@click.option("--reason", help="Why (no personal details; blanked after RETENTION_DAYS_CALLS, the block stays).")
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


# Every sealed column and the context it is sealed with. A ``sealed_*`` column missing here
# stops ``flask keys rotate`` and ``status``: rotation must never leave a column behind.
SEAL_CONTEXTS: dict[tuple[str, str], str] = {
    ("routing_versions", "sealed_source"): store.SEAL_CONTEXT,
    ("calls", "sealed_caller"): PHONE_CONTEXT,
    ("call_events", "sealed_detail"): SPEECH_CONTEXT,
    ("texters", "sealed_number"): PHONE_CONTEXT,
    # A texter's number copied from their row by the purge, to find their texts at Twilio.
    ("twilio_records", "sealed_number"): PHONE_CONTEXT,
    ("messages", "sealed_body"): BODY_CONTEXT,
    ("checkins", "sealed_reply"): REPLY_CONTEXT,
    ("console_wrap_ups", "sealed_note"): WRAP_UP_NOTE_CONTEXT,
    ("console_audit_entries", "sealed_detail"): UNMASK_REASON_CONTEXT,
}
ROTATION_BATCH_SIZE = 500
# A row the line rewrote while we re-sealed it is left as written; another pass picks it up
# if it is still under an old key (a process not yet on the new keyring wrote it).
ROTATION_PASSES = 3


@dataclass(frozen=True)
class SealedColumn:
    table: Table
    column: Column[str]
    context: str

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column.name}"


@dataclass
class RotationCount:
    resealed: int = 0
    changed_meanwhile: int = 0
    unreadable_ids: set[object] = field(default_factory=set)


def sealed_columns() -> list[SealedColumn]:
    """Every sealed column of every table, with its context; fails on one without a context."""
    found = []
    for table in db.metadata.sorted_tables:
        for column in table.columns:
            if not column.name.startswith("sealed_"):
                continue
            context = SEAL_CONTEXTS.get((table.name, column.name))
            if context is None:
                raise click.ClickException(f"{table.name}.{column.name}: sealed, but not in SEAL_CONTEXTS")
            if len(table.primary_key.columns) != 1:
                raise click.ClickException(f"{table.name}: key rotation needs a one-column primary key")
            found.append(SealedColumn(table, column, context))
    return found


def rotate_sealed_values(vault: Vault, batch_size: int = ROTATION_BATCH_SIZE) -> dict[str, RotationCount]:
    """Re-seal every value not sealed with the vault's newest key, in batches, each batch its own
    transaction. Safe while the line is live: each row's update is conditional on the value
    read, so a value the line wrote meanwhile is never overwritten. Resumable: values already
    under the newest key are never read again."""
    counts: dict[str, RotationCount] = {}
    for sealed in sealed_columns():
        count = counts.setdefault(sealed.name, RotationCount())
        for _ in range(ROTATION_PASSES):
            conflicts = count.changed_meanwhile
            _rotation_pass(vault, sealed, count, batch_size)
            if count.changed_meanwhile == conflicts:
                break
    return counts


def _rotation_pass(vault: Vault, sealed: SealedColumn, count: RotationCount, batch_size: int) -> None:
    (key,) = sealed.table.primary_key.columns
    column = sealed.column
    stale = select(key, column).where(column.is_not(None), ~column.startswith(vault.current_prefix(), autoescape=True))
    after = None
    while True:
        query = stale if after is None else stale.where(key > after)
        # Read, then re-seal with no transaction open, then write: no lock is held while
        # we decrypt, and the line's own writes are never blocked for long.
        with db.engine.connect() as connection:
            rows = connection.execute(query.order_by(key).limit(batch_size)).all()
        if not rows:
            return
        after = rows[-1][0]
        changes = []
        for row_id, token in rows:
            try:
                changes.append((row_id, token, vault.reseal(token, context=sealed.context)))
            except DecryptionError:
                count.unreadable_ids.add(row_id)
        with db.engine.begin() as connection:
            for row_id, token, resealed in changes:
                result = connection.execute(
                    update(sealed.table).where(key == row_id, column == token).values({column.name: resealed})
                )
                if result.rowcount == 1:
                    count.resealed += 1
                else:
                    count.changed_meanwhile += 1


def sealed_value_counts() -> dict[str, Counter[str]]:
    """Per sealed column, how many values name each key id (``legacy`` for none). Only the
    prefixes are read, never the values."""
    counts: dict[str, Counter[str]] = {}
    for sealed in sealed_columns():
        column = sealed.column
        label = case(
            (
                column.startswith(f"{CIPHERTEXT_VERSION}:"),
                func.substr(column, len(CIPHERTEXT_VERSION) + 2, KEY_ID_BYTES * 2),
            ),
            (column.startswith(f"{LEGACY_VERSION}:"), "legacy"),
            else_="unknown",
        )
        query = select(label, func.count()).where(column.is_not(None)).group_by(label)
        with db.engine.connect() as connection:
            counts[sealed.name] = Counter({str(name): int(number) for name, number in connection.execute(query)})
    return counts


# Rows that keep a number both sealed and hashed: they prove the lookup-hash key is the one the
# stored hashes were made with (settings cannot: a wrong LOOKUP_HASH_KEY looks like any other).
HASHED_NUMBERS = (
    (Texter.id, Texter.number_hash, Texter.sealed_number),
    (Call.id, Call.caller_hash, Call.sealed_caller),
)
HASH_CHECK_SAMPLE = 25


def lookup_hashes_match(vault: Vault) -> tuple[int, int]:
    """(matching, checked): stored hashes recomputed from their sealed numbers, newest rows first."""
    matching = checked = 0
    for id_column, hash_column, sealed_column in HASHED_NUMBERS:
        query = (
            select(hash_column, sealed_column)
            .where(hash_column.is_not(None), sealed_column.is_not(None))
            .order_by(id_column.desc())
            .limit(HASH_CHECK_SAMPLE)
        )
        for stored, token in db.session.execute(query):
            try:
                number = vault.open(token or "", context=PHONE_CONTEXT)
            except DecryptionError:
                continue
            checked += 1
            matching += phone_hash(number) == stored
    db.session.remove()
    return matching, checked


def _hash_check_line(vault: Vault) -> str:
    matching, checked = lookup_hashes_match(vault)
    if not checked:
        return "lookup hashes: no stored number to check them against yet"
    if matching == checked:
        return f"lookup hashes: {checked} sampled, all match"
    return (
        f"WARNING lookup hashes: {checked - matching} of {checked} sampled do not match: LOOKUP_HASH_KEY is not the "
        "key they were made with (the blocklist and STOP would not match); set it to what `keys hash-key` printed "
        "before the rotation"
    )


def _vault() -> Vault:
    vault: Vault = current_app.extensions["crisisline.vault"]
    return vault


@keys_cli.command("generate")
def keys_generate() -> None:
    """Print a new DATA_ENCRYPTION_KEY (as `flask line keygen`)."""
    click.echo(new_data_encryption_key())


@keys_cli.command("hash-key")
def keys_hash_key() -> None:
    """Print the lookup-hash key in use; set LOOKUP_HASH_KEY to it once, before the first rotation."""
    settings: Settings = current_app.extensions["crisisline.settings"]
    key = settings.lookup_hash_key or derived_lookup_hash_key(bytes(settings.data_encryption_key))
    click.echo(base64.urlsafe_b64encode(key).decode())


@keys_cli.command("rotate")
@click.option("--batch-size", default=ROTATION_BATCH_SIZE, show_default=True, help="Rows per transaction.")
def keys_rotate(batch_size: int) -> None:
    """Re-seal every sealed value with DATA_ENCRYPTION_KEY (safe while the line is live; resumable)."""
    vault = _vault()
    click.echo(_hash_check_line(vault))
    click.echo(f"re-sealing with key {vault.current_key_id}")
    counts = rotate_sealed_values(vault, batch_size)
    unreadable = 0
    for name, count in counts.items():
        unreadable += len(count.unreadable_ids)
        click.echo(
            f"{name}: {count.resealed} re-sealed, {count.changed_meanwhile} changed by the line meanwhile, "
            f"{len(count.unreadable_ids)} unreadable"
        )
    if unreadable:
        raise click.ClickException(
            f"{unreadable} value(s) open with no key of the ring: keep every old key until they are explained"
        )


@keys_cli.command("status")
def keys_status() -> None:
    """How many sealed values name each key id (never the values). Old keys may be dropped once
    nothing is sealed with them."""
    vault = _vault()
    old_ids = vault.key_ids[1:]
    click.echo(f"current key: {vault.current_key_id}; old keys: {', '.join(old_ids) or 'none'}")
    left_behind = 0
    for name, counter in sealed_value_counts().items():
        parts = []
        for label, number in sorted(counter.items()):
            if label == vault.current_key_id:
                parts.append(f"{number} current ({label})")
            elif label in old_ids:
                parts.append(f"{number} old ({label})")
            elif label == "legacy":
                parts.append(f"{number} legacy (no key id)")
            elif label == "unknown":
                parts.append(f"{number} in no sealed format")
            else:
                parts.append(f"{number} under a key not in the ring ({label})")
            left_behind += 0 if label == vault.current_key_id else number
        click.echo(f"{name}: {', '.join(parts) or 'empty'}")
    click.echo(_hash_check_line(vault))
    click.echo(
        "every value is sealed with the current key"
        if not left_behind
        else f"{left_behind} value(s) not yet under the current key: run `flask keys rotate`"
    )
