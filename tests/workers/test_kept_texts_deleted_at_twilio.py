"""A text the database would not take is kept in Redis and answered with the fail-safe; if it is
never stored, the retention purge removes it from Redis. Twilio keeps its own copies (the texter's
text: their number and words; the fail-safe reply: their number): the purge has those deleted
too, as a stored text's are, once and never lost between Redis and the database. Against the
fake Twilio over real HTTP, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask import Flask
from sqlalchemy import select

import sms.views as sms_views
from crisisline import retention
from crisisline.db import db
from crisisline.models import TwilioRecord
from crisisline.retention import Cutoffs
from ivr.call_log import PHONE_CONTEXT
from sms import unstored
from tests.conftest import LINE_NUMBER, TextingPhone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import new_sid
from workers.twilio_records import REPLY_WINDOW, delete_twilio_records
from workers.upkeep import purge_personal_data

TEXTER = "+13125550183"
WORDS = "I can't do this anymore"
PAST_RETENTION, WITHIN_RETENTION = timedelta(days=31), timedelta(days=29)


@pytest.fixture
def kept(clean_redis: redis.Redis) -> redis.Redis:
    return clean_redis


def a_text_kept_through_an_outage(texting: TextingPhone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> str:
    """A text the database refuses (and keeps refusing: it is never stored), kept by Twilio as
    it keeps every text; the fail-safe reply delivered. Returns its MessageSid."""

    def refused(*args: object, **kwargs: object) -> None:
        raise ConnectionError("simulated: the database refused")

    monkeypatch.setattr(sms_views, "store_inbound", refused)
    sid = new_sid("SM")
    fake.record_inbound_message(sid, TEXTER, LINE_NUMBER, WORDS)
    assert texting.send(TEXTER, WORDS, message_sid=sid) == [sms_views.FAILSAFE_TEXT]
    for message in list(fake.messages.values()):
        if message.status == "queued":
            fake.deliver_message(message.sid)
    return sid


def between_texter_and_line(fake: FakeTwilio) -> set[str]:
    return {sid for sid, m in fake.messages.items() if {m.to, m.from_} == {TEXTER, LINE_NUMBER}}


def texts_rows(app: Flask) -> list[TwilioRecord]:
    with app.app_context():
        rows = list(db.session.scalars(select(TwilioRecord).where(TwilioRecord.kind == "texts")))
        db.session.expunge_all()
    return rows


def purge(app: Flask, now: datetime) -> dict[str, int]:
    with app.app_context():
        return purge_personal_data(now.isoformat())


def delete_run(app: Flask, now: datetime) -> dict[str, int]:
    with app.app_context():
        return delete_twilio_records(now.isoformat())


def in_clear(kept: redis.Redis, number: str) -> list[bytes]:
    """Every Redis key whose values hold ``number``'s digits unsealed."""
    digits = number.lstrip("+").encode()
    found = []
    for key in kept.keys("*"):
        kind = kept.type(key)
        values = kept.lrange(key, 0, -1) if kind == b"list" else kept.hvals(key) if kind == b"hash" else []
        if any(digits in value for value in values):
            found.append(key)
    return found


def test_a_kept_text_never_stored_and_its_fail_safe_reply_are_deleted_at_twilio_after_the_purge(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    sid = a_text_kept_through_an_outage(texting, fake, monkeypatch)
    at_twilio = between_texter_and_line(fake)
    assert sid in at_twilio and len(at_twilio) == 2  # theirs, and the fail-safe reply to it
    assert kept.llen(unstored.KEY) == 1

    now = datetime.now(UTC) + PAST_RETENTION
    assert purge(app, now)["kept_texts"] == 1
    assert kept.llen(unstored.KEY) == 0
    assert kept.exists(unstored.TWILIO_OWED_KEY) == 0  # noted and committed: nothing left owed
    rows = texts_rows(app)
    counts = delete_run(app, now + REPLY_WINDOW)

    assert between_texter_and_line(fake) == set()
    assert sorted(deleted for deleted, _ in fake.delete_log) == sorted(at_twilio)  # each once
    assert counts["texts_by_number"] == 2 and counts["failed"] == counts["refused"] == 0
    assert texts_rows(app) == []  # done: the sealed number went with the row
    assert [row.sid.rpartition(":")[0] for row in rows] == [f"texts:kept:{sid}"]
    assert len(rows[0].sid) <= TwilioRecord.sid.type.length
    assert "5550183" not in caplog.text


def test_the_row_noting_a_kept_texts_copies_holds_no_number_in_clear(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_text_kept_through_an_outage(texting, fake, monkeypatch)

    purge(app, datetime.now(UTC) + PAST_RETENTION)

    (row,) = texts_rows(app)
    digits = TEXTER.lstrip("+")
    assert row.sealed_number is not None and digits not in row.sealed_number and digits not in row.sid
    assert app.extensions["crisisline.vault"].open(row.sealed_number, context=PHONE_CONTEXT) == TEXTER
    assert row.line_number == LINE_NUMBER  # the line's own number
    assert (row.state, row.attempts) == ("pending", 0)


def test_a_kept_text_within_its_retention_notes_nothing(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_text_kept_through_an_outage(texting, fake, monkeypatch)

    assert purge(app, datetime.now(UTC) + WITHIN_RETENTION)["kept_texts"] == 0

    assert texts_rows(app) == []
    assert kept.llen(unstored.KEY) == 1
    assert kept.exists(unstored.TWILIO_OWED_KEY) == 0


def test_a_purge_run_again_notes_a_kept_texts_copies_once(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_text_kept_through_an_outage(texting, fake, monkeypatch)
    now = datetime.now(UTC) + PAST_RETENTION

    first, again, later = purge(app, now), purge(app, now), purge(app, now + timedelta(hours=1))

    assert (first["kept_texts"], again["kept_texts"], later["kept_texts"]) == (1, 0, 0)
    assert len(texts_rows(app)) == 1


def test_a_purge_whose_commit_fails_leaves_the_copies_owed_and_the_next_purge_notes_them(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_text_kept_through_an_outage(texting, fake, monkeypatch)
    at_twilio = between_texter_and_line(fake)
    now = datetime.now(UTC) + PAST_RETENTION

    def fails(cutoffs: Cutoffs) -> int:
        raise RuntimeError("simulated: a purge after the kept texts' fails, so nothing is committed")

    with monkeypatch.context() as patched:
        patched.setitem(retention._PURGES, "fails_after_kept_texts", fails)
        with pytest.raises(RuntimeError):
            purge(app, now)

    assert texts_rows(app) == []  # rolled back with the rest of the purge
    assert kept.llen(unstored.KEY) == 0  # the words are gone from Redis all the same
    assert kept.hlen(unstored.TWILIO_OWED_KEY) == 1  # what finding Twilio's copies takes is not
    assert in_clear(kept, TEXTER) == []  # sealed

    purge(app, now + timedelta(hours=1))

    assert len(texts_rows(app)) == 1
    assert kept.exists(unstored.TWILIO_OWED_KEY) == 0
    delete_run(app, now + timedelta(hours=1) + REPLY_WINDOW)
    assert at_twilio & set(fake.messages) == set()


def test_redis_failing_after_the_purges_commit_has_the_next_purge_note_the_same_row(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_text_kept_through_an_outage(texting, fake, monkeypatch)
    now = datetime.now(UTC) + PAST_RETENTION
    real_hdel = redis.Redis.hdel

    def away(self: redis.Redis, name: str, *keys: str) -> int:
        if name == unstored.TWILIO_OWED_KEY:
            raise redis.ConnectionError("simulated: Redis away just after the commit")
        return real_hdel(self, name, *keys)

    with monkeypatch.context() as patched:
        patched.setattr(redis.Redis, "hdel", away)
        purge(app, now)  # the commit is not failed by it
    (noted,) = texts_rows(app)
    assert kept.hlen(unstored.TWILIO_OWED_KEY) == 1

    purge(app, now + timedelta(hours=1))

    (again,) = texts_rows(app)  # the same key (its MessageSid and the first purge's cutoff): one row
    assert (again.id, again.sid) == (noted.id, noted.sid)
    assert kept.exists(unstored.TWILIO_OWED_KEY) == 0


def test_a_kept_text_from_a_withheld_number_is_removed_and_notes_nothing(app: Flask, kept: redis.Redis) -> None:
    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    with app.app_context():
        params = {"MessageSid": new_sid("SM"), "From": "Anonymous", "To": LINE_NUMBER, "Body": WORDS}
        assert unstored.keep(params, now - PAST_RETENTION)

    assert purge(app, now)["kept_texts"] == 1

    assert kept.llen(unstored.KEY) == 0 and kept.exists(unstored.TWILIO_OWED_KEY) == 0
    assert texts_rows(app) == []


def test_the_copies_stay_owed_until_the_purges_own_transaction_commits_not_a_savepoint_in_it(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_text_kept_through_an_outage(texting, fake, monkeypatch)
    cutoffs = Cutoffs.at(datetime.now(UTC) + PAST_RETENTION, app.extensions["crisisline.settings"])

    with app.app_context():
        assert unstored.purge_kept(cutoffs) == 1
        with db.session.begin_nested():  # another purge's savepoint, released
            pass
        assert kept.hlen(unstored.TWILIO_OWED_KEY) == 1
        db.session.rollback()
    assert kept.hlen(unstored.TWILIO_OWED_KEY) == 1 and texts_rows(app) == []

    with app.app_context():
        assert unstored.purge_kept(cutoffs) == 0  # the text went at the first; its copies are still owed
        db.session.commit()

    assert kept.exists(unstored.TWILIO_OWED_KEY) == 0
    assert len(texts_rows(app)) == 1
