"""Scale-out: the same load against 2 web processes + 2 workers and against 1 + 1, on one
PostgreSQL and one Redis, with the correctness checks on.

Each topology gets a fresh database, Redis and fake Twilio. "Web process" is one gunicorn
(``gunicorn.conf.py``, ``WEB_CONCURRENCY=1`` x 4 threads) on its own port, as a second machine
would run it; the load generator spreads its connections over them as a load balancer would.
"Worker" is one Procfile ``worker`` process; one ``clock`` in both. The load is ``bench.load``'s
call and text mix (menus, need answer, up to 8 hold turns 0.5 s apart, hang-up; first texts and
need answers),
callers also known to the fake (so the line can redirect them), with parallel ringing of 3 and
answering phones racing to accept whatever rings (``twilio_fake.phone``: answer, press 1, leave).

Checks after the load has stopped and the line has settled:
* one acceptance per transfer (``offer.accepted`` events in the call event log, per transfer);
* no duplicated texts (two texts with the same recipient and body);
* no stuck calls: no transfer still ``waiting``/``connected``, no offer ``placing``/``ringing``/
  ``answered``, no responder leg still live in the fake.

    .venv/bin/python -m bench.scale_out [--seconds 30] [--connections 16] [--answerers 4] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml
from sqlalchemy import create_engine, text

from bench import load
from bench.common import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    LINE_NUMBER,
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
from twilio_fake.phone import Keys, Phone, RemoteTwilio, RequestsTransport
from twilio_fake.signing import gather_digits_params

WHOLE_DAY = [{"days": "daily", "start": "00:00", "end": "12:00"}, {"days": "daily", "start": "12:00", "end": "24:00"}]
LIVE_LEG = ("queued", "initiated", "ringing")
HOLD_TURNS = 8
HOLD_TURN_PAUSE_SECONDS = 0.5  # Twilio's hold turns are ~15 s apart; shorter keeps the load up


def publish_parallel_routing(env: dict[str, str], scratch: Path) -> None:
    """The example routing, every counselor on call around the clock, ringing 3 at once (so two
    phones can race to accept the same caller)."""
    document: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text())
    for responder in [*document["counselors"], *document.get("co_responder_units", [])]:
        responder.pop("overrides", None)
        responder["shifts"] = WHOLE_DAY
    document["transfer"].update(strategy="parallel", parallel_max=3, pause_after_missed=20)
    path = scratch / "routing.scale.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    flask(env, "routing", "load", str(path), "--note", "bench scale-out", "--by", "bench")


def call_flows(twilio_url: str, callers: list[str]) -> Iterator[load.Task]:
    """Callers Twilio knows (recorded in the fake first): menus, need, 2 hold turns, hang-up;
    every other task a texter (first text, need answer)."""
    session = requests.Session()
    texts = load.texts()
    index = 0
    while True:
        index += 1
        if index % 2 == 0:
            yield next(texts)
            continue

        def task(connection: load.Connection, index: int = index) -> list[load.Sample]:
            caller = load.new_caller(index)
            identity = caller.identity
            public = connection.public_url
            session.post(f"{twilio_url}/_fake/calls/inbound", timeout=10, data={
                "CallSid": identity.call_sid, "From": identity.from_number, "To": identity.to_number,
                "StatusCallback": f"{public}/voice/status"})  # fmt: skip
            callers.append(identity.call_sid)
            done: list[load.Sample] = []
            path = "/voice/incoming"
            sample, reply = load.timed(connection, "voice_incoming", path, identity.voice_params("ringing"))
            done.append(sample)
            for kind, digits in (("language_answer", "1"), ("need_answer", random.choice(load.NEED_KEYS))):  # noqa: S311
                if reply is None or sample.error or not load.next_path(path, reply.body):
                    return done
                path = load.next_path(path, reply.body)
                sample, reply = load.timed(connection, kind, path, gather_digits_params(identity, digits))
                done.append(sample)
            # Hold long enough for a phone to answer and accept (the hold turn then joins the
            # caller to the conference: no Redirect to follow), then hang up.
            for _ in range(HOLD_TURNS):
                if reply is None or sample.error or not load.next_path(path, reply.body):
                    break
                time.sleep(HOLD_TURN_PAUSE_SECONDS)
                path = load.next_path(path, reply.body)
                sample, reply = load.timed(connection, "hold_turn", path, identity.voice_params("in-progress"))
                done.append(sample)
            params = identity.voice_params("completed", CallDuration="40", SequenceNumber="3")
            sample, _ = load.timed(connection, "status_callback", "/voice/status", params, expect_status=204)
            done.append(sample)
            return done

        yield task


def answerer(twilio_url: str, line_url: str, stop: threading.Event, counts: Counter[str]) -> None:
    """A phone that answers whatever rings, presses 1 at the whisper, and leaves at once."""
    remote = RemoteTwilio(twilio_url)
    phone = Phone(RequestsTransport(), line_url, AUTH_TOKEN, ACCOUNT_SID, LINE_NUMBER, fake=remote)
    while not stop.is_set():
        ringing = [leg for leg in remote.calls(statuses=LIVE_LEG) if leg.direction == "outbound-api"]
        if not ringing:
            time.sleep(0.05)
            continue
        leg = random.choice(ringing)  # noqa: S311 - two phones may pick legs of the same caller
        try:
            record = phone.answer(leg.sid, [Keys("1")])
            counts["answered"] += 1
            if record.conference is not None:
                counts["joined"] += 1
            if not record.finished:
                phone.hang_up(record)
        except Exception as error:  # a leg canceled under our feet is normal; count, go on
            counts[f"answer_error_{type(error).__name__}"] += 1


def checks(database_url: str, twilio_url: str) -> dict[str, Any]:
    engine = create_engine(database_url)
    with engine.connect() as db:
        # An accepted offer moves on (the responder leaves): the event log keeps each acceptance.
        per_transfer = db.execute(text(
            "SELECT detail->>'transfer', COUNT(*) FROM call_events "
            "WHERE kind = 'offer.accepted' AND (detail->>'purpose') IS NULL GROUP BY 1"
        )).all()  # fmt: skip
        twice = [transfer for transfer, n in per_transfer if n > 1]
        accepted = sum(int(n) for _, n in per_transfer)
        connected = db.scalar(text("SELECT COUNT(*) FROM call_events WHERE kind = 'transfer.connected'"))
        rows = db.execute(text("SELECT state, COUNT(*) FROM transfers GROUP BY state")).all()
        transfers: dict[str, int] = {str(state): int(n) for state, n in rows}
        live_offers = db.scalar(text("SELECT COUNT(*) FROM offers WHERE state IN ('placing', 'ringing', 'answered')"))
    engine.dispose()
    state = requests.get(f"{twilio_url}/_fake/state", timeout=30).json()
    texts = Counter((m["to"], m["body"]) for m in state["messages"])
    live_legs = [c for c in state["calls"] if c["direction"] == "outbound-api" and c["status"] in LIVE_LEG]
    stuck = sum(n for s, n in transfers.items() if s in ("waiting", "connected"))
    return {
        "transfers_accepted_twice": len(twice),
        "offers_accepted": int(accepted or 0),
        "transfers_connected": int(connected or 0),
        "texts_sent": len(state["messages"]),
        "texts_duplicated": sum(n - 1 for n in texts.values() if n > 1),
        "transfers_by_state": transfers,
        "transfers_stuck": stuck,
        "offers_live": int(live_offers or 0),
        "responder_legs_live": len(live_legs),
        "ok": not twice and stuck == 0 and not live_offers and not live_legs and all(n == 1 for n in texts.values()),
    }


def run_topology(webs: int, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    sampler = MemorySampler().start()
    with processes() as started, fresh_database(f"crisisline_bench_scale{webs}") as database_url:
        scratch = started.scratch
        with redis_for_bench(scratch) as redis_url:
            twilio_url = start_fake_twilio(started)
            load.FAKE_TWILIO["url"] = twilio_url
            ports = [free_port() for _ in range(webs)]
            envs = [deployment_env(database_url, redis_url, twilio_url, port, WEB_CONCURRENCY="1") for port in ports]
            flask(envs[0], "db", "upgrade")
            publish_parallel_routing(envs[0], scratch)
            for index, (port, env) in enumerate(zip(ports, envs, strict=True)):
                web = started.start(f"web-{index + 1}", procfile_command("web"), env)
                wait_for_http(f"http://127.0.0.1:{port}/healthz", web)
                sampler.track(f"web-{index + 1}", web.popen.pid)
            for index in range(workers):
                sampler.track(f"worker-{index + 1}", started.start(f"worker-{index + 1}", procfile_command("worker"),
                                                                   envs[0]).popen.pid)  # fmt: skip
            started.start("clock", procfile_command("clock"), envs[0])
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            # A load balancer's round robin: connection i goes to web process i mod N.
            line = [load.Connection(urls[i % webs], urls[i % webs]) for i in range(args.connections)]
            load.run_phase("warm-up", load.surge(2 * args.connections, texters=False), line, 60.0, sampler, "web-1")
            stop = threading.Event()
            counts: Counter[str] = Counter()
            phones = [threading.Thread(target=answerer, args=(twilio_url, urls[i % webs], stop, counts), daemon=True)
                      for i in range(args.answerers)]  # fmt: skip
            for phone in phones:
                phone.start()
            callers: list[str] = []
            cpu_before = sum(sampler.cpu_seconds(role) for role in sampler.tracked)
            result = load.run_phase("mix", call_flows(twilio_url, callers), line, args.seconds, sampler, "web-1")
            cpu = sum(sampler.cpu_seconds(role) for role in sampler.tracked) - cpu_before
            stop.set()
            for phone in phones:
                phone.join(timeout=30)
            for connection in line:
                connection.close()
            time.sleep(args.settle)  # status callbacks of canceled legs, redirects, the queue's last offers
            found = checks(database_url, twilio_url)
            rss = {k: round(v, 1) for k, v in sampler.sample().items()}
            sampler.stop()
    kinds = sorted({s.kind for s in result.samples})
    return {
        "web_processes": webs,
        "workers": workers,
        "requests": len(result.samples),
        "req_per_s": round(len(result.samples) / result.wall_seconds, 1),
        "errors": sum(1 for s in result.samples if s.error),
        "callers": len(callers),
        "cpu_seconds_line": round(cpu, 1),
        "by_kind": {kind: load.summarise(result, kind) for kind in kinds},
        "phones": dict(counts),
        "checks": found,
        "rss_mib_end": rss,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"seconds": args.seconds, "connections": args.connections, "answerers": args.answerers,
                     "web": "gunicorn gunicorn.conf.py, WEB_CONCURRENCY=1 x 4 threads per web process"},
        "note": "2-core machine shared with other engineers' work: 2+2 processes cannot use more than 2 cores.",
    }  # fmt: skip
    report["topologies"] = {}
    for webs, workers in ((1, 1), (2, 2)):
        random.seed(20261130)
        print(f"  {webs} web + {workers} worker…", flush=True)
        report["topologies"][f"{webs}+{workers}"] = run_topology(webs, workers, args)
    one, two = report["topologies"]["1+1"], report["topologies"]["2+2"]
    report["scaling_factor"] = round(two["req_per_s"] / one["req_per_s"], 2) if one["req_per_s"] else 0.0
    return report


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Scale-out, {report['started_at']}",
        "",
        f"Machine: {m['nproc']} CPU ({m['cpu_model']}), load average at start {m['load_average_at_start']}. "
        f"{report['note']} {report['settings']['connections']} connections, {report['settings']['seconds']} s of "
        f"the call and text mix, {report['settings']['answerers']} answering phones.",
        "",
        "| processes | requests | req/s | errors | need answer p50 / p99 ms | hold turn p50 / p99 ms "
        "| inbound SMS p50 / p99 ms | accepted | accepted twice | texts (dup) | stuck transfers / offers / legs |",
        "|---|---:|---:|---:|---|---|---|---:|---:|---|---|",
    ]
    for name, row in report["topologies"].items():
        kinds, c = row["by_kind"], row["checks"]

        def cell(kind: str, kinds: dict[str, Any] = kinds) -> str:
            found = kinds.get(kind)
            return f"{found['p50_ms']} / {found['p99_ms']}" if found else "-"

        lines.append(
            f"| {name} | {row['requests']} | {row['req_per_s']} | {row['errors']} | {cell('need_answer')} | "
            f"{cell('hold_turn')} | {cell('inbound_sms')} | {c['offers_accepted']} | {c['transfers_accepted_twice']} "
            f"| {c['texts_sent']} ({c['texts_duplicated']}) | {c['transfers_stuck']} / {c['offers_live']} / "
            f"{c['responder_legs_live']} |"
        )
    lines += ["", f"Scaling factor 2+2 vs 1+1 (req/s): **{report['scaling_factor']}**"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--answerers", type=int, default=4)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds for the line to settle before checks")
    parser.add_argument("--quick", action="store_true", help="10 s of load")
    parser.add_argument("--output", type=Path, default=None, help="write <output>.json and .md")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 10.0
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
