"""Work a webhook starts off its thread (``crisisline.background``): runs of one key never
overlap, the requests arriving while one runs share a single run queued behind it, and a
request waits for it only within its budget. Real threads, the app's own pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from crisisline.background import ARRIVED_AT, SIDE_BY_SIDE, Background, init_app, side_by_side, within_budget


@pytest.fixture
def background() -> Iterator[Background]:
    pool = Background(Flask(__name__), workers=4)
    yield pool
    pool.shutdown()


class Gate:
    """Work that records its runs and blocks until opened, to hold a run in progress."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.started = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.runs = 0

    def __call__(self) -> int:
        with self.lock:
            self.running += 1
            self.runs += 1
            self.most_at_once = max(self.most_at_once, self.running)
            run = self.runs
        self.started.set()
        self.opened.wait(5)
        with self.lock:
            self.running -= 1
        return run


def test_requests_during_a_run_share_one_run_queued_behind_it(background: Background) -> None:
    gate = Gate()
    assert background.run("fill", gate, budget=0) is None  # the first run, held open
    assert gate.started.wait(5)
    answers: list[int | None] = []
    waiting = [
        threading.Thread(target=lambda: answers.append(background.run("fill", gate, budget=5))) for _ in range(5)
    ]
    for thread in waiting:
        thread.start()
    time.sleep(0.2)  # all five have asked while the first run is still going
    assert gate.runs == 1
    gate.opened.set()
    for thread in waiting:
        thread.join(5)

    assert background.wait_idle(5)
    assert gate.runs == 2  # the held run, and one shared by the five
    assert gate.most_at_once == 1
    assert answers == [2, 2, 2, 2, 2]


def test_different_keys_run_side_by_side(background: Background) -> None:
    first, second = Gate(), Gate()
    background.run("fill", first, budget=0)
    background.run("referral", second, budget=0)
    assert first.started.wait(5) and second.started.wait(5)
    first.opened.set()
    second.opened.set()
    assert background.wait_idle(5)


def test_a_failure_within_the_budget_reaches_the_request(background: Background) -> None:
    def broken() -> None:
        raise LookupError("no such row")

    with pytest.raises(LookupError):
        background.run("fill", broken, budget=5)
    assert background.wait_idle(5)
    assert background.run("fill", lambda: "ran again", budget=5) == "ran again"


def test_a_request_waits_no_longer_than_its_budget(background: Background) -> None:
    gate = Gate()
    began = time.monotonic()
    assert background.run("fill", gate, budget=0.1) is None
    assert time.monotonic() - began < 1.0
    gate.opened.set()
    assert background.wait_idle(5)
    assert gate.runs == 1  # it carried on and finished


def test_a_requests_wait_is_counted_from_its_arrival_not_from_when_it_asked() -> None:
    app = Flask(__name__)
    background = init_app(app, workers=2)
    try:
        quick = Gate()
        quick.opened.set()
        with app.test_request_context("/voice/menu/need", method="POST"):
            assert within_budget("fill", quick, budget=5) == 1  # no stamp: a full budget from now
        assert background.wait_idle(5)

        slow_arrival = {ARRIVED_AT: time.monotonic() - 10}  # the request spent its budget already
        gate = Gate()
        opener = threading.Timer(0.3, gate.opened.set)  # done well within a budget counted from now
        opener.start()
        with app.test_request_context("/voice/menu/need", method="POST", environ_base=slow_arrival):
            assert within_budget("fill", gate, budget=5) is None  # answers without waiting
        opener.join()
        assert background.wait_idle(5)
        assert gate.runs == 1  # the work still ran, off the request
    finally:
        background.shutdown()


def test_side_by_side_steps_run_in_threads_of_their_own_and_their_results_keep_order(
    app: Flask, database_url: str
) -> None:
    gate = Gate()
    opener = threading.Timer(1.0, gate.opened.set)  # all three must be running at once to see it
    opener.start()
    with app.app_context():
        results = side_by_side([lambda: (1, gate()), lambda: (2, gate()), lambda: (3, gate())])
    opener.cancel()

    assert [number for number, _ in results] == [1, 2, 3]
    if database_url.startswith("sqlite"):
        assert gate.most_at_once == 1  # one writer at a time: one after another
    else:
        assert gate.most_at_once == 3


def test_side_by_side_goes_one_after_another_while_not_asked_to_go_together(app: Flask, database_url: str) -> None:
    gate = Gate()
    gate.opened.set()
    asked: list[int] = []
    with app.app_context():
        side_by_side([gate, gate, gate], when=lambda: bool(asked.append(1)))

    assert gate.most_at_once == 1
    assert app.extensions["crisisline.background"].lanes_used() == []  # no thread but this one
    if not database_url.startswith("sqlite"):  # SQLite never goes together, so never asks
        assert len(asked) == 2  # before each step that has another after it


def test_a_step_run_side_by_side_runs_its_own_steps_in_its_own_thread(app: Flask) -> None:
    """A step waiting on more threads of the same pool could leave every thread waiting for
    another (a pass's offers, each ringing a caller's phones)."""

    def thread_of_each_inner_step() -> set[int]:
        inner = side_by_side([threading.get_ident for _ in range(SIDE_BY_SIDE)])
        return {threading.get_ident(), *inner}

    with app.app_context():
        threads_per_outer = side_by_side([thread_of_each_inner_step for _ in range(SIDE_BY_SIDE + 2)])

    assert all(len(threads) == 1 for threads in threads_per_outer)  # the one run here too


def test_a_failing_step_fails_side_by_side_once_every_step_has_ended(app: Flask) -> None:
    ended: list[int] = []

    def fails() -> int:
        raise LookupError("step failed")

    def slow(number: int) -> int:
        time.sleep(0.2)
        ended.append(number)
        return number

    with app.app_context(), pytest.raises(LookupError):
        side_by_side([fails, lambda: slow(2), lambda: slow(3)])

    assert sorted(ended) == [2, 3]


def test_steps_run_side_by_side_after_shutdown_run_here_instead(app: Flask) -> None:
    app.extensions["crisisline.background"].shutdown()
    with app.app_context():
        threads = side_by_side([threading.get_ident, threading.get_ident, threading.get_ident])

    assert set(threads) == {threading.get_ident()}
