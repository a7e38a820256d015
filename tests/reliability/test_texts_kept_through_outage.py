"""A text that arrives while the database is away (refused, or hung past the webhook's
deadline) is not lost: the webhook still points the texter to the backup line at once, keeps
the text in Redis (sealed: no number or words in clear), and the clock stores and handles it,
once, when the database is back. A kept text that fails to store holds no other up; one that
cannot be opened is left for a process with its key. Only with the database and Redis both
away is a text lost, and then loudly."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Message, Texter
from crisisline.settings import Settings
from sms import unstored
from sms.views import FAILSAFE_TEXT
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TextingPhone
from tests.reliability.test_fault_matrix import DEADLINE, GRACE, Line, line  # noqa: F401 - the line fixture
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import sms_params
from workers import upkeep

TEXTER = "+13125550177"
SUPERVISOR = "+13125550190"  # Sam Okafor in the example routing
WORDS = "I want to kill myself tonight"
ANSWER = "A counselor will text you back"  # their words were understood: queued for a counselor


@pytest.fixture
def kept(clean_redis: redis.Redis) -> redis.Redis:
    """This test's view of the kept texts, empty before and after (``clean_redis``)."""
    return clean_redis


@pytest.fixture
def texting_the_line(line: Line, fake: FakeTwilio) -> TextingPhone:  # noqa: F811 - the fixture, by name
    return TextingPhone(line.url, fake)


def clock_run(app: Flask) -> dict[str, int]:
    with app.app_context():
        return upkeep.sweep_text_conversations()


def inbound_texts(app: Flask) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).where(Message.direction == "in")))


def test_a_text_sent_while_the_database_is_refused_is_kept_and_handled_once_it_is_back(
    line: Line, texting_the_line: TextingPhone, kept: redis.Redis,  # noqa: F811
) -> None:  # fmt: skip
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS)
    line.database.refuse()
    sent_at = datetime.now(UTC)

    answer = texting_the_line.deliver(params)

    assert FAILSAFE_TEXT in answer.text  # pointed to the backup line at once
    (sealed,) = kept.lrange(unstored.KEY, 0, -1)
    assert b"kill" not in sealed and b"5550177" not in sealed
    time.sleep(0.05)
    line.database.resume()
    back_at = datetime.now(UTC)

    first, second = clock_run(line.app), clock_run(line.app)

    assert (first["kept_stored"], second["kept_stored"]) == (1, 0)
    assert kept.llen(unstored.KEY) == 0
    (inbound,) = inbound_texts(line.app)
    assert inbound.handled_at is not None and inbound.message_sid == params["MessageSid"]
    assert sent_at < back_at <= inbound.created_at  # stored when the clock ran: the retry windows count from there
    menus = [text for text in texting_the_line.inbox(TEXTER) if ANSWER in text]
    assert len(menus) == 1  # answered once, however often the clock ran


def test_a_kept_text_twilio_delivers_again_after_the_database_is_back_is_handled_once(
    line: Line, texting_the_line: TextingPhone, kept: redis.Redis,  # noqa: F811
) -> None:  # fmt: skip
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS)
    line.database.refuse()
    texting_the_line.deliver(params)
    line.database.resume()

    texting_the_line.deliver(params)  # a second delivery of the same MessageSid, now stored
    assert clock_run(line.app)["kept_stored"] == 0  # found stored already: forgotten, nothing twice

    assert len(inbound_texts(line.app)) == 1
    assert len([text for text in texting_the_line.inbox(TEXTER) if ANSWER in text]) == 1
    assert kept.llen(unstored.KEY) == 0


def test_with_the_database_and_redis_both_refused_the_texter_is_still_pointed_to_the_backup_line(
    line: Line, texting_the_line: TextingPhone, kept: redis.Redis, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:  # fmt: skip
    line.database.refuse()
    line.redis.refuse()

    with caplog.at_level(logging.ERROR):
        answer = texting_the_line.deliver(sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS))

    assert FAILSAFE_TEXT in answer.text
    assert "could not be stored or kept, it is lost" in caplog.text
    assert "kill" not in caplog.text and "5550177" not in caplog.text


def test_with_the_database_and_redis_both_hung_the_texter_is_pointed_to_the_backup_line_in_time(
    line: Line, texting_the_line: TextingPhone, kept: redis.Redis, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:  # fmt: skip
    line.database.stall()
    line.redis.stall()

    started = time.perf_counter()
    with caplog.at_level(logging.ERROR):
        answer = texting_the_line.deliver(sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS))
    seconds = time.perf_counter() - started

    assert FAILSAFE_TEXT in answer.text
    # The deadline, then one Redis timeout for keeping it: redis-py's own retries (three, with
    # a backoff) made this about 9 s, close to Twilio's 15 s limit.
    assert seconds < DEADLINE + GRACE + unstored.REDIS_TIMEOUT_SECONDS + 0.5
    assert "could not be stored or kept, it is lost" in caplog.text
    line.redis.resume()
    line.database.resume()


def test_a_text_the_database_would_not_take_is_kept_on_every_database(
    app: Flask, texting: TextingPhone, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    clock_tick: Callable[[], Any], settings: Settings,
) -> None:  # fmt: skip
    import sms.views

    real = sms.views.store_inbound

    def refused(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr(sms.views, "store_inbound", real)
        raise ConnectionError("simulated: the database refused")

    monkeypatch.setattr(sms.views, "store_inbound", refused)
    assert texting.send(TEXTER, WORDS) == [FAILSAFE_TEXT]  # the fail-safe TwiML answered; nothing stored yet
    assert inbound_texts(app) == []

    assert clock_tick()["texts"]["kept_stored"] == 1

    assert len(inbound_texts(app)) == 1
    assert any(ANSWER in text for text in texting.inbox(TEXTER))


def test_a_text_sent_while_the_database_hangs_is_answered_by_the_deadline_and_kept(
    line: Line, texting_the_line: TextingPhone, kept: redis.Redis,  # noqa: F811
) -> None:  # fmt: skip
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS)
    line.database.stall()

    started = time.perf_counter()
    answer = texting_the_line.deliver(params)
    seconds = time.perf_counter() - started

    assert FAILSAFE_TEXT in answer.text
    assert seconds < DEADLINE + GRACE + 1.0  # the deadline, plus Redis's own at worst
    assert kept.llen(unstored.KEY) >= 1  # the late handler, failing too, may keep a second copy
    line.database.resume()  # the late handler may now store it too: the clock then finds it stored
    line.app.extensions["crisisline.deadline"].pool.shutdown(wait=True)
    line.app.extensions["crisisline.background"].wait_idle(timeout=30)
    clock_run(line.app)
    clock_run(line.app)

    assert kept.llen(unstored.KEY) == 0
    (inbound,) = inbound_texts(line.app)
    assert inbound.handled_at is not None
    answers = [text for text in texting_the_line.inbox(TEXTER) if text != FAILSAFE_TEXT]
    assert len(answers) == 1  # answered once: by the late handler or by the clock


def keep_directly(app: Flask, sender: str, body: str, received_at: datetime) -> str:
    """What the webhook keeps for a text the database refused; returns its MessageSid."""
    params = sms_params(TEST_ACCOUNT_SID, sender, LINE_NUMBER, body)
    with app.test_request_context():
        assert unstored.keep(params, received_at)
    return params["MessageSid"]


def test_a_kept_text_that_fails_to_store_holds_no_other_up_and_goes_to_a_person_after_six_hours(
    app: Flask, fake: FakeTwilio, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    from sms import inbound

    now = datetime.now(UTC)
    poison = keep_directly(app, "+13125550178", "first", now - unstored.GIVE_UP_AFTER - timedelta(minutes=1))
    fine = keep_directly(app, TEXTER, WORDS, now)
    real = inbound.store_inbound

    def fails_for_poison(document: Any, params: Any, **kwargs: Any) -> Any:
        if params["MessageSid"] == poison:
            raise RuntimeError("simulated bug")
        return real(document, params, **kwargs)

    monkeypatch.setattr(inbound, "store_inbound", fails_for_poison)

    assert clock_tick()["texts"]["kept_stored"] == 1

    assert [message.message_sid for message in inbound_texts(app)] == [fine]
    assert kept.llen(unstored.KEY) == 0
    assert kept.llen(unstored.DEAD_KEY) == 1  # sealed, for a person; logged by its MessageSid
    alerts = [m.body for m in fake.messages.values() if m.to == SUPERVISOR]
    assert len(alerts) == 1 and poison in alerts[0] and "first" not in alerts[0]


def test_a_kept_text_this_process_cannot_open_is_left_for_one_that_can(
    app: Flask, fake: FakeTwilio, kept: redis.Redis, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    kept.rpush(unstored.KEY, "v1:sealed-under-a-key-this-process-does-not-have")
    keep_directly(app, TEXTER, WORDS, datetime.now(UTC))

    assert clock_tick()["texts"]["kept_stored"] == 1

    assert kept.lrange(unstored.KEY, 0, -1) == [b"v1:sealed-under-a-key-this-process-does-not-have"]


def test_when_keeping_fails_for_any_reason_the_texter_is_still_pointed_to_the_backup_line(
    app: Flask, texting: TextingPhone, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import sms.views

    def refused(*args: object, **kwargs: object) -> None:
        raise ConnectionError("simulated: the database refused")

    def broken_vault() -> None:
        raise RuntimeError("simulated: no vault")

    monkeypatch.setattr(sms.views, "store_inbound", refused)
    monkeypatch.setattr(unstored.outbox, "vault", broken_vault)

    answer = texting.deliver(sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS))

    assert FAILSAFE_TEXT in answer.text
    assert kept.llen(unstored.KEY) == 0


def test_a_kept_text_that_fails_to_store_goes_to_the_back_and_is_stored_by_a_later_run(
    app: Flask, fake: FakeTwilio, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    from sms import inbound

    first = keep_directly(app, TEXTER, WORDS, datetime.now(UTC))
    second = keep_directly(app, "+13125550178", "second", datetime.now(UTC))
    real = inbound.store_inbound
    failures: list[str] = []

    def fails_once(document: Any, params: Any, **kwargs: Any) -> Any:
        if params["MessageSid"] == first and not failures:
            failures.append(first)
            raise RuntimeError("simulated: a blip")
        return real(document, params, **kwargs)

    monkeypatch.setattr(inbound, "store_inbound", fails_once)

    assert clock_tick()["texts"]["kept_stored"] == 1
    assert kept.llen(unstored.KEY) == 1 and kept.llen(unstored.DEAD_KEY) == 0
    assert clock_tick()["texts"]["kept_stored"] == 1

    assert sorted(message.message_sid or "" for message in inbound_texts(app)) == sorted([first, second])
    assert kept.llen(unstored.KEY) == 0


def test_a_stored_text_slow_to_handle_gets_its_own_reply_not_the_fail_safe_and_is_not_kept(
    line: Line, texting_the_line: TextingPhone, kept: redis.Redis, fake: FakeTwilio,  # noqa: F811
) -> None:  # fmt: skip
    fake.inject_fault("*", r"/Messages\.json$", status=201, delay=DEADLINE + 1.0, times=None)  # slow, then fine

    answer = texting_the_line.deliver(sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS))

    assert FAILSAFE_TEXT not in answer.text  # stored before the deadline: the handling goes on
    assert kept.llen(unstored.KEY) == 0
    line.app.extensions["crisisline.deadline"].pool.shutdown(wait=True)
    line.app.extensions["crisisline.background"].wait_idle(timeout=30)
    assert len(texting_the_line.inbox(TEXTER)) == 1


@pytest.mark.parametrize("fault", ["refuse", "stall"])
def test_a_counselors_text_while_the_database_is_away_is_kept_and_answered_for_staff_not_with_988(
    line: Line, texting_the_line: TextingPhone, kept: redis.Redis, fault: str,  # noqa: F811
) -> None:  # fmt: skip
    """Staff are known from the routing the process last read, in memory: the database that
    failed is not asked (it would fail before anything else)."""
    from tests.rota import ANA
    from tests.sms.test_staff_failsafe_text import TROUBLE

    texting_the_line.send(ANA, "STATUS")  # the line has read its routing
    getattr(line.database, fault)()

    answer = texting_the_line.deliver(sms_params(TEST_ACCOUNT_SID, ANA, LINE_NUMBER, "YES 12"))

    assert TROUBLE in answer.text and FAILSAFE_TEXT not in answer.text
    assert kept.llen(unstored.KEY) >= 1


def test_a_counselors_text_neither_stored_nor_kept_asks_them_to_send_it_again(
    line: Line, texting_the_line: TextingPhone, kept: redis.Redis,  # noqa: F811
) -> None:  # fmt: skip
    from tests.rota import ANA
    from tests.sms.test_staff_failsafe_text import TROUBLE

    texting_the_line.send(ANA, "STATUS")
    line.database.refuse()
    line.redis.refuse()

    answer = texting_the_line.deliver(sms_params(TEST_ACCOUNT_SID, ANA, LINE_NUMBER, "YES 12"))

    assert "Please send it again in a few minutes." in answer.text
    assert TROUBLE not in answer.text and FAILSAFE_TEXT not in answer.text


def test_a_kept_text_stored_hours_later_is_purged_by_when_it_arrived(
    app: Flask, fake: FakeTwilio, kept: redis.Redis, settings: Settings, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Its retention counts from when the texter sent it, not from when the clock stored it:
    an outage must not lengthen how long their words are kept."""
    import time_machine

    from workers.upkeep import purge_personal_data

    received = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    sid = keep_directly(app, TEXTER, WORDS, received)
    with time_machine.travel(received + timedelta(hours=5)):  # the database back hours later
        assert clock_tick()["texts"]["kept_stored"] == 1
    window = timedelta(days=settings.retention_days_texts)

    def body_after_purge_at(moment: datetime) -> str | None:
        with app.app_context():
            purge_personal_data(moment.isoformat())
            return db.session.scalars(select(Message.sealed_body).where(Message.message_sid == sid)).one()

    assert body_after_purge_at(received + window - timedelta(minutes=1)) is not None
    assert body_after_purge_at(received + window + timedelta(minutes=1)) is None


def opted_out(app: Flask) -> bool:
    with app.app_context():
        return db.session.scalars(select(Texter)).one().opted_out


STARTED = "You will get our texts again. Text us any time you need to talk."


def test_a_stop_kept_through_an_outage_does_not_undo_the_start_the_texter_sent_after_it(
    line: Line, texting_the_line: TextingPhone, kept: redis.Redis, fake: FakeTwilio,  # noqa: F811
) -> None:  # fmt: skip
    """Twilio's block follows their last word (START): so does the line, or it never answers them again."""
    line.database.refuse()
    fake.receive_keyword(TEXTER, "STOP")
    stop = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, "STOP")
    assert FAILSAFE_TEXT in texting_the_line.deliver(stop).text
    assert kept.llen(unstored.KEY) == 1
    line.database.resume()
    fake.receive_keyword(TEXTER, "START")
    assert texting_the_line.send(TEXTER, "START") == [STARTED]

    clock_run(line.app)  # stores and handles the kept STOP, sent before the START

    assert not opted_out(line.app), "the kept STOP, older than their START, opted them out"
    assert [text.message_sid for text in inbound_texts(line.app)].count(stop["MessageSid"]) == 1  # still stored
    assert texting_the_line.send(TEXTER, WORDS) != []  # answered


def test_a_start_kept_through_an_outage_does_not_undo_the_stop_the_texter_sent_after_it(
    app: Flask, texting: TextingPhone, kept: redis.Redis, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    keep_directly(app, TEXTER, "START", datetime.now(UTC) - timedelta(minutes=2))
    texting.send(TEXTER, "STOP")

    clock_tick()

    assert opted_out(app)
    assert texting.inbox(TEXTER) == []  # not even "You will get our texts again"


def test_a_stop_kept_through_an_outage_opts_the_texter_out_when_nothing_came_after_it(
    app: Flask, texting: TextingPhone, kept: redis.Redis, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    assert texting.send(TEXTER, "START") == [STARTED]  # an earlier START counts for nothing against it
    keep_directly(app, TEXTER, "STOP", datetime.now(UTC))

    clock_tick()

    assert opted_out(app)
