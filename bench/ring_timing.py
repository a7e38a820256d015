"""Time to first ring and to next ring, idle and under load, and the ring delay Twilio's
calls-per-second (CPS) queue adds in a surge.

The line as the Procfile runs it (gunicorn web, worker, clock) on a fresh PostgreSQL database and
Redis, beside the fake Twilio REST API in its own process. Measured from the fake's own records
(``created_at``: the moment a ``calls.create`` request reached it; ``dialled_at``: when its CPS
slot comes), on the same machine's clock as the load generator:

* first ring: the caller's need answer leaves the load generator -> the responder's call request
  reaches the REST API (the line's own latency);
* next ring: the fake sends the first leg's ``no-answer`` status callback -> the next
  responder's call request reaches the REST API;
* each idle (one caller at a time) and under load (``bench.load``'s call and text mix on N
  connections, other callers and responders, at the same time). A few counselors who take only
  "mental health" are rung for the measured callers; the load's callers choose other needs,
  so nothing measured waits behind them in the queue. CPS unlimited in these two phases;
* surge (after the idle phase, on a line with nobody else waiting): ``--surge-callers`` (20)
  callers choose their need at once, parallel ringing of 3, 60 free counselors of their own,
  at Twilio's default 1 CPS and at ``--raised-cps`` (20): need answer -> the first of the
  caller's phones actually ringing (its CPS slot), and the ``queue_time`` the line recorded;
* surge after the busy spell (last): the load's texters still waiting, a fresh shift of 60
  counselors comes on (a new routing) as the same surge arrives, at ``--raised-cps``.

    .venv/bin/python -m bench.ring_timing [--callers 30] [--connections 16] [--quick] [--output PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml
from sqlalchemy import create_engine, text

from bench import load
from bench.common import (
    RESULTS,
    MemorySampler,
    deployment_env,
    flask,
    fresh_database,
    machine,
    processes,
    procfile_command,
    redis_for_bench,
    start_fake_twilio,
    wait_for_http,
)
from crisisline.redis_server import free_port
from crisisline.settings import DEFAULT_ROUTING_FILE
from twilio_fake.signing import gather_digits_params

WHOLE_DAY = [{"days": "daily", "start": "00:00", "end": "12:00"}, {"days": "daily", "start": "12:00", "end": "24:00"}]
MEASURED_NEED_KEY = "3"  # mental_health: only the measured counselors take it
BACKGROUND_NEED_KEYS = ("2", "4", "5", "6")
MEASURED = [(f"bench-mh-{i}", f"+1312555018{i}") for i in range(1, 5)]
SURGE_NEED_KEY = "6"  # something_else
SKILLS = ["suicide", "mental_health", "substance_use", "domestic_violence", "something_else"]


def counselor(responder_id: str, phone: str, skills: list[str]) -> dict[str, Any]:
    return {"id": responder_id, "name": responder_id.replace("-", " ").title(), "phone": phone,
            "languages": ["en", "es"], "skills": skills, "shifts": WHOLE_DAY}  # fmt: skip


def measured_routing() -> dict[str, Any]:
    """The example routing, on call around the clock; the example counselors take every need but
    mental health, which only the measured counselors take (sequential ringing)."""
    document: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text())
    for responder in [*document["counselors"], *document.get("co_responder_units", [])]:
        responder.pop("overrides", None)
        responder["shifts"] = WHOLE_DAY
        if "skills" in responder:
            responder["skills"] = [s for s in responder["skills"] if s != "mental_health"]
    document["counselors"] += [counselor(rid, phone, ["mental_health"]) for rid, phone in MEASURED]
    document["transfer"].update(strategy="sequential", pause_after_missed=20)
    return document


def surge_routing(base: dict[str, Any], run: int, people: int) -> dict[str, Any]:
    """Only ``people`` fresh counselors on call (a new set per run), ringing 3 at once."""
    document = copy.deepcopy(base)
    for responder in document["counselors"]:
        responder["shifts"] = []
    document["counselors"] += [
        counselor(f"bench-surge-{run}-{i}", f"+1312555{2000 + 100 * run + i}", SKILLS) for i in range(people)
    ]
    document["transfer"].update(strategy="parallel", parallel_max=3, pause_after_missed=20)
    return document


def publish(env: dict[str, str], scratch: Path, document: dict[str, Any], name: str, base: int = 0) -> None:
    """Publish ``document``; ``base``: the live version it replaces (0: the first)."""
    path = scratch / f"routing.{name}.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    edited_from = ["--base", str(base)] if base else []
    flask(env, "routing", "load", str(path), "--note", f"bench {name}", "--by", "bench", *edited_from)


class Fake:
    """The fake Twilio's control endpoints (unauthenticated, local)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def calls(self) -> list[dict[str, Any]]:
        return list(self.session.get(f"{self.url}/_fake/calls", timeout=10).json()["calls"])

    def advance(self, sid: str, status: str) -> None:
        self.session.post(f"{self.url}/_fake/calls/{sid}/advance", data={"status": status}, timeout=30)

    def set_cps(self, cps: float | None) -> None:
        self.session.post(f"{self.url}/_fake/cps", data={"calls_per_second": "" if cps is None else str(cps)},
                          timeout=10)  # fmt: skip

    def slow_calls(self, seconds: float) -> None:
        """Every ``calls.create`` takes ``seconds`` before it is answered (a slow Twilio API)."""
        reply = self.session.post(
            f"{self.url}/_fake/faults",
            timeout=10,
            data={
                "method": "POST",
                "path_regex": r"/Calls\.json$",
                "status": "200",
                "delay": str(seconds),
                "times": "",
            },
        )
        reply.raise_for_status()

    def clear_faults(self) -> None:
        self.session.post(f"{self.url}/_fake/faults/clear", timeout=10)

    def new_leg(self, numbers: set[str], seen: set[str], seconds: float = 10.0) -> dict[str, Any] | None:
        """The first leg to one of ``numbers`` not in ``seen``, polled until it exists."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for leg in self.calls():
                if leg["to"] in numbers and leg["sid"] not in seen and leg["direction"] == "outbound-api":
                    seen.add(leg["sid"])
                    return leg
            time.sleep(0.01)
        return None

    def wait_until_quiet(self, numbers: set[str], seconds: float = 10.0) -> bool:
        """Every leg to ``numbers`` has ended (their counselors are free again)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            live = [c for c in self.calls() if c["to"] in numbers and c["status"] in ("queued", "initiated", "ringing")]
            if not live:
                return True
            time.sleep(0.05)
        return False


def fresh_measured_counselors(database_url: str) -> None:
    """Before each measured phase: the measured counselors have missed nothing in a row.

    Every round ends its first leg with a no-answer, and the rotation gives every miss to two of
    the four; over the warm-up, idle and loaded phases (63 rounds) they would reach the
    routing's ``pause_after_missed`` (at most 20) and be paused, as the line should pause
    them, leaving a round with nobody to ring next."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE responder_states SET missed_in_a_row = 0, paused = false, paused_reason = NULL "
                     "WHERE responder_id LIKE 'bench-mh-%'")
            )  # fmt: skip
    finally:
        engine.dispose()


def to_menus(connection: load.Connection, caller: load.Caller) -> str | None:
    """The call comes in and chooses English: the path of the need menu's answer."""
    path = "/voice/incoming"
    reply = connection.post(path, caller.identity.voice_params("ringing"))
    path = load.next_path(path, reply.body)
    reply = connection.post(path, gather_digits_params(caller.identity, "1"))
    return load.next_path(path, reply.body) or None


def hang_up(connection: load.Connection, caller: load.Caller) -> None:
    connection.post("/voice/status", caller.identity.voice_params("completed", CallDuration="30", SequenceNumber="3"))


def measure_rings(connection: load.Connection, fake: Fake, callers: int) -> dict[str, list[float]]:
    """One measured caller at a time: first ring, then a no-answer and the next ring (ms)."""
    numbers = {phone for _, phone in MEASURED}
    seen: set[str] = {c["sid"] for c in fake.calls()}
    found: dict[str, list[float]] = {"first_ring_ms": [], "next_ring_ms": [], "need_answer_reply_ms": []}
    misses = 0
    for index in range(callers):
        caller = load.new_caller(index)
        need_path = to_menus(connection, caller)
        if need_path is None:
            misses += 1
            continue
        sent = time.time()
        connection.post(need_path, gather_digits_params(caller.identity, MEASURED_NEED_KEY))
        found["need_answer_reply_ms"].append((time.time() - sent) * 1000)
        first = fake.new_leg(numbers, seen)
        if first is None:
            misses += 1
            hang_up(connection, caller)
            continue
        found["first_ring_ms"].append((first["created_at"] - sent) * 1000)
        fake.advance(first["sid"], "ringing")
        rang_out = time.time()  # the no-answer status callback leaves the fake right after this
        fake.advance(first["sid"], "no-answer")
        second = fake.new_leg(numbers, seen)
        if second is not None:
            found["next_ring_ms"].append((second["created_at"] - rang_out) * 1000)
        else:
            misses += 1
        hang_up(connection, caller)
        fake.wait_until_quiet(numbers)
    found["no_ring_found"] = [float(misses)] * misses  # counted by summary()'s n
    return found


def until(stop: threading.Event, tasks: Iterator[load.Task]) -> Iterator[load.Task]:
    for task in tasks:
        if stop.is_set():
            return
        yield task


def surge_rings(line_url: str, fake: Fake, database_url: str, people: int) -> dict[str, Any]:
    """``people`` callers choose their need at the same moment; each is rung in parallel (3)."""
    before = {c["sid"] for c in fake.calls()}
    engine = create_engine(database_url)
    with engine.connect() as db:
        last_event = db.scalar(text("SELECT COALESCE(MAX(id), 0) FROM call_events")) or 0
    callers = [load.new_caller(i) for i in range(people)]
    connections = [load.Connection(line_url, line_url) for _ in callers]
    paths = [to_menus(c, caller) for c, caller in zip(connections, callers, strict=True)]
    sent: dict[str, float] = {}
    barrier = threading.Barrier(people, timeout=120)

    def answer(connection: load.Connection, caller: load.Caller, path: str | None) -> None:
        barrier.wait()
        if path is not None:
            sent[caller.identity.call_sid] = time.time()
            try:
                connection.post(path, gather_digits_params(caller.identity, SURGE_NEED_KEY))
            except OSError:
                sent.pop(caller.identity.call_sid, None)  # the line is gone: not a caller we can time

    threads = [threading.Thread(target=answer, args=args) for args in zip(connections, callers, paths, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = 3 * len(sent)
    deadline = time.monotonic() + expected + 30  # at 1 CPS the last slot is ~expected s away
    legs: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        legs = {c["sid"]: c for c in fake.calls() if c["sid"] not in before and c["direction"] == "outbound-api"}
        if len(legs) >= expected:
            break
        time.sleep(0.2)
    with engine.connect() as db:
        rows = db.execute(text("SELECT t.caller_call_sid, o.call_sid FROM offers o JOIN transfers t "
                               "ON t.id = o.transfer_id WHERE o.call_sid IS NOT NULL")).all()  # fmt: skip
        recorded = db.execute(text("SELECT detail FROM call_events WHERE kind = 'offer.queued' AND id > :last"),
                              {"last": last_event}).all()  # fmt: skip
    engine.dispose()
    first_ring, first_request, per_caller = [], [], []
    for caller_sid, started in sent.items():
        mine = [legs[sid] for caller, sid in rows if caller == caller_sid and sid in legs]
        if not mine:
            continue
        per_caller.append(len(mine))
        first_ring.append((min(leg["dialled_at"] for leg in mine) - started) * 1000)
        first_request.append((min(leg["created_at"] for leg in mine) - started) * 1000)
    # Twilio places REST-created calls in the order they came: how many callers had a phone
    # among the first ``callers`` legs placed (all of them when first legs go first).
    caller_of = {sid: caller for caller, sid in rows}
    placed = sorted(legs.values(), key=lambda leg: leg["created_at"])[: len(sent)]
    first_legs_first = len({caller_of.get(leg["sid"]) for leg in placed} & set(sent))
    queue_times = [int(leg["queue_time"]) for leg in legs.values()]
    recorded_ms = [_detail(row[0]).get("queue_time_ms", 0) for row in recorded]
    for connection, caller in zip(connections, callers, strict=True):
        hang_up(connection, caller)
        connection.close()
    return {
        "callers": len(sent),
        "legs_placed": len(legs),
        "legs_per_caller": sorted(per_caller),
        "callers_rung_in_the_first_legs": first_legs_first,
        "first_ring_ms": summary(first_ring),
        "first_request_ms": summary(first_request),
        "queue_time_ms": summary([float(q) for q in queue_times]),
        "offer_queued_events": len(recorded_ms),
        "offer_queued_max_ms": max(recorded_ms, default=0),
    }


def _detail(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value or "{}")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(load.percentile(ordered, 0.50), 1),
        "p99": round(load.percentile(ordered, 0.99), 1),
        "max": round(ordered[-1], 1) if ordered else 0.0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"callers": args.callers, "connections": args.connections, "surge_callers": args.surge_callers,
                     "raised_cps": args.raised_cps, "web": "python -OO -m gunicorn, gunicorn.conf.py, 2 x 4"},
        "note": "2-core machine shared with other engineers' work: compare within one run only.",
    }  # fmt: skip
    sampler = MemorySampler().start()
    with processes() as started, fresh_database("crisisline_bench_ring") as database_url:
        scratch = started.scratch
        with redis_for_bench(scratch) as redis_url:
            twilio_url = start_fake_twilio(started)
            load.FAKE_TWILIO["url"] = twilio_url
            fake = Fake(twilio_url)
            port = free_port()
            env = deployment_env(database_url, redis_url, twilio_url, port)
            flask(env, "db", "upgrade")
            base = measured_routing()
            publish(env, scratch, base, "measured")
            web = started.start("web", procfile_command("web"), env)
            wait_for_http(f"http://127.0.0.1:{port}/healthz", web)
            sampler.track("web", web.popen.pid)
            for role in ("worker", "clock"):
                sampler.track(role, started.start(role, procfile_command(role), env).popen.pid)
            line_url = f"http://127.0.0.1:{port}"
            line = [load.Connection(line_url, line_url) for _ in range(args.connections)]
            load.run_phase("warm-up", load.surge(2 * args.connections, texters=False, need_keys=BACKGROUND_NEED_KEYS),
                           line, 60.0, sampler, "web")  # fmt: skip
            probe = load.Connection(line_url, line_url)
            measure_rings(probe, fake, 3)  # warms the measured path; not counted
            print("  idle…", flush=True)
            fresh_measured_counselors(database_url)
            report["idle"] = {k: summary(v) for k, v in measure_rings(probe, fake, args.callers).items()}
            print(f"  {report['idle']}", flush=True)

            # The surges run on a quiet line (nobody else waiting), each with counselors of its own.
            report["surge"] = {}
            for run_index, cps in enumerate((1.0, args.raised_cps), 1):
                document = surge_routing(base, run_index, 3 * args.surge_callers)
                publish(env, scratch, document, f"surge-{run_index}", base=run_index)
                fake.set_cps(cps)
                time.sleep(1.0)  # the clock and workers see the new routing
                print(f"  surge at {cps:g} CPS…", flush=True)
                waiting = load.waiting_counts(database_url)
                found = surge_rings(line_url, fake, database_url, args.surge_callers)
                report["surge"][f"{cps:g}_cps"] = {**found, "queue_before": waiting}
                print(f"  {report['surge'][f'{cps:g}_cps']}", flush=True)
                fake.set_cps(None)
                time.sleep(2.0)
            # A slow Twilio API (every call request answered after ``--slow-api-seconds``): the
            # same surge at the raised CPS, so the rate does not hide how the line's requests queue.
            document = surge_routing(base, 3, 3 * args.surge_callers)
            publish(env, scratch, document, "surge-slow-api", base=3)
            fake.set_cps(args.raised_cps)
            fake.slow_calls(args.slow_api_seconds)
            try:
                time.sleep(1.0)
                print(f"  surge with a slow API ({args.slow_api_seconds:g} s a call request)…", flush=True)
                found = surge_rings(line_url, fake, database_url, args.surge_callers)
            finally:
                fake.clear_faults()
            report["surge_slow_api"] = {**found, "cps": args.raised_cps, "api_seconds": args.slow_api_seconds}
            print(f"  {report['surge_slow_api']}", flush=True)
            fake.set_cps(None)
            time.sleep(2.0)
            publish(env, scratch, base, "measured-again", base=4)
            if args.surges_only:
                sampler.stop()
                return report

            stop = threading.Event()
            background: dict[str, load.PhaseResult] = {}

            def loaded() -> None:
                tasks = until(stop, load.surge(10**9, need_keys=BACKGROUND_NEED_KEYS))
                background["result"] = load.run_phase("under-load", tasks, line, 3600.0, sampler, "web")

            thread = threading.Thread(target=loaded, daemon=True)
            thread.start()
            time.sleep(2.0)  # the load's queue builds up first
            print("  under load…", flush=True)
            fresh_measured_counselors(database_url)
            report["under_load"] = {k: summary(v) for k, v in measure_rings(probe, fake, args.callers).items()}
            print(f"  {report['under_load']}", flush=True)
            stop.set()
            thread.join(timeout=120)
            result = background["result"]
            report["under_load"]["background"] = {
                kind: {key: row[key] for key in ("requests", "req_per_s", "p50_ms", "p99_ms", "errors")}
                for kind in sorted({s.kind for s in result.samples})
                for row in [load.summarise(result, kind)]
            }
            report["rss_mib_after_load"] = {k: round(v, 1) for k, v in sampler.sample().items()}

            # A crisis after a busy spell: the load's texters still wait when a fresh shift of
            # counselors comes on (a new routing) and a surge of callers choose their need at once.
            document = surge_routing(base, 4, 3 * args.surge_callers)
            publish(env, scratch, document, "surge-after-load", base=5)
            fake.set_cps(args.raised_cps)
            time.sleep(1.0)
            print(f"  surge after the busy spell at {args.raised_cps:g} CPS…", flush=True)
            waiting = load.waiting_counts(database_url)
            found = surge_rings(line_url, fake, database_url, args.surge_callers)
            report["surge_after_load"] = {**found, "queue_before": waiting, "cps": args.raised_cps}
            print(f"  {report['surge_after_load']}", flush=True)
            fake.set_cps(None)
            for connection in [*line, probe]:
                connection.close()

            sampler.stop()
    return report


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Ring timing, {report['started_at']}",
        "",
        f"Machine: {m['nproc']} CPU ({m['cpu_model']}), {m['ram_gib']} GiB RAM, Python {m['python']}, load average "
        f"at start {m['load_average_at_start']}. {report['note']}",
    ]
    if "under_load" in report:  # not with --surges-only
        lines += ["", "| ms | idle p50 / p99 / max | under load p50 / p99 / max |", "|---|---|---|"]
        labels = {
            "first_ring_ms": "need answer -> first responder's call request",
            "next_ring_ms": "no-answer callback -> next responder's call request",
            "need_answer_reply_ms": "need answer's own reply",
        }
        for key, label in labels.items():
            idle, busy = report["idle"][key], report["under_load"][key]
            lines.append(f"| {label} (n={idle['n']}/{busy['n']}) | {idle['p50']} / {idle['p99']} / {idle['max']} | "
                         f"{busy['p50']} / {busy['p99']} / {busy['max']} |")  # fmt: skip
        lines += ["", "Background load while measuring (bench.load's call and text mix):", ""]
        lines += ["| kind | requests | req/s | p50 / p99 ms | errors |", "|---|---:|---:|---|---:|"]
        for kind, row in report["under_load"].get("background", {}).items():
            lines.append(f"| {kind} | {row['requests']} | {row['req_per_s']} | {row['p50_ms']} / {row['p99_ms']} | "
                         f"{row['errors']} |")  # fmt: skip
    lines += ["", f"Surge: {report['settings']['surge_callers']} callers choose their need at once, parallel "
              "ringing of 3, 60 free counselors.", "",
              "| CPS | legs | need answer -> first phone rings p50 / p99 / max ms | -> first call request p50 / p99 "
              "| queue_time p50 / max ms | offer.queued events (max ms) |",
              "|---:|---:|---|---|---|---|"]  # fmt: skip
    surges = [(cps.removesuffix("_cps"), row) for cps, row in report["surge"].items()]
    if "surge_slow_api" in report:
        row = report["surge_slow_api"]
        surges.append((f"{row['cps']:g}, every call request {row['api_seconds']:g} s (slow API)", row))
    if "surge_after_load" in report:
        surges.append((f"{report['surge_after_load']['cps']:g}, after the busy spell", report["surge_after_load"]))
    for label, row in surges:
        ring, request, queue = row["first_ring_ms"], row["first_request_ms"], row["queue_time_ms"]
        lines.append(f"| {label} | {row['legs_placed']} | {ring['p50']} / {ring['p99']} / "
                     f"{ring['max']} | {request['p50']} / {request['p99']} | {queue['p50']} / {queue['max']} | "
                     f"{row['offer_queued_events']} ({row['offer_queued_max_ms']}) |")  # fmt: skip
    if "surge_after_load" in report:
        row = report["surge_after_load"]
        waiting = {k: v for k, v in row["queue_before"].items() if k in ("transfers_waiting", "conversations_queued")}
        lines += ["", f"After the busy spell: a fresh shift of {3 * report['settings']['surge_callers']} counselors "
                  f"comes on while {waiting} still wait; legs per caller {row['legs_per_caller']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=30, help="measured callers, idle and under load")
    parser.add_argument("--connections", type=int, default=16, help="connections of the background load")
    parser.add_argument("--surge-callers", type=int, default=20)
    parser.add_argument("--raised-cps", type=float, default=20.0)
    parser.add_argument(
        "--slow-api-seconds", type=float, default=1.0, help="how long each call request takes in the slow-API surge"
    )
    parser.add_argument("--surges-only", action="store_true", help="the idle phase and the surges, no load phases")
    parser.add_argument("--quick", action="store_true", help="10 measured callers, a surge of 6")
    parser.add_argument("--output", type=Path, default=None, help="write <output>.json and .md")
    args = parser.parse_args(argv)
    if args.quick:
        args.callers, args.surge_callers = 10, 6
    report = run(args)
    text_report = markdown(report)
    print(text_report)
    if args.output is not None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(text_report)
        print(f"written: {args.output.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
