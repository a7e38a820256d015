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
  (a statement cut off by the timeout, a server restart) is never handed to the next job;
- a failed job's traceback, which RQ keeps in Redis in plain text for the job's
  ``failure_ttl`` (its result stream, webhooks) and logs at ERROR, keeps the exception classes
  and the frames (file, line, function, code) but not one exception's message: a message may
  quote a number (Twilio's 21211 "The 'To' number +1... is not valid") or a texter's words (a
  database error echoing a parameter, a ``ValueError`` raised with the text).

What a forking worker protects against that this does not: a job that kills the interpreter
itself (a segfault in a C extension, ``os._exit``) takes the worker with it. The process
manager restarts it (Procfile/honcho, systemd, Heroku), and a scheduled contact it was
sending is left ``sending`` for ``rebuild_schedule`` to hand to a human, as with any worker
killed mid-send.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask
from rq.exceptions import DeserializationError, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.queue import Queue
from rq.worker import SimpleWorker

from crisisline.app import rq
from crisisline.db import db
from crisisline.phone import redact_numbers

log = logging.getLogger(__name__)

MESSAGE_WITHHELD = "<message withheld>"
# Python's own words between the exceptions of a chain (as ``traceback`` prints them).
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def withheld_traceback(error: BaseException) -> str:
    """``error``'s traceback as Python prints it, with every exception of the chain (its causes
    and contexts, an exception group's members) shown by class name only: the frames (file,
    line, function, code) are kept, messages and notes are not."""
    return _withheld_chain(error, set())


def _withheld_chain(error: BaseException, seen: set[int]) -> str:
    blocks: list[str] = []
    current: BaseException | None = error
    while current is not None and id(current) not in seen:  # a chain can loop
        seen.add(id(current))
        blocks.append(_withheld_block(current, seen))
        if current.__cause__ is not None:
            blocks.append(_CAUSE)
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            blocks.append(_CONTEXT)
            current = current.__context__
        else:
            current = None
    if blocks and blocks[-1] in (_CAUSE, _CONTEXT):  # the loop stopped at one already shown
        blocks.pop()
    return "".join(reversed(blocks))  # oldest first, as Python prints a chain


def _withheld_block(error: BaseException, seen: set[int]) -> str:
    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    frames = "".join(traceback.format_tb(error.__traceback__))
    block = (f"Traceback (most recent call last):\n{frames}" if frames else "") + f"{name}: {MESSAGE_WITHHELD}\n"
    members = error.exceptions if isinstance(error, BaseExceptionGroup) else ()
    for number, member in enumerate(members, 1):
        inner = _withheld_chain(member, seen).rstrip("\n").replace("\n", "\n  | ")
        block += f"  +-- {number} --\n  | {inner}\n"
    return block


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

    # The withheld traceback of the job that just raised (job id, text): RQ hands the exception
    # itself to ``handle_exception`` and only its full text to ``handle_job_failure``, next.
    _withheld: tuple[str, str] | None = None

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        # RQ's own logs the full traceback (messages included) with the job's arguments as
        # ``extra``: the withheld traceback instead, and ids only.
        error: BaseException = exc_info[1]
        withheld = withheld_traceback(error)
        self._withheld = (job.id, withheld)
        try:
            func_name = job.func_name
        except DeserializationError:
            func_name = "<DeserializationError>"
        self.log.error(
            "Worker %s: job %s: exception raised while executing (%s)\n%s",
            self.name, job.id, func_name, withheld, extra={"func": func_name, "queue": job.origin, "job_id": job.id},
        )  # fmt: skip
        call_exception_handlers(self._exc_handlers, job, *exc_info)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        # Every stored copy of the traceback (the job, the failed-job registry, the failure
        # result, the webhook) passes here. A failure with no exception behind it (RQ's own
        # words: a lost job, a killed horse) keeps its text, numbers masked all the same.
        withheld, self._withheld = self._withheld, None
        if withheld is not None and withheld[0] == job.id:
            exc_string = withheld[1]
        region = self.app.extensions["crisisline.settings"].default_region
        super().handle_job_failure(job, queue, started_job_registry, redact_numbers(exc_string, region), execution)


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


# Back-off between restarts of the work loop while Redis is unreachable (seconds).
RESTART_WAIT_FIRST, RESTART_WAIT_MAX = 1.0, 30.0


def work_until_stopped(
    make: Callable[[int], AppWorker], *, burst: bool, with_scheduler: bool, max_jobs: int | None
) -> None:
    """RQ's work loop, started again whenever it ends without being asked to.

    RQ retries a lost Redis only while it waits for a job; a connection error anywhere else
    (its suspension check, its maintenance, its heartbeat) ends ``work()`` as if the worker
    were done, and the queue would be left unserved until something restarted the process.
    So the loop starts again, backing off while Redis stays away. ``make(attempt)`` builds each
    worker (a new one each time: the old one's registration may outlive it in Redis)."""
    wait, attempt = RESTART_WAIT_FIRST, 0
    while True:
        try:
            # Inside the try: making a worker may reach Redis too, and Redis may still be away.
            worker = make(attempt)
            worker.work(burst=burst, with_scheduler=with_scheduler, max_jobs=max_jobs)
        except StopRequested:
            return
        except redis.exceptions.RedisError as error:
            log.warning("worker stopped: Redis %s; starting again in %.0f s", type(error).__name__, wait)
        else:
            if burst or max_jobs is not None or worker._stop_requested or worker._shutdown_requested_date:
                return
            log.warning("worker loop ended by an error (see above); starting again in %.0f s", wait)
        try:
            time.sleep(wait)
        except StopRequested:  # SIGTERM while waiting: the old worker's handler still listens
            return
        wait, attempt = min(wait * 2, RESTART_WAIT_MAX), attempt + 1
