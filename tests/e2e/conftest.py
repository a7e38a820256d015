"""The whole line as the Procfile runs it, on loopback: gunicorn (web), the RQ worker and the
clock as real processes, on PostgreSQL and a real Redis, with the Twilio stand-in as its own
process (``python -m twilio_fake.server --ring-timeouts``, as ``dev.py run`` starts it, with its
browser phone for the line at ``/phone/``).

The processes start once for the folder; each story gets empty tables, a fresh stand-in and
its own published routing. Phones reach the stand-in only over HTTP (``RemoteTwilio``), as the
phone CLI does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from flask import Flask
from flask_migrate import upgrade

from crisisline import create_app
from crisisline.db import db
from crisisline.redis_server import free_port
from crisisline.settings import DEFAULT_ROUTING_FILE
from routing import store
from tests.conftest import (
    LINE_NUMBER,
    ROOT,
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    _empty_all_tables,
    _migrated,
    deployment_environment,
    procfile_argv,
    settings_for,
)
from tests.rota import around_the_clock
from twilio_fake.phone import CallerAction, Keys, Phone, PhoneCall, RemoteTwilio, RequestsTransport
from twilio_fake.signing import signed_headers, sms_params

STARTUP_SECONDS = 90.0


# The Procfile's lines as argv for this interpreter, so the stories run what a deployment runs.
PROCFILE = {name: procfile_argv(name) for name in ("web", "worker", "clock")}
COUNSELOR_PHONES = {
    "ana-ruiz": "+13125550101",  # en, es
    "ben-carter": "+13125550102",  # en
    "chloe-nguyen": "+13125550103",  # en
    "diego-morales": "+13125550104",  # es, en
}


def _wait_for_url(url: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url}: the process exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {seconds:.0f} s")


@dataclass
class Line:
    """The running line: its URL, the stand-in, and an app object for reading its database."""

    url: str
    twilio: RemoteTwilio
    twilio_url: str
    app: Flask
    secrets_file: Path
    logs: Path
    counselor_phones: list[CounselorPhone] = field(default_factory=list)  # started in this story

    def phone(self, *, fresh_connections: bool = False) -> Phone:
        """A phone of its own (its own connections to the line and the stand-in, so phones in
        different threads share nothing); ``fresh_connections``: a new connection per webhook."""
        transport = RequestsTransport(timeout=20, fresh_connections=fresh_connections)
        return Phone(transport, self.url, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER,
                     fake=RemoteTwilio(self.twilio_url))  # fmt: skip

    def publish(self, change: Callable[[dict[str, Any]], None]) -> None:
        document: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text())
        change(document)
        with self.app.app_context():
            store.publish(yaml.safe_dump(document, allow_unicode=True), published_by="e2e")

    @staticmethod
    def put_away(phone: Phone) -> None:
        """Close a phone's connections (to the line and to the stand-in)."""
        if isinstance(phone.transport, RequestsTransport):
            phone.transport.session.close()
        if isinstance(phone.fake, RemoteTwilio):
            phone.fake.session.close()

    def text(self, sender: str, body: str) -> requests.Response:
        """One inbound text, delivered (signed) as Twilio delivers it, after Twilio's own
        opt-out word handling."""
        self.twilio.keyword(sender, body)
        url = self.url + "/sms/incoming"
        params = sms_params(TEST_ACCOUNT_SID, sender, LINE_NUMBER, body)
        reply = requests.post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params, voice=False),
                              timeout=15)  # fmt: skip
        assert reply.status_code == 200
        self.twilio.messaging_reply(sender, LINE_NUMBER, reply.text)  # Twilio sends the TwiML's replies
        return reply

    def inbox(self, number: str) -> list[str]:
        return [str(message["body"]) for message in self.twilio.messages(number)]

    def wait_for_text(self, number: str, contains: str, seconds: float = 20.0) -> str:
        """The first text the line sent ``number`` that contains ``contains``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for body in self.inbox(number):
                if contains.lower() in body.lower():
                    return body
            time.sleep(0.2)
        raise AssertionError(f"no text containing {contains!r} within {seconds:.0f} s; got {self.inbox(number)}")

    def query(self, read: Callable[[], Any]) -> Any:
        with self.app.app_context():
            try:
                return read()
            finally:
                db.session.remove()


@pytest.fixture(scope="package")
def line(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    """Web, worker, clock and the Twilio stand-in, up for the whole folder (PostgreSQL only)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the end-to-end line runs on PostgreSQL, as a deployed line does")
    logs = tmp_path_factory.mktemp("e2e-logs")
    twilio_port, web_port = free_port(), free_port()
    twilio_url, web_url = f"http://127.0.0.1:{twilio_port}", f"http://127.0.0.1:{web_port}"
    settings = settings_for(database_url, redis_url, TWILIO_API_BASE_URL=twilio_url, PUBLIC_BASE_URL=web_url)
    app = create_app(settings)
    with app.app_context():
        if database_url not in _migrated:
            upgrade()
            _migrated.add(database_url)
    _empty_all_tables(database_url)
    env = {
        **os.environ,
        **deployment_environment(database_url, redis_url, TWILIO_API_BASE_URL=twilio_url, PUBLIC_BASE_URL=web_url,
                                 LOG_LEVEL="INFO"),
        "PORT": str(web_port), "BIND_HOST": "127.0.0.1", "WEB_CONCURRENCY": "2",
    }  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as log:  # the child keeps its own copy of the handle
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        processes.append(process)
        return process

    try:
        stand_in = start("twilio", [sys.executable, "-m", "twilio_fake.server", "--port", str(twilio_port),
                                    "--auto-deliver", "--ring-timeouts", "--account-sid", TEST_ACCOUNT_SID,
                                    "--auth-token", TEST_AUTH_TOKEN, "--line-url", web_url,
                                    "--line-number", LINE_NUMBER])  # fmt: skip
        web = start("web", PROCFILE["web"])
        start("worker", PROCFILE["worker"])
        start("clock", PROCFILE["clock"])
        _wait_for_url(f"{twilio_url}/_fake/calls", stand_in, STARTUP_SECONDS)
        _wait_for_url(f"{web_url}/healthz", web, STARTUP_SECONDS)
        secrets_file = logs / "secrets.json"
        secrets_file.write_text(json.dumps({"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
                                            "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN}))  # fmt: skip
        yield Line(web_url, RemoteTwilio(twilio_url), twilio_url, app, secrets_file, logs)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)  # nothing to drain: the stories are over
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        _empty_all_tables(database_url)


@pytest.fixture
def fresh_line(line: Line) -> Iterator[Line]:
    """The running line with empty tables and a stand-in that forgot every call and text."""
    _empty_all_tables(line.app.extensions["crisisline.settings"].database_url)
    requests.post(f"{line.twilio_url}/_fake/reset", timeout=5).raise_for_status()
    started = time.monotonic()
    yield line
    print(f"\nstory took {time.monotonic() - started:.1f} s")
    # A story that failed early leaves its counselors' phones answering: the next story's
    # legs would be theirs (CI once saw one failure become three).
    while line.counselor_phones:
        line.counselor_phones.pop().put_down(10)


def on_call(*responders: str, **transfer: Any) -> Callable[[dict[str, Any]], None]:
    """A routing change: only ``responders`` on call, all day; ``transfer`` settings changed."""

    def change(document: dict[str, Any]) -> None:
        around_the_clock(document, on_call=responders)
        document["transfer"].update(transfer)

    return change


@dataclass
class CounselorPhone:
    """A counselor's phone in a thread: answers the legs that ring ``number`` (up to ``calls``),
    presses ``keys`` at the whisper, stays until the line ends the call or ``talk`` seconds
    pass (then hangs up). ``ignore`` legs ring out unanswered (the stand-in's ring timeout)."""

    line: Line
    number: str
    keys: str = "1"
    calls: int = 1
    talk: float = 30.0
    ignore: int = 0
    answered: list[PhoneCall] = field(default_factory=list)
    rooms: dict[str, str] = field(default_factory=dict)  # answered leg's sid -> the conference it sat in
    ignored: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"counselor-{self.number}")

    def start(self) -> CounselorPhone:
        self.line.counselor_phones.append(self)
        self.thread.start()
        return self

    def join(self, seconds: float) -> None:
        self.thread.join(timeout=seconds)
        self.stop.set()

    def put_down(self, seconds: float) -> None:
        """Stop answering (hanging up a leg still open) and wait for the thread to finish."""
        self.stop.set()
        self.thread.join(timeout=seconds)

    def _run(self) -> None:
        phone = self.line.phone()
        assert isinstance(phone.fake, RemoteTwilio)
        twilio = phone.fake
        handled: set[str] = set()
        try:
            while not self.stop.is_set() and len(self.answered) < self.calls:
                ringing = [leg for leg in twilio.calls(to=self.number, statuses=("ringing",))
                           if leg.sid not in handled]  # fmt: skip
                if not ringing:
                    time.sleep(0.1)
                    continue
                leg = ringing[0]
                handled.add(leg.sid)
                if len(self.ignored) < self.ignore:
                    self.ignored.append(leg.sid)
                    continue
                record = phone.answer(leg.sid, [Keys(self.keys)])
                self.answered.append(record)
                until = time.monotonic() + self.talk
                while not record.finished and time.monotonic() < until and not self.stop.is_set():
                    if record.conference is not None:
                        self.rooms[leg.sid] = record.conference
                    time.sleep(0.1)
                    if record.conference is not None:  # one look at the leg: still in the room, not moved?
                        now = twilio.get_call(leg.sid)
                        if now.conference_sid is not None and len(now.redirects) <= record.redirects_seen:
                            continue
                    phone.resume(record, max_hold_turns=0)
                if not record.finished:
                    phone.hang_up(record)
        except Exception as error:  # reported by the story
            self.errors.append(f"{type(error).__name__}: {error}")
        finally:
            self.line.put_away(phone)


def call_and_wait(
    line: Line, actions: list[CallerAction], *, caller: str = "+13125550177", hold_seconds: float = 45.0
) -> tuple[Phone, PhoneCall]:
    """A caller goes through the menus and holds (in real time) until the line moves them."""
    phone = line.phone()
    call = phone.call(actions, identity=phone.identity(caller), max_hold_turns=0)
    if call.ended_by == "on-hold":
        phone.wait_on_hold(call, seconds=hold_seconds, turn_seconds=1.0)
    return phone, call
