"""``flask workers status``: what the background side is doing, for an operator."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from crisisline.app import QUEUES, rq
from workers.upkeep import PERIODIC_JOBS

workers_cli = AppGroup("workers", help="The RQ workers, queues and periodic jobs.")


def register(app: Flask) -> None:
    app.cli.add_command(workers_cli)


@workers_cli.command("status")
def status() -> None:
    """Queues (waiting, running, scheduled, failed), live workers, and the periodic jobs."""
    connection = rq.get_queue(QUEUES[0]).connection
    click.echo("queue        waiting  running  scheduled  failed")
    for name in QUEUES:
        queue = rq.get_queue(name)
        click.echo(
            f"{name:<12} {queue.count:>7}  {StartedJobRegistry(queue=queue).count:>7}  "
            f"{ScheduledJobRegistry(queue=queue).count:>9}  {FailedJobRegistry(queue=queue).count:>6}"
        )
    workers = Worker.all(connection=connection)
    click.echo(f"\n{len(workers)} worker(s) alive")
    for worker in workers:
        click.echo(f"  {worker.name}: {worker.get_state()} on {', '.join(worker.queue_names())}")
    click.echo("\nscheduled contacts: " + _by_state("scheduled_contacts"))
    click.echo("callbacks: " + _by_state("callbacks"))
    click.echo("check-ins: " + _by_state("checkins"))
    click.echo("  (needs_human and flagged mean a person must look: see docs in README, 'Later contacts')")
    click.echo("\nperiodic jobs (run by the clock process):")
    for job, schedule, queue_name in PERIODIC_JOBS:
        click.echo(f"  {schedule:<12} {queue_name:<10} {job.__module__}.{job.__name__}")


def _by_state(table: str) -> str:
    """e.g. "pending 3, sent 12, needs_human 1" (or why it cannot be read)."""
    from sqlalchemy import func, select

    from crisisline.db import db
    from crisisline.models import Callback, CheckIn, ScheduledContact

    state = {
        "scheduled_contacts": ScheduledContact.state, "callbacks": Callback.state, "checkins": CheckIn.state,
    }[table]  # fmt: skip
    try:
        rows = db.session.execute(select(state, func.count()).group_by(state)).all()
    except Exception as error:  # the database may be down; the rest of the status still helps
        return f"unavailable ({type(error).__name__})"
    return ", ".join(f"{state} {count}" for state, count in sorted(rows)) or "none"
