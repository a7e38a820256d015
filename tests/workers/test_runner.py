"""The Procfile's worker runs every job in one process (no new process per job), yet one job
cannot hurt the next: a failure, a timeout or a SystemExit is recorded as that job's failure and
the worker carries on; each job has its own app context and a clean database session."""

from __future__ import annotations

import os
import subprocess

import redis
from flask import Flask
from rq.job import Job

from crisisline.app import rq
from crisisline.settings import Settings
from tests.conftest import ROOT, deployment_environment
from tests.workers import jobs
from tests.workers.jobs import PROCFILE_WORKER
from workers.runner import AppWorker, make_worker


def enqueue(app: Flask, function: object, *args: object, timeout: int = 30) -> Job:
    with app.app_context():
        return rq.get_queue("upkeep").enqueue(function, *args, job_timeout=timeout, failure_ttl=600)


def test_the_procfile_worker_is_the_one_process_app_worker() -> None:
    assert PROCFILE_WORKER[-3:] == ["crisisline", "workers", "run"]
    procfile = (ROOT / "Procfile").read_text()
    assert "workers run --with-scheduler calls messages followups upkeep" in procfile


def test_a_failing_job_neither_stops_the_worker_nor_leaks_its_session_into_the_next(
    app: Flask, clean_redis: redis.Redis
) -> None:
    failing = enqueue(app, jobs.leave_a_transaction_open)
    checking = enqueue(app, jobs.session_is_fresh)
    exiting = enqueue(app, jobs.exit_the_interpreter)
    after = enqueue(app, jobs.succeed, 21)

    worker = make_worker(app, ("upkeep",))
    worker.work(burst=True)

    for job in (failing, checking, exiting, after):
        job.refresh()
    assert isinstance(worker, AppWorker)
    assert failing.get_status() == "failed"
    assert checking.get_status() == "finished" and checking.return_value() is True
    assert exiting.get_status() == "failed"
    assert after.get_status() == "finished" and after.return_value() == 42


def test_a_job_over_its_timeout_is_failed_and_the_next_one_runs(app: Flask, clean_redis: redis.Redis) -> None:
    slow = enqueue(app, jobs.sleep_past_timeout, 30, timeout=1)
    after = enqueue(app, jobs.succeed, 1)

    make_worker(app, ("upkeep",)).work(burst=True)

    slow.refresh()
    after.refresh()
    assert slow.get_status() == "failed"
    assert "JobTimeoutException" in (slow.latest_result().exc_string or "")  # type: ignore[union-attr]
    assert after.get_status() == "finished"


def test_the_procfile_command_runs_jobs_as_a_real_process(
    app: Flask, settings: Settings, clean_redis: redis.Redis
) -> None:
    first, second = enqueue(app, jobs.succeed, 2), enqueue(app, jobs.leave_a_transaction_open)
    third = enqueue(app, jobs.session_is_fresh)

    env = {**os.environ, **deployment_environment(settings.database_url, settings.redis_url)}
    subprocess.run(  # noqa: S603 - our own interpreter and module
        [*PROCFILE_WORKER, "--burst", "upkeep"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=120
    )

    for job in (first, second, third):
        job.refresh()
    assert [first.get_status(), second.get_status(), third.get_status()] == ["finished", "failed", "finished"]
    assert third.return_value() is True


def test_unknown_queue_names_are_refused(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["workers", "run", "--burst", "no-such-queue"])

    assert result.exit_code != 0
