"""A surge on a slow database: do callers wait for a pooled connection, and hear the backup line
for it?

The line as the Procfile runs it (gunicorn with ``gunicorn.conf.py``'s workers and threads,
worker, clock) on a fresh PostgreSQL database reached through a proxy that adds latency to
every packet each way (a slow link or an overloaded server: a round trip costs twice
``--latency``), with Redis and the fake Twilio. Supervisors' live boards poll all along, as
on a bad night. A surge of callers and texters (``bench.load``'s: half call, menus, two hold
turns, hang up; half text) arrives on ``--connections`` connections.

Run once per ``--pools`` setting (``size+overflow``, or ``shipped`` for what the line
configures itself), each on a database of its own, the same surge: per webhook kind, how many
were answered with the fail-safe (the backup line) and p50/p99, how often a request gave up
waiting for a pooled connection (the web log's ``QueuePool limit``), and the most connections
the line held on PostgreSQL at once.

    .venv/bin/python -m bench.slow_database [--latency 0.02] [--people 160] [--connections 64]
        [--pools shipped,5+10] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import requests

from bench import load
from bench.common import (
    RESULTS,
    MemorySampler,
    Processes,
    deployment_env,
    flask,
    fresh_database,
    machine,
    postgres_admin_url,
    processes,
    procfile_command,
    publish_routing_on_call_around_the_clock,
    redis_for_bench,
    start_fake_twilio,
    wait_for_http,
)
from crisisline.redis_server import free_port
from tests.faults import StallingProxy

SUPERVISOR_PASSWORD = "bench-supervisor-password-0123"  # noqa: S105 - a bench-only account
_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|<meta name="csrf-token" content="([^"]+)"')


def signed_in_supervisor(url: str, username: str) -> requests.Session:
    """A browser session of a supervisor, signed in through the real form."""
    session = requests.Session()
    page = session.get(f"{url}/console/sign-in", timeout=10)
    found = _TOKEN.search(page.text)
    if found is None:
        raise RuntimeError("no CSRF token on the sign-in page")
    token = found.group(1) or found.group(2)
    reply = session.post(f"{url}/console/sign-in", timeout=10, allow_redirects=False,
                         data={"username": username, "password": SUPERVISOR_PASSWORD, "csrf_token": token})  # fmt: skip
    if reply.status_code != 302:
        raise RuntimeError(f"the supervisor could not sign in ({reply.status_code})")
    return session


class BoardPollers:
    """Supervisors' live boards, each asking for ``board.json`` every ``every`` seconds."""

    def __init__(self, sessions: list[requests.Session], url: str, every: float) -> None:
        self.sessions, self.url, self.every = sessions, url, every
        self.stop = threading.Event()
        self.seconds: list[float] = []
        self.failures = 0
        self._threads = [threading.Thread(target=self._poll, args=(s,), daemon=True) for s in sessions]

    def _poll(self, session: requests.Session) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                ok = session.get(f"{self.url}/console/board.json", timeout=15).status_code == 200
            except requests.RequestException:
                ok = False
            self.seconds.append(time.perf_counter() - started)
            self.failures += not ok
            self.stop.wait(max(0.0, self.every - (time.perf_counter() - started)))

    def __enter__(self) -> BoardPollers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=20)


class ConnectionCounter:
    """The most connections the line's processes held on its database at once (sampled)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.peak = 0
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        admin = postgres_admin_url().replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            while not self.stop.wait(0.1):
                row = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.database,)
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)

    def __enter__(self) -> ConnectionCounter:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=5)


@contextmanager
def line_on_slow_database(started: Processes, pools: str, redis_url: str, twilio_url: str,
                          sampler: MemorySampler) -> Iterator[tuple[str, str, StallingProxy]]:  # fmt: skip
    """A fresh database, the line's web, worker and clock reaching it through a latency proxy;
    yields the line's URL, the database's name and the proxy (no latency yet)."""
    with fresh_database("crisisline_slowdb") as database_url:
        where = urlsplit(database_url)
        with StallingProxy(where.hostname or "127.0.0.1", where.port or 5432) as proxy:
            port = free_port()
            proxied = database_url.replace(f"{where.hostname}:{where.port}", f"127.0.0.1:{proxy.port}")
            extra = {"CONSOLE_PASSWORD": SUPERVISOR_PASSWORD, "VOICE_DEADLINE_SECONDS": "2"}
            if pools != "shipped":
                size, _, overflow = pools.partition("+")
                extra.update(DATABASE_POOL_SIZE=size, DATABASE_MAX_OVERFLOW=overflow)
            env = deployment_env(proxied, redis_url, twilio_url, port, **extra)
            env.pop("WEB_THREADS")  # gunicorn.conf.py's own thread count, as shipped
            flask(env, "db", "upgrade")
            publish_routing_on_call_around_the_clock(env, started.scratch)
            for n in range(4):
                flask(env, "users", "add", f"supervisor{n}", "--role", "supervisor")
            web = started.start(f"web-{pools}", procfile_command("web"), env)
            wait_for_http(f"http://127.0.0.1:{port}/healthz", web)
            sampler.track(f"web-{pools}", web.popen.pid)
            others = [started.start(f"{role}-{pools}", procfile_command(role), env) for role in ("worker", "clock")]
            try:
                yield f"http://127.0.0.1:{port}", urlsplit(database_url).path.lstrip("/"), proxy
            finally:
                proxy.resume()
                for process in [*others, web]:
                    started.stop(process)


def measure(args: argparse.Namespace, pools: str, started: Processes, redis_url: str, twilio_url: str,
            sampler: MemorySampler) -> dict[str, Any]:  # fmt: skip
    with line_on_slow_database(started, pools, redis_url, twilio_url, sampler) as (url, database, proxy):
        connections = [load.Connection(url, url) for _ in range(args.connections)]
        load.run_phase("warm-up", load.surge(args.connections, texters=False), connections, 60.0, sampler, "web")
        boards = [signed_in_supervisor(url, f"supervisor{n}") for n in range(args.boards)]
        proxy.slow(args.latency)
        with ConnectionCounter(database) as counter, BoardPollers(boards, url, args.poll_every) as pollers:
            surge = load.run_phase("surge", load.surge(args.people), connections, 120.0, sampler, "web")
        proxy.resume()
        for connection in connections:
            connection.close()
        log = (started.scratch / f"web-{pools}.log").read_text(errors="replace")
    kinds = sorted({sample.kind for sample in surge.samples})
    report: dict[str, Any] = {"pools": pools, "kinds": {}}
    for kind in kinds:
        summary = load.summarise(surge, kind)
        mine = [s for s in surge.samples if s.kind == kind]
        summary["failsafe"] = sum(1 for s in mine if s.error == "fail-safe (backup line)")
        report["kinds"][kind] = {key: summary[key] for key in
                                 ("requests", "p50_ms", "p99_ms", "errors", "error_kinds", "failsafe")}  # fmt: skip
    board = sorted(pollers.seconds)
    report["boards"] = {"polls": len(board), "failures": pollers.failures,
                        "p50_ms": round(load.percentile(board, 0.5) * 1000, 1),
                        "p99_ms": round(load.percentile(board, 0.99) * 1000, 1)}  # fmt: skip
    report["web_log"] = {
        "pool_timeouts": log.count("TimeoutError at"),  # sqlalchemy.exc.TimeoutError: no pooled connection in time
        "deadlines_passed": log.count("deadline passed at"),
        "failures": len(re.findall(r": \w+ at /", log)),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"slow-database-web-{pools}.log").write_text(log[-20000:])
    report["peak_database_connections"] = counter.peak
    report["surge_seconds"] = round(surge.wall_seconds, 1)
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"latency_each_way_s": args.latency, "people": args.people, "connections": args.connections,
                     "boards": args.boards, "poll_every_s": args.poll_every,
                     "web": "python -OO -m gunicorn, gunicorn.conf.py as shipped (2 x 32)"},
        "runs": [],
    }  # fmt: skip
    sampler = MemorySampler().start()
    with processes() as started, redis_for_bench(started.scratch) as redis_url:
        twilio_url = start_fake_twilio(started)
        load.FAKE_TWILIO["url"] = twilio_url
        for pools in args.pools.split(","):
            report["runs"].append(measure(args, pools, started, redis_url, twilio_url, sampler))
            print(json.dumps(report["runs"][-1]), flush=True)
    sampler.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added each way per packet")
    parser.add_argument("--people", type=int, default=160)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--boards", type=int, default=4)
    parser.add_argument("--poll-every", type=float, default=5.0)
    parser.add_argument("--pools", default="shipped,5+10")
    parser.add_argument("--output", type=Path, default=RESULTS / "slow-database-latest.json")
    args = parser.parse_args(argv)
    report = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
