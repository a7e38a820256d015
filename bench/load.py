"""Load benchmark: the line as the Procfile runs it, beside a baseline app, in one invocation.

Starts on a fresh PostgreSQL database (migrated by the release step, ``flask db upgrade``) and
Redis: the fake Twilio REST API, the Procfile's ``web`` (gunicorn with gunicorn.conf.py, 2
workers x 4 threads), ``worker`` and ``clock``; publishes the example routing (every counselor
on call around the clock). Then replays Twilio's signed webhooks with N keep-alive
connections, one webhook kind at a time, each kind's calls carried on from the previous kind
(the calls that came in choose a language, then a need, then hold, then hang up):

    baseline (c_pg) -> /voice/incoming -> language answer -> need answer (rings a responder)
    -> hold turn (every waiting caller, in turn) -> answering (counselors take calls)
    -> call status callback (the rest hang up) -> inbound SMS (a first text, then the need
    menu's answer) -> surge -> baseline again

Answering: the rings the need answers placed (and those each hang-up brings next) are played
as Twilio plays them (``bench.common.answered_call``): the responder leg's status callbacks,
the whisper, the press of 1, the caller's redirect into the room, the conference's callbacks,
the hang-up after the talk, each its own kind; a ring whose caller moved on ends at the staff
message it gets (counted apart, not an error). Meanwhile the callers still waiting keep
holding on the connections no answered call needs. Checked after it: one acceptance per
transfer, every accepted caller's transfer ended after the talk, no errors.

The surge: many first calls and first texts at once, over a queue left long by the phases
before. Reported per kind: req/s, ratio to the baseline, p50/p90/p99, errors (non-2xx,
not TwiML, or the fail-safe's backup line), web CPU per request, and peak RSS per process.

    .venv/bin/python -m bench.load [--connections 16] [--seconds 15] [--quick]
    make bench     # writes bench/results/latest.json and latest.md
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import queue
import random
import re
import statistics
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import psycopg
import requests
import yaml
from sqlalchemy import create_engine, text

from bench import baseline
from bench.common import (
    ACCOUNT_SID,
    ANSWERED_KINDS,
    AUTH_TOKEN,
    BACKUP_NUMBER,
    CALL_FLOW_MIX,
    LINE_NUMBER,
    RESULTS,
    AnsweredCall,
    AnswerOutcome,
    MemorySampler,
    Processes,
    ResponderLeg,
    Webhook,
    answered_call,
    deployment_env,
    flask,
    fresh_database,
    machine,
    mix_ratio,
    processes,
    procfile_command,
    publish_routing_on_call_around_the_clock,
    redis_for_bench,
    start_fake_twilio,
    wait_for_http,
)
from crisisline.redis_server import free_port
from crisisline.settings import DEFAULT_ROUTING_FILE
from twilio_fake.signing import CallIdentity, gather_digits_params, signed_headers, sms_params

ENGLISH_FIRST_TEXTS = (
    "I am not doing well tonight and I really need to talk with someone",
    "Everything is falling apart and I do not know who else to ask for help",
    "My friend is scaring me with what she says, can someone talk to me",
)
SPANISH_FIRST_TEXTS = (
    "No estoy bien esta noche y necesito hablar con alguien por favor",
    "Todo se esta cayendo y no se a quien mas pedirle ayuda",
)
APP_SPEC = "crisisline:create_app()"  # the Procfile's web line serves it; the baseline takes its place
NEED_KEYS = ("2", "3", "4", "5", "6")  # not 1: danger_now rings the co-responder unit


@dataclass
class Sample:
    kind: str
    seconds: float
    error: str | None
    at: float


@dataclass
class Reply:
    status: int
    content_type: str
    body: str


class Connection:
    """One keep-alive HTTP connection, posting as Twilio does (signed, form-encoded)."""

    def __init__(self, base_url: str, public_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.public_url = public_url.rstrip("/")
        self._connection: http.client.HTTPConnection | None = None

    def post(self, path: str, params: dict[str, str], *, voice: bool = True) -> Reply:
        url = self.public_url + path
        headers = signed_headers(AUTH_TOKEN, url, params, voice=voice)
        body = urlencode(params)
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self._connection.request("POST", path, body=body, headers=headers)
                response = self._connection.getresponse()
                data = response.read().decode("utf-8", "replace")
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return Reply(response.status, response.getheader("Content-Type", ""), data)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed between requests: Twilio would
                # open a new one; only a second failure counts.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass
class Caller:
    identity: CallIdentity
    next_path: str = ""
    hold_turns: int = 0
    taken: bool = False  # a counselor accepted them: their hold loop is over

    @property
    def transfer_id(self) -> int | None:
        """The transfer their hold turns name (``/voice/hold?transfer=12&tick=3``)."""
        found = re.search(r"[?&]transfer=(\d+)", self.next_path)
        return int(found.group(1)) if found else None


def new_caller(index: int) -> Caller:
    number = f"+1312{random.randint(2000000, 9999999)}"  # noqa: S311 - fake numbers, not secrets
    del index
    return Caller(CallIdentity(ACCOUNT_SID, number, LINE_NUMBER))


def _path(current: str, target: str) -> str:
    joined = urljoin("http://line" + current, target)
    parts = urlsplit(joined)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def next_path(current_path: str, body: str) -> str:
    """Where Twilio goes next from this TwiML: a Gather's action or a Redirect."""
    gather = re.search(r"<Gather[^>]*\baction=\"([^\"]+)\"", body)
    redirect = re.search(r"<Redirect[^>]*>([^<]+)</Redirect>", body)
    # A hold turn's TwiML holds a Gather (the callback key) followed by the Redirect: the
    # caller who presses nothing follows the Redirect.
    if redirect:
        return _path(current_path, redirect.group(1).replace("&amp;", "&").strip())
    if gather:
        return _path(current_path, gather.group(1).replace("&amp;", "&"))
    return ""


def _routing_backup_number() -> str:
    """The example routing's ``line.backup_number`` in E.164: since the fail-safe dials the
    routing's number once a process has read it, a reply dialling it is a backup-line answer too."""
    raw = str(yaml.safe_load(DEFAULT_ROUTING_FILE.read_text())["line"]["backup_number"])
    return "+" + "".join(ch for ch in raw if ch.isdigit())


ROUTING_BACKUP_NUMBER = _routing_backup_number()


def check_twiml(reply: Reply, *, expect_status: int = 200) -> str | None:
    """None if Twilio would be happy with this reply and it is not the fail-safe; else why."""
    if reply.status != expect_status:
        return f"http {reply.status}"
    if expect_status == 204:
        return None
    if not reply.content_type.startswith(("text/xml", "application/xml")) or "<Response" not in reply.body:
        return "not TwiML"
    if BACKUP_NUMBER in reply.body or ROUTING_BACKUP_NUMBER in reply.body:
        return "fail-safe (backup line)"
    return None


# A task is one unit of work for a connection: it returns its timed samples.
Task = Callable[[Connection], list[Sample]]


@dataclass
class PhaseResult:
    name: str
    samples: list[Sample]
    wall_seconds: float
    web_cpu_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def run_phase(
    name: str, tasks: Iterator[Task], connections: list[Connection], seconds: float,
    sampler: MemorySampler, cpu_role: str,
) -> PhaseResult:  # fmt: skip
    """Run tasks on every connection until ``seconds`` pass or the tasks run out."""
    lock = threading.Lock()
    samples: list[Sample] = []
    sampler.phase = name
    cpu_before = sampler.cpu_seconds(cpu_role)
    started = time.perf_counter()
    deadline = started + seconds

    def worker(connection: Connection) -> None:
        while time.perf_counter() < deadline:
            with lock:
                task = next(tasks, None)
            if task is None:
                return
            try:
                done = task(connection)
            except Exception as error:  # a refused or dropped connection is an error, not a crash
                connection.close()
                done = [Sample(name, 0.0, type(error).__name__, time.perf_counter())]
            with lock:
                samples.extend(done)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu = sampler.cpu_seconds(cpu_role) - cpu_before
    return PhaseResult(name, samples, wall, cpu, extra={"connections": len(connections)})


def timed(connection: Connection, kind: str, path: str, params: dict[str, str], *, voice: bool = True,
          expect_status: int = 200) -> tuple[Sample, Reply | None]:  # fmt: skip
    started = time.perf_counter()
    try:
        reply = connection.post(path, params, voice=voice)
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        return Sample(kind, time.perf_counter() - started, type(error).__name__, started), None
    return Sample(kind, time.perf_counter() - started, check_twiml(reply, expect_status=expect_status), started), reply


def _pause(connection: Connection) -> list[Sample]:
    del connection
    time.sleep(0.002)
    return []


class CallFlow:
    """Pools that carry calls from one phase to the next."""

    def __init__(self) -> None:
        self.answered: queue.SimpleQueue[Caller] = queue.SimpleQueue()  # heard the language menu
        self.chose_language: queue.SimpleQueue[Caller] = queue.SimpleQueue()
        self.holding: queue.SimpleQueue[Caller] = queue.SimpleQueue()
        self.counter = 0

    @staticmethod
    def _drain(pool: queue.SimpleQueue[Caller]) -> Iterator[Caller]:
        while True:
            try:
                yield pool.get_nowait()
            except queue.Empty:
                return

    def incoming(self) -> Iterator[Task]:
        while True:
            self.counter += 1
            caller = new_caller(self.counter)

            def task(connection: Connection, caller: Caller = caller) -> list[Sample]:
                path = "/voice/incoming"
                sample, reply = timed(connection, "voice_incoming", path, caller.identity.voice_params("ringing"))
                if reply is not None and sample.error is None:
                    caller.next_path = next_path(path, reply.body)
                    self.answered.put(caller)
                return [sample]

            yield task

    def language(self) -> Iterator[Task]:
        for caller in self._drain(self.answered):

            def task(connection: Connection, caller: Caller = caller) -> list[Sample]:
                digits = "2" if random.random() < 0.3 else "1"  # noqa: S311 - a mix of languages
                path = caller.next_path
                sample, reply = timed(
                    connection, "language_answer", path, gather_digits_params(caller.identity, digits)
                )
                if reply is not None and sample.error is None:
                    caller.next_path = next_path(path, reply.body)
                    self.chose_language.put(caller)
                return [sample]

            yield task

    def need(self) -> Iterator[Task]:
        for caller in self._drain(self.chose_language):

            def task(connection: Connection, caller: Caller = caller) -> list[Sample]:
                path = caller.next_path
                params = gather_digits_params(caller.identity, random.choice(NEED_KEYS))  # noqa: S311
                sample, reply = timed(connection, "need_answer", path, params)
                if reply is not None and sample.error is None:
                    caller.next_path = next_path(path, reply.body)
                    if caller.next_path:
                        self.holding.put(caller)
                return [sample]

            yield task

    def hold(self) -> Iterator[Task]:
        """Every waiting caller's hold turn, round and round (a caller is never in two turns)."""
        while True:
            try:
                caller = self.holding.get_nowait()
            except queue.Empty:
                yield _pause  # every caller is mid-turn on another connection
                continue

            def task(connection: Connection, caller: Caller = caller) -> list[Sample]:
                path = caller.next_path
                sample, reply = timed(connection, "hold_turn", path, caller.identity.voice_params("in-progress"))
                if reply is not None and sample.error is None and next_path(path, reply.body):
                    caller.next_path = next_path(path, reply.body)
                    caller.hold_turns += 1
                self.holding.put(caller)  # back in line for its next turn
                return [sample]

            yield task

    def hang_up(self) -> Iterator[Task]:
        for caller in self._drain(self.holding):
            if caller.taken:
                continue  # hung up after their talk with a counselor (``Answering``)

            def task(connection: Connection, caller: Caller = caller) -> list[Sample]:
                params = caller.identity.voice_params("completed", CallDuration="95", SequenceNumber="3")
                sample, _ = timed(connection, "status_callback", "/voice/status", params, expect_status=204)
                return [sample]

            yield task


HOLD_BESIDE_ANSWERS = "hold_turn_while_answering"
LOOK_FOR_RINGS_EVERY = 0.05  # seconds between looks at the fake for legs the line placed
# The fake leaves the legs the line places queued (it rings nothing by itself unless started
# with --ring-timeouts); the callers made known to it are "ringing" inbound calls, so asking
# for every unanswered status would list each waiting caller on every look.
LOOK_FOR_LEGS_IN = ("queued", "initiated")


@dataclass
class _Answer:
    """One answered ring under way: its script, and the webhook Twilio sends next."""

    leg: ResponderLeg
    call: AnsweredCall
    pending: Webhook


class Answering:
    """Twilio's side of the calls counselors take, while the callers who wait keep holding.

    The rings are the calls the line placed with the fake (``Calls.json``): those the need
    answers placed, then those each hang-up brings (the freed counselor's next caller). Each
    is played by ``answered_call``, one webhook per task, so a call's webhooks go over
    whichever connection is free next, as Twilio's would. A connection with none due runs a
    waiting caller's hold turn (``hold_turn_while_answering``), which keeps every connection
    busy, as in the hold phase. Rings are answered for ``seconds``; the calls under way then
    finish. Twilio's records are the fake's: the callers waiting are made known to it first
    (``know_the_callers``) so the line can redirect them into the room, and each leg is closed
    there once played (its callbacks were the bench's to send)."""

    def __init__(self, flow: CallFlow, twilio_url: str, seconds: float) -> None:
        self.flow, self.twilio_url, self.seconds = flow, twilio_url.rstrip("/"), seconds
        self.by_transfer: dict[int, Caller] = {}
        self.outcomes: Counter[str] = Counter()
        self.accepted: Counter[int] = Counter()  # transfer -> presses of 1 that put the caller in a room
        self.rings_found = 0
        self._ready: deque[_Answer] = deque()
        self._under_way = 0
        self._seen: set[str] = set()
        self._looking = False
        self._looked_at = 0.0
        self._stop_at = float("inf")
        self._lock = threading.Lock()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def know_the_callers(self, public_url: str, threads: int) -> int:
        """Record every waiting caller's call with the fake, as Twilio knows the calls it
        carries, its final status going to the line's ``/voice/status`` (untimed, before the
        phase). Returns how many."""
        callers = list(CallFlow._drain(self.flow.holding))

        def record(caller: Caller) -> None:
            identity = caller.identity
            data = {"CallSid": identity.call_sid, "From": identity.from_number, "To": identity.to_number,
                    "StatusCallback": f"{public_url}/voice/status"}  # fmt: skip
            self._session().post(f"{self.twilio_url}/_fake/calls/inbound", data=data, timeout=30).raise_for_status()

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            list(pool.map(record, callers))
        for caller in callers:
            if caller.transfer_id is not None:
                self.by_transfer[caller.transfer_id] = caller
            self.flow.holding.put(caller)
        return len(callers)

    def tasks(self) -> Iterator[Task]:
        self._stop_at = time.perf_counter() + self.seconds
        while True:
            now = time.perf_counter()
            with self._lock:
                answer = self._ready.popleft() if self._ready else None
                over = now >= self._stop_at and not self._under_way and not self._looking
                look = (answer is None and now < self._stop_at and not self._looking
                        and now - self._looked_at >= LOOK_FOR_RINGS_EVERY)  # fmt: skip
                self._looking = self._looking or look
            if answer is not None:
                yield partial(self._step, answer=answer)
            elif over:
                return
            elif look:
                yield self._look
            else:
                yield self._hold_turn

    def _look(self, connection: Connection) -> list[Sample]:
        """Find the legs the line placed that nobody has answered yet."""
        del connection
        try:
            params = [("status", status) for status in LOOK_FOR_LEGS_IN]
            reply = self._session().get(f"{self.twilio_url}/_fake/calls", params=params, timeout=30)
            calls = reply.json()["calls"] if reply.ok else []
        except requests.RequestException:
            calls = []
        with self._lock:
            if time.perf_counter() < self._stop_at:
                for call in calls:
                    if call["direction"] != "outbound-api" or call["sid"] in self._seen:
                        continue
                    if "/offer/whisper" not in (call.get("url") or ""):
                        continue
                    self._seen.add(call["sid"])
                    leg = ResponderLeg.from_fake(call)
                    script = answered_call(leg, self._find_caller)
                    self._ready.append(_Answer(leg, script, next(script)))
                    self._under_way += 1
                    self.rings_found += 1
            self._looking, self._looked_at = False, time.perf_counter()
        return []

    def _step(self, connection: Connection, *, answer: _Answer) -> list[Sample]:
        """Send an answered call's next webhook, as Twilio would; then queue the one after."""
        hook = answer.pending
        sample, reply = timed(connection, hook.kind, hook.path, hook.params, expect_status=hook.expect_status)
        body = reply.body if reply is not None and sample.error is None else None
        try:
            answer.pending = answer.call.send(body)
        except StopIteration as done:
            self._finish(answer, done.value)
        except Exception as error:  # the fake unreachable while finding the caller: counted, never stuck
            self._finish(answer, AnswerOutcome("failed", type(error).__name__))
        else:
            with self._lock:
                self._ready.append(answer)
        return [sample]

    def _find_caller(self, transfer_id: int | None) -> tuple[CallIdentity, str] | None:
        """The accepted caller, and the URL the line redirected their call to (the fake's record)."""
        caller = self.by_transfer.get(transfer_id) if transfer_id is not None else None
        if caller is None:
            return None
        caller.taken = True  # in the room from now on: no more hold turns
        reply = self._session().get(f"{self.twilio_url}/_fake/calls/{caller.identity.call_sid}", timeout=30)
        if not reply.ok:
            return None
        record = reply.json()
        redirects = record.get("redirects") or []
        return caller.identity, (redirects[-1].get("url") if redirects else None) or record.get("url") or ""

    def _finish(self, answer: _Answer, outcome: AnswerOutcome) -> None:
        # The leg is over in Twilio's books too (untimed): the fake, which never rang it, would
        # otherwise list it as ringing. Cancelling a queued call sends no callback.
        with contextlib.suppress(requests.RequestException):
            self._session().post(
                f"{self.twilio_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{answer.leg.identity.call_sid}.json",
                data={"Status": "completed"}, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=30,
            )  # fmt: skip
        with self._lock:
            self._under_way -= 1
            self.outcomes[str(outcome)] += 1
            if outcome.result == "accepted" and outcome.transfer_id is not None:
                self.accepted[outcome.transfer_id] += 1

    def _hold_turn(self, connection: Connection) -> list[Sample]:
        """A waiting caller's hold turn, while no answered call's webhook is due."""
        try:
            caller = self.flow.holding.get_nowait()
        except queue.Empty:
            return _pause(connection)
        if caller.taken:
            return []  # in a room now: their hold loop is over
        path = caller.next_path
        sample, reply = timed(connection, HOLD_BESIDE_ANSWERS, path, caller.identity.voice_params("in-progress"))
        following = next_path(path, reply.body) if reply is not None and sample.error is None else path
        if following:
            caller.next_path = following
            caller.hold_turns += 1
            if caller.transfer_id is not None:
                self.by_transfer.setdefault(caller.transfer_id, caller)
            self.flow.holding.put(caller)
        # else the turn joined them to the room of a counselor who accepted them (their redirect
        # is played by that call), or moved them on: no more turns
        return [sample]

    def checks(self, database_url: str, result: PhaseResult) -> dict[str, Any]:
        """One acceptance per transfer (the call event log's ``offer.accepted``, per transfer),
        each caller the bench saw accepted put in a room once and their transfer ended after
        the talk, no phone still ringing for a caller whose search is over, and no webhook
        answered with an error."""
        engine = create_engine(database_url)
        try:
            with engine.connect() as db:
                per_transfer = {int(transfer): int(n) for transfer, n in db.execute(text(
                    "SELECT detail->>'transfer', COUNT(*) FROM call_events "
                    "WHERE kind = 'offer.accepted' AND (detail->>'purpose') IS NULL GROUP BY 1"
                ))}  # fmt: skip
                states: dict[int, str] = {int(t): str(state) for t, state in db.execute(
                    text("SELECT id, state FROM transfers"))}  # fmt: skip
                # A phone left ringing (or whispering) for a caller who has moved on: a stuck call.
                ringing_for_nobody = sorted(int(offer) for (offer,) in db.execute(text(
                    "SELECT o.id FROM offers o JOIN transfers t ON t.id = o.transfer_id "
                    "WHERE o.state IN ('placing', 'ringing', 'answered') "
                    "AND t.state IN ('abandoned', 'ended', 'to_backup', 'callback')"
                )))  # fmt: skip
        finally:
            engine.dispose()
        errors = sum(1 for s in result.samples if s.error)
        failed = sum(n for outcome, n in self.outcomes.items() if outcome.startswith("failed"))
        twice = sorted(t for t, n in per_transfer.items() if n > 1)
        seen_twice = sorted(t for t, n in self.accepted.items() if n > 1)
        unrecorded = sorted(t for t in self.accepted if per_transfer.get(t) != 1)
        not_ended = sorted(t for t in self.accepted if states.get(t) != "ended")
        return {
            "transfers_accepted": len(per_transfer),
            "transfers_accepted_twice": twice,
            "rooms_opened_twice": seen_twice,
            "accepted_without_one_acceptance_recorded": unrecorded,
            "accepted_not_ended_after_the_talk": not_ended,
            "errors": errors,
            "failed_calls": failed,
            "offers_ringing_for_a_caller_gone": ringing_for_nobody,
            "ok": not (twice or seen_twice or unrecorded or not_ended or errors or failed or ringing_for_nobody),
        }


# Where the load generator, playing Twilio, sends the replies in the line's messaging TwiML
# (``twilio_fake``'s ``/_fake/messaging-reply``); set by each bench once its fake runs.
FAKE_TWILIO: dict[str, str] = {}


def slow_api(twilio_url: str, seconds: float) -> None:
    """Every request that places a call or sends a text takes ``seconds`` to answer, as over the
    internet to api.twilio.com (the local fake answers in a millisecond)."""
    fault = {"method": "POST", "path_regex": r"/(Calls|Messages)\.json$", "status": "201", "delay": str(seconds),
             "times": ""}  # fmt: skip
    requests.post(twilio_url + "/_fake/faults", data=fault, timeout=10).raise_for_status()


def send_twiml_replies(number: str, reply: Reply | None) -> None:
    """What Twilio does with a text webhook's answer: send the ``<Message>``s it holds (after
    the request was timed, as Twilio does after the answer came)."""
    url = FAKE_TWILIO.get("url")
    if url is None or reply is None or reply.status != 200 or "<Message" not in reply.body:
        return
    data = {"From": number, "To": LINE_NUMBER, "Twiml": reply.body}
    with contextlib.suppress(requests.RequestException):  # counted by the correctness checks, not here
        requests.post(url + "/_fake/messaging-reply", data=data, timeout=30)


def texts() -> Iterator[Task]:
    """New texters: a first text in their own words (the language detector decides), then the
    need menu's answer."""
    while True:

        def task(connection: Connection) -> list[Sample]:
            number = f"+1773{random.randint(2000000, 9999999)}"  # noqa: S311 - fake numbers
            spanish = random.random() < 0.3  # noqa: S311
            body = random.choice(SPANISH_FIRST_TEXTS if spanish else ENGLISH_FIRST_TEXTS)  # noqa: S311
            first, reply = timed(connection, "inbound_sms", "/sms/incoming",
                                 sms_params(ACCOUNT_SID, number, LINE_NUMBER, body), voice=False)  # fmt: skip
            send_twiml_replies(number, reply)
            second, reply = timed(connection, "inbound_sms", "/sms/incoming",
                                  sms_params(ACCOUNT_SID, number, LINE_NUMBER, random.choice(NEED_KEYS[1:])),  # noqa: S311
                                  voice=False)  # fmt: skip
            send_twiml_replies(number, reply)
            return [first, second]

        yield task


def surge(people: int, *, texters: bool = True, need_keys: tuple[str, ...] = NEED_KEYS) -> Iterator[Task]:
    """``people`` contacts at once: half call (menus, two hold turns, hang up), half text
    (``texters=False``: all call, e.g. to warm the web workers up); callers choose among
    ``need_keys``."""
    for index in range(people):
        if index % 2 and texters:

            def text_task(connection: Connection) -> list[Sample]:
                return next(texts())(connection)

            yield text_task
            continue

        def call_task(connection: Connection, index: int = index) -> list[Sample]:
            caller = new_caller(index)
            done: list[Sample] = []
            path = "/voice/incoming"
            sample, reply = timed(connection, "voice_incoming", path, caller.identity.voice_params("ringing"))
            done.append(sample)
            steps = [("language_answer", "1"), ("need_answer", random.choice(need_keys))]  # noqa: S311
            for kind, digits in steps:
                if reply is None or sample.error:
                    return done
                path = next_path(path, reply.body)
                sample, reply = timed(connection, kind, path, gather_digits_params(caller.identity, digits))
                done.append(sample)
            for _ in range(2):
                if reply is None or sample.error or not next_path(path, reply.body):
                    return done
                path = next_path(path, reply.body)
                sample, reply = timed(connection, "hold_turn", path, caller.identity.voice_params("in-progress"))
                done.append(sample)
            params = caller.identity.voice_params("completed", CallDuration="40", SequenceNumber="3")
            sample, _ = timed(connection, "status_callback", "/voice/status", params, expect_status=204)
            done.append(sample)
            return done

        yield call_task


def baseline_tasks() -> Iterator[Task]:
    while True:

        def task(connection: Connection) -> list[Sample]:
            identity = CallIdentity(ACCOUNT_SID, f"+1312{random.randint(2000000, 9999999)}", LINE_NUMBER)  # noqa: S311
            sample, _ = timed(connection, "baseline_c_pg", "/hook", identity.voice_params("ringing"))
            return [sample]

        yield task


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(result: PhaseResult, kind: str) -> dict[str, Any]:
    mine = [s for s in result.samples if s.kind == kind]
    ok = sorted(s.seconds * 1000 for s in mine if s.error is None)
    errors: dict[str, int] = {}
    for sample in mine:
        if sample.error:
            errors[sample.error] = errors.get(sample.error, 0) + 1
    # Throughput over the span the kind's requests actually ran (a phase may end early).
    span = result.wall_seconds
    if mine and len(result.samples) != len(mine):
        span = max(s.at + s.seconds for s in mine) - min(s.at for s in mine)
    return {
        "requests": len(mine),
        "req_per_s": round(len(mine) / span, 1) if span > 0 else 0.0,
        "p50_ms": round(percentile(ok, 0.50), 1),
        "p90_ms": round(percentile(ok, 0.90), 1),
        "p99_ms": round(percentile(ok, 0.99), 1),
        "mean_ms": round(statistics.fmean(ok), 1) if ok else 0.0,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "web_cpu_ms_per_request": round(result.web_cpu_seconds * 1000 / len(mine), 2) if mine else 0.0,
        "seconds": round(span, 1),
    }


def mixed_phase_figures(result: PhaseResult, kind: str) -> dict[str, Any]:
    """A kind's req/s in a phase whose kinds share the connections (answering): what the
    phase's connections would serve of it alone, each request taking the kind's mean latency
    plus the phase's mean time between a connection's requests. For a phase of one kind this is
    its measured req/s; the measured share is kept as ``req_per_s_in_phase``. Web CPU is the
    phase's average per request (it cannot be told apart by kind)."""
    connections = result.extra.get("connections", 0)
    mine = [s.seconds for s in result.samples if s.kind == kind]
    busy = sum(s.seconds for s in result.samples)
    between = max(0.0, connections * result.wall_seconds - busy) / max(1, len(result.samples))
    alone = connections / (statistics.fmean(mine) + between) if mine and connections else 0.0
    return {
        "req_per_s": round(alone, 1),
        "req_per_s_in_phase": summarise(result, kind)["req_per_s"],
        "web_cpu_ms_per_request": round(result.web_cpu_seconds * 1000 / max(1, len(result.samples)), 2),
        "shares_connections": True,
    }


def waiting_counts(database_url: str) -> dict[str, int]:
    """How long the queue is (callers holding, texters waiting), for the record."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            transfers = connection.execute(text("SELECT state, COUNT(*) FROM transfers GROUP BY state")).all()
            conversations = connection.execute(text("SELECT state, COUNT(*) FROM conversations GROUP BY state")).all()
    finally:
        engine.dispose()
    counts = {f"transfers_{state}": int(n) for state, n in transfers}
    counts.update({f"conversations_{state}": int(n) for state, n in conversations})
    return counts


def start_web(started: Processes, env: dict[str, str], role: str, argv: list[str], port: int,
              sampler: MemorySampler) -> None:  # fmt: skip
    process = started.start(role, argv, env)
    wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
    sampler.track(role, process.popen.pid)


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"connections": args.connections, "seconds_per_kind": seconds, "surge_people": args.surge,
                     "api_latency_seconds": args.api_latency,
                     "web": "python -OO -m gunicorn, gunicorn.conf.py, 2 workers x 4 threads", "quick": args.quick},
        "note": "2-core machine shared with other engineers' test runs: compare ratios within one run only.",
    }  # fmt: skip
    sampler = MemorySampler().start()
    with processes() as started, fresh_database("crisisline_bench") as database_url:
        scratch = started.scratch
        with redis_for_bench(scratch) as redis_url:
            twilio_url = start_fake_twilio(started)
            FAKE_TWILIO["url"] = twilio_url
            if args.api_latency:
                slow_api(twilio_url, args.api_latency)
            sampler.track("fake-twilio", started.started[-1].popen.pid)
            base_port, line_port = free_port(), free_port()
            base_env = deployment_env(database_url, redis_url, twilio_url, base_port)
            line_env = deployment_env(database_url, redis_url, twilio_url, line_port)
            flask(line_env, "db", "upgrade")  # the Procfile's release step
            publish_routing_on_call_around_the_clock(line_env, scratch)
            baseline.create_tables(database_url)

            gunicorn = procfile_command("web")
            if APP_SPEC not in gunicorn:
                raise RuntimeError(f"the Procfile's web line no longer serves {APP_SPEC}")
            # The same command, interpreter flags (-OO) included, serving the baseline's app.
            baseline_argv = [("bench.baseline:create_app()" if word == APP_SPEC else word) for word in gunicorn]
            start_web(started, base_env, "baseline-web", baseline_argv, base_port, sampler)
            start_web(started, line_env, "web", gunicorn, line_port, sampler)
            for role in ("worker", "clock"):
                process = started.start(role, procfile_command(role), line_env)
                sampler.track(role, process.popen.pid)
            time.sleep(1.0)
            report["rss_mib_idle"] = {k: round(v, 1) for k, v in sampler.sample().items()}

            def connect(port: int) -> list[Connection]:
                return [Connection(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}")
                        for _ in range(args.connections)]  # fmt: skip

            baseline_connections, line = connect(base_port), connect(line_port)
            # Both apps warm (imports on first use, statement caches, pools) before anything counts;
            # the line's warm-up callers go through every voice webhook and hang up.
            run_phase("warm-up", baseline_tasks(), baseline_connections, min(2.0, seconds), sampler, "baseline-web")
            run_phase("warm-up-line", surge(2 * args.connections, texters=False), line, 60.0, sampler, "web")
            phases: list[tuple[str, PhaseResult]] = []
            phases.append(("baseline_c_pg", run_phase("baseline", baseline_tasks(), baseline_connections, seconds,
                                                      sampler, "baseline-web")))  # fmt: skip
            flow = CallFlow()
            answering = Answering(flow, twilio_url, seconds)
            # (kinds, name, tasks, longest run): a phase of several kinds shares its connections.
            plan: list[tuple[tuple[str, ...], str, Iterator[Task], float]] = [
                (("voice_incoming",), "incoming", flow.incoming(), seconds),
                (("language_answer",), "language", flow.language(), seconds),
                (("need_answer",), "need", flow.need(), seconds),
                (("hold_turn",), "hold", flow.hold(), seconds),
                # Counselors answer the rings; the calls under way at the end finish (at most a minute).
                ((*ANSWERED_KINDS, HOLD_BESIDE_ANSWERS), "answering", answering.tasks(), seconds + 60.0),
                (("status_callback",), "status", flow.hang_up(), seconds),
                (("inbound_sms",), "sms", texts(), seconds),
            ]
            for phase_kinds, name, tasks, duration in plan:
                if name == "answering":
                    answering.know_the_callers(line[0].public_url, args.connections)
                # The machine is shared: each kind is compared with a baseline slice run just
                # before it, so a neighbour's test run moves both alike.
                slice_before = run_phase(f"baseline-before-{name}", baseline_tasks(), baseline_connections,
                                      max(2.0, seconds / 3), sampler, "baseline-web")  # fmt: skip
                result = run_phase(name, tasks, line, duration, sampler, "web")
                result.extra["baseline"] = summarise(slice_before, "baseline_c_pg")
                result.extra["queue_after"] = waiting_counts(database_url)
                result.extra["mixed"] = len(phase_kinds) > 1
                phases.extend((kind, result) for kind in phase_kinds)
                print(f"  {name:<10} {len(result.samples):>6} requests in {result.wall_seconds:5.1f} s", flush=True)
                if name == "answering":
                    report["answering"] = {
                        "rings_answered": answering.rings_found,
                        "outcomes": dict(sorted(answering.outcomes.items())),
                        "checks": answering.checks(database_url, result),
                    }
                    print(f"  answering: {report['answering']['outcomes']}", flush=True)
            report["rss_mib_after_texts"] = {k: round(v, 1) for k, v in sampler.sample().items()}
            report["pss_uss_mib_after_texts"] = {
                k: {kind: round(v, 1) for kind, v in values.items()} for k, values in sampler.sample_shared().items()
            }
            surge_result = run_phase("surge", surge(args.surge), line, max(seconds * 4, 30.0), sampler, "web")
            surge_result.extra["queue_after"] = waiting_counts(database_url)
            print(f"  surge      {len(surge_result.samples):>6} requests in {surge_result.wall_seconds:5.1f} s")
            again = run_phase(
                "baseline-after", baseline_tasks(), baseline_connections, seconds, sampler, "baseline-web"
            )
            for connection in [*baseline_connections, *line]:
                connection.close()
            report["rss_mib_end"] = {k: round(v, 1) for k, v in sampler.sample().items()}
            sampler.stop()

    base = summarise(phases[0][1], "baseline_c_pg")
    base_after = summarise(again, "baseline_c_pg")
    reference = base["req_per_s"] or 1.0
    kinds: dict[str, Any] = {"baseline_c_pg": {**base, "ratio": 1.0}}
    for kind, result in phases[1:]:
        row = summarise(result, kind)
        adjacent = result.extra["baseline"]["req_per_s"] or reference
        row["baseline_req_per_s_just_before"] = adjacent
        if result.extra.get("mixed"):
            row.update(mixed_phase_figures(result, kind))
        row["ratio"] = round(row["req_per_s"] / adjacent, 2)
        row["queue_after"] = result.extra.get("queue_after", {})
        kinds[kind] = row
    if "inbound_sms" in kinds:
        sms = sorted((s for s in dict(phases)["inbound_sms"].samples if s.error is None), key=lambda s: s.at)
        tenth = max(1, len(sms) // 10)
        kinds["inbound_sms"]["p50_ms_first_tenth"] = round(
            percentile(sorted(s.seconds * 1000 for s in sms[:tenth]), 0.5), 1
        )
        kinds["inbound_sms"]["p50_ms_last_tenth"] = round(
            percentile(sorted(s.seconds * 1000 for s in sms[-tenth:]), 0.5), 1
        )
    report["baseline_after"] = {**base_after, "ratio": round(base_after["req_per_s"] / reference, 2)}
    report["kinds"] = kinds
    mix = mix_ratio({kind: row["ratio"] for kind, row in kinds.items()})
    report["call_flow_mix"] = {"per_call": CALL_FLOW_MIX, "ratio": None if mix is None else round(mix, 2)}
    surge_kinds = sorted({s.kind for s in surge_result.samples})
    report["surge"] = {
        "people": args.surge,
        "wall_seconds": round(surge_result.wall_seconds, 1),
        "requests": len(surge_result.samples),
        "errors": sum(1 for s in surge_result.samples if s.error),
        "queue_after": surge_result.extra["queue_after"],
        "by_kind": {kind: summarise(surge_result, kind) for kind in surge_kinds},
    }
    report["rss_mib_peak_by_phase"] = {phase: {k: round(v, 1) for k, v in peaks.items()}
                                      for phase, peaks in sampler.peaks.items()}  # fmt: skip
    return report


LABELS = {
    "baseline_c_pg": "baseline `c_pg`",
    "voice_incoming": "`/voice/incoming`",
    "language_answer": "language answer",
    "need_answer": "need answer (rings a responder)",
    "hold_turn": "hold turn",
    "status_callback": "call status callback",
    "offer_status": "responder leg status callback",
    "whisper": "whisper (responder picks up)",
    "accept": "press of 1 (accept)",
    "caller_join": "caller redirected into the room",
    "conference_callback": "conference status callback",
    "status_after_talk": "caller hangs up after the talk",
    HOLD_BESIDE_ANSWERS: "hold turn, while counselors answer",
    "inbound_sms": "inbound SMS",
}


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Load bench, {report['started_at']}",
        "",
        f"Machine: {m['nproc']} CPU ({m['cpu_model']}), {m['ram_gib']} GiB RAM, Python {m['python']}, "
        f"load average at start {m['load_average_at_start']}. {report['note']}",
        f"{report['settings']['connections']} connections, {report['settings']['seconds_per_kind']} s per kind; "
        "each kind's ratio is to a baseline slice run just before it. "
        f"Tree: {m.get('git_commit')} with {m.get('uncommitted_files')} uncommitted files."
        + (
            f" Twilio's API answers each call placed and text sent in {latency:g} s."
            if (latency := report["settings"].get("api_latency_seconds"))
            else ""
        ),
        "",
        "| webhook | requests | req/s | baseline req/s just before | x baseline | p50 / p90 / p99 ms | errors "
        "| web CPU ms/req |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    rows = [*report["kinds"].items(), ("baseline_after", report["baseline_after"])]
    for kind, row in rows:
        label = LABELS.get(kind, "baseline `c_pg`, again at the end")
        mark = "†" if row.get("shares_connections") else ""
        lines.append(
            f"| {label} | {row['requests']} | {row['req_per_s']}{mark} | "
            f"{row.get('baseline_req_per_s_just_before', '')} | {row['ratio']} | "
            f"{row['p50_ms']} / {row['p90_ms']} / {row['p99_ms']} | {row['errors']} | "
            f"{row['web_cpu_ms_per_request']}{mark} |"
        )
    answering = report.get("answering")
    if answering:
        checks = answering["checks"]
        outcomes = ", ".join(f"{n} {outcome}" for outcome, n in answering["outcomes"].items()) or "none"
        lines += [
            "",
            "† Answering phase: its kinds share the connections (a waiting caller's hold turn runs where no webhook "
            "of an answered call is due). A kind's req/s is what the connections would serve of it alone (its mean "
            "latency plus the phase's mean time between a connection's requests; `req_per_s_in_phase` in the JSON "
            "is its share), and web CPU the phase's average per request.",
            "",
            f"Answering: {answering['rings_answered']} rings answered: {outcomes} (too_late: the line told the "
            "responder the caller had moved on, a valid answer). "
            f"Checks: {checks['transfers_accepted']} transfers accepted, "
            f"twice: {len(checks['transfers_accepted_twice'])}, "
            f"not ended after the talk: {len(checks['accepted_not_ended_after_the_talk'])}, "
            f"errors: {checks['errors']}, failed calls: {checks['failed_calls']}, "
            f"phones left ringing for a caller gone: {len(checks['offers_ringing_for_a_caller_gone'])}: "
            f"**{'ok' if checks['ok'] else 'FAILED'}**.",
        ]
    mix = report.get("call_flow_mix", {})
    if mix:
        per_call = ", ".join(f"{count} {LABELS[kind]}" for kind, count in mix["per_call"].items())
        lines += ["", f"Call-flow mix ({per_call}): **{mix['ratio']}x** the baseline (goal 1.0)."]
    sms = report["kinds"].get("inbound_sms", {})
    if sms:
        lines += [
            "",
            f"Inbound SMS p50: {sms.get('p50_ms_first_tenth')} ms in the first tenth of the phase, "
            f"{sms.get('p50_ms_last_tenth')} ms in the last (queue after: {sms.get('queue_after')}).",
        ]
    surge_report = report["surge"]
    lines += [
        "",
        f"Surge: {surge_report['people']} people at once (half calls: menus, 2 hold turns, hang-up; half texts), "
        f"{surge_report['requests']} requests in {surge_report['wall_seconds']} s, {surge_report['errors']} errors; "
        f"queue after: {surge_report['queue_after']}.",
        "",
        "| surge webhook | requests | p50 / p90 / p99 ms | errors |",
        "|---|---:|---|---:|",
    ]
    for kind, row in surge_report["by_kind"].items():
        lines.append(
            f"| {LABELS.get(kind, kind)} | {row['requests']} | "
            f"{row['p50_ms']} / {row['p90_ms']} / {row['p99_ms']} | {row['errors']} |"
        )
    lines += [
        "",
        "Peak RSS (MiB) per process:",
        "",
        "| process | idle | after texts | peak (whole run) | PSS / USS after texts |",
        "|---|---:|---:|---:|---:|",
    ]
    shared = report.get("pss_uss_mib_after_texts", {})
    peak_all: dict[str, float] = {}
    for peaks in report["rss_mib_peak_by_phase"].values():
        for name, rss in peaks.items():
            peak_all[name] = max(peak_all.get(name, 0.0), rss)
    for name in sorted(peak_all):
        idle, after_texts = report["rss_mib_idle"].get(name, ""), report["rss_mib_after_texts"].get(name, "")
        pss_uss = f"{shared[name]['pss']} / {shared[name]['uss']}" if name in shared else ""
        lines.append(f"| {name} | {idle} | {after_texts} | {peak_all[name]} | {pss_uss} |")
    lines += [
        "",
        "RSS counts shared pages (the shared libraries' code) whole in every process that maps them;"
        " PSS counts each its share, USS only the process's own pages.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0, help="per webhook kind")
    parser.add_argument("--surge", type=int, default=300, help="people arriving at once in the surge")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 s per kind, a small surge")
    parser.add_argument("--api-latency", type=float, default=0.0,
                        help="seconds the fake Twilio takes to answer each request placing a call or sending a "
                        "text (api.twilio.com takes 0.1 to 0.3 from most places; 0: as fast as it can)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=None, help="write <output>.json and .md (make bench: latest)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.surge = 3.0, 40
    try:
        psycopg.connect(baseline_admin_check(), connect_timeout=3).close()
    except psycopg.OperationalError as error:
        print(f"PostgreSQL is not reachable ({type(error).__name__}): set BENCH_POSTGRES_URL")
        return 2
    random.seed(20261130)
    report = run(args)
    text_report = markdown(report)
    print(text_report)
    if args.output is not None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(text_report)
        print(f"written: {args.output.with_suffix('.json')} and .md")
    return 0


def baseline_admin_check() -> str:
    from bench.common import postgres_admin_url

    return postgres_admin_url().replace("postgresql+psycopg://", "postgresql://")


if __name__ == "__main__":
    sys.exit(main())
