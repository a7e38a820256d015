"""Follow-up fixtures: a clean Redis per test, and running what is due, in this process (under
the test's travelled clock) or on the Procfile's real worker."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from flask import Flask
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from crisisline.app import rq
from crisisline.db import db
from crisisline.models import CheckIn, ScheduledContact


@pytest.fixture(autouse=True)
def _empty_redis(clean_redis: redis.Redis) -> redis.Redis:
    """Every follow-up test starts with an empty Redis (see ``clean_redis``)."""
    return clean_redis


@pytest.fixture
def run_due(app: Flask) -> Callable[[], list[str]]:
    """Run every pending contact that is due by the (travelled) clock, as the RQ job does;
    returns their outcomes. Contacts not yet due are left alone."""
    return due_contacts_runner(app)


def due_contacts_runner(app: Flask) -> Callable[[], list[str]]:
    """``run_due``'s runner, for tests elsewhere that need one."""

    def run() -> list[str]:
        from workers.contacts import now, run_scheduled_contact

        outcomes = []
        with app.app_context():
            due = db.session.scalars(
                select(ScheduledContact.id)
                .where(ScheduledContact.state == "pending", ScheduledContact.due_at <= now())
                .order_by(ScheduledContact.due_at, ScheduledContact.id)
            ).all()
            for contact_id in due:
                outcomes.append(run_scheduled_contact(contact_id))
        return outcomes

    return run


@pytest.fixture
def run_real_worker(app: Flask, run_worker: Callable[..., None]) -> Callable[[], None]:
    """Hand the jobs due by the travelled clock to the queue (as RQ's scheduler does when their
    time comes) and run the Procfile's worker as a real process, in burst mode."""

    def run() -> None:
        from workers.contacts import CONTACT_QUEUES, now

        with app.app_context():
            for name in CONTACT_QUEUES:
                queue = rq.get_queue(name)
                registry = ScheduledJobRegistry(queue=queue)
                for job_id in registry.get_job_ids():
                    contact = db.session.scalars(
                        select(ScheduledContact).where(ScheduledContact.id == int(job_id.removeprefix("contact-")))
                    ).one()
                    if contact.due_at <= now():
                        registry.remove(job_id)
                        queue.enqueue_job(Job.fetch(job_id, connection=queue.connection))
        run_worker(*CONTACT_QUEUES)

    return run


def checkins(app: Flask) -> list[CheckIn]:
    with app.app_context():
        return list(db.session.scalars(select(CheckIn).order_by(CheckIn.id)))


def contacts(app: Flask) -> list[ScheduledContact]:
    with app.app_context():
        return list(db.session.scalars(select(ScheduledContact).order_by(ScheduledContact.id)))
