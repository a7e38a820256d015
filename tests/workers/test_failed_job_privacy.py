"""A failed job's traceback is kept in Redis (on the job, in the failed-job registry and in its
result stream) for its ``failure_ttl``, unencrypted: a number an exception quotes (Twilio's
21211 message does) must be masked there as it is in the logs."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterator

import redis
from flask import Flask

from crisisline.app import rq
from tests.workers import jobs
from workers.runner import make_worker

NUMBER_SHAPES = ("+13125550187", "13125550187", "3125550187", "(312) 555-0187", "555-0187")


def stored_texts(connection: redis.Redis) -> Iterator[tuple[str, str]]:
    """Every key of the db and every value in it, as text, also decompressed where RQ
    compresses (job hashes: zlib; result streams: base64 of zlib)."""
    for key in connection.scan_iter(count=500):
        name = key.decode("utf-8", "replace")
        yield name, name
        kind = connection.type(key).decode()
        values: list[bytes] = []
        if kind == "string":
            values = [connection.get(key) or b""]
        elif kind == "hash":
            values = [part for pair in connection.hgetall(key).items() for part in pair]
        elif kind == "list":
            values = list(connection.lrange(key, 0, -1))
        elif kind == "set":
            values = list(connection.smembers(key))
        elif kind == "zset":
            values = [member for member, _score in connection.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [part for _id, entry in connection.xrange(key) for pair in entry.items() for part in pair]
        for value in values:
            yield name, value.decode("utf-8", "replace")
            for candidate in (value, _unbase64(value)):
                inflated = _inflate(candidate)
                if inflated is not None:
                    yield name, inflated


def _inflate(value: bytes) -> str | None:
    try:
        return zlib.decompress(value).decode("utf-8", "replace")
    except zlib.error:
        return None


def _unbase64(value: bytes) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def test_a_failed_jobs_stored_traceback_carries_no_number(app: Flask, clean_redis: redis.Redis) -> None:
    with app.app_context():
        job = rq.get_queue("messages").enqueue(jobs.fail_quoting_a_number, job_timeout=30, failure_ttl=86400)

    make_worker(app, ("messages",)).work(burst=True)

    job.refresh()
    assert job.get_status() == "failed"
    stored = job.latest_result().exc_string or ""  # type: ignore[union-attr]
    # Still useful to whoever reads it: the exception, where it was raised, the mask.
    assert "TwilioRestException" in stored and "fail_quoting_a_number" in stored
    assert "[redacted-number]" in stored
    leaks = [(key, shape) for key, text in stored_texts(clean_redis) for shape in NUMBER_SHAPES if shape in text]
    assert not leaks
