"""A failed job's traceback is kept in Redis (on the job, in the failed-job registry and in its
result stream) for its ``failure_ttl``, unencrypted: a number an exception quotes (Twilio's
21211 message does) must be masked there as it is in the logs."""

from __future__ import annotations

from collections.abc import Iterator

import redis
from flask import Flask

from crisisline.app import rq
from tests.reliability.test_privacy_scan import as_texts, stored_values
from tests.workers import jobs
from workers.runner import make_worker

NUMBER_SHAPES = ("+13125550187", "13125550187", "3125550187", "(312) 555-0187", "555-0187")


def stored_texts(connection: redis.Redis) -> Iterator[tuple[str, str]]:
    """Every key of the db and every value in it, as text, also decompressed where RQ
    compresses (job hashes: zlib; result streams: base64 of zlib), as the privacy scan reads them."""
    for key in connection.scan_iter(count=500):
        name = key.decode("utf-8", "replace")
        yield name, name
        for value in stored_values(connection, key)[1]:
            for content in as_texts(value):
                yield name, content


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
