"""A new caller's first queue pass, handed to the dispatcher process when one is up.

The pass a caller's need answer starts (their first ring) used to run in the web process that
answered them, on a thread beside the webhooks: its CPU slowed every other caller's answer,
and theirs slowed the ring. With the Procfile's ``dispatcher`` running (``workers.dispatcher``)
the web process only stores the transfer and pushes "a pass over these lines" to Redis; the
dispatcher drains the list and runs one pass for everything pushed meanwhile.

Law 1 holds without it:
- the hand-off is taken only while a dispatcher said it was alive in the last
  ``ALIVE_SECONDS`` (one atomic Redis script: alive, then pushed), and only if Redis answers
  within ``REDIS_TIMEOUT_SECONDS``; otherwise the web process runs the pass itself, as before;
- hold turns keep their safety-net pass in the web process whatever the dispatcher does, so a
  dispatcher that dies after taking a hand-off delays that first ring by one hold turn (the
  caller hears the hold prompt meanwhile), and never drops the caller.

Only what Redis must carry crosses: which lines to pass over. No ids, no numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from flask import current_app

from crisisline.settings import Settings

log = logging.getLogger(__name__)
QUEUE_KEY = "crisisline:dispatch:passes"  # what the web processes ask for: "voice", "voice+text"
ALIVE_KEY = "crisisline:dispatch:alive"  # set by a live dispatcher, expiring after ALIVE_SECONDS
ALIVE_SECONDS = 2
# A hung Redis must not hold a caller's answer: past this, the pass runs here.
REDIS_TIMEOUT_SECONDS = 0.25
_EXTENSION = "line_queue.handoff_redis"
# Pushed only if a dispatcher is alive, in one round trip that no expiry can split.
_PUSH_IF_ALIVE = """
if redis.call('exists', KEYS[2]) == 1 then
  redis.call('rpush', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


def channels_word(channels: Iterable[str]) -> str:
    return "+".join(sorted(channels))


def channels_of(word: str) -> tuple[str, ...]:
    return tuple(sorted(part for part in word.split("+") if part))


def _redis() -> redis.Redis:
    client: redis.Redis | None = current_app.extensions.get(_EXTENSION)
    if client is None:
        settings: Settings = current_app.extensions["crisisline.settings"]
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
        )
        client = current_app.extensions.setdefault(_EXTENSION, client)
    return client


def hand_off(channels: Iterable[str]) -> bool:
    """Ask the dispatcher for a pass over ``channels``; True if a live dispatcher will run it.
    False (the caller runs the pass itself) when none is alive or Redis does not answer in
    time. Never raises."""
    try:
        pushed = _redis().eval(_PUSH_IF_ALIVE, 2, QUEUE_KEY, ALIVE_KEY, channels_word(channels))
    except REDIS_ERRORS as error:
        log.warning("dispatcher hand-off failed (%s): the pass runs in this process", type(error).__name__)
        return False
    return bool(pushed)
