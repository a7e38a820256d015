"""A failed job's traceback is kept in Redis (on the job, in the failed-job registry and in its
result stream) for its ``failure_ttl``, unencrypted, and RQ logs it at ERROR: an exception's
message may quote a number (Twilio's 21211 message does) or a texter's words (a database error
echoing a parameter), so the traceback keeps the exception classes and the frames, and no message."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from crisisline.app import rq
from tests.reliability.test_privacy_scan import as_texts, stored_values
from tests.workers import jobs
from workers.runner import MESSAGE_WITHHELD, make_worker, withheld_traceback

NUMBER_SHAPES = (
    "+13125550187", "13125550187", "3125550187", "(312) 555-0187", "555-0187",
    "3125550142", "(312) 555-0142", "555-0142",
)  # fmt: skip
BODY_MARK = "lanternfish"  # a word of ``jobs.BODY_IN_AN_ERROR`` found nowhere else


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
    assert MESSAGE_WITHHELD in stored
    leaks = [(key, shape) for key, text in stored_texts(clean_redis) for shape in NUMBER_SHAPES if shape in text]
    assert not leaks


def test_a_failed_jobs_traceback_keeps_classes_and_frames_but_no_message_in_redis_or_the_logs(
    app: Flask, clean_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with app.app_context():
        job = rq.get_queue("messages").enqueue(jobs.fail_quoting_a_body, job_timeout=30, failure_ttl=86400)

    make_worker(app, ("messages",)).work(burst=True)

    job.refresh()
    assert job.get_status() == "failed"
    stored = job.latest_result().exc_string or ""  # type: ignore[union-attr]
    with pytest.warns(DeprecationWarning, match="exc_info"):
        assert job.exc_info == stored
    # What an engineer needs: every exception of the chain by class, how they are linked,
    # and the frames down to the one that raised first.
    for kept in (
        "ValueError", "LookupError", "RuntimeError", "fail_quoting_a_body", "_store_the_text",
        "raise ValueError(", "During handling of the above exception", "direct cause", MESSAGE_WITHHELD,
    ):  # fmt: skip
        assert kept in stored, kept
    assert stored.index("ValueError") < stored.index("LookupError") < stored.index("RuntimeError")
    assert stored.count(MESSAGE_WITHHELD) == 3
    # Not one word the texter wrote nor a number: stored nowhere in Redis, logged at no level.
    leaks = [key for key, text in stored_texts(clean_redis) if BODY_MARK in text.lower()]
    leaks += [key for key, text in stored_texts(clean_redis) for shape in NUMBER_SHAPES if shape in text]
    assert not leaks
    logged = caplog.text
    assert BODY_MARK not in logged.lower()
    assert not [shape for shape in NUMBER_SHAPES if shape in logged]
    failure_logs = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("rq")]
    assert failure_logs and "RuntimeError" in logged and "fail_quoting_a_body" in logged


def test_a_withheld_traceback_survives_a_chain_that_loops_and_an_exception_group() -> None:
    first, second = ValueError(jobs.BODY_IN_AN_ERROR), KeyError(jobs.NUMBER_IN_AN_ERROR)
    first.__context__, second.__context__ = second, first
    group = ExceptionGroup(jobs.BODY_IN_AN_ERROR, [first, TypeError(jobs.BODY_IN_AN_ERROR)])
    group.add_note(jobs.BODY_IN_AN_ERROR)

    withheld = withheld_traceback(group)

    assert "ExceptionGroup" in withheld and "ValueError" in withheld and "KeyError" in withheld
    assert "TypeError" in withheld
    assert BODY_MARK not in withheld.lower() and jobs.NUMBER_IN_AN_ERROR not in withheld
