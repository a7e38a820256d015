"""A new caller's first queue pass, handed to the Procfile's dispatcher when one is alive
(``line_queue.handoff``, ``workers.dispatcher``), and run by the web process itself when none
is, when Redis does not answer, or when the dispatcher died holding it (the first hold turn's
safety net). Real Redis, PostgreSQL (on SQLite the web process always runs its own passes),
signed webhooks, the fake Twilio REST API, and the dispatcher as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask

from crisisline.background import one_writer_at_a_time
from crisisline.settings import Settings
from line_queue import handoff
from tests.conftest import ROOT, deployment_environment
from tests.faults import StallingProxy
from tests.rota import BEN, around_the_clock, leg_to, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.server import FakeTwilioServer
from workers.dispatcher import Dispatcher, make_dispatcher

pytestmark = pytest.mark.usefixtures("fake", "wednesday_evening", "clean_redis")
NEED_COUNSELOR = [Keys("1"), Keys("2")]  # English, then "talk to a counselor": Ben is rung


@pytest.fixture
def postgres_only(app: Flask) -> None:
    with app.app_context():
        if one_writer_at_a_time():
            pytest.skip("on SQLite a web process runs its own passes (one writer at a time)")


@pytest.fixture
def dispatcher(app: Flask, postgres_only: None) -> Iterator[Dispatcher]:
    """A dispatcher of this test's app, driven step by step by the test."""
    made = make_dispatcher(app)
    yield made
    made.resign()
    made.connection.close()


def pushed(connection: redis.Redis) -> list[bytes]:
    return connection.lrange(handoff.QUEUE_KEY, 0, -1)


def wait_for(condition: Callable[[], object], seconds: float = 15.0) -> None:
    ends = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < ends, "timed out"
        time.sleep(0.05)


def test_a_live_dispatcher_is_handed_a_new_callers_first_pass_and_rings_their_counselor(
    phone: Phone, fake: FakeTwilio, dispatcher: Dispatcher, clean_redis: redis.Redis
) -> None:
    dispatcher.beat()

    caller = phone.call(NEED_COUNSELOR, max_hold_turns=0)

    assert caller.ended_by == "on-hold" and "Please stay on the line" in caller.heard_text()
    assert legs(fake) == []  # the web process rang nobody: it handed the pass over
    assert pushed(clean_redis) == [b"voice"]  # the example routing keeps separate lines: the callers' only
    assert dispatcher.step(timeout=1.0)
    assert leg_to(fake, BEN).status in ("queued", "ringing")
    assert pushed(clean_redis) == []


def test_one_pass_answers_every_ask_pushed_while_the_dispatcher_was_busy(
    app: Flask, fake: FakeTwilio, dispatcher: Dispatcher, clean_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, ...]] = []
    monkeypatch.setattr(dispatcher, "run_pass", lambda channels: asked.append(channels) or 0)
    clean_redis.rpush(handoff.QUEUE_KEY, "voice", "voice", "text+voice", "voice")

    assert dispatcher.step(timeout=1.0)
    assert not dispatcher.step(timeout=0.1)

    assert asked == [("voice", "text")]


def test_with_no_dispatcher_alive_the_web_process_rings_the_caller_itself(
    phone: Phone, fake: FakeTwilio, clean_redis: redis.Redis
) -> None:
    caller = phone.call(NEED_COUNSELOR, max_hold_turns=0)

    assert caller.ended_by == "on-hold"
    assert leg_to(fake, BEN).status in ("queued", "ringing")
    assert pushed(clean_redis) == []  # nothing left in Redis for a dispatcher that is not there


def test_a_dispatcher_that_took_the_pass_and_died_leaves_the_ring_to_the_first_hold_turn(
    phone: Phone, fake: FakeTwilio, dispatcher: Dispatcher, clean_redis: redis.Redis
) -> None:
    dispatcher.beat()
    caller = phone.call(NEED_COUNSELOR, max_hold_turns=0)
    assert legs(fake) == []
    dispatcher.resign()  # it died with the ask still in Redis: nobody will take it

    phone.resume(caller, max_hold_turns=1)

    assert caller.ended_by == "on-hold"
    assert leg_to(fake, BEN).status in ("queued", "ringing")  # the hold turn's safety-net pass


def test_a_hung_redis_leaves_the_pass_to_the_web_process_within_a_quarter_second(
    app: Flask, settings: Settings, postgres_only: None
) -> None:
    host, port = settings.redis_url.split("//", 1)[1].split("/", 1)[0].split(":")
    with StallingProxy(host, int(port)) as proxy, app.test_request_context():
        # The client ``hand_off`` makes for itself, pointed at the proxy.
        app.extensions[handoff._EXTENSION] = redis.Redis.from_url(
            f"redis://127.0.0.1:{proxy.port}/0",
            socket_connect_timeout=handoff.REDIS_TIMEOUT_SECONDS,
            socket_timeout=handoff.REDIS_TIMEOUT_SECONDS,
        )
        redis.Redis(host="127.0.0.1", port=proxy.port).set(handoff.ALIVE_KEY, "someone", ex=30)
        proxy.stall()
        started = time.monotonic()

        taken = handoff.hand_off(("voice",))

        assert not taken
        assert time.monotonic() - started < handoff.REDIS_TIMEOUT_SECONDS + 0.2


def test_the_procfile_dispatcher_rings_handed_over_callers_and_steps_down_on_sigterm(
    phone: Phone, fake: FakeTwilio, settings: Settings, fake_twilio_server: FakeTwilioServer, postgres_only: None,
    clean_redis: redis.Redis, publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(lambda document: around_the_clock(document, on_call=("ben-carter",)))  # its clock is real
    env = {
        **os.environ,
        **deployment_environment(
            settings.database_url, settings.redis_url,
            TWILIO_API_BASE_URL=fake_twilio_server.base_url, PUBLIC_BASE_URL=settings.public_base_url or "",
            LOG_LEVEL="INFO",  # everything it logs, to check none of it names a number
        ),
    }  # fmt: skip
    argv = procfile_dispatcher()
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_for(lambda: clean_redis.exists(handoff.ALIVE_KEY) or process.poll() is not None)
        assert process.poll() is None

        caller = phone.call(NEED_COUNSELOR, max_hold_turns=0)
        wait_for(lambda: any(leg.to == BEN for leg in legs(fake)))

        assert caller.ended_by == "on-hold"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert not clean_redis.exists(handoff.ALIVE_KEY)  # web processes run their passes from now on
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=10)[0].decode("utf-8", "replace")
    assert "+1" not in output  # no number in its log
    assert "dispatcher" in output and "stopped after" in output


def test_a_dispatcher_outlives_redis_going_away_and_marks_nobody_alive_meanwhile(
    app: Flask, settings: Settings, postgres_only: None
) -> None:
    host, port = settings.redis_url.split("//", 1)[1].split("/", 1)[0].split(":")
    with StallingProxy(host, int(port)) as proxy:
        connection = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=1.0, socket_connect_timeout=1.0)
        dispatcher = Dispatcher(app, connection, identity="test")
        stop = threading.Event()
        runner = threading.Thread(target=dispatcher.run, args=(stop,))
        proxy.refuse()
        runner.start()
        time.sleep(1.5)
        assert runner.is_alive()  # logged and retrying, not dead
        proxy.resume()
        direct = redis.Redis.from_url(settings.redis_url)
        wait_for(lambda: direct.get(handoff.ALIVE_KEY) == b"test", seconds=10)
        stop.set()
        runner.join(timeout=10)
        assert not runner.is_alive()
        assert not direct.exists(handoff.ALIVE_KEY)


def procfile_dispatcher() -> list[str]:
    """The Procfile's ``dispatcher:`` line as argv for this interpreter."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("dispatcher:"):
            words = line.removeprefix("dispatcher:").split()
            assert words[0] == "flask"
            return [sys.executable, "-m", "flask", *words[1:]]
    raise AssertionError("the Procfile has no dispatcher line")
