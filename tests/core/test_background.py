"""Work a webhook starts off its thread (``crisisline.background``): runs of one key never
overlap, the requests arriving while one runs share a single run queued behind it, and a
request waits for it only within its budget. Real threads, the app's own pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from crisisline.background import ARRIVED_AT, Background, init_app, within_budget


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
