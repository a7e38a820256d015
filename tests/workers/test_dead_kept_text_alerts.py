"""A kept text that can never be stored is given up on for a person, and that person learns of
it even when the database (where every text out is claimed first) still refuses writes as the
text is given up on: the alert is owed in Redis, beside the sealed text, and every clock run
tries it again until the supervisors are told, once. An alert that fails holds no other kept
text up, and the purge empties an owed alert's copy of the text, the alert still owed."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from crisisline.db import db
from crisisline.models import Message
from crisisline.retention import Cutoffs
from sms import unstored
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import sms_params

TEXTER = "+13125550177"
SUPERVISOR = "+13125550190"  # Sam Okafor, the example routing's one supervisor
WORDS = "I want to kill myself tonight"
WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


@pytest.fixture
def kept(clean_redis: redis.Redis) -> redis.Redis:
    return clean_redis


@contextlib.contextmanager
def writes_refused(app: Flask) -> Iterator[None]:
    """The database reads but refuses every write (read-only after a failover, a full disk):
    the routing is still read, so the clock runs, but neither a text nor an alert's row is stored."""
    with app.app_context():
        engine = db.engine

    def refuse(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if WRITE.match(statement):
            raise OperationalError(statement, parameters, Exception("simulated: the database refuses writes"))

    event.listen(engine, "before_cursor_execute", refuse)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", refuse)


def keep_directly(app: Flask, sender: str, body: str, received_at: datetime) -> str:
    """What the webhook keeps for a text the database refused; returns its MessageSid."""
    params = sms_params(TEST_ACCOUNT_SID, sender, LINE_NUMBER, body)
    with app.test_request_context():
        assert unstored.keep(params, received_at)
    return params["MessageSid"]


def given_up_on() -> datetime:
    return datetime.now(UTC) - unstored.GIVE_UP_AFTER - timedelta(minutes=1)


def alerts(fake: FakeTwilio) -> list[str]:
    return [message.body for message in fake.messages.values() if message.to == SUPERVISOR]


def everything_in(client: redis.Redis) -> str:
    """Every key, field and value in Redis, as one text to search for words in clear."""

    def text(value: bytes | str) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else value

    parts: list[str] = []
    for key in client.keys("*"):
        kind = text(client.type(key))
        parts.append(text(key))
        if kind == "list":
            parts += [text(value) for value in client.lrange(key, 0, -1)]
        elif kind == "hash":
            parts += [text(part) for pair in client.hgetall(key).items() for part in pair]
    return "\n".join(parts)


def test_a_text_given_up_on_while_the_database_refuses_writes_tells_the_supervisors_once_it_is_back(
    app: Flask, fake: FakeTwilio, kept: redis.Redis, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    sid = keep_directly(app, TEXTER, WORDS, given_up_on())

    with writes_refused(app):
        clock_tick()
        clock_tick()  # still refused: still owed, never raising out of the run

    assert alerts(fake) == []
    assert kept.llen(unstored.KEY) == 0 and kept.llen(unstored.DEAD_KEY) == 1
    assert kept.hkeys(unstored.ALERT_OWED_KEY) == [sid.encode()]
    blob = everything_in(kept)
    assert unstored.ALERT_OWED_KEY in blob  # searched, as every other key
    assert TEXTER not in blob and TEXTER[2:] not in blob and "kill" not in blob

    clock_tick()  # the database takes writes again

    (alert,) = alerts(fake)
    assert sid in alert and "kill" not in alert
    assert kept.exists(unstored.ALERT_OWED_KEY) == 0
    assert kept.llen(unstored.DEAD_KEY) == 1  # still there for a person to read

    clock_tick()

    assert len(alerts(fake)) == 1  # told once, however many runs follow


def test_an_alert_that_fails_holds_no_other_kept_text_up_and_is_sent_by_the_next_run(
    app: Flask, fake: FakeTwilio, kept: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    from sms import inbound, outbox

    dead = keep_directly(app, "+13125550178", "first", given_up_on())
    fine = keep_directly(app, TEXTER, WORDS, datetime.now(UTC))
    real_store, real_tell = inbound.store_inbound, outbox.tell_supervisors

    def fails_for_dead(document: Any, params: Any, **kwargs: Any) -> Any:
        if params["MessageSid"] == dead:
            raise RuntimeError("simulated bug")
        return real_store(document, params, **kwargs)

    def tell_fails(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("simulated: the alert could not be sent")

    monkeypatch.setattr(inbound, "store_inbound", fails_for_dead)
    monkeypatch.setattr(outbox, "tell_supervisors", tell_fails)

    assert clock_tick()["texts"]["kept_stored"] == 1

    with app.app_context():
        stored = db.session.scalars(select(Message.message_sid).where(Message.direction == "in")).all()
    assert stored == [fine]
    assert kept.hkeys(unstored.ALERT_OWED_KEY) == [dead.encode()]
    monkeypatch.setattr(outbox, "tell_supervisors", real_tell)

    clock_tick()
    clock_tick()

    (alert,) = alerts(fake)
    assert dead in alert
    assert kept.exists(unstored.ALERT_OWED_KEY) == 0


def test_an_owed_alert_holds_nothing_personal_and_outlives_the_purge_of_its_text(
    app: Flask, fake: FakeTwilio, kept: redis.Redis, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    from sms import outbox

    sid = keep_directly(app, TEXTER, WORDS, given_up_on())
    with writes_refused(app):
        clock_tick()
    sealed = kept.hget(unstored.ALERT_OWED_KEY, sid)
    assert isinstance(sealed, bytes)
    with app.app_context():
        opened = outbox.vault().open(sealed.decode(), context=unstored.ALERT_CONTEXT)
        cutoffs = Cutoffs.at(datetime.now(UTC) + timedelta(days=3650), app.extensions["crisisline.settings"])
        assert unstored.purge_kept(cutoffs) == 1  # the text given up on
    assert TEXTER not in opened and TEXTER[2:] not in opened and "kill" not in opened  # not even sealed

    assert kept.llen(unstored.DEAD_KEY) == 0
    assert kept.hkeys(unstored.ALERT_OWED_KEY) == [sid.encode()]  # the alert is still owed

    clock_tick()
    clock_tick()

    (alert,) = [message for message in fake.messages.values() if message.to == SUPERVISOR]
    assert sid in alert.body and alert.from_ == LINE_NUMBER  # from the number the text was sent to
    assert kept.exists(unstored.ALERT_OWED_KEY) == 0


def test_many_texts_given_up_on_at_once_tell_each_supervisor_in_one_alert_once(
    app: Flask, fake: FakeTwilio, kept: redis.Redis, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """A surge kept through a long outage dies together: one text per dead text would bury the
    alert on the supervisors' own phones, as stuck texts in the sweep would."""
    sids = [keep_directly(app, f"+1312555017{n}", WORDS, given_up_on()) for n in range(unstored.MANY_DEAD + 2)]

    with writes_refused(app):
        clock_tick()  # all given up on, their alerts owed
    assert alerts(fake) == []
    assert len(kept.hkeys(unstored.ALERT_OWED_KEY)) == len(sids)

    clock_tick()
    clock_tick()

    (alert,) = alerts(fake)
    assert f"{len(sids)} texts" in alert and sorted(sids)[0] in alert and "kill" not in alert
    assert kept.exists(unstored.ALERT_OWED_KEY) == 0


def test_three_texts_given_up_on_at_once_keep_an_alert_each(
    app: Flask, fake: FakeTwilio, kept: redis.Redis, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    sids = [keep_directly(app, f"+1312555017{n}", WORDS, given_up_on()) for n in range(unstored.MANY_DEAD)]
    with writes_refused(app):
        clock_tick()

    clock_tick()

    told = alerts(fake)
    assert len(told) == len(sids) and all(any(sid in alert for alert in told) for sid in sids)
