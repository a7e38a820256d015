"""The Procfile's dispatcher: runs the queue passes the web processes hand it.

A caller's need answer stores their transfer and, while a dispatcher is alive, pushes "a pass
over these lines" to Redis instead of running the pass beside the webhooks
(``line_queue.handoff``). This process takes everything pushed since its last pass and runs
one pass for it all: a surge of need answers costs one pass per turn here, not one per web
process, and the ring it places does not wait for CPU behind other callers' webhooks.

It says it is alive (``ALIVE_KEY``, expiring after ``ALIVE_SECONDS``) before every wait and
after every pass. While it is not (stopped, crashed, in a pass longer than that, Redis away),
web processes run the pass themselves, and hold turns run their safety-net pass in the web
process regardless: nothing here is needed for a caller to be rung. Safe to run twice: a pass
is idempotent and concurrency-safe (``line_queue.fill``); each push is taken by one of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading

import redis
from flask import Flask

from crisisline.db import db
from line_queue import fill
from line_queue.handoff import ALIVE_KEY, ALIVE_SECONDS, QUEUE_KEY, REDIS_ERRORS, channels_of
from line_queue.matching import CHANNELS
from routing.store import active_routing

log = logging.getLogger(__name__)
# How long one wait for a push lasts: well inside ALIVE_SECONDS, so the mark never lapses
# while this process is idle and well.
WAIT_SECONDS = 0.5
# Pushes taken at once after the first: each is a word, and one pass answers them all.
DRAIN = 1000
# A read timeout above the wait: a hung Redis must not hang the dispatcher for good.
REDIS_READ_TIMEOUT_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 5.0
# Deleted only by the dispatcher that set it (another may have taken over).
_RESIGN = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Dispatcher:
    """Takes pushed pass requests from Redis and runs them, one pass at a time, in ``app``."""

    def __init__(self, app: Flask, connection: redis.Redis, *, identity: str | None = None) -> None:
        self.app = app
        self.connection = connection
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}"
        self.passes = 0

    def beat(self) -> None:
        """Say this dispatcher is alive for the next ``ALIVE_SECONDS``."""
        self.connection.set(ALIVE_KEY, self.identity, ex=ALIVE_SECONDS)

    def take(self, timeout: float = WAIT_SECONDS) -> tuple[str, ...]:
        """The lines asked for since the last pass (waiting up to ``timeout`` for a first ask);
        () if none."""
        popped = self.connection.blpop([QUEUE_KEY], timeout=timeout)
        if popped is None:
            return ()
        words = [popped[1], *(self.connection.lpop(QUEUE_KEY, DRAIN) or [])]
        asked = {channel for word in words for channel in channels_of(word.decode("ascii", "replace"))}
        return tuple(channel for channel in CHANNELS if channel in asked)

    def run_pass(self, channels: tuple[str, ...]) -> int:
        """One pass over ``channels`` with the routing in force now; offers made. A failing pass
        is logged (its class name) and left to the next ask and the hold turns' safety nets."""
        with self.app.app_context():
            try:
                active = active_routing()
                if active is None:
                    return 0
                return fill(active.document, channels)
            except Exception as error:
                log.error("dispatcher: a pass failed (%s)", type(error).__name__)
                db.session.rollback()
                return 0
            finally:
                db.session.remove()
                self.passes += 1

    def step(self, timeout: float = WAIT_SECONDS) -> bool:
        """Say alive, wait for an ask, run its pass, say alive again. True if a pass ran."""
        self.beat()
        channels = self.take(timeout)
        if not channels:
            return False
        self.run_pass(channels)
        self.beat()
        return True

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set. Redis away: logged, retried with a growing pause; meanwhile
        the web processes run their own passes (nobody is marked alive)."""
        log.info("dispatcher %s: starting", self.identity)
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    self.step()
                except REDIS_ERRORS as error:
                    log.error("dispatcher: Redis unavailable (%s); retrying in %.1f s", type(error).__name__, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                    continue
                backoff = 0.5
        finally:
            self.resign()
            log.info("dispatcher %s: stopped after %d passes", self.identity, self.passes)

    def resign(self) -> None:
        """No longer alive: web processes run their passes from now on, not after the mark expires."""
        with contextlib.suppress(*REDIS_ERRORS):
            self.connection.eval(_RESIGN, 1, ALIVE_KEY, self.identity)


def make_dispatcher(app: Flask) -> Dispatcher:
    settings = app.extensions["crisisline.settings"]
    connection = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=1.0, socket_timeout=REDIS_READ_TIMEOUT_SECONDS
    )
    return Dispatcher(app, connection)
