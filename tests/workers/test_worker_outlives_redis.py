"""The Procfile's worker outlives a Redis outage: it keeps retrying (RQ's back-off) and runs
the next job once Redis answers again, instead of exiting and leaving the queue unserved."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from flask import Flask
from rq import Queue

from crisisline.settings import Settings
from tests.conftest import ROOT, deployment_environment
from tests.faults import StallingProxy
from tests.workers import jobs


def wait_for(condition: Callable[[], object], seconds: float) -> bool:
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_the_worker_waits_out_a_redis_outage_and_then_runs_the_next_job(
    app: Flask, settings: Settings, clean_redis: redis.Redis
) -> None:
    target = urlsplit(settings.redis_url)
    with StallingProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        via_proxy = settings.redis_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}")
        env = {**os.environ, **deployment_environment(settings.database_url, via_proxy)}
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*jobs.PROCFILE_WORKER, "upkeep"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            assert wait_for(lambda: clean_redis.keys("rq:worker:*"), 60), "the worker never started"
            proxy.refuse()  # Redis is gone: every connection dropped, new ones refused
            time.sleep(4)
            still_running = worker.poll() is None
            proxy.resume()
            job = Queue("upkeep", connection=clean_redis).enqueue(jobs.succeed, 21)

            finished = wait_for(lambda: job.refresh() or job.get_status() == "finished", 60)
        finally:
            worker.terminate()
            _, errors = worker.communicate(timeout=30)

    assert still_running, "the worker exited when Redis went away"
    assert finished, "the worker did not run a job after Redis came back"
    assert job.return_value() == 42
    assert b"could not connect to Redis" in errors or b"ConnectionError" in errors
