"""The retention purge covers what the console keeps that is personal: counselors' wrap-up
notes and emergency-unmask reasons go with their contact's channel window (a note by when its
contact began, however much later it was written; an unmask of a follow-up's person by the
follow-ups' window too, if shorter); outcomes, needs and the audit trail of who did what stay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import time_machine
from flask import Flask
from sqlalchemy import select

from console.accounts import throttle
from console.board.unmask import LiveContact, reveal
from console.models import NOTE_CONTEXT, UNMASK_REASON_CONTEXT, AuditEntry, SignInAttempt, User, WrapUp
from crisisline.db import db
from crisisline.models import Call, Conversation, Texter, Transfer
from crisisline.privacy import Vault
from crisisline.settings import Settings
from ivr.call_log import PHONE_CONTEXT, phone_hash
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


def contact_with_a_late_note(app: Flask, began: datetime, channel: str, number: str) -> str:
    """Factory: a call (and its transfer) or a text conversation that began at ``began``, whose
    wrap-up note was written 6 days later (wrap-ups are offered for 7). Returns its contact key."""
    with app.app_context():
        vault: Vault = app.extensions["crisisline.vault"]
        sealed = vault.seal(number, context=PHONE_CONTEXT)
        if channel == "voice":
            call = Call(call_sid="CA" + number[-10:].rjust(32, "1"), caller_hash=phone_hash(number),
                        sealed_caller=sealed, started_at=began, language="en", need="suicide",
                        status="completed")  # fmt: skip
            db.session.add(call)
            db.session.flush()
            transfer = Transfer(call_id=call.id, caller_call_sid=call.call_sid, language="en", need="suicide",
                                state="ended", started_at=began, connected_at=began, queued_since=began)  # fmt: skip
            db.session.add(transfer)
            db.session.flush()
            key, links = f"call:{transfer.id}", {"call_id": call.id, "transfer_id": transfer.id}
        else:
            texter = Texter(number_hash=phone_hash(number), sealed_number=sealed, created_at=began)
            db.session.add(texter)
            db.session.flush()
            conversation = Conversation(texter_id=texter.id, state="closed", language="en", need="suicide",
                                        started_at=began, last_activity_at=began, closed_at=began)  # fmt: skip
            db.session.add(conversation)
            db.session.flush()
            key, links = f"text:{conversation.id}", {"conversation_id": conversation.id}
        db.session.add(WrapUp(
            contact_key=key, channel=channel, responder_id="ana-ruiz", outcome="de_escalated",
            sealed_note=vault.seal("her sister Maria, 14 Elm St", context=NOTE_CONTEXT),
            created_at=began + timedelta(days=6), **links,
        ))  # fmt: skip
        db.session.commit()
        return key


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


def test_a_wrap_up_note_written_days_after_its_contact_is_scrubbed_by_the_contacts_start(app: Flask) -> None:
    old_call = contact_with_a_late_note(app, NOW - timedelta(days=31), "voice", "+13125550123")  # past 30 days
    old_text = contact_with_a_late_note(app, NOW - timedelta(days=31), "text", "+13125550124")
    recent_call = contact_with_a_late_note(app, NOW - timedelta(days=29), "voice", "+13125550125")  # within them

    first, second = purge(app, NOW), purge(app, NOW)

    assert (first["calls"], first["texters"], first["wrap_up_notes"], second["wrap_up_notes"]) == (1, 1, 2, 0)
    with app.app_context():
        notes = {w.contact_key: w.sealed_note for w in db.session.scalars(select(WrapUp))}
    assert notes[old_call] is None and notes[old_text] is None  # gone with their contacts' numbers
    assert notes[recent_call] is not None


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


def test_sign_in_attempts_past_the_throttles_window_go_with_the_hourly_purge_though_nobody_signs_in(
    app: Flask,
) -> None:
    with app.app_context():
        for minutes, succeeded in ((60 * 24 * 3, False), (throttle.WINDOW.total_seconds() // 60 + 1, True), (5, False)):
            db.session.add(SignInAttempt(account_key="a" * 64, address_key="b" * 64, succeeded=succeeded,
                                         attempted_at=NOW - timedelta(minutes=minutes)))  # fmt: skip
        db.session.commit()

    first, second = purge(app, NOW), purge(app, NOW)

    assert (first["sign_in_attempts"], second["sign_in_attempts"]) == (2, 0)
    with app.app_context():
        kept = db.session.scalars(select(SignInAttempt.attempted_at)).all()
    assert kept == [NOW - timedelta(minutes=5)]  # still counted by the throttle


def test_unmask_reasons_about_a_follow_ups_person_go_with_a_shorter_follow_ups_window(
    database_url: str, redis_url: str, make_app: Callable[[Settings], Flask], app: Flask, supervisor: Account
) -> None:
    # A flagged check-in, a follow-up the line could not finish and a callback nobody reached:
    # each names a follow-up's person. A live call and conversation do not.
    for channel, contact_id in (("checkin", 21), ("followup", 22), ("callback", 23), ("voice", 24), ("text", 25)):
        unmask_at(app, supervisor, NOW - timedelta(days=8), channel, contact_id)
    unmask_at(app, supervisor, NOW - timedelta(days=6), "checkin", 26)  # within the follow-ups' 7 days
    short = make_app(settings_for(database_url, redis_url, RETENTION_DAYS_FOLLOWUPS="7"))

    first, second = purge(short, NOW), purge(short, NOW)

    assert (first["unmask_reasons"], second["unmask_reasons"]) == (3, 0)
    with app.app_context():
        reasons = {
            e.target: e.sealed_detail
            for e in db.session.scalars(select(AuditEntry).where(AuditEntry.action == "unmask"))
        }
    assert reasons["checkin:21"] is None and reasons["contact:22"] is None and reasons["callback:23"] is None
    assert reasons["call:24"] is not None and reasons["text:25"] is not None  # 30 days for calls and texts
    assert reasons["checkin:26"] is not None


def test_unmask_reasons_about_a_follow_ups_person_go_with_a_shorter_calls_or_texts_window(
    database_url: str, redis_url: str, make_app: Callable[[Settings], Flask], app: Flask, supervisor: Account
) -> None:
    # Whom a check-in, follow-up or callback reaches is a texter's or caller's number: the
    # calls' and texts' windows apply to the words about them too.
    for channel, contact_id in (("checkin", 31), ("followup", 32), ("callback", 33)):
        unmask_at(app, supervisor, NOW - timedelta(days=8), channel, contact_id)
    short_calls = make_app(settings_for(database_url, redis_url, RETENTION_DAYS_CALLS="7"))

    assert purge(short_calls, NOW)["unmask_reasons"] == 3


def test_an_unmask_reason_with_an_unknown_target_goes_with_the_shortest_window_of_all(
    database_url: str, redis_url: str, make_app: Callable[[Settings], Flask], app: Flask, supervisor: Account
) -> None:
    with app.app_context():
        vault: Vault = app.extensions["crisisline.vault"]
        for target in ("someday:1", None):
            reason = vault.seal("her brother's name", context=UNMASK_REASON_CONTEXT)
            db.session.add(AuditEntry(action="unmask", actor=supervisor.username, target=target,
                                      occurred_at=NOW - timedelta(days=8), sealed_detail=reason))  # fmt: skip
        db.session.commit()
    short = make_app(settings_for(database_url, redis_url, RETENTION_DAYS_FOLLOWUPS="7"))

    assert purge(short, NOW)["unmask_reasons"] == 2
