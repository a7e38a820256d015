"""SQL statements per webhook: what each request asks of the database, by verb and table.

Counts every statement the app sends (SQLAlchemy's ``before_cursor_execute``) while one caller
goes through the menus, three hold turns and hangs up, and while one new texter writes a first
text and answers the need menu with few and with many conversations already waiting. Runs the
app in-process (Flask's test client, signed requests) on a fresh PostgreSQL database, with the
fake Twilio REST API on a local port. Counts do not depend on machine load, unlike timings.

    .venv/bin/python -m bench.queries [--waiting 10,200] [--show need_answer]

``--show`` also prints each statement of the requests whose name starts with it, in order: the
way to see which reads repeat (a row read again after a commit expired it, say).
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from bench.common import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    LINE_NUMBER,
    deployment_env,
    flask,
    fresh_database,
    publish_routing_on_call_around_the_clock,
    redis_for_bench,
)
from crisisline import create_app
from crisisline.db import db
from crisisline.redis_server import free_port
from crisisline.settings import Settings
from twilio_fake.server import FakeTwilioServer
from twilio_fake.signing import CallIdentity, gather_digits_params, signed_headers, sms_params

TABLE = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE)\b.*?\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", re.I | re.S)
UPDATE_TABLE = re.compile(r"^\s*UPDATE\s+\"?(\w+)", re.I)


class StatementLog:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.checkouts = 0
        self.pings = 0

    def record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def record_checkout(self, *_args: Any) -> None:
        """A connection taken from the pool: with ``pool_pre_ping`` each costs a round trip."""
        self.checkouts += 1

    def counting_pings(self, do_ping: Any) -> Any:
        """``dialect.do_ping``, counted: the round trips a request spends checking connections."""

        def ping(dbapi_connection: Any) -> Any:
            self.pings += 1
            return do_ping(dbapi_connection)

        return ping

    @contextmanager
    def capture(self) -> Iterator[Captured]:
        captured = Captured()
        start, checkouts, pings = len(self.statements), self.checkouts, self.pings
        yield captured
        captured.extend(self.statements[start:])
        captured.checkouts, captured.pings = self.checkouts - checkouts, self.pings - pings


class Captured(list[str]):
    """The statements of one request, how many times it took a connection from the pool, and
    how many of those it pinged first."""

    checkouts = 0
    pings = 0


def summarise(statements: list[str]) -> dict[str, Any]:
    verbs: Counter[str] = Counter()
    updates: Counter[str] = Counter()
    for statement in statements:
        head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        verbs[head] += 1
        if head == "UPDATE":
            match = UPDATE_TABLE.match(statement)
            updates[match.group(1) if match else "?"] += 1
    return {
        "total": len(statements),
        "checkouts": getattr(statements, "checkouts", 0),
        "pings": getattr(statements, "pings", 0),
        "by_verb": dict(verbs),
        "updates_by_table": dict(updates),
        "statements": [" ".join(statement.split()) for statement in statements],
    }


def post(client: FlaskClient, public: str, path: str, params: dict[str, str], *, voice: bool = True) -> str:
    headers = signed_headers(AUTH_TOKEN, public + path, params, voice=voice)
    reply = client.post(path, data=params, headers=headers)
    assert reply.status_code in (200, 204), (path, reply.status_code)
    # The work it started off its request path (ringing, a freed responder's pass) counts as its own.
    client.application.extensions["crisisline.background"].wait_idle(timeout=30)
    return reply.get_data(as_text=True)


def next_path(body: str) -> str:
    redirect = re.search(r"<Redirect[^>]*>([^<]+)</Redirect>", body)
    gather = re.search(r"<Gather[^>]*\baction=\"([^\"]+)\"", body)
    found = redirect.group(1) if redirect else gather.group(1) if gather else ""
    return found.replace("&amp;", "&").strip()


def one_call(client: FlaskClient, public: str, log: StatementLog) -> dict[str, Any]:
    identity = CallIdentity(ACCOUNT_SID, f"+1312{random.randint(2000000, 9999999)}", LINE_NUMBER)  # noqa: S311
    rows: dict[str, Any] = {}
    with log.capture() as captured:
        body = post(client, public, "/voice/incoming", identity.voice_params("ringing"))
    rows["voice_incoming"] = summarise(captured)
    for kind, digits in (("language_answer", "1"), ("need_answer", "2")):
        path = next_path(body)
        with log.capture() as captured:
            body = post(client, public, path, gather_digits_params(identity, digits))
        rows[kind] = summarise(captured)
    for turn in (1, 2, 3):
        path = next_path(body)
        with log.capture() as captured:
            body = post(client, public, path, identity.voice_params("in-progress"))
        rows[f"hold_turn_{turn}"] = summarise(captured)
    with log.capture() as captured:
        post(client, public, "/voice/status", identity.voice_params("completed", CallDuration="60", SequenceNumber="3"))
    rows["status_callback"] = summarise(captured)
    return rows


def one_texter(client: FlaskClient, public: str, log: StatementLog) -> dict[str, Any]:
    number = f"+1773{random.randint(2000000, 9999999)}"  # noqa: S311
    rows: dict[str, Any] = {}
    for kind, body in (("first_text", "I am not doing well tonight and need to talk"), ("need_answer_text", "3")):
        with log.capture() as captured:
            post(client, public, "/sms/incoming", sms_params(ACCOUNT_SID, number, LINE_NUMBER, body), voice=False)
        rows[kind] = summarise(captured)
    return rows


def run(waiting_levels: list[int]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch_name, fresh_database("crisisline_bench_queries") as database_url:
        scratch = Path(scratch_name)
        with (
            redis_for_bench(scratch) as redis_url,
            FakeTwilioServer(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as twilio,
        ):
            port = free_port()
            env = deployment_env(database_url, redis_url, twilio.base_url, port)
            flask(env, "db", "upgrade")
            publish_routing_on_call_around_the_clock(env, scratch)
            app: Flask = create_app(Settings.from_env({k: v for k, v in env.items() if k.isupper()}))
            public = f"http://127.0.0.1:{port}"
            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fake's access log
            log = StatementLog()
            with app.app_context():
                event.listen(db.engine, "before_cursor_execute", log.record)
                event.listen(db.engine, "checkout", log.record_checkout)
                db.engine.dialect.do_ping = log.counting_pings(db.engine.dialect.do_ping)  # type: ignore[method-assign]
            client = app.test_client()
            one_call(client, public, log)  # warm-up: caches, first-use imports
            report["call"] = one_call(client, public, log)
            report["texts"] = {}
            texters = 0
            for level in waiting_levels:
                while texters < level:
                    one_texter(client, public, log)
                    texters += 1
                report["texts"][f"{level}_waiting"] = one_texter(client, public, log)
                texters += 1
            app.extensions["crisisline.deadline"].pool.shutdown(wait=True)
            background = app.extensions.get("crisisline.background")  # ringing started by webhooks
            if background is not None:
                background.shutdown()
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", default="10,200", help="texters already waiting, comma-separated")
    parser.add_argument("--show", default="", help="also print the statements of this request (e.g. need_answer)")
    args = parser.parse_args(argv)
    random.seed(7)
    report = run([int(level) for level in args.waiting.split(",")])
    print("| request | statements | SELECT | INSERT | UPDATE | UPDATEs by table | pool checkouts | pings |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    rows = [*report["call"].items()]
    for level, texts in report["texts"].items():
        rows += [(f"{kind} ({level.replace('_', ' ')})", row) for kind, row in texts.items()]
    for name, row in rows:
        verbs = row["by_verb"]
        print(
            f"| {name} | {row['total']} | {verbs.get('SELECT', 0)} | {verbs.get('INSERT', 0)} | "
            f"{verbs.get('UPDATE', 0)} | {row['updates_by_table']} | {row['checkouts']} | {row['pings']} |"
        )
    for name, row in rows:
        if args.show and name.startswith(args.show):
            print(f"\n{name}:")
            print("\n".join(f"{n:3} {statement[:240]}" for n, statement in enumerate(row["statements"], 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
