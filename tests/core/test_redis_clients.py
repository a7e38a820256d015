"""The line's Redis clients fail at once. redis-py's ``Redis(...)`` constructor (6.0 and later)
retries a failed command three times with a backoff by default: 3.9 s a command for a Redis
that is not there, 7.5 s for a hung one with a 0.25 s timeout (measured). ``Redis.from_url``,
which the line uses everywhere, does not. These keep it so, whatever redis-py changes or
however a client is made next. Real Redis behind a TCP proxy that stalls, and a port where
nothing listens."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from flask import Flask

from crisisline.app import FastConnectRedis, rq
from crisisline.redis_server import free_port
from crisisline.settings import Settings
from sms import unstored
from tests.conftest import settings_for
from tests.faults import StallingProxy


def seconds_to_fail(command: Callable[[], object], error: type[Exception]) -> float:
    started = time.monotonic()
    with pytest.raises(error):
        command()
    return time.monotonic() - started


def test_the_apps_job_queues_fail_at_once_when_redis_is_not_there(
    settings: Settings, make_app: Callable[[Settings], Flask]
) -> None:
    dead = make_app(settings_for(settings.database_url, f"redis://127.0.0.1:{free_port()}/0"))
    with dead.app_context():
        connection = rq.get_queue("calls").connection

        assert isinstance(connection, FastConnectRedis)
        assert seconds_to_fail(connection.ping, redis.ConnectionError) < 0.5


def test_keeping_a_text_in_a_hung_redis_fails_after_one_timeout(
    settings: Settings, make_app: Callable[[Settings], Flask]
) -> None:
    host, port = settings.redis_url.split("//", 1)[1].split("/", 1)[0].split(":")
    with StallingProxy(host, int(port)) as proxy:
        hung = make_app(settings_for(settings.database_url, f"redis://127.0.0.1:{proxy.port}/0"))
        proxy.stall()
        with hung.test_request_context():
            client = unstored._redis()

            assert seconds_to_fail(lambda: client.rpush("k", "v"), redis.TimeoutError) < (
                unstored.REDIS_TIMEOUT_SECONDS + 0.3
            )
