"""Worker bench: many check-ins due at the same second, two workers, each sent exactly once.

For each worker command, on a fresh PostgreSQL database and Redis with the fake Twilio:
``--count`` check-in texts (scheduled contacts of kind ``checkin``, database row first, RQ
job second) are scheduled for the same second T, two worker processes are started before T,
and the bench waits until every contact is settled. Reported: how late the last text went out
(its ``finished_at`` minus T), lateness p50/p99, jobs per second, texts per number (exactly
one each), and peak RSS per worker.

Compared in the same run:

- ``app-worker``: the Procfile's worker line (``flask workers run``: one process per worker,
  the app imported once, each job in its own app context; see ``workers/runner.py``);
- ``flask-rq``: the previous Procfile line, ``flask rq worker``, which starts a new Python
  process for every job. It is slow, so it gets ``--old-count`` contacts (default 100) and
  its time for 1,000 is extrapolated from its rate.

    .venv/bin/python -m bench.workers [--count 1000] [--old-count 200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from rq import Worker
from rq.registry import ScheduledJobRegistry
from sqlalchemy import func, select, update

from bench.common import (
    LINE_NUMBER,
    RESULTS,
    MemorySampler,
    deployment_env,
    flask,
    fresh_database,
    machine,
    processes,
    procfile_command,
    publish_routing_on_call_around_the_clock,
    redis_for_bench,
    start_fake_twilio,
)
from crisisline import create_app
from crisisline.app import rq
from crisisline.db import db
from crisisline.models import CheckIn, ScheduledContact
from crisisline.redis_server import free_port
from crisisline.settings import Settings
from ivr.call_log import phone_hash
from sms.conversations import find_or_create_texter
from workers.contacts import QUEUE, schedule

# The Procfile's worker line before this change: flask-rq's worker, one process per job.
FLASK_RQ_WORKER = shlex.split("flask --app crisisline rq worker --with-scheduler calls messages followups upkeep")
SETTLED = ("sent", "failed", "canceled", "needs_human")


def bench_number(index: int) -> str:
    """A valid US number per index (exchange 200-999: Twilio refuses 0xx and 1xx exchanges)."""
    return f"+1415{2_000_000 + index:07d}"


def schedule_checkins(app: Flask, count: int, first_number: int) -> datetime:
    """``count`` consented check-ins, scheduled as the app schedules them (row first, RQ job
    second) for a placeholder time a day ahead; ``make_due_at`` then moves them all to T."""
    placeholder = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    with app.app_context():
        for index in range(count):
            number = bench_number(first_number + index)
            texter = find_or_create_texter(number, phone_hash(number))
            checkin = CheckIn(
                dedupe_key=f"bench:{first_number + index}", origin="text", texter_id=texter.id, language="en",
                need="suicide", line_number=LINE_NUMBER, state="consented", consented_at=datetime.now(UTC),
                due_at=placeholder,
            )  # fmt: skip
            db.session.add(checkin)
            db.session.commit()
            schedule("checkin", f"checkin:{checkin.id}:1", placeholder, checkin_id=checkin.id, attempt=1)
        db.session.remove()
    return placeholder


def make_due_at(app: Flask, placeholder: datetime, due: datetime) -> None:
    """Every contact scheduled for ``placeholder`` becomes due at ``due``, in the database and in
    RQ's scheduled-job registry (the same second for all: the surge this bench is about)."""
    with app.app_context():
        contacts = list(db.session.scalars(select(ScheduledContact).where(ScheduledContact.due_at == placeholder)))
        registry = ScheduledJobRegistry(queue=rq.get_queue(QUEUE))
        connection = registry.connection
        with connection.pipeline() as pipeline:
            for contact in contacts:
                pipeline.zadd(registry.key, {contact.job_id: due.timestamp()}, xx=True)
            pipeline.execute()
        db.session.execute(update(ScheduledContact).where(ScheduledContact.due_at == placeholder).values(due_at=due))
        db.session.execute(update(CheckIn).where(CheckIn.due_at == placeholder).values(due_at=due))
        db.session.commit()
        db.session.remove()


def wait_until_listening(app: Flask, workers: int, timeout: float = 120.0) -> None:
    """Until ``workers`` RQ workers are registered (started, app imported, queues watched)."""
    deadline = time.monotonic() + timeout
    with app.app_context():
        connection = rq.get_queue(QUEUE).connection
    while time.monotonic() < deadline and len(Worker.all(connection=connection)) < workers:
        time.sleep(0.2)
    time.sleep(1.0)  # their scheduler threads/processes start just after registration


def contact_rows(app: Flask, due: datetime) -> list[ScheduledContact]:
    with app.app_context():
        rows = list(
            db.session.scalars(
                select(ScheduledContact).where(ScheduledContact.kind == "checkin", ScheduledContact.due_at == due)
            )
        )
        db.session.expunge_all()
        db.session.remove()
    return rows


def settled_count(app: Flask, due: datetime) -> int:
    with app.app_context():
        count = db.session.scalar(
            select(func.count()).where(
                ScheduledContact.kind == "checkin", ScheduledContact.due_at == due, ScheduledContact.state.in_(SETTLED)
            )
        )
        db.session.remove()
    return int(count or 0)


def texts_per_number(twilio_url: str, first_number: int, count: int) -> dict[int, int]:
    """How many texts each bench number got (from the fake Twilio's state): {texts: numbers}."""
    state = requests.get(f"{twilio_url}/_fake/state", timeout=30).json()
    wanted = {bench_number(first_number + index) for index in range(count)}
    per_number = dict.fromkeys(wanted, 0)
    for message in state.get("messages", []):
        if message.get("to") in per_number:
            per_number[message["to"]] += 1
    histogram: dict[int, int] = {}
    for texts in per_number.values():
        histogram[texts] = histogram.get(texts, 0) + 1
    return histogram


def run_batch(
    label: str, argv: list[str], count: int, first_number: int, app: Flask, env: dict[str, str],
    twilio_url: str, started: Any, sampler: MemorySampler, timeout: float,
) -> dict[str, Any]:  # fmt: skip
    scheduling_started = time.monotonic()
    placeholder = schedule_checkins(app, count, first_number)
    scheduling_seconds = time.monotonic() - scheduling_started
    workers = [started.start(f"{label}-{index}", argv, env) for index in (1, 2)]
    for process in workers:
        sampler.track(process.role, process.popen.pid)
    sampler.phase = label
    wait_until_listening(app, len(workers))
    due = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0) + timedelta(seconds=1)
    make_due_at(app, placeholder, due)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and settled_count(app, due) < count:
        time.sleep(0.5)
    finished_waiting = datetime.now(UTC)
    for process in workers:
        started.stop(process)
        if os.environ.get("BENCH_SHOW_WORKER_LOGS"):  # when a batch fails: the end of each worker's log
            print((started.scratch / f"{process.role}.log").read_text()[-3000:])
    rows = contact_rows(app, due)
    done = [row for row in rows if row.state in SETTLED and row.finished_at is not None]
    late = sorted((row.finished_at - due).total_seconds() for row in done if row.finished_at)
    states: dict[str, int] = {}
    for row in rows:
        key = row.state if row.state == row.outcome or row.outcome is None else f"{row.state}:{row.outcome}"
        states[key] = states.get(key, 0) + 1
    first_claim = min((row.claimed_at for row in done if row.claimed_at), default=due)
    last_done = max((row.finished_at for row in done if row.finished_at), default=finished_waiting)
    busy = max((last_done - first_claim).total_seconds(), 1e-6)
    peaks = sampler.peaks.get(label, {})
    rate = round(len(done) / busy, 1)
    result = {
        "worker_command": " ".join(argv),
        "contacts": count,
        "settled": len(done),
        "states": states,
        "all_settled": len(done) == count,
        "last_sent_seconds_after_due": round(late[-1], 1) if late else None,
        "lateness_p50_s": round(late[len(late) // 2], 1) if late else None,
        "lateness_p99_s": round(late[min(len(late) - 1, int(0.99 * len(late)))], 1) if late else None,
        "jobs_per_second": rate,
        "texts_per_number": texts_per_number(twilio_url, first_number, count),
        "scheduling_seconds": round(scheduling_seconds, 1),
        "peak_rss_mib": {name: round(rss, 1) for name, rss in peaks.items()},
    }
    result["projected_seconds_for_1000"] = round(1000 / rate, 1) if rate else None
    print(f"  {label}: {len(done)}/{count} settled, last {result['last_sent_seconds_after_due']} s after due, "
          f"{rate} jobs/s", flush=True)  # fmt: skip
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "note": "2-core machine shared with other engineers' test runs; both workers measured in this run.",
    }
    sampler = MemorySampler().start()
    with (
        processes() as started,
        fresh_database("crisisline_bench_workers") as database_url,
        redis_for_bench(started.scratch) as redis_url,
    ):
        twilio_url = start_fake_twilio(started)
        env = deployment_env(database_url, redis_url, twilio_url, free_port())
        flask(env, "db", "upgrade")
        publish_routing_on_call_around_the_clock(env, started.scratch)
        settings = Settings.from_env({k: v for k, v in env.items() if k.isupper()})
        app = create_app(settings)
        batches = [("app-worker", procfile_command("worker"), args.count, 0)]
        if args.old_count:
            batches.append(("flask-rq", FLASK_RQ_WORKER, args.old_count, 500_000))
        report["batches"] = {}
        for label, argv, count, first in batches:
            report["batches"][label] = run_batch(
                label, argv, count, first, app, env, twilio_url, started, sampler, args.timeout
            )
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    sampler.stop()
    new, old = report["batches"]["app-worker"], report["batches"].get("flask-rq")
    if old and old["jobs_per_second"]:
        report["speedup_jobs_per_second"] = round(new["jobs_per_second"] / old["jobs_per_second"], 1)
    return report


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Worker bench, {report['started_at']}",
        "",
        f"Machine: {m['nproc']} CPU ({m['cpu_model']}), {m['ram_gib']} GiB RAM, load average at start "
        f"{m['load_average_at_start']}. {report['note']}",
        "",
        "| worker (x2) | check-ins due at T | all sent once | last sent after T | lateness p50 / p99 | jobs/s "
        "| 1,000 would take | peak RSS per worker |",
        "|---|---:|---|---:|---|---:|---:|---|",
    ]
    for label, batch in report["batches"].items():
        once = batch["texts_per_number"] == {1: batch["contacts"]}
        rss = ", ".join(f"{v:.0f}" for k, v in sorted(batch["peak_rss_mib"].items()) if "/" not in k)
        lines.append(
            f"| {label} (`{batch['worker_command']}`) | {batch['contacts']} | {'yes' if once else batch['states']} | "
            f"{batch['last_sent_seconds_after_due']} s | {batch['lateness_p50_s']} / {batch['lateness_p99_s']} s | "
            f"{batch['jobs_per_second']} | {batch['projected_seconds_for_1000']} s | {rss} MiB |"
        )
    if "speedup_jobs_per_second" in report:
        lines += ["", f"Throughput: {report['speedup_jobs_per_second']}x the flask-rq worker's."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="check-ins due at once for the Procfile worker")
    parser.add_argument("--old-count", type=int, default=100, help="for flask-rq's worker (0: skip it)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per worker: stop waiting after this long")
    parser.add_argument("--quick", action="store_true", help="100 and 20 check-ins")
    parser.add_argument("--output", type=Path, default=None, help="write <output>.json and .md")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.old_count = 100, 20
    report = run(args)
    text_report = markdown(report)
    print(text_report)
    if args.output is not None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(text_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
