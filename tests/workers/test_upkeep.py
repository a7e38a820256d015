"""The retention purge scrubs personal data past its window, keeps aggregates, and is idempotent.
It also runs as a real RQ job through a real worker and Redis."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis
import time_machine
from flask import Flask
from sqlalchemy import select, update

from crisisline.app import rq
from crisisline.db import db
from crisisline.models import Call, CallEvent
from crisisline.settings import Settings
from ivr.call_log import PHONE_CONTEXT
from tests.conftest import ROOT, TextingPhone, deployment_environment, settings_for
from tests.workers.jobs import PROCFILE_WORKER
from twilio_fake.phone import Keys, Phone, Words
from workers.upkeep import UNLINKED_CONVERSATION_PREFIX


def place_call_at(phone: Phone, moment: datetime) -> str:
    with time_machine.travel(moment, tick=False):
        call = phone.call([Keys("1"), Words("I want to kill myself")], max_hold_turns=0)
    return call.identity.call_sid


def row(app: Flask, call_sid: str) -> Call:
    with app.app_context():
        return db.session.scalars(select(Call).where(Call.call_sid == call_sid)).one()


@pytest.mark.usefixtures("clean_redis")  # no other test's kept texts
def test_purge_scrubs_only_data_older_than_the_retention_window(app: Flask, phone: Phone) -> None:
    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    old = place_call_at(phone, now - timedelta(days=31))
    recent = place_call_at(phone, now - timedelta(days=29))

    with app.app_context():
        from workers.upkeep import purge_personal_data

        first = purge_personal_data(now.isoformat())
        second = purge_personal_data(now.isoformat())

    assert first == {"calls": 1, "events": 1, "texts": 0, "texters": 0, "conversations_unlinked": 0, "checkins": 0,
                     "checkin_replies": 0,
                     "surveys": 0, "block_reasons": 0, "wrap_up_notes": 0, "unmask_reasons": 0,
                     "kept_texts": 0, "sign_in_attempts": 0}  # fmt: skip
    assert set(second.values()) == {0}
    scrubbed, kept = row(app, old), row(app, recent)
    assert scrubbed.sealed_caller is None and scrubbed.caller_hash is None
    assert scrubbed.personal_data_purged_at is not None
    assert (scrubbed.language, scrubbed.need) == ("en", "suicide")  # anonymous path kept for metrics
    assert kept.sealed_caller is not None and kept.caller_hash is not None
    with app.app_context():
        transcripts = db.session.scalars(select(CallEvent.sealed_detail).join(Call).where(Call.call_sid == old)).all()
    assert all(t is None for t in transcripts)


@pytest.mark.usefixtures("clean_redis")
def test_purge_runs_as_a_job_on_the_procfile_worker(app: Flask, phone: Phone, settings: Settings) -> None:
    old = place_call_at(phone, datetime.now(UTC) - timedelta(days=60))
    with app.app_context():
        from workers.upkeep import purge_personal_data

        job = rq.get_queue("upkeep").enqueue(purge_personal_data, job_timeout=60, failure_ttl=3600)

    # The Procfile's worker command, as a real process, in burst mode.
    env = {**os.environ, **deployment_environment(settings.database_url, settings.redis_url)}
    subprocess.run(  # noqa: S603 - our own interpreter and module
        [*PROCFILE_WORKER, "--burst", "upkeep"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )

    job.refresh()
    assert job.get_status() == "finished"
    assert job.return_value() == {"calls": 1, "events": 1, "texts": 0, "texters": 0, "conversations_unlinked": 0,
                                  "checkins": 0,
                                  "checkin_replies": 0, "surveys": 0, "block_reasons": 0, "wrap_up_notes": 0,
                                  "unmask_reasons": 0, "kept_texts": 0, "sign_in_attempts": 0}  # fmt: skip
    assert row(app, old).sealed_caller is None


def test_the_purge_is_declared_as_a_periodic_job(app: Flask) -> None:
    with app.app_context():
        scheduler = rq.make_cron_scheduler()

    jobs = {job.func.__name__: job for job in scheduler.get_jobs()}
    assert jobs["purge_personal_data"].queue_name == "upkeep"
    assert jobs["sweep_text_conversations"].queue_name == "messages"


def test_purge_scrubs_old_texts_and_numbers_but_keeps_stop_honoured(app: Flask, texting: TextingPhone) -> None:
    from crisisline.models import Message, Texter

    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(now - timedelta(days=40), tick=False):
        texting.send("+13125550171", "I want to kill myself")
        texting.send("+13125550172", "hello there friend")
        texting.send("+13125550172", "STOP")
    with app.app_context():
        from sqlalchemy import update

        from crisisline.models import Conversation

        db.session.execute(update(Conversation).values(state="closed"))
        db.session.commit()
        from workers.upkeep import purge_personal_data

        counts = purge_personal_data(now.isoformat())
        again = purge_personal_data(now.isoformat())
        people = ~Texter.number_hash.startswith(UNLINKED_CONVERSATION_PREFIX)  # not old conversations'
        texters = db.session.scalars(select(Texter).where(people).order_by(Texter.id)).all()
        bodies = db.session.scalars(select(Message.sealed_body)).all()

    assert counts["texters"] == 2
    assert counts["texts"] > 0
    assert set(again.values()) == {0}
    assert all(texter.sealed_number is None for texter in texters)
    assert all(body is None for body in bodies)
    kept, gone = (t for t in texters if t.opted_out), (t for t in texters if not t.opted_out)
    assert all(not t.number_hash.startswith("purged:") for t in kept)  # STOP still recognised
    assert all(t.number_hash.startswith("purged:") for t in gone)


@pytest.mark.usefixtures("clean_redis")
def test_a_callers_number_the_line_texted_goes_by_the_calls_window_unless_they_text_the_line_themselves(
    app: Flask, phone: Phone, texting: TextingPhone, settings: Settings, make_app: Callable[[Settings], Flask],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    from crisisline.models import Conversation, ScheduledContact, Texter
    from tests.workers.test_scheduled_contacts import wait_then_hang_up
    from workers.contacts import run_scheduled_contact
    from workers.upkeep import purge_personal_data

    only_called, texted_too = "+13125550161", "+13125550162"
    for number in (only_called, texted_too):
        wait_then_hang_up(phone, wednesday_evening, number)
    with app.app_context():
        for contact in db.session.scalars(select(ScheduledContact)).all():  # the missed-call texts
            assert run_scheduled_contact(contact.id) == "sent"
    texting.send(texted_too, "thanks, can we talk by text?")  # their own text: a conversation
    with app.app_context():
        db.session.execute(update(Conversation).values(state="closed"))
        db.session.commit()
    # Calls kept a week, texts 90 days.
    short = make_app(settings_for(settings.database_url, settings.redis_url,
                                  RETENTION_DAYS_CALLS="7", RETENTION_DAYS_TEXTS="90"))  # fmt: skip
    with short.app_context():
        counts = purge_personal_data((datetime.now(UTC) + timedelta(days=8)).isoformat())
        again = purge_personal_data((datetime.now(UTC) + timedelta(days=8)).isoformat())
        vault = short.extensions["crisisline.vault"]
        kept = {vault.open(t.sealed_number, context=PHONE_CONTEXT)
                for t in db.session.scalars(select(Texter)) if t.sealed_number}  # fmt: skip

    assert (counts["calls"], counts["texters"], again["texters"]) == (2, 1, 0)
    assert only_called not in kept  # the number the missed-call text copied, gone with the call's
    assert texted_too in kept  # they texted the line: kept by the texts' window


def test_workers_status_lists_queues_workers_and_periodic_jobs(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["workers", "status"])

    assert result.exit_code == 0, result.output
    for queue in ("calls", "messages", "followups", "upkeep"):
        assert f"\n{queue} " in result.output
    assert "0 worker(s) alive" in result.output
    assert "* * * * *    calls      workers.upkeep.reconcile_transfers" in result.output
    assert "17 * * * *   upkeep     workers.upkeep.purge_personal_data" in result.output


def test_purge_removes_kept_texts_past_the_texts_window_from_both_redis_lists(
    app: Flask, clean_redis: redis.Redis
) -> None:
    """Texts the database could not take wait in Redis, sealed; the lists' expiry is renewed by
    every text added, so without the purge an old one could outlive its retention window."""
    from sms import unstored
    from workers.upkeep import purge_personal_data

    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    with app.app_context():
        for sid, days_ago in (("SM" + "1" * 32, 31), ("SM" + "2" * 32, 29), ("SM" + "3" * 32, 40)):
            params = {"MessageSid": sid, "From": "+13125550177", "To": "+13125550100", "Body": "hello"}
            assert unstored.keep(params, now - timedelta(days=days_ago))
        oldest = clean_redis.lpop(unstored.KEY)  # given up on: a person's to see
        assert oldest is not None
        clean_redis.rpush(unstored.DEAD_KEY, oldest)
        clean_redis.rpush(unstored.KEY, b"not a sealed text")  # cannot be opened: left to its expiry

        first = purge_personal_data(now.isoformat())
        second = purge_personal_data(now.isoformat())
        left = [unstored.KEY, unstored.DEAD_KEY]

    assert (first["kept_texts"], second["kept_texts"]) == (2, 0)
    assert [clean_redis.llen(key) for key in left] == [2, 0]
    assert clean_redis.lindex(unstored.KEY, -1) == b"not a sealed text"


def test_purge_goes_on_without_redis(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    from sms import unstored
    from workers.upkeep import purge_personal_data

    def away() -> redis.Redis:
        raise redis.ConnectionError("Redis away")

    monkeypatch.setattr(unstored, "_redis", away)
    with app.app_context():
        counts = purge_personal_data(datetime(2027, 3, 1, 12, 0, tzinfo=UTC).isoformat())

    assert counts["kept_texts"] == 0 and counts["calls"] == 0


def test_someone_who_sent_stop_before_the_purge_is_answered_when_they_come_back(
    app: Flask, texting: TextingPhone
) -> None:
    from sqlalchemy import update

    from crisisline.models import Conversation, Texter
    from sms.views import FAILSAFE_TEXT
    from workers.upkeep import purge_personal_data

    now = datetime.now(UTC)
    with time_machine.travel(now - timedelta(days=40), tick=False):
        texting.send("+13125550181", "hello")
        texting.send("+13125550181", "STOP")
    with app.app_context():
        db.session.execute(update(Conversation).values(state="closed"))
        db.session.commit()
        purge_personal_data(now.isoformat())
        person = ~Texter.number_hash.startswith(UNLINKED_CONVERSATION_PREFIX)
        assert db.session.scalars(select(Texter.sealed_number).where(person)).one() is None  # STOP kept

    replies = texting.send("+13125550181", "START") + texting.send("+13125550181", "please I need to talk to someone")

    assert FAILSAFE_TEXT not in replies
    assert replies[0] == "You will get our texts again. Text us any time you need to talk."
    assert "What is happening? Reply with a number" in replies[1]  # their words are answered
    with app.app_context():
        assert db.session.scalars(select(Texter.sealed_number).where(person)).one() is not None


def test_a_blocklist_reason_is_blanked_after_the_calls_window_and_the_number_stays_blocked(
    app: Flask, settings: Settings
) -> None:
    """Staff write why a number is blocked, and may name the person; the block outlives any
    window (as STOP does), what they wrote about the person does not."""
    from crisisline.models import BlockedNumber
    from ivr.call_log import is_blocked
    from workers.upkeep import purge_personal_data

    added, written = datetime(2027, 3, 1, 12, 0, tzinfo=UTC), "Jo Bloggs of Elm St, threatens staff"
    with time_machine.travel(added, tick=False):
        blocking = ["blocklist", "add", "+13125550166", "--reason", written, "--by", "ada"]
        result = app.test_cli_runner().invoke(args=blocking)
    assert result.output == "blocked\n"
    window = timedelta(days=settings.retention_days_calls)

    def after_purge_at(moment: datetime) -> tuple[str | None, str, bool]:
        with app.app_context():
            purge_personal_data(moment.isoformat())
            row = db.session.scalars(select(BlockedNumber)).one()
            return row.reason, row.added_by, is_blocked("+13125550166")

    assert after_purge_at(added + window - timedelta(minutes=1)) == (written, "ada", True)
    assert after_purge_at(added + window + timedelta(minutes=1)) == (None, "ada", True)


def conversations_of(app: Flask, number: str) -> list[int]:
    """The conversations joined to the texter row ``number``'s keyed hash finds."""
    from crisisline.models import Conversation, Texter
    from ivr.call_log import phone_hash

    with app.app_context():
        return list(
            db.session.scalars(
                select(Conversation.id)
                .join(Texter, Texter.id == Conversation.texter_id)
                .where(Texter.number_hash == phone_hash(number))
                .order_by(Conversation.id)
            )
        )


def test_conversations_past_the_texts_window_are_unlinked_from_a_number_kept_for_its_stop(
    app: Flask, texting: TextingPhone
) -> None:
    from crisisline.models import Conversation, Message, Texter

    number, now = "+13125550172", datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(now - timedelta(days=400), tick=False):
        texting.send(number, "I want to kill myself")
    with app.app_context():
        db.session.execute(update(Conversation).values(state="closed", closed_at=now - timedelta(days=399)))
        db.session.commit()
    with time_machine.travel(now - timedelta(days=200), tick=False):
        texting.send(number, "STOP")
    assert len(conversations_of(app, number)) == 1

    with app.app_context():
        from workers.upkeep import purge_personal_data

        first = purge_personal_data(now.isoformat())
        again = purge_personal_data(now.isoformat())
        conversation = db.session.scalars(select(Conversation)).one()
        its_texter = db.session.get(Texter, conversation.texter_id)
        assert its_texter is not None
        anonymous = (its_texter.number_hash, its_texter.sealed_number, its_texter.opted_out)
        linked = db.session.execute(select(Message.id, Message.texter_id).where(Message.texter_id.is_not(None))).all()
        inbound = db.session.scalars(
            select(Message.id).where(Message.conversation_id == conversation.id, Message.direction == "in")
        ).all()

    assert conversations_of(app, number) == []
    assert anonymous == (f"purged-conversation:{conversation.id}", None, False)
    # Its text moved with it; the old STOP, outside any conversation, has no sender any more.
    assert [tuple(row) for row in linked] == [(message, conversation.texter_id) for message in inbound]
    assert first["conversations_unlinked"] == 1
    assert set(again.values()) == {0}
    # The opt-out still holds: the number's hash still finds an opted-out texter, who gets nothing.
    assert texting.send(number, "hello") == []
    with app.app_context():
        from ivr.call_log import phone_hash

        kept = db.session.scalars(select(Texter).where(Texter.number_hash == phone_hash(number))).one()
        assert kept.opted_out


def test_only_the_conversations_past_the_texts_window_lose_their_link_and_the_next_ones_previous(
    app: Flask, texting: TextingPhone
) -> None:
    from crisisline.models import Conversation

    number, now = "+13125550173", datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    for days in (60, 10):
        with time_machine.travel(now - timedelta(days=days), tick=False):
            texting.send(number, "I want to kill myself")
        with app.app_context():
            db.session.execute(update(Conversation).values(state="closed", closed_at=now - timedelta(days=days)))
            db.session.commit()
    with app.app_context():
        old, recent = db.session.scalars(select(Conversation).order_by(Conversation.id)).all()
        assert recent.previous_id == old.id

        from workers.upkeep import purge_personal_data

        purge_personal_data(now.isoformat())
        db.session.expire_all()
        previous = db.session.get(Conversation, recent.id).previous_id  # type: ignore[union-attr]

    assert conversations_of(app, number) == [recent.id]
    assert previous is None
