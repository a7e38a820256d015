"""Work a webhook starts but must not wait on: ringing responders and ending their legs
(Twilio REST calls).

A caller's request waits at most a small budget for it. Usually it is done in milliseconds
and the TwiML reflects who is ringing; when Twilio is slow, the request answers anyway and the
work carries on here, so Twilio's speed never adds to a caller's silence.

Not a job queue: if this process dies mid-task, the caller's next hold turn and the clock run
the same idempotent work again. Outside a request (a worker, the clock, a CLI) the work simply
runs inline: those have no caller waiting on them, and a job's process may end with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from flask import Flask, current_app, g, has_request_context, request

from crisisline import events
from crisisline.db import db

log = logging.getLogger(__name__)
T = TypeVar("T")
EXTENSION = "crisisline.background"
# ``time.monotonic()`` when a request reached the app, stamped by the voice deadline before the
# request waits for a thread: a wait for background work is counted from then.
ARRIVED_AT = "crisisline.arrived_at"


# How many of one task's independent steps run at once (``side_by_side``).
SIDE_BY_SIDE = 8
# Threads of a process's pool for work a webhook starts (queue passes, rings).
WORKERS = 4


class Background:
    """A small per-process pool. Runs of one ``key`` never overlap: while one runs, the requests
    that ask for it share a single run queued behind it (started as soon as it ends), so a
    burst of hold turns and texts costs two passes over the queue, not one each fighting for
    the same leases."""

    def __init__(self, app: Flask, workers: int = WORKERS) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="background")
        # For ``side_by_side``: threads of their own (a pass waiting on them never waits for
        # threads of the pool it runs in), one set per lane, made when first used.
        self._lanes: dict[str, ThreadPoolExecutor] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._queued: dict[str, tuple[Future[object], Callable[[], object]]] = {}
        self._active: set[str] = set()
        self._running = 0  # queued or running
        self._idle = threading.Condition(self._lock)

    def run(self, key: str, work: Callable[[], T], budget: float) -> T | None:
        """Run ``work`` in its own app context; wait up to ``budget`` seconds for its result.

        None when it is still running (it carries on). A failure inside ``work`` is raised here
        when it happens within the budget, as if it had run inline; later, it is only logged.
        """
        future = self.submit(key, work)
        try:
            return future.result(timeout=budget)
        except FutureTimeout:
            log.warning("%s still running after %.1f s: answering without waiting for it", key, budget)
            future.add_done_callback(_log_late_failure)
            return None

    def submit(self, key: str, work: Callable[[], T]) -> Future[T]:
        """Queue ``work`` under ``key`` (or share the run already queued) and return its future."""
        with self._lock:
            queued = self._queued.get(key)
            if queued is None:
                queued = (Future(), work)
                self._queued[key] = queued
                self._running += 1
                if key not in self._active:
                    self._start(key)
        return queued[0]  # type: ignore[return-value]

    def _start(self, key: str) -> None:
        """Start the run queued for ``key`` (the lock is held)."""
        future, work = self._queued.pop(key)  # started: a later request queues a fresh run
        try:
            self.pool.submit(self._run, key, work, future)
        except RuntimeError as error:  # shutting down: nothing more will start
            self._running -= 1
            future.set_exception(error)
            return
        self._active.add(key)

    def _run(self, key: str, work: Callable[[], object], future: Future[object]) -> None:
        try:
            with self.app.app_context():
                try:
                    future.set_result(work())
                finally:
                    # After the result is handed over: whoever waits for it does not wait for this.
                    publish_noted()
        except BaseException as error:  # handed to whoever waits on the future
            if not future.done():
                future.set_exception(error)
        finally:
            with self._idle:
                self._active.discard(key)
                if key in self._queued:
                    self._start(key)
                self._running -= 1
                if not self._running:
                    self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is queued or running (for tests and a graceful stop)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout=timeout)

    def lane(self, name: str) -> ThreadPoolExecutor:
        """The threads ``side_by_side`` runs steps of lane ``name`` on (RuntimeError once shut down)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("background work is shutting down")
            lane = self._lanes.get(name)
            if lane is None:
                lane = ThreadPoolExecutor(max_workers=SIDE_BY_SIDE, thread_name_prefix=f"side-{name}")
                self._lanes[name] = lane
            return lane

    def lanes_used(self) -> list[str]:
        with self._lock:
            return sorted(self._lanes)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)  # first: a run may still hand steps to a lane
        with self._lock:
            self._closed = True
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.shutdown(wait=True)


def _log_late_failure(future: Future[Any]) -> None:
    error = future.exception()
    if error is not None:
        log.error("background work failed after its caller moved on: %s", type(error).__name__)


def init_app(app: Flask, workers: int = WORKERS) -> Background:
    background = Background(app, workers)
    app.extensions[EXTENSION] = background
    return background


def start_soon(key: str, work: Callable[[], object]) -> None:
    """``work()`` off the request thread, not waited for: for what nobody's answer depends on
    (ending a phone that rings for nothing). Inline outside a request. ``key`` must name work
    that is the same whoever asks (runs queued under one key are shared)."""
    background: Background | None = current_app.extensions.get(EXTENSION)
    if background is None or not has_request_context():
        work()
        return
    background.submit(key, work).add_done_callback(_log_late_failure)


def start_later(seconds: float, key: str, work: Callable[[], object]) -> None:
    """``work()`` on this process's background threads ``seconds`` from now, not waited for,
    and holding none of them meanwhile (a timer waits, not a pool thread: a database blip that
    makes many webhooks retry must not keep the queue's ringing from the pool). Inline at once
    where there is no pool (a CLI)."""
    background: Background | None = current_app.extensions.get(EXTENSION)
    if background is None:
        work()
        return

    def start() -> None:
        try:
            background.submit(key, work).add_done_callback(_log_late_failure)
        except RuntimeError:  # shutting down
            log.info("%s not retried: background work is shutting down", key)

    timer = threading.Timer(seconds, start)
    timer.daemon = True
    timer.start()


def within_budget(key: str, work: Callable[[], T], budget: float) -> T | None:
    """``work()`` off the request thread when serving a request, inline otherwise.

    ``budget`` is per request and counted from the request's arrival where the voice deadline
    stamped it: time the request already spent (a slow database, a queue for a thread) comes
    out of the wait, so it never pushes the answer towards the deadline. A second call in the
    same request waits only what is left.
    """
    background: Background | None = current_app.extensions.get(EXTENSION)
    if background is None or not has_request_context():
        return work()
    arrived_at = request.environ.get(ARRIVED_AT, time.monotonic())
    ends = g.setdefault("background_budget_ends", arrived_at + budget)
    return background.run(key, work, max(0.0, ends - time.monotonic()))


def side_by_side(
    steps: Sequence[Callable[[], T]], *, when: Callable[[], bool] = lambda: True, lane: str = "default"
) -> list[T]:
    """Run independent steps of one task and wait for them all; their results, in order.

    One after another, here, until ``when()`` says otherwise (asked before each step that has
    another after it); then the rest at the same time. For the offers of one queue pass, each
    a Twilio REST request, with ``when`` "the API is slow": Twilio places calls in the order
    their requests came, which only steps run one after another keep, but with the API taking
    a second a request a pass ringing 20 callers made the last wait 20 seconds.

    Side by side, the first of the rest runs here, in this thread's app context and session,
    and the others go to the threads of ``lane`` (up to ``SIDE_BY_SIDE`` at once, in order),
    each in an app context and so a database session of its own. Steps of one lane queue
    behind each other: work that must not wait behind another's (a new caller's first phone
    behind texts) uses a lane of its own. However they ran, a failing step stops no other: the
    call fails once every step has ended (the first failure is raised).

    Always one after another on SQLite (it takes one writer at a time, and a transaction that
    read before another committed cannot write after it), and within a step run side by side
    (a pass's offer to a caller, ringing their phones): a step waiting there for more threads
    of its lane could leave every thread waiting for another, and a caller's lease would run
    out while their phones queued behind other callers'."""
    background: Background | None = current_app.extensions.get(EXTENSION)
    together = background is not None and not one_writer_at_a_time() and not getattr(_side, "running", False)
    outcomes: list[Future[T]] = []
    index = 0
    while index < len(steps) and not (together and len(steps) - index > 1 and when()):
        outcomes.append(_run_here(steps[index], as_side=False))
        index += 1
    if index == len(steps):
        return _results(outcomes)
    assert background is not None
    handed: list[Future[T] | Callable[[], T]] = []
    for step in steps[index + 1 :]:
        try:
            handed.append(background.lane(lane).submit(_in_app_context, background.app, step))
        except RuntimeError:  # shutting down: run here, in its turn
            handed.append(step)
    outcomes.append(_run_here(steps[index], as_side=True))
    outcomes += [item if isinstance(item, Future) else _run_here(item, as_side=True) for item in handed]
    return _results(outcomes)


def _results(outcomes: list[Future[T]]) -> list[T]:
    failures = [error for error in (outcome.exception() for outcome in outcomes) if error is not None]
    if failures:
        raise failures[0]
    return [outcome.result() for outcome in outcomes]


def _run_here(step: Callable[[], T], *, as_side: bool) -> Future[T]:
    """``step()`` on this thread, its result or failure kept as a finished future; ``as_side``:
    as a step run side by side (its own steps go one after another). After a failure the
    session is rolled back, so the next step here starts clean."""
    outcome: Future[T] = Future()
    already = getattr(_side, "running", False)
    _side.running = already or as_side
    try:
        outcome.set_result(step())
    except Exception as error:
        db.session.rollback()
        outcome.set_exception(error)
    finally:
        _side.running = already
    return outcome


_side = threading.local()  # ``running``: this thread is running a step of ``side_by_side``


def _in_app_context(app: Flask, step: Callable[[], T]) -> T:
    _side.running = True
    try:
        with app.app_context():
            try:
                return step()
            finally:
                publish_noted()
    finally:
        _side.running = False


def publish_noted() -> None:
    """Publish the events work run here noted in this app context's session (a responder freed
    by a ring that failed, or by stopping a search: ``crisisline.events``), as the end of a
    request or a job does; that session ends with the context, and its notes with it. Never
    raises: the hold loop and the clock are the safety nets."""
    try:
        events.publish_pending()
    except Exception as error:
        log.error("events not published after background work: %s", type(error).__name__)


def one_writer_at_a_time() -> bool:
    """SQLite: a transaction that read before another committed cannot write after it, so work
    that writes is never left running beside a request that may write after it."""
    return bool(db.engine.dialect.name == "sqlite")
