"""Twilio's own records of a purged contact (its calls and texts) are deleted through the REST API
after the line's purge, never before; once each, whatever fails or runs twice; and not at all
with ``TWILIO_RECORDS_AFTER_PURGE=keep``. Against the fake Twilio over real HTTP, on both databases."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import String, Text, func, or_, select, update

import sms.views as sms_views
from crisisline.app import rq
from crisisline.db import db
from crisisline.models import Call, Conversation, Message, Offer, Texter, Transfer, TwilioRecord
from crisisline.privacy import DecryptionError, Vault
from crisisline.settings import Settings, SettingsError
from ivr.call_log import PHONE_CONTEXT, phone_hash
from sms import outbox
from tests.conftest import LINE_NUMBER, TEST_BACKUP_NUMBER, TextingPhone, settings_for
from tests.rota import BEN
from twilio_fake.phone import Keys, Phone, PhoneCall, Words
from twilio_fake.rest_api import FakeTwilio, MessageRecord
from twilio_fake.signing import new_sid
from workers import twilio_records
from workers.twilio_records import REPLY_WINDOW, delete_twilio_records
from workers.upkeep import purge_personal_data

CALLER, TEXTER = "+13125550181", "+13125550182"
PAST_RETENTION, WITHIN_RETENTION = timedelta(days=31), timedelta(days=29)


def a_call(phone: Phone, fake: FakeTwilio, *, hang_up: bool = True) -> PhoneCall:
    """A caller who asks for a counselor (one is rung: a responder's leg) and hangs up on hold."""
    call = phone.call([Keys("1"), Words("I want to kill myself")], identity=phone.identity(CALLER), max_hold_turns=0)
    if hang_up:
        phone.hang_up(call)  # their leg ends, and with it the responder's (canceled)
    return call


def a_text(texting: TextingPhone, fake: FakeTwilio, body: str = "I can't sleep again") -> str:
    """A text to the line, kept by Twilio as it keeps every text; its replies delivered."""
    sid = new_sid("SM")
    fake.record_inbound_message(sid, TEXTER, LINE_NUMBER, body)
    texting.send(TEXTER, body, message_sid=sid)
    for message in list(fake.messages.values()):
        if message.status == "queued":
            fake.deliver_message(message.sid)
    return sid


def two_replies(document: object, texter: Texter, inbound: Message, body: str, *_: object) -> None:
    """A handler answering with two texts: two ``<Message>`` verbs, only the last with an ``action``."""
    for part in ("We're here.", "A counselor will text you shortly."):
        outbox.send_text(key=f"reply:{inbound.id}:{part}", to_number=TEXTER, from_number=LINE_NUMBER, body=part,
                         party="line", texter=texter)  # fmt: skip


def a_reply_then_failure(document: object, texter: Texter, inbound: Message, body: str, *_: object) -> None:
    """A handler that replies, then fails: the reply and the fail-safe text, neither with an ``action``."""
    outbox.send_text(key=f"reply:{inbound.id}", to_number=TEXTER, from_number=LINE_NUMBER, body="We're here.",
                     party="line", texter=texter)  # fmt: skip
    raise RuntimeError("the handling failed")


def sids_the_line_holds(app: Flask) -> set[str]:
    """Every Twilio SID in the line's tables: calls, callback and responder legs, texts."""
    with app.app_context():
        found = {
            *db.session.scalars(select(Call.call_sid)),
            *db.session.scalars(select(Transfer.caller_call_sid)),
            *db.session.scalars(select(Offer.call_sid)),
            *db.session.scalars(select(Message.message_sid)),
        }
    return {sid for sid in found if sid and sid.startswith(("CA", "SM", "MM"))}


def between_texter_and_line(fake: FakeTwilio) -> set[str]:
    """Every text Twilio keeps between the texter and the line, either way."""
    return {sid for sid, m in fake.messages.items() if {m.to, m.from_} == {TEXTER, LINE_NUMBER}}


def at_twilio(fake: FakeTwilio, sids: set[str]) -> set[str]:
    return {sid for sid in sids if sid in fake.calls or sid in fake.messages}


def noted(app: Flask) -> list[TwilioRecord]:
    with app.app_context():
        records = list(db.session.scalars(select(TwilioRecord).order_by(TwilioRecord.id)))
        db.session.expunge_all()
    return records


def purge(app: Flask, now: datetime) -> None:
    with app.app_context():
        purge_personal_data(now.isoformat())


def delete_run(app: Flask, now: datetime) -> dict[str, int]:
    with app.app_context():
        return delete_twilio_records(now.isoformat())


@pytest.mark.usefixtures("clean_redis")
def test_a_purged_contacts_calls_legs_and_texts_are_deleted_at_twilio_each_once(
    app: Flask, phone: Phone, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    call = a_call(phone, fake)
    caller_sid = call.identity.call_sid
    # The backup line dialled from their call (a <Dial> leg: Twilio's record holds their number
    # as caller ID), and a callback's leg to their phone.
    backup_leg = fake.dial_leg(caller_sid, TEST_BACKUP_NUMBER, CALLER, "completed")
    callback_leg = fake.create_call(CALLER, LINE_NUMBER, twiml="<Response/>")
    fake.advance_call(callback_leg.sid, "canceled")
    with app.app_context():
        call_id = db.session.scalars(select(Call.id).where(Call.call_sid == caller_sid)).one()
        db.session.add(Transfer(call_id=call_id, caller_call_sid=callback_leg.sid, round=2, language="en",
                                need="suicide", state="ended", mode="callback"))  # fmt: skip
        db.session.commit()
    inbound = a_text(texting, fake)
    held = sids_the_line_holds(app)
    assert {caller_sid, callback_leg.sid, inbound} <= held
    assert any(sid in fake.calls and fake.calls[sid].direction == "outbound-api" for sid in held - {callback_leg.sid})
    assert at_twilio(fake, held) == held

    assert between_texter_and_line(fake) <= held  # one reply, with its action: the line has its SID

    now = datetime.now(UTC) + PAST_RETENTION
    purge(app, now)
    counts = delete_run(app, now + REPLY_WINDOW)

    assert at_twilio(fake, held) == set()
    assert backup_leg.sid not in fake.calls
    assert between_texter_and_line(fake) == set()
    # Each SID; then the texts between the texter and the line's number, listed: none left.
    assert counts == {"deleted": len(held), "gone": 1, "refused": 0, "failed": 0, "texts_by_number": 0}
    assert sorted(sid for sid, _ in fake.delete_log) == sorted(held | {backup_leg.sid})  # each once
    assert {status for _, status in fake.delete_log} == {204}
    assert noted(app) == []  # done: the SIDs are no longer noted either


@pytest.mark.usefixtures("clean_redis")
def test_nothing_is_deleted_at_twilio_while_the_line_keeps_the_contact(
    app: Flask, phone: Phone, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    a_call(phone, fake)
    a_text(texting, fake)
    held = sids_the_line_holds(app)

    now = datetime.now(UTC) + WITHIN_RETENTION
    purge(app, now)
    counts = delete_run(app, now)

    assert set(counts.values()) == {0}
    assert at_twilio(fake, held) == held
    assert fake.delete_log == []
    assert noted(app) == []


@pytest.mark.usefixtures("clean_redis")
def test_running_the_purge_and_the_deletion_again_deletes_nothing_more(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sms_views, "handle_texter_message", two_replies)
    a_text(texting, fake)
    now = datetime.now(UTC) + PAST_RETENTION
    purge(app, now)
    first = delete_run(app, now + REPLY_WINDOW)
    log_after_first = list(fake.delete_log)
    listing_fails = fake.inject_fault("GET", r"/Messages\.json", status=500, code=20500, times=100)

    purge(app, now + timedelta(hours=1))
    again = delete_run(app, now + timedelta(hours=1))

    assert first["deleted"] > 0 and first["texts_by_number"] > 0
    assert between_texter_and_line(fake) == set()
    assert set(again.values()) == {0}
    assert fake.delete_log == log_after_first
    assert noted(app) == []  # nothing noted again, so nothing listed (a listing would have failed)
    assert listing_fails.remaining == 100


@pytest.mark.usefixtures("clean_redis")
def test_a_record_twilio_no_longer_has_counts_as_deleted(app: Flask, texting: TextingPhone, fake: FakeTwilio) -> None:
    inbound = a_text(texting, fake)
    now = datetime.now(UTC) + PAST_RETENTION
    purge(app, now)
    fake.delete_message(inbound)  # deleted already (by hand in Twilio's console, say)

    counts = delete_run(app, now + REPLY_WINDOW)

    assert counts["gone"] == 2  # it, and the texts listed by number (none left)
    assert (inbound, 404) in fake.delete_log
    assert noted(app) == []


@pytest.mark.usefixtures("clean_redis")
def test_a_twilio_server_error_is_tried_again_at_the_next_run_not_the_same_one(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    inbound = a_text(texting, fake)
    now = datetime.now(UTC) + PAST_RETENTION
    purge(app, now)
    fake.inject_fault("DELETE", rf"/Messages/{inbound}\.json$", status=503, code=20503, times=2)

    first = delete_run(app, now)
    (left,) = [record for record in noted(app) if record.kind != "texts"]  # those by number: not due yet
    second = delete_run(app, now + timedelta(seconds=30))

    assert first["failed"] == 1
    assert (left.sid, left.state, left.last_error) == (inbound, "pending", "20503")
    assert inbound in fake.messages  # the second injected failure was never used by the first run
    assert second["failed"] == 1  # the next run tried it (and Twilio failed once more)
    third = delete_run(app, now + timedelta(minutes=2))
    assert (third["deleted"], third["gone"], third["failed"]) == (1, 1, 0)  # then listed by number: none left
    assert inbound not in fake.messages
    assert noted(app) == []


@pytest.mark.usefixtures("clean_redis")
def test_a_call_still_in_progress_is_left_and_deleted_once_it_is_over(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    call = a_call(phone, fake, hang_up=False)  # on hold still (its record at Twilio: in progress)
    held = sids_the_line_holds(app)
    now = datetime.now(UTC) + PAST_RETENTION
    purge(app, now)

    refused = delete_run(app, now)
    soon_after = delete_run(app, now + timedelta(minutes=1))
    tried = list(fake.delete_log)
    phone.hang_up(call)
    later = delete_run(app, now + timedelta(minutes=16))

    assert refused["refused"] == len(held) and refused["deleted"] == 0
    assert {status for _, status in tried} == {400}  # 20009: not over yet
    assert set(soon_after.values()) == {0}  # not asked again a minute later
    assert later["deleted"] == len(held)
    assert at_twilio(fake, held) == set()
    assert noted(app) == []


@pytest.mark.usefixtures("clean_redis")
def test_keep_deletes_nothing_at_twilio_and_switching_back_to_delete_catches_up(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, settings: Settings, make_app: Callable[[Settings], Flask]
) -> None:
    a_text(texting, fake)
    held = sids_the_line_holds(app)
    keeping = make_app(
        settings_for(settings.database_url, settings.redis_url, TWILIO_RECORDS_AFTER_PURGE="keep",
                     TWILIO_API_BASE_URL=settings.twilio_api_base_url or "")
    )  # fmt: skip
    now = datetime.now(UTC) + PAST_RETENTION

    purge(keeping, now)
    kept = delete_run(keeping, now)

    assert keeping.extensions["crisisline.settings"].twilio_records_after_purge == "keep"
    assert set(kept.values()) == {0}
    assert at_twilio(fake, held) == held
    assert fake.delete_log == []
    assert {record.sid for record in noted(app)} == held  # noted all the same

    deleting = delete_run(app, now)

    assert deleting["deleted"] == len(held)
    assert at_twilio(fake, held) == set()


@pytest.mark.usefixtures("clean_redis")
def test_two_runs_at_once_delete_each_record_once(app: Flask, fake: FakeTwilio) -> None:
    now = datetime.now(UTC)
    sids = [new_sid("SM") for _ in range(45)]
    for sid in sids:
        fake.record_inbound_message(sid, TEXTER, LINE_NUMBER, "words")
    with app.app_context():
        db.session.add_all(TwilioRecord(kind="message", sid=sid, state="pending", due_at=now) for sid in sids)
        db.session.commit()
    fake.inject_fault("DELETE", r"/Messages/", status=200, delay=0.02, times=None)  # slow enough to overlap
    results: list[dict[str, int]] = []
    start = threading.Barrier(2)

    def run() -> None:
        with app.app_context():
            start.wait()
            results.append(delete_twilio_records(now.isoformat()))

    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(timeout=60)

    assert len(results) == 2
    assert sum(result["deleted"] for result in results) == len(sids)
    assert all(result["deleted"] > 0 for result in results)  # both worked, on different records
    assert sorted(sid for sid, _ in fake.delete_log) == sorted(sids)  # no SID asked twice
    assert {status for _, status in fake.delete_log} == {204}
    assert noted(app) == []


@pytest.mark.usefixtures("clean_redis")
def test_a_killed_runs_claim_lapses_and_another_run_deletes_its_records(app: Flask, fake: FakeTwilio) -> None:
    now = datetime.now(UTC)
    sid = new_sid("SM")
    fake.record_inbound_message(sid, TEXTER, LINE_NUMBER, "words")
    with app.app_context():  # claimed by a run that died before asking Twilio
        db.session.add(TwilioRecord(kind="message", sid=sid, state="deleting", claim="dead-run", due_at=now))
        db.session.commit()

    while_claimed = delete_run(app, now - timedelta(minutes=1))
    after = delete_run(app, now)

    assert set(while_claimed.values()) == {0}
    assert after["deleted"] == 1
    assert sid not in fake.messages


def test_the_deletion_runs_every_minute_on_the_upkeep_queue(app: Flask) -> None:
    with app.app_context():
        scheduler = rq.make_cron_scheduler()

    jobs = {job.func.__name__: job for job in scheduler.get_jobs()}
    assert jobs["delete_twilio_records"].queue_name == "upkeep"


def test_twilio_records_after_purge_is_delete_unless_set_to_keep(settings: Settings) -> None:
    assert settings.twilio_records_after_purge == "delete"
    with pytest.raises(SettingsError) as raised:
        settings_for(settings.database_url, settings.redis_url, TWILIO_RECORDS_AFTER_PURGE="redact")
    assert "TWILIO_RECORDS_AFTER_PURGE: must be delete or keep" in raised.value.problems


@pytest.mark.usefixtures("clean_redis")
def test_the_migration_notes_the_records_of_contacts_purged_before_it(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    inbound = a_text(texting, fake)
    with app.app_context():
        db.session.execute(update(Conversation).values(state="closed"))
        db.session.commit()
    purge(app, datetime.now(UTC) + PAST_RETENTION)
    held = sids_the_line_holds(app)
    with app.app_context():
        downgrade(revision="b8f2e6d4c1a7")  # as if purged before this feature existed
        upgrade()
        unpurged = db.session.scalar(
            select(func.count(Message.id)).where(or_(Message.sealed_body.is_not(None), Message.message_sid.is_(None)))
        )

    assert unpurged == 0
    assert inbound in held
    assert {record.sid for record in noted(app)} == held


def the_number_is_kept(app: Flask, number: str) -> list[str]:
    """Where the database still holds ``number``: plain in any text column, or sealed in any
    ``sealed_*`` column (opened with the line's vault)."""
    vault: Vault = app.extensions["crisisline.vault"]
    digits = number.lstrip("+")
    found = []
    with app.app_context():
        for table in db.metadata.sorted_tables:
            columns = [column for column in table.columns if isinstance(column.type, (String, Text))]
            for row in db.session.execute(select(*columns)) if columns else ():
                for column, value in zip(columns, row, strict=True):
                    if not isinstance(value, str):
                        continue
                    if digits in value:
                        found.append(f"{table.name}.{column.name}")
                    elif column.name.startswith("sealed_"):
                        try:
                            if vault.open(value, context=PHONE_CONTEXT) == number:
                                found.append(f"{table.name}.{column.name} (sealed)")
                        except DecryptionError:
                            pass  # a body, a note: sealed under another context
    return found


@pytest.mark.usefixtures("clean_redis")
def test_replies_a_webhooks_twiml_carried_and_the_fail_safe_are_deleted_at_twilio_after_the_purge(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(twilio_records, "TEXTS_PAGE_SIZE", 2)  # the listing follows Twilio's pages
    monkeypatch.setattr(sms_views, "handle_texter_message", two_replies)
    a_text(texting, fake, "I can't sleep again")
    monkeypatch.setattr(sms_views, "handle_texter_message", a_reply_then_failure)
    a_text(texting, fake, "are you there?")
    with app.app_context():
        db.session.execute(update(Conversation).values(state="closed"))
        db.session.commit()
    held = sids_the_line_holds(app)
    unknown = between_texter_and_line(fake) - held
    # The first reply of two; the reply before the failure, and the fail-safe text after it.
    assert sorted(fake.messages[sid].body for sid in unknown) == sorted([sms_views.FAILSAFE_TEXT, *["We're here."] * 2])

    now = datetime.now(UTC) + PAST_RETENTION
    purge(app, now)
    assert [record.kind for record in noted(app)].count("texts") == 1  # the texter and the line's number
    counts = delete_run(app, now + REPLY_WINDOW)

    assert between_texter_and_line(fake) == set()
    assert counts["texts_by_number"] == len(unknown) and counts["failed"] == counts["refused"] == 0
    assert sorted(sid for sid, _ in fake.delete_log) == sorted(held | unknown)  # each once
    assert noted(app) == []
    assert the_number_is_kept(app, TEXTER) == []  # scrubbed, and the row noting its texts gone with it


@pytest.mark.usefixtures("clean_redis", "wednesday_evening")
def test_a_texters_words_relayed_to_the_counselor_who_took_them_are_deleted_at_twilio_after_the_purge(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    """The backlog a counselor's YES brings is relayed over REST, never in the answer to their
    text, where Twilio would report no SID: nothing the texter wrote stays at Twilio."""
    words = ["I want to kill myself tonight", "I have the pills here"]
    for text in words:
        a_text(texting, fake, text)  # queued, offered to Ben
    offer = next(text for text in texting.inbox(BEN) if text.startswith("New text #"))
    tag = offer.split("#", 1)[1].split(":", 1)[0]
    texting.send(BEN, f"YES {tag}")
    for message in list(fake.messages.values()):
        if message.status == "queued":
            fake.deliver_message(message.sid)
    assert sum(any(said in m.body for said in words) for m in fake.messages.values() if m.to == BEN) == 2
    with app.app_context():
        db.session.execute(update(Conversation).values(state="closed"))
        db.session.commit()

    now = datetime.now(UTC) + PAST_RETENTION
    purge(app, now)
    counts = delete_run(app, now + REPLY_WINDOW)

    assert counts["failed"] == counts["refused"] == 0
    assert [m.body for m in fake.messages.values() if any(said in m.body for said in words)] == []
    assert noted(app) == []


@pytest.mark.usefixtures("clean_redis")
def test_a_newer_text_of_the_same_texter_and_its_replies_stay_at_twilio(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sms_views, "handle_texter_message", two_replies)
    start = datetime.now(UTC)
    a_text(texting, fake, "I can't sleep again")
    old = between_texter_and_line(fake)
    with time_machine.travel(start + timedelta(days=20), tick=True):  # within retention at the purge
        a_text(texting, fake, "it's happening again")
    newer = between_texter_and_line(fake) - old
    assert len(old) == len(newer) == 3

    now = start + PAST_RETENTION
    purge(app, now)
    counts = delete_run(app, now + REPLY_WINDOW)

    assert between_texter_and_line(fake) == newer
    assert counts["texts_by_number"] == 1 and counts["failed"] == 0  # the first reply: no SID
    assert noted(app) == []


def a_text_at_twilio(fake: FakeTwilio, to: str, from_: str, at: datetime, *, sent: bool = True) -> str:
    """A text Twilio keeps, created at ``at``: delivered then, or never sent (``failed``, no DateSent)."""
    message = MessageRecord(sid=new_sid("SM"), account_sid=fake.account_sid, to=to, from_=from_, body="words",
                            status="delivered" if sent else "failed", date_created=at, date_updated=at,
                            date_sent=at if sent else None)  # fmt: skip
    fake.messages[message.sid] = message
    return message.sid


def note_the_texters_texts(app: Flask, cutoff: datetime, *, purged_at: datetime) -> None:
    """The row a purge at ``purged_at`` notes to find TEXTER's texts before ``cutoff`` at Twilio."""
    sealed = app.extensions["crisisline.vault"].seal(TEXTER, context=PHONE_CONTEXT)
    with app.app_context():
        db.session.add(TwilioRecord(kind="texts", sid="texts:1:test", state="pending", due_at=cutoff,
                                    queued_at=purged_at, sealed_number=sealed, line_number=LINE_NUMBER,
                                    sent_before=cutoff))  # fmt: skip
        db.session.commit()


@pytest.mark.usefixtures("clean_redis")
def test_texts_found_by_number_stop_at_the_cutoff_and_replies_just_after_it_at_the_texters_next_text(
    app: Flask, fake: FakeTwilio
) -> None:
    cutoff = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)

    def text(to: str, from_: str, seconds: int) -> str:
        return a_text_at_twilio(fake, to, from_, cutoff + timedelta(seconds=seconds))

    theirs_before = text(LINE_NUMBER, TEXTER, -5)
    reply_after = text(TEXTER, LINE_NUMBER, 3)  # to the text just before the cutoff
    theirs_after = text(LINE_NUMBER, TEXTER, 10)  # texted again: kept, and what answers it
    reply_to_newer = text(TEXTER, LINE_NUMBER, 12)
    someone_else = text("+13125550199", LINE_NUMBER, -60)
    note_the_texters_texts(app, cutoff, purged_at=cutoff + timedelta(days=30))

    counts = delete_run(app, cutoff + timedelta(days=30) + REPLY_WINDOW)

    assert counts["texts_by_number"] == 2
    assert sorted(sid for sid, _ in fake.delete_log) == sorted([theirs_before, reply_after])
    assert {theirs_after, reply_to_newer, someone_else} <= set(fake.messages)
    assert noted(app) == []


@pytest.mark.usefixtures("clean_redis")
def test_a_text_twilio_never_sent_is_found_by_number_and_deleted_by_when_it_was_created(
    app: Flask, fake: FakeTwilio
) -> None:
    cutoff = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)

    def text(to: str, from_: str, seconds: int, *, sent: bool = True) -> str:
        return a_text_at_twilio(fake, to, from_, cutoff + timedelta(seconds=seconds), sent=sent)

    theirs_before = text(LINE_NUMBER, TEXTER, -5)
    failed_reply = text(TEXTER, LINE_NUMBER, -3, sent=False)  # Twilio could not send it: no DateSent
    failed_after = text(TEXTER, LINE_NUMBER, 3, sent=False)  # within the reply window: a reply too
    theirs_after = text(LINE_NUMBER, TEXTER, 10)
    failed_to_newer = text(TEXTER, LINE_NUMBER, 12, sent=False)  # answers a text the line keeps
    note_the_texters_texts(app, cutoff, purged_at=cutoff + timedelta(days=30))

    counts = delete_run(app, cutoff + timedelta(days=30) + REPLY_WINDOW)

    assert counts["texts_by_number"] == 3 and counts["failed"] == counts["refused"] == 0
    assert sorted(sid for sid, _ in fake.delete_log) == sorted([theirs_before, failed_reply, failed_after])
    assert {theirs_after, failed_to_newer} <= set(fake.messages)
    assert noted(app) == []


@pytest.mark.usefixtures("clean_redis")
def test_a_texters_number_noted_to_find_their_texts_goes_after_fifteen_days_of_twilio_refusing(
    app: Flask, fake: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    """A listing Twilio refuses for good (a token it no longer takes) must not keep a purged
    texter's number in the line's database for ever: retention outranks Twilio's copies."""
    purged_at = datetime.now(UTC).replace(microsecond=0)
    sealed = app.extensions["crisisline.vault"].seal(TEXTER, context=PHONE_CONTEXT)
    with app.app_context():
        db.session.add(TwilioRecord(kind="texts", sid="texts:1:test", state="pending", due_at=purged_at,
                                    queued_at=purged_at, sealed_number=sealed, line_number=LINE_NUMBER,
                                    sent_before=purged_at - timedelta(days=30)))  # fmt: skip
        db.session.commit()
    fake.inject_fault("GET", r"/Messages\.json", status=401, code=20003, times=None)

    refused = delete_run(app, purged_at + timedelta(days=14))
    still_noted = [record.sid for record in noted(app)]
    with caplog.at_level("WARNING", logger="workers.twilio_records"):
        after = delete_run(app, purged_at + timedelta(days=15, minutes=1))

    assert refused["refused"] == 1 and still_noted == ["texts:1:test"]  # tried daily until then
    assert after["refused"] == 0 and noted(app) == []
    assert the_number_is_kept(app, TEXTER) == []
    (warning,) = [r.getMessage() for r in caplog.records if "given up" in r.getMessage()]
    assert "20003" in warning and TEXTER.lstrip("+") not in warning


@pytest.mark.usefixtures("clean_redis")
def test_keep_sends_nothing_and_drops_the_texters_numbers_noted_to_find_their_texts(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, settings: Settings, make_app: Callable[[Settings], Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(sms_views, "handle_texter_message", two_replies)
    a_text(texting, fake)
    kept = between_texter_and_line(fake)
    keeping = make_app(
        settings_for(settings.database_url, settings.redis_url, TWILIO_RECORDS_AFTER_PURGE="keep",
                     TWILIO_API_BASE_URL=settings.twilio_api_base_url or "")
    )  # fmt: skip
    listing = fake.inject_fault("GET", r"/Messages\.json", status=500, code=20500, times=100)
    now = datetime.now(UTC) + PAST_RETENTION

    purge(keeping, now)
    assert [record.kind for record in noted(app)].count("texts") == 1
    counts = delete_run(keeping, now + REPLY_WINDOW)

    assert set(counts.values()) == {0}
    assert (fake.delete_log, listing.remaining) == ([], 100)  # nothing deleted, nothing listed
    assert between_texter_and_line(fake) == kept
    assert "texts" not in {record.kind for record in noted(app)}  # the SIDs stay noted, the number goes


@pytest.mark.usefixtures("clean_redis")
def test_a_texters_stop_sent_after_their_conversation_keeps_their_number_until_its_body_goes_then_twilio_deletes_it(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    start = datetime.now(UTC)
    a_text(texting, fake, "I can't sleep again")  # a conversation, closed at once
    with app.app_context():
        db.session.execute(update(Conversation).values(state="closed", closed_at=start))
        db.session.commit()
    with time_machine.travel(start + timedelta(days=20), tick=True):
        stop = a_text(texting, fake, "STOP")  # no conversation: a text on its own, within retention below

    purge(app, start + PAST_RETENTION)  # the conversation's texts go; the STOP's body is kept
    with app.app_context():
        assert db.session.scalars(select(Texter.sealed_number).where(Texter.number_hash == phone_hash(TEXTER))).one()
    delete_run(app, start + PAST_RETENTION + REPLY_WINDOW)
    assert stop in fake.messages  # within retention: Twilio keeps it as the line does

    later = start + timedelta(days=20) + PAST_RETENTION
    purge(app, later)  # the STOP's body goes: its texts are noted by number, then the number goes
    assert [record.kind for record in noted(app)].count("texts") == 1
    delete_run(app, later + REPLY_WINDOW)

    assert stop not in fake.messages
    assert between_texter_and_line(fake) == set()
    assert noted(app) == []
    with app.app_context():
        texter = db.session.scalars(select(Texter).where(Texter.number_hash == phone_hash(TEXTER))).one()
        assert texter.sealed_number is None and texter.opted_out  # STOP still honoured
