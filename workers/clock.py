"""The clock: RQ's cron scheduler, made safe to run twice and to outlive Redis.

- **One leader.** Two clock processes (a deploy overlapping the old one, a second dyno) share a
  Redis lease; only its holder enqueues periodic jobs. The other keeps time without enqueueing
  and takes over within ``LEASE_SECONDS`` if the leader dies.
- **Redis down is not the end.** RQ's own scheduler exits on the first Redis error; this one
  logs, backs off and carries on. While Redis is down it runs the every-minute safety nets
  (reconcile transfers, tend callbacks, sweep texts, rebuild the schedule) itself, in this
  process: they are idempotent and need only the database, so a callback promised while Redis
  was down is still placed, and the schedule is rebuilt in Redis once it returns.
- **No worker is not the end either.** With Redis up but no worker taking jobs (the worker
  process crashed, was never started, or is stuck), the leader runs the same safety nets and
  the due contacts itself, once a minute, until a worker keeps up again: see ``workers_behind``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

import redis
from flask import current_app
from rq import Queue, Worker
from rq.cron import CronJob, CronScheduler
from rq.exceptions import StopRequested
from rq.utils import now
from sqlalchemy import case, select

from crisisline.app import CLOCK_LEADER_KEY, FastConnectRedis, rq
from crisisline.db import db
from crisisline.models import ScheduledContact
from crisisline.settings import Settings
from workers.contacts import AHEAD_KINDS, run_scheduled_contact
from workers.contacts import now as contacts_now
from workers.upkeep import PERIODIC_JOBS

log = logging.getLogger(__name__)
LEADER_KEY = CLOCK_LEADER_KEY  # /readyz reads it: a clock leads
LEASE_SECONDS = 90
MAX_BACKOFF_SECONDS = 30
INLINE_EVERY_SECONDS = 60
INLINE_CONTACTS_PER_RUN = 100  # due contacts the clock runs itself each time, callbacks first
CLOCK_REDIS_TIMEOUT_SECONDS = 5
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# The queues the every-minute safety nets and the scheduled contacts go to.
SAFETY_NET_QUEUES = ("calls", "messages", "followups")
# A job waiting this long, or a contact this overdue, means no worker is keeping up.
WORKERS_BEHIND_AFTER = timedelta(seconds=90)
# Extend the lease only if we still hold it (atomic in Redis).
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('expire', KEYS[1], ARGV[2])
end
return 0
"""


class LineClock(CronScheduler):
    """``CronScheduler`` with a leader lease, Redis-outage survival and inline safety nets."""

    def __init__(
        self, connection: redis.Redis, *, name: str = "", inline_jobs: Sequence[Callable[[], object]] = ()
    ) -> None:
        super().__init__(connection=connection, name=name)
        self.identity = self.name  # host:pid:random, unique per process
        self.inline_jobs = list(inline_jobs)
        self.last_inline_run = 0.0
        self.registered = False
        self.leading = False
        self.backoff = 1.0

    # --- leadership ------------------------------------------------------------------------

    def lead(self) -> bool:
        """Take or keep the lease. True while this clock is the one that enqueues."""
        if self.connection.set(LEADER_KEY, self.identity, nx=True, ex=LEASE_SECONDS):
            return True
        return bool(self.connection.eval(_RENEW, 1, LEADER_KEY, self.identity, LEASE_SECONDS))

    def resign(self) -> None:
        if self.connection.get(LEADER_KEY) == self.identity.encode():
            self.connection.delete(LEADER_KEY)

    def enqueue_jobs(self) -> list[CronJob]:
        """Enqueue due jobs if this clock leads; otherwise only keep their time (no busy loop,
        and a follower taking over starts from the next due run, not a backlog)."""
        self.leading = self.lead()
        if self.leading:
            return super().enqueue_jobs()
        moment = now()
        for job in self._cron_jobs:
            if job.should_run():
                job.set_enqueue_time(moment)
        return []

    # --- the loop ------------------------------------------------------------------------

    def tick(self) -> float:
        """One turn: enqueue what is due (or run the safety nets inline while Redis is down).
        Returns how long to sleep before the next turn. Never raises for Redis."""
        try:
            if not self.registered:
                self.register_birth()
                self.registered = True
            if self.enqueue_jobs():
                self.save()
            self.heartbeat()
            if self.leading and self.workers_behind():
                self.run_inline_safety_nets()
        except REDIS_ERRORS as error:
            log.error("clock: Redis unavailable (%s); retrying in %.0f s", type(error).__name__, self.backoff)
            self.run_inline_safety_nets()
            pause, self.backoff = self.backoff, min(self.backoff * 2, MAX_BACKOFF_SECONDS)
            return pause
        except Exception as error:  # anything else (the database failing): the clock outlives it
            log.error("clock: turn failed (%s); retrying in %.0f s", type(error).__name__, self.backoff)
            _rollback_quietly()
            # A turn that keeps failing must not hold the lead doing nothing: another clock may
            # do better; meanwhile this one runs the safety nets itself.
            with contextlib.suppress(*REDIS_ERRORS):
                self.resign()
            self.leading = False
            self.run_inline_safety_nets()
            pause, self.backoff = self.backoff, min(self.backoff * 2, MAX_BACKOFF_SECONDS)
            return pause
        self.backoff = 1.0
        return float(self.calculate_sleep_interval())

    def workers_behind(self) -> bool:
        """Is no worker running the safety nets? None is alive for one of their queues, the
        oldest job on one has waited ``WORKERS_BEHIND_AFTER``, or a due contact is that late
        (a worker without its scheduler never moves scheduled jobs to a queue)."""
        moment = now()
        for name in SAFETY_NET_QUEUES:
            queue = Queue(name, connection=self.connection)
            if not Worker.all(queue=queue):  # a dead worker's key expires with its heartbeat
                return self._behind(f"no worker for {name}")
            oldest = queue.get_job_ids(0, 1)
            job = queue.fetch_job(oldest[0]) if oldest else None
            if job is not None and job.enqueued_at and moment - job.enqueued_at > WORKERS_BEHIND_AFTER:
                return self._behind(f"{name} jobs waiting")
        try:
            overdue = db.session.scalar(
                select(ScheduledContact.id)
                .where(
                    ScheduledContact.state == "pending", ScheduledContact.due_at < contacts_now() - WORKERS_BEHIND_AFTER
                )
                .limit(1)
            )
        except Exception as error:  # the database failing must not end the clock (nor this check)
            log.error("clock: could not read the scheduled contacts (%s)", type(error).__name__)
            overdue = None
        finally:
            _rollback_quietly()  # no transaction left open between ticks
        return overdue is not None and self._behind("scheduled contacts overdue")

    def _behind(self, why: str) -> bool:
        log.warning("clock: workers are not keeping up (%s); running the safety nets here", why)
        return True

    def run_inline_safety_nets(self) -> None:
        """Redis is down, or no worker keeps up: run the every-minute safety nets here, at
        most once a minute."""
        if time.monotonic() - self.last_inline_run < INLINE_EVERY_SECONDS:
            return
        self.last_inline_run = time.monotonic()
        for job in self.inline_jobs:
            try:
                job()
            except Exception as error:  # one failing net must not stop the others
                log.error("clock: %s failed inline: %s", getattr(job, "__name__", "job"), type(error).__name__)
                db.session.rollback()

    def start(self) -> None:
        """Run until SIGINT/SIGTERM."""
        self.log.info("clock %s: starting", self.identity)
        self._install_signal_handlers()
        try:
            while True:
                pause = self.tick()
                if pause > 0:
                    time.sleep(pause)
        except (KeyboardInterrupt, StopRequested):
            self.log.info("clock %s: stop requested", self.identity)
        finally:
            try:
                self.resign()
                if self.registered:
                    self.register_death()
            except REDIS_ERRORS:
                pass


def _rollback_quietly() -> None:
    try:
        db.session.rollback()
    except Exception as error:  # a broken connection: the pool replaces it on the next checkout
        log.error("clock: rollback failed (%s)", type(error).__name__)


def run_due_contacts() -> dict[str, int]:
    """Redis is down, so no worker can take scheduled contacts (a promised callback, a check-in):
    run the due ones here. Each claims its row first (pending → sending), so a job Redis still
    holds, run later by a worker, does nothing. In the workers' order: a person waiting for a
    human or an alert of someone not reached (``AHEAD_KINDS``) first, then the oldest due, so
    neither is left behind a backlog of overdue check-ins (a hundred a minute)."""
    due = db.session.scalars(
        select(ScheduledContact.id)
        .where(ScheduledContact.state == "pending", ScheduledContact.due_at <= contacts_now())
        .order_by(
            case((ScheduledContact.kind.in_(AHEAD_KINDS), 0), else_=1), ScheduledContact.due_at, ScheduledContact.id
        )
        .limit(INLINE_CONTACTS_PER_RUN)
    ).all()
    outcomes: dict[str, int] = {}
    for contact_id in due:
        try:
            outcome = run_scheduled_contact(contact_id)
        except Exception as error:  # settled by ``interrupted``: the rest of the batch still goes
            _rollback_quietly()
            log.error("clock: scheduled contact %s failed (%s)", contact_id, type(error).__name__)
            outcome = "failed_here"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def make_clock() -> LineClock:
    """The clock for the current app: the periodic jobs ``workers.upkeep`` registered."""
    settings: Settings = current_app.extensions["crisisline.settings"]
    every_minute = [job for job, schedule, _queue in PERIODIC_JOBS if schedule == "* * * * *"]
    every_minute.append(run_due_contacts)
    # A read timeout too (workers have none: they block on queues): a hung Redis must not
    # hang the clock, which then runs the safety nets itself.
    connection = FastConnectRedis.from_url(settings.redis_url, socket_timeout=CLOCK_REDIS_TIMEOUT_SECONDS)
    clock = LineClock(connection, inline_jobs=every_minute)
    for item in rq._cron_job_data:  # what ``rq.cron_register`` collected (flask-rq keeps it there)
        clock.register(**item)
    return clock
