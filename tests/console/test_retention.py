"""The retention purge covers what the console keeps that is personal: counselors' wrap-up
notes and emergency-unmask reasons go with their contact's channel window; outcomes, needs
and the audit trail of who did what stay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import time_machine
from flask import Flask
from sqlalchemy import select

from console.board.unmask import LiveContact, reveal
from console.models import NOTE_CONTEXT, AuditEntry, User, WrapUp
from crisisline.db import db
from crisisline.privacy import Vault
from crisisline.settings import Settings
from tests.conftest import settings_for
from tests.console.conftest import Account

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def wrap_up_at(app: Flask, moment: datetime, channel: str, key: str, responder: str = "ana-ruiz") -> None:
    """Factory: a wrap-up with a sealed note, written at ``moment``."""
    with app.app_context():
        vault: Vault = app.extensions["crisisline.vault"]
        db.session.add(
            WrapUp(
                contact_key=key, channel=channel, responder_id=responder, language="en", need="suicide",
                outcome="de_escalated", sealed_note=vault.seal("talked about her sister", context=NOTE_CONTEXT),
                created_at=moment,
            )
        )  # fmt: skip
        db.session.commit()


def unmask_at(app: Flask, supervisor: Account, moment: datetime, channel: str, contact_id: int) -> None:
    with app.app_context(), time_machine.travel(moment, tick=False):
        user = db.session.get(User, supervisor.id)
        assert user is not None
        contact = LiveContact(channel, contact_id, "waiting", "en", "danger_now", moment)
        reveal(user, contact, "caller said they took pills, ambulance needed")


def purge(app: Flask, now: datetime) -> dict[str, int]:
    from workers.upkeep import purge_personal_data

    with app.app_context():
        return purge_personal_data(now.isoformat())


def test_wrap_up_notes_past_their_channels_window_are_scrubbed_and_the_outcome_kept(app: Flask) -> None:
    wrap_up_at(app, NOW - timedelta(days=31), "voice", "call:1")
    wrap_up_at(app, NOW - timedelta(days=29), "voice", "call:2")
    wrap_up_at(app, NOW - timedelta(days=31), "text", "text:1")

    first, second = purge(app, NOW), purge(app, NOW)

    assert (first["wrap_up_notes"], second["wrap_up_notes"]) == (2, 0)
    with app.app_context():
        rows = {w.contact_key: w for w in db.session.scalars(select(WrapUp))}
    assert rows["call:1"].sealed_note is None and rows["text:1"].sealed_note is None
    assert rows["call:2"].sealed_note is not None
    assert {w.outcome for w in rows.values()} == {"de_escalated"}  # metrics keep what happened


def test_a_shorter_texts_window_scrubs_text_notes_and_leaves_call_notes(
    database_url: str, redis_url: str, make_app: Callable[[Settings], Flask], app: Flask
) -> None:
    wrap_up_at(app, NOW - timedelta(days=8), "voice", "call:7")
    wrap_up_at(app, NOW - timedelta(days=8), "text", "text:7")
    short = make_app(settings_for(database_url, redis_url, RETENTION_DAYS_TEXTS="7"))

    counts = purge(short, NOW)

    assert counts["wrap_up_notes"] == 1
    with app.app_context():
        notes = {w.contact_key: w.sealed_note for w in db.session.scalars(select(WrapUp))}
    assert notes["text:7"] is None and notes["call:7"] is not None


def test_unmask_reasons_are_scrubbed_after_the_window_and_the_audit_entry_stays(
    app: Flask, supervisor: Account
) -> None:
    unmask_at(app, supervisor, NOW - timedelta(days=40), "voice", 11)
    unmask_at(app, supervisor, NOW - timedelta(days=40), "text", 12)
    unmask_at(app, supervisor, NOW - timedelta(days=2), "voice", 13)

    first, second = purge(app, NOW), purge(app, NOW)

    assert (first["unmask_reasons"], second["unmask_reasons"]) == (2, 0)
    with app.app_context():
        entries = {e.target: e for e in db.session.scalars(select(AuditEntry).where(AuditEntry.action == "unmask"))}
    assert entries["call:11"].sealed_detail is None and entries["text:12"].sealed_detail is None
    assert entries["call:13"].sealed_detail is not None
    assert {e.actor for e in entries.values()} == {supervisor.username}  # who unmasked is never purged
