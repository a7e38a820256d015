"""How fast voice webhooks answer, healthy and with the database dead.

Twilio waits at most 15 s for TwiML; our target is p99 ≤ 500 ms healthy and ≤ 2 s with the
database down (reliability anchors V1/V2). Runs the real app over real HTTP (werkzeug, threaded)
on loopback, with signed webhooks, and prints percentiles.

    .venv/bin/python -m bench.failsafe_latency [--requests 300]
"""

from __future__ import annotations

import argparse
import base64
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask_migrate import upgrade
from werkzeug.serving import make_server

from crisisline import create_app
from crisisline.redis_server import free_port, start_redis
from crisisline.settings import DEFAULT_ROUTING_FILE, Settings
from routing import store
from twilio_fake.phone import Keys, Phone, RequestsTransport
from twilio_fake.server import FakeTwilioServer

ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "e" * 32


def settings(database_url: str, redis_url: str, twilio_url: str, port: int) -> Settings:
    return Settings.from_env({
        "TWILIO_API_BASE_URL": twilio_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CRISISLINE_ENV": "test",
        "SECRET_KEY": "bench-secret-key-long-enough-0123456789",
        "DATA_ENCRYPTION_KEY": base64.urlsafe_b64encode(b"b" * 32).decode(),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "BACKUP_NUMBER": "+18005550199",
        "LOG_LEVEL": "ERROR",
    })  # fmt: skip


@contextmanager
def serve(database_url: str, redis_url: str, twilio_url: str, *, migrate: bool) -> Iterator[str]:
    port = free_port()
    app = create_app(settings(database_url, redis_url, twilio_url, port))
    if migrate:
        with app.app_context():
            upgrade()
            store.publish(DEFAULT_ROUTING_FILE.read_text(), published_by="bench")
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def measure(base_url: str, calls: int) -> list[float]:
    """Per-request latency (seconds) of calls: incoming, two menus, the first hold turn (which
    rings a responder over the fake REST API), with the database healthy or dead."""
    phone = Phone(RequestsTransport(), base_url, AUTH_TOKEN, ACCOUNT_SID)
    latencies: list[float] = []
    original = phone.post

    def timed(url: str, params: dict[str, str]):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        reply = original(url, params)
        latencies.append(time.perf_counter() - started)
        return reply

    phone.post = timed  # type: ignore[method-assign]
    for _ in range(calls):
        phone.call([Keys("1"), Keys("3")], dial_outcomes=["completed"], max_hold_turns=0)
    return latencies


def report(name: str, latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    print(
        f"{name:<28} n={len(ordered):<5} p50={p(0.50):7.1f} ms  p99={p(0.99):7.1f} ms  "
        f"max={ordered[-1] * 1000:7.1f} ms  mean={statistics.fmean(ordered) * 1000:6.1f} ms"
    )


def main() -> None:
    # The fail-safe logs every failure by design; here that is noise around the numbers.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("crisisline.failsafe").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        redis = start_redis(Path(scratch) / "redis", persist=False)
        twilio = FakeTwilioServer(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN).start()
        dead_db = "postgresql+psycopg://postgres@127.0.0.1:1/dead"
        try:
            with serve(f"sqlite:///{scratch}/bench.db", redis.url, twilio.base_url, migrate=True) as url:
                report("healthy (SQLite)", measure(url, args.calls))
            with serve(dead_db, redis.url, twilio.base_url, migrate=False) as url:
                report("database refused (fail-safe)", measure(url, args.calls))
            with serve(dead_db, "redis://127.0.0.1:1/0", twilio.base_url, migrate=False) as url:
                report("database+redis down", measure(url, args.calls))
        finally:
            twilio.stop()
            redis.stop()


if __name__ == "__main__":
    main()
