"""The Procfile's worker: one process that imports the app once and runs every job in it.

flask-rq's ``flask rq worker`` starts a new Python process for each job (``flask rq
work-horse``), which imports the whole app again: about 0.75 s per job, of which the job
itself is about 0.1 s, so a surge of follow-ups queued at the same second drains at a few
jobs per second. ``AppWorker`` is RQ's own ``SimpleWorker`` (no fork, no spawn) with the
isolation a job needs from the next one made explicit instead:

- each job runs in its own app context, so it gets its own database session and its own
  pending events; the context's teardown removes the session (rolling back whatever the job
  left open) and the connection goes back to the pool;
- a job that raises is recorded as failed by RQ (``perform_job`` catches everything) and the
  worker takes the next job; a job over its ``job_timeout`` is interrupted by RQ's SIGALRM
  death penalty, in this same process;
- after a failed job the pool is emptied (``engine.dispose``): a connection the job broke
  (a statement cut off by the timeout, a server restart) is never handed to the next job.

What a forking worker protects against that this does not: a job that kills the interpreter
itself (a segfault in a C extension, ``os._exit``) takes the worker with it. The process
manager restarts it (Procfile/honcho, systemd, Heroku), and a scheduled contact it was
sending is left ``sending`` for ``rebuild_schedule`` to hand to a human, as with any worker
killed mid-send.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker

from crisisline.app import rq
from crisisline.db import db

log = logging.getLogger(__name__)


class AppWorker(SimpleWorker):
    """A ``SimpleWorker`` that runs each job inside a fresh app context of ``app``."""

    def __init__(self, queues: Any, *args: Any, app: Flask, **kwargs: Any) -> None:
        super().__init__(queues, *args, **kwargs)
        self.app = app

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        with self.app.app_context():
            try:
                succeeded = super().perform_job(job, queue, execution)
            finally:
                # Teardown removes the session too; explicit here because the next job in
                # this process must never see this one's transaction or identity map.
                db.session.remove()
            if not succeeded:
                # Ids only: a job's arguments are ids, its exception text may not be.
                log.warning("job %s failed; connection pool reset before the next job", job.id)
                db.engine.dispose()
        return succeeded


def make_worker(app: Flask, queue_names: tuple[str, ...], **kwargs: Any) -> AppWorker:
    """An ``AppWorker`` on the app's configured queues (all of them, in priority order, when
    ``queue_names`` is empty), with flask-rq's job class so jobs run as they did before."""
    with app.app_context():  # flask-rq keys its queues by app
        configured: dict[str, Queue] = dict(rq.queues)
    names = queue_names or tuple(configured)
    unknown = [name for name in names if name not in configured]
    if unknown:
        raise ValueError(f"unknown queue(s): {', '.join(unknown)}")
    queues = [configured[name] for name in names]
    return AppWorker(queues, app=app, connection=queues[0].connection, job_class=queues[0].job_class, **kwargs)
