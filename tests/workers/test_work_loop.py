"""The worker's loop starts RQ's ``work()`` again when it ended on a Redis error (RQ retries a
lost Redis only while waiting for a job; elsewhere it quits), and stops when asked to."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from workers import runner


class Worker:
    """Stands in for RQ's worker: each ``work()`` plays the next scripted ending."""

    def __init__(self, ending: str) -> None:
        self.ending = ending
        self._stop_requested = False
        self._shutdown_requested_date: Any = None

    def work(self, **_options: Any) -> bool:
        if self.ending == "redis error":
            raise redis.exceptions.ConnectionError("refused")
        if self.ending == "quit on an error":
            return False  # RQ's loop logs "found an unhandled exception, quitting" and returns
        self._stop_requested = True  # a SIGTERM: warm shutdown
        return True


def test_the_loop_starts_again_after_redis_errors_and_stops_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    endings = ["redis error", "quit on an error", "redis error", "stopped"]
    made: list[int] = []
    waits: list[float] = []
    monkeypatch.setattr(runner.time, "sleep", waits.append)

    def make(attempt: int) -> Any:
        made.append(attempt)
        return Worker(endings[attempt])

    runner.work_until_stopped(make, burst=False, with_scheduler=True, max_jobs=None)

    assert made == [0, 1, 2, 3]
    assert waits == [1.0, 2.0, 4.0]  # backing off while Redis stays away


def test_a_worker_that_cannot_be_made_while_redis_is_away_is_made_again(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(runner.time, "sleep", waits.append)
    made: list[int] = []

    def make(attempt: int) -> Any:
        made.append(attempt)
        if attempt < 2:
            raise redis.exceptions.ConnectionError("refused")  # Redis still away when restarting
        return Worker("stopped")

    runner.work_until_stopped(make, burst=False, with_scheduler=True, max_jobs=None)

    assert made == [0, 1, 2]
    assert waits == [1.0, 2.0]


def test_a_burst_run_ends_once_its_work_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.time, "sleep", lambda _seconds: pytest.fail("no restart expected"))

    runner.work_until_stopped(lambda _attempt: Worker("quit on an error"), burst=True, with_scheduler=False,
                              max_jobs=None)  # fmt: skip
