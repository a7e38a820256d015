"""Shared fixtures: real SQLite and PostgreSQL (via Alembic migrations), a real Redis, and a
phone that calls the app with webhooks signed exactly as Twilio signs them.

Fixture shapes follow flaskr (``app``/``client``) and Indico (factory fixtures).
PostgreSQL tests are skipped, with the reason, when no server answers at TEST_POSTGRES_URL.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import requests
import time_machine
import yaml
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from console.accounts import passwords
from crisisline import create_app
from crisisline.app import CLOCK_LEADER_KEY
from crisisline.db import db
from crisisline.redis_server import FREE_PORTS, free_port, start_redis
from crisisline.settings import DEFAULT_ROUTING_FILE, Settings
from routing import store
from tests.rota import WEDNESDAY_EVENING, WEDNESDAY_MORNING
from twilio_fake.phone import HttpReply, Phone, RequestsTransport, WsgiTransport
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.server import FakeTwilioServer
from twilio_fake.signing import signed_headers, sms_params
from workers import contacts, upkeep

TEST_ACCOUNT_SID = "AC" + "7" * 32
TEST_AUTH_TOKEN = "d2f1c0ffee0d2f1c0ffee0d2f1c0ffee"
TEST_DATA_KEY = "bG9jYWwtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyEhISE="
# BACKUP_NUMBER as an operator sets it: the example routing's ``line.backup_number`` (the
# fail-safe dials the routing's number once read; BACKUP_NUMBER before that).
TEST_BACKUP_NUMBER = "+18002738255"
LINE_NUMBER = "+13125550100"
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# One database per test run, so two runs on one machine never drop each other's tables.
POSTGRES_TEST_DB = f"crisisline_test_{os.getpid()}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "production_password_cost: hash passwords at the production cost")
    if os.environ.get("TEST_REDIS_URL") and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("TEST_REDIS_URL would be shared by every test process (some tests empty it): -n 0")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1"... under pytest -n
    if worker[2:].isdigit():
        # Ports of this process's own (``free_port``): never one another process picked.
        low = 10000 + 1000 * (int(worker[2:]) % 20)
        os.environ[FREE_PORTS] = f"{low}-{low + 999}@{os.getpid()}"


# Tests that run the line as processes (gunicorn's workers, the Procfile's worker and clock),
# each with a pool of database connections: under pytest -n they all run in one test process
# (``--dist loadgroup``), one after another, so two of them at once never pass PostgreSQL's 100
# connections, nor load the machine's two cores twice over. The e2e folder's processes then
# start once, not once per test process.
MANY_PROCESSES = (
    "tests/e2e/", "tests/console/test_in_a_browser.py", "tests/core/test_process_logs.py",
    "tests/line_queue/test_surge.py", "tests/reliability/test_hung_database_under_gunicorn.py",
    "tests/reliability/test_slow_clients.py", "tests/workers/test_callbacks_go_first.py",
)  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(MANY_PROCESSES):
            item.add_marker(pytest.mark.xdist_group("many_processes"))


@pytest.fixture(autouse=True)
def quick_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id at its production cost (64 MiB, 3 passes) takes 0.2 s a hash and a check here,
    and the console's tests make and sign in accounts hundreds of times: in this process they
    use the same algorithm at its lowest cost. The test of the cost itself is marked
    ``production_password_cost``; every process a test starts hashes at the production cost."""
    if request.node.get_closest_marker("production_password_cost") is None:
        monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        passwords._dummy_hash.cache_clear()  # made by whichever hasher came first: this one's now


def settings_for(database_url: str, redis_url: str, **extra: str) -> Settings:
    return Settings.from_env(deployment_environment(database_url, redis_url, **extra))


def deployment_environment(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment variables of a test deployment (also handed to real worker processes)."""
    env = {
        "CRISISLINE_ENV": "test",
        "SECRET_KEY": "test-secret-key-that-is-long-enough-123",
        "DATA_ENCRYPTION_KEY": TEST_DATA_KEY,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
        "BACKUP_NUMBER": TEST_BACKUP_NUMBER,
        "ROUTING_FILE": str(DEFAULT_ROUTING_FILE),
        "LOG_LEVEL": "WARNING",
        # The longest deadline allowed: a busy test machine must not turn a slow-but-fine
        # webhook into a fail-safe. The reliability tests set the production default.
        "VOICE_DEADLINE_SECONDS": "5",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: TEST_REDIS_URL if given, else a private redis-server for this run."""
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    server = start_redis(tmp_path_factory.mktemp("redis"), persist=False)
    yield server.url
    server.stop()


def _postgres_database_url() -> str:
    """A fresh ``crisisline_test`` database on the local server, or skip with the reason."""
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {POSTGRES_TEST_DB} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {POSTGRES_TEST_DB}")
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL not reachable at TEST_POSTGRES_URL ({type(error).__name__})")
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{POSTGRES_TEST_DB}"


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """This process's SQLite database file, made (and migrated, by ``app``) once."""
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'line.db'}"


@pytest.fixture(scope="session")
def postgresql_database_url() -> Iterator[str]:
    """This process's PostgreSQL database, made once and dropped at the end of the run."""
    yield _postgres_database_url()
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {POSTGRES_TEST_DB} WITH (FORCE)")


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each database backend, migrated once per process with Alembic (not create_all). Each is
    its own session fixture, so a process that takes tests of both (``pytest -n``) switching
    between them neither remakes nor migrates a database again."""
    return str(request.getfixturevalue(f"{request.param}_database_url"))


_migrated: set[str] = set()


def _empty_all_tables(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for table in reversed(db.metadata.sorted_tables):
            connection.execute(text(f"DELETE FROM {table.name}"))
    engine.dispose()


@pytest.fixture(scope="session")
def fake_twilio_server() -> Iterator[FakeTwilioServer]:
    """The local stand-in for Twilio's REST API, over real HTTP, for the whole run."""
    with FakeTwilioServer(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN) as server:
        yield server


@pytest.fixture
def fake(fake_twilio_server: FakeTwilioServer) -> Iterator[FakeTwilio]:
    """The fake Twilio's state (calls placed, messages sent, conferences), empty per test."""
    fake_twilio_server.fake.reset()
    yield fake_twilio_server.fake
    fake_twilio_server.fake.reset()


@pytest.fixture
def app_port() -> int:
    """The port the app will be served on, known before the app exists (its public URL)."""
    return free_port()


@pytest.fixture
def settings(database_url: str, redis_url: str, fake_twilio_server: FakeTwilioServer, app_port: int) -> Settings:
    return settings_for(
        database_url,
        redis_url,
        TWILIO_API_BASE_URL=fake_twilio_server.base_url,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{app_port}",
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The app on a migrated, empty database with the example routing published."""
    app = create_app(settings)
    with app.app_context():
        if settings.database_url not in _migrated:
            upgrade()
            _migrated.add(settings.database_url)
        store.publish(DEFAULT_ROUTING_FILE.read_text(), published_by="tests")
    yield app
    app.extensions["crisisline.deadline"].shutdown(wait=True)  # webhooks still finishing
    app.extensions["crisisline.background"].shutdown()  # and the ringing they started
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    _empty_all_tables(settings.database_url)


@pytest.fixture
def make_app() -> Iterator[Callable[[Settings], Flask]]:
    """Factory: another app (other settings, same or broken services), disposed after the test."""
    made: list[Flask] = []

    def make(settings: Settings) -> Flask:
        made.append(create_app(settings))
        return made[-1]

    yield make
    for extra_app in made:
        extra_app.extensions["crisisline.deadline"].shutdown(wait=True)
        extra_app.extensions["crisisline.background"].shutdown()
        with extra_app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def phone(app: Flask, live_server: str, fake: FakeTwilio) -> Phone:
    """Calls the app over real HTTP as Twilio would: signed webhooks, TwiML followed, REST
    calls the app places answered through the fake Twilio. After each webhook it waits for the
    ringing the webhook started off its request path, so tests see its legs on a busy machine."""
    transport = SettledTransport(RequestsTransport(), app)
    settle_after_callbacks(fake, app)
    return Phone(transport, live_server, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)


def settle_after_callbacks(fake: FakeTwilio, app: Flask) -> None:
    """A call the test drives (``fake.advance_call``) returns once the work its callbacks
    started off their request path is done (the next person rung after a no-answer, say)."""
    fake.settle = lambda: app.extensions["crisisline.background"].wait_idle(timeout=30)


class SettledTransport:
    """A transport that returns once the app's background work (``crisisline.background``)
    started by the request is done."""

    def __init__(self, inner: RequestsTransport, app: Flask) -> None:
        self.inner, self.app = inner, app

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        reply = self.inner.post(url, params, headers)
        self.app.extensions["crisisline.background"].wait_idle(timeout=30)
        return reply


@pytest.fixture
def wsgi_phone(client: FlaskClient) -> Phone:
    """Calls the app in-process (no network), for webhooks that never leave the menu."""
    return Phone(WsgiTransport(client), "http://localhost", TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER)


@pytest.fixture
def example_routing() -> dict[str, Any]:
    """The shipped example routing document as plain data, for tests to modify."""
    loaded: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text())
    return loaded


@pytest.fixture
def publish_routing(app: Flask, example_routing: dict[str, Any]) -> Callable[..., int]:
    """Factory: publish the example routing after ``change(document)`` edits it; returns the id."""

    def publish(change: Callable[[dict[str, Any]], None] | None = None) -> int:
        document = yaml.safe_load(yaml.safe_dump(example_routing))
        if change:
            change(document)
        with app.app_context():
            return store.publish(yaml.safe_dump(document, allow_unicode=True), published_by="tests").id

    return publish


def table_row_counts(app: Flask) -> dict[str, int]:
    """Rows per table: for asserting that a refused request wrote nothing."""
    with app.app_context():
        return {
            table.name: db.session.execute(text(f"SELECT COUNT(*) FROM {table.name}")).scalar_one()
            for table in db.metadata.sorted_tables
        }


ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def serving(app: Flask, port: int) -> Iterator[str]:
    """Serve ``app`` over real HTTP on a loopback port; yields its base URL."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def live_server(app: Flask, app_port: int) -> Iterator[str]:
    """The app served over real HTTP on its loopback port (its PUBLIC_BASE_URL)."""
    with serving(app, app_port) as url:
        yield url


@pytest.fixture
def wednesday_evening() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(WEDNESDAY_EVENING, tick=True) as traveller:
        yield traveller


@pytest.fixture
def wednesday_morning() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(WEDNESDAY_MORNING, tick=True) as traveller:
        yield traveller


# A text Twilio could not get to the phone (to an opted-out number, say) never shows in its inbox.
UNDELIVERED = ("failed", "undelivered")


class TextingPhone:
    """Texts the line as Twilio delivers them (signed, full parameters) over real HTTP, and reads
    back what the line sent each number through the fake Twilio's REST API."""

    def __init__(self, base_url: str, fake: FakeTwilio, app: Flask | None = None) -> None:
        self.url = base_url + "/sms/incoming"
        self.fake = fake
        self.app = app
        self.session = requests.Session()

    def send(self, sender: str, body: str, *, message_sid: str | None = None, num_media: int = 0) -> list[str]:
        """Deliver one inbound text; returns the texts the line sent ``sender`` in response."""
        before = len(self.inbox(sender))
        self.deliver(sms_params(TEST_ACCOUNT_SID, sender, LINE_NUMBER, body, message_sid, num_media))
        return self.inbox(sender)[before:]

    def deliver(self, params: dict[str, str]) -> requests.Response:
        """Deliver one inbound text and, as Twilio does, send the replies its TwiML holds."""
        headers = signed_headers(TEST_AUTH_TOKEN, self.url, params, voice=False)
        response = self.session.post(self.url, data=params, headers=headers, timeout=15)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/xml")
        self.fake.reply_with_twiml(params["From"], params["To"], response.text)
        if self.app is not None:  # the offers the text started off its request path, as for calls
            self.app.extensions["crisisline.background"].wait_idle(timeout=30)
        return response

    def inbox(self, number: str) -> list[str]:
        """Every text the line sent ``number`` that reached it, oldest first."""
        return [m.body for m in self.fake.messages.values() if m.to == number and m.status not in UNDELIVERED]


@pytest.fixture
def texting(app: Flask, live_server: str, fake: FakeTwilio) -> TextingPhone:
    settle_after_callbacks(fake, app)
    return TextingPhone(live_server, fake, app)


@pytest.fixture
def clock_tick(app: Flask) -> Callable[[], dict[str, dict[str, int]]]:
    """Runs the clock's every-minute jobs once, in-process, as the Procfile's clock has them run:
    the timed text work, transfer repairs and callbacks (the safety nets behind the events)."""

    def tick() -> dict[str, dict[str, int]]:
        with app.app_context():
            return {
                "texts": upkeep.sweep_text_conversations(),
                "transfers": upkeep.reconcile_transfers(),
                "callbacks": upkeep.tend_callbacks(),
            }

    return tick


@pytest.fixture
def clean_redis(settings: Settings) -> Iterator[redis.Redis]:
    """An empty Redis, so no other test's jobs run against this test's database."""
    connection = redis.Redis.from_url(settings.redis_url)
    connection.flushdb()
    yield connection
    connection.flushdb()


@pytest.fixture
def a_clock_leads(clean_redis: redis.Redis) -> Iterator[None]:
    """A clock process's lease, as the Procfile's clock holds it (``/readyz`` reads it)."""
    clean_redis.set(CLOCK_LEADER_KEY, "tests:clock", ex=300)
    yield
    clean_redis.delete(CLOCK_LEADER_KEY)


@pytest.fixture
def run_worker(settings: Settings, fake_twilio_server: FakeTwilioServer) -> Callable[..., None]:
    """Runs the Procfile's worker (its ``worker:`` line, in burst mode) as a real process until
    the queues are empty, with this test's database, Redis and fake Twilio. Its queues: those
    named, else the ones scheduled contacts go to (a callback's attempt, a check-in…)."""

    def run(*queues: str) -> None:
        env = {
            **os.environ,
            **deployment_environment(
                settings.database_url, settings.redis_url,
                TWILIO_API_BASE_URL=fake_twilio_server.base_url, PUBLIC_BASE_URL=settings.public_base_url or "",
            ),
        }  # fmt: skip
        subprocess.run(  # noqa: S603 - our own interpreter and module
            [*procfile_worker(), "--burst", *(queues or contacts.CONTACT_QUEUES)],
            env=env, cwd=ROOT, check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    return run


def procfile_argv(process: str) -> list[str]:
    """The Procfile's line for ``process`` as argv for this interpreter: ``python -OO -m
    gunicorn ...`` as ``<this python> -OO -m gunicorn ...``, ``flask ...`` as ``<this python>
    -m flask ...``, so a test runs exactly what a deployment runs, in the test's venv."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            program, *arguments = shlex.split(command)
            if program.startswith("python"):  # python, python3, python3.11: this test's interpreter
                return [sys.executable, *arguments]
            return [sys.executable, "-m", program, *arguments]
    raise AssertionError(f"the Procfile has no {process} line")


def procfile_worker() -> list[str]:
    """The Procfile's ``worker:`` line as argv for this interpreter, without its queue names
    and ``--with-scheduler`` (each test names its queues and runs in burst mode)."""
    argv = procfile_argv("worker")
    program, words = argv[:3], argv[3:]
    assert program == [sys.executable, "-m", "flask"]
    options = [word for word in words if word.startswith("-") or word in ("workers", "run", "crisisline")]
    return [*program, *(o for o in options if o != "--with-scheduler")]
