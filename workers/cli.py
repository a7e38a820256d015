"""``flask workers``: the Procfile's worker (``run``) and clock (``clock``), and ``status``:
what the background side is doing, for an operator."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from crisisline.app import QUEUES, rq
from workers.clock import make_clock
from workers.runner import AppWorker, make_worker, work_until_stopped
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


@workers_cli.command("run")
@click.argument("queues", nargs=-1)
@click.option("--burst", is_flag=True, help="Stop once the queues are empty.")
@click.option("--with-scheduler", is_flag=True, help="Also move scheduled jobs to their queues when due.")
@click.option("--max-jobs", type=int, default=None, help="Stop after this many jobs (e.g. to recycle memory).")
@click.option("--name", default=None, help="Worker name (default: RQ's, unique per process).")
def run(queues: tuple[str, ...], burst: bool, with_scheduler: bool, max_jobs: int | None, name: str | None) -> None:
    """Run jobs from QUEUES (default: all, highest priority first) in this one process, each in
    its own app context: the Procfile's worker (see ``workers.runner``)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        first = make_worker(app, queues, name=name)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="QUEUES") from None

    def make(attempt: int) -> AppWorker:
        if attempt == 0:
            return first
        return make_worker(app, queues, name=f"{name}.{attempt}" if name else None)

    work_until_stopped(make, burst=burst, with_scheduler=with_scheduler, max_jobs=max_jobs)


@workers_cli.command("clock")
def clock() -> None:
    """Enqueue the periodic jobs on time: the Procfile's clock. Safe to run twice (one leader),
    and it outlives Redis, running the safety nets itself meanwhile (see ``workers.clock``)."""
    make_clock().start()
