"""The clock: one leader among several clock processes, and it outlives Redis: while Redis is
down it runs the safety nets itself, so a callback promised then is still placed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import time_machine
from flask import Flask
from rq import Queue, Worker
from rq.utils import now
from sqlalchemy import select

from crisisline.app import rq
from crisisline.db import db
from crisisline.models import Callback, ScheduledContact
from crisisline.settings import Settings
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, serving
from tests.rota import around_the_clock
from tests.workers.test_scheduled_contacts import wait_then_hang_up
from twilio_fake.phone import Keys, Phone, RequestsTransport
from twilio_fake.rest_api import FakeTwilio
from workers import clock as clock_module
from workers import contacts as worker_contacts
from workers.clock import LEADER_KEY, LineClock, make_clock
from workers.upkeep import PERIODIC_JOBS

pytestmark = pytest.mark.usefixtures("clean_redis")
DEAD_REDIS = "redis://127.0.0.1:1/0"
BEN = "+13125550102"


def due_now(clock: LineClock) -> LineClock:
    """Make every periodic job due (cron jobs first fall due at the next minute)."""
    for job in clock._cron_jobs:
        job.next_enqueue_time = now() - timedelta(seconds=1)
    return clock


def queued_jobs(connection: redis.Redis) -> int:
    return sum(Queue(name, connection=connection).count for name in ("calls", "messages", "followups", "upkeep"))


@pytest.fixture
def two_clocks(app: Flask) -> Iterator[tuple[LineClock, LineClock]]:
    with app.app_context():
        first, second = make_clock(), make_clock()
        yield first, second
        first.resign()
        second.resign()


def test_of_two_clocks_only_the_leader_enqueues_each_periodic_job(
    two_clocks: tuple[LineClock, LineClock], clean_redis: redis.Redis
) -> None:
    first, second = (due_now(clock) for clock in two_clocks)

    first.tick()
    enqueued_by_leader = queued_jobs(clean_redis)
    second.tick()

    assert enqueued_by_leader == len(PERIODIC_JOBS)  # each once
    assert queued_jobs(clean_redis) == enqueued_by_leader
    assert clean_redis.get(LEADER_KEY) == first.identity.encode()
    assert second.calculate_sleep_interval() > 0  # the follower kept time: no busy loop


def test_a_follower_takes_over_when_the_leader_stops(
    two_clocks: tuple[LineClock, LineClock], clean_redis: redis.Redis
) -> None:
    first, second = (due_now(clock) for clock in two_clocks)
    first.tick()
    first.resign()  # the leader's process stops (or its lease runs out)
    before = queued_jobs(clean_redis)

    due_now(second).tick()

    assert clean_redis.get(LEADER_KEY) == second.identity.encode()
    assert queued_jobs(clean_redis) == before + len(PERIODIC_JOBS)


def test_with_redis_down_the_clock_keeps_running_and_backs_off(app: Flask) -> None:
    with app.app_context():
        clock = LineClock(redis.Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.5))

        pauses = [clock.tick() for _ in range(6)]

    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


@pytest.fixture
def redis_down_app(settings: Settings, make_app: Callable[[Settings], Flask], app: Flask) -> Flask:
    """The same line (database, fake Twilio) with Redis gone: web and clock alike."""
    return make_app(replace(settings, redis_url=DEAD_REDIS))


def test_a_callback_promised_while_redis_is_down_is_placed_by_the_clock_alone(
    app: Flask, redis_down_app: Flask, publish_routing: Callable[..., int], fake: FakeTwilio, app_port: int,
) -> None:  # fmt: skip
    def only_ben(document: dict[str, Any]) -> None:
        around_the_clock(document, on_call=("ben-carter",))

    publish_routing(only_ben)
    with serving(redis_down_app, app_port) as url:
        phone = Phone(RequestsTransport(), url, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
        caller = phone.call([Keys("1"), Keys("2"), Keys("9")], identity=phone.identity("+13125550191"))
        assert "We will call you back at this number as soon as someone is free." in caller.heard_text()
        with redis_down_app.app_context():
            (contact,) = db.session.scalars(select(ScheduledContact).where(ScheduledContact.kind == "callback"))
            assert contact.state == "pending"  # promised, stored, and no worker can take it
            ringing_before = [leg.sid for leg in fake.calls.values() if leg.to == BEN]
            clock = LineClock(redis.Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.5),
                              inline_jobs=[clock_module.run_due_contacts])  # fmt: skip

            clock.tick()  # Redis is down: the clock runs the due contact itself

            db.session.expire_all()
            (callback,) = db.session.scalars(select(Callback))
            assert db.session.get(ScheduledContact, contact.id).state in ("sent", "sending")  # type: ignore[union-attr]
    rung = [leg for leg in fake.calls.values() if leg.to == BEN and leg.sid not in ringing_before]
    assert len(rung) == 1  # the counselor is rung for the callback, counselor first
    assert callback.state in ("searching", "ringing", "waiting")


def test_a_callback_promised_while_the_worker_is_down_is_placed_by_the_clock(
    app: Flask, live_server: str, publish_routing: Callable[..., int], fake: FakeTwilio, clean_redis: redis.Redis,
) -> None:  # fmt: skip
    """Redis is healthy but no worker runs (crashed, never started): the safety net must not
    depend on one. The leading clock sees nobody serving the queues and runs what is due."""

    def only_ben(document: dict[str, Any]) -> None:
        around_the_clock(document, on_call=("ben-carter",))

    publish_routing(only_ben)
    phone = Phone(RequestsTransport(), live_server, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
    caller = phone.call([Keys("1"), Keys("2"), Keys("9")], identity=phone.identity("+13125550191"))
    assert "We will call you back at this number as soon as someone is free." in caller.heard_text()
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    with app.app_context():
        (contact,) = db.session.scalars(select(ScheduledContact).where(ScheduledContact.kind == "callback"))
        assert contact.state == "pending"  # promised and stored, queued for a worker that never comes
        clock = make_clock()
        due_now(clock).tick()
        db.session.expire_all()
        (callback,) = db.session.scalars(select(Callback))
        ran = db.session.get(ScheduledContact, contact.id)
        clock.resign()

    assert ran is not None and ran.state in ("sent", "sending")  # the clock took the callback's attempt
    assert ran.outcome != "failed"
    assert callback.state in ("searching", "ringing", "waiting")


def clock_with_periodic_jobs(connection: redis.Redis, inline: Callable[[], object] | None = None) -> LineClock:
    """A clock on ``connection`` with the app's periodic jobs, as ``make_clock`` makes it, and
    ``inline`` as its only inline safety net (to see whether it ran)."""
    clock = LineClock(connection, inline_jobs=[inline] if inline else [])
    for item in rq._cron_job_data:
        clock.register(**item)
    return clock


def _alive_worker(connection: redis.Redis) -> Worker:
    worker = Worker(["calls", "messages", "followups", "upkeep"], connection=connection)
    worker.register_birth()
    worker.heartbeat()
    return worker


def test_the_clock_leaves_the_safety_nets_to_a_live_worker_that_keeps_up(app: Flask, clean_redis: redis.Redis) -> None:
    ran: list[str] = []
    worker = _alive_worker(clean_redis)
    try:
        with app.app_context():
            clock = clock_with_periodic_jobs(clean_redis, inline=lambda: ran.append("inline"))
            due_now(clock).tick()
            clock.resign()
    finally:
        worker.register_death()

    assert ran == []
    assert queued_jobs(clean_redis) == len(PERIODIC_JOBS)  # the worker's to run


def test_a_worker_alive_but_not_taking_jobs_leaves_the_clock_to_run_them(app: Flask, clean_redis: redis.Redis) -> None:
    ran: list[str] = []
    worker = _alive_worker(clean_redis)  # registered, its heartbeat fresh, but stuck
    try:
        with app.app_context():
            clock = clock_with_periodic_jobs(clean_redis, inline=lambda: ran.append("inline"))
            due_now(clock).tick()
            assert ran == []  # its jobs have only just been queued
            with time_machine.travel(datetime.now(UTC) + timedelta(seconds=100)):
                worker.heartbeat()
                due_now(clock).tick()
            clock.resign()
    finally:
        worker.register_death()

    assert ran == ["inline"]


def test_a_database_that_fails_never_ends_the_clock(
    settings: Settings, make_app: Callable[[Settings], Flask], clean_redis: redis.Redis
) -> None:
    """Found by a review: the check that workers keep up reads the database, and its error left
    the clock's loop (only Redis errors were caught), so a database restart ended the clock."""
    dead_database = make_app(replace(settings, database_url="postgresql+psycopg://postgres@127.0.0.1:1/test"))
    worker = _alive_worker(clean_redis)  # so the check goes as far as the database
    try:
        with dead_database.app_context():
            clock = clock_with_periodic_jobs(clean_redis)
            pauses = [due_now(clock).tick() for _ in range(2)]
            clock.resign()
    finally:
        worker.register_death()

    assert all(pause >= 0 for pause in pauses)
    assert queued_jobs(clean_redis) == 2 * len(PERIODIC_JOBS)  # it went on leading: each turn queued them


def test_a_turn_that_fails_gives_up_the_lead_and_runs_the_safety_nets_itself(
    app: Flask, clean_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: a turn failing for any other reason kept renewing the lease and did
    nothing; it now lets another clock lead, and runs the nets meanwhile."""
    ran: list[str] = []
    with app.app_context():
        clock = LineClock(clean_redis, inline_jobs=[lambda: ran.append("inline")])
        clock.tick()  # leads
        assert clean_redis.get(LEADER_KEY) == clock.identity.encode()

        def broken() -> list[Any]:
            raise RuntimeError("a bad job definition")

        monkeypatch.setattr(clock, "enqueue_jobs", broken)
        pause = clock.tick()

    assert pause >= 1
    assert clean_redis.get(LEADER_KEY) is None
    assert ran == ["inline"]


def test_a_due_contact_that_fails_in_the_clock_does_not_keep_the_rest_of_the_batch_waiting(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Found by review: the first contact's exception ended the clock's run of due contacts,
    so with Redis down every contact behind a failing one waited another minute, each time."""
    wait_then_hang_up(phone, wednesday_evening, "+13125550166")
    wait_then_hang_up(phone, wednesday_evening, "+13125550167")
    wednesday_evening.shift(timedelta(minutes=2))
    with app.app_context():
        first, _ = db.session.scalars(select(ScheduledContact.id).order_by(ScheduledContact.due_at)).all()
    weigh = worker_contacts.held_back

    def failing_for_the_first(contact: ScheduledContact, *args: Any, **kwargs: Any) -> str | None:
        if contact.id == first:
            raise RuntimeError("a bug in one contact's path")
        return weigh(contact, *args, **kwargs)

    monkeypatch.setattr(worker_contacts, "held_back", failing_for_the_first)
    with app.app_context():
        outcomes = clock_module.run_due_contacts()

    assert outcomes == {"failed_here": 1, "sent": 1}
    assert [m.to for m in fake.messages.values()] == ["+13125550167"]
    with app.app_context():
        assert db.session.get(ScheduledContact, first).state == "pending"  # type: ignore[union-attr]  # run again
