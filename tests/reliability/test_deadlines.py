"""Hard deadlines: whatever hangs, a caller hears their next step within the deadline.

Faults are real: PostgreSQL behind a TCP proxy that goes silent mid-connection (a partition or
a hung server: no error, no answer), a Twilio REST API that answers after 10 s. Each test
prints its measured figure.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call
from crisisline.settings import Settings
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TEST_BACKUP_NUMBER, settings_for
from tests.faults import StallingProxy, without_collector_pauses
from twilio_fake.phone import HttpReply, Keys, Phone, WsgiTransport
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity

DEADLINE = 2.0
GRACE = 0.5  # the acceptance: valid TwiML within the deadline plus half a second


@pytest.fixture
def hung_database_client(
    app: Flask, settings: Settings, make_app: Callable[[Settings], Flask]
) -> Iterator[tuple[FlaskClient, StallingProxy]]:
    """An app whose PostgreSQL connections pass through a proxy the test can make go silent."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("a hung network link is modelled on PostgreSQL's TCP connection")
    url = urlsplit(settings.database_url)
    with StallingProxy(url.hostname or "127.0.0.1", url.port or 5432) as proxy:
        proxied = settings.database_url.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}")
        line = make_app(
            settings_for(
                proxied, settings.redis_url, VOICE_DEADLINE_SECONDS=str(DEADLINE),
                TWILIO_API_BASE_URL=settings.twilio_api_base_url or "", PUBLIC_BASE_URL=settings.public_base_url or "",
            )
        )  # fmt: skip
        try:
            yield line.test_client(), proxy
        finally:
            # Let the late handlers finish against the live link and close their connections
            # before the engine is disposed: nothing is left half-open for the next test.
            proxy.resume()
            line.extensions["crisisline.deadline"].shutdown(wait=True)
            line.extensions["crisisline.background"].shutdown()


def timed(phone: Phone, path: str, params: dict[str, str]) -> tuple[float, ET.Element]:
    started = time.perf_counter()
    reply = phone.post(phone.base_url + path, params)
    seconds = time.perf_counter() - started
    assert reply.status == 200, reply.status
    assert reply.content_type.startswith("text/xml")
    return seconds, ET.fromstring(reply.body)  # noqa: S314 - our own TwiML


def test_a_hung_database_mid_call_still_answers_every_caller_route_in_time(
    hung_database_client: tuple[FlaskClient, StallingProxy], wednesday_evening: object
) -> None:
    client, proxy = hung_database_client
    phone = Phone(WsgiTransport(client), "http://localhost", *_credentials())
    caller = phone.identity("+13125550161")
    first = phone.call([], max_hold_turns=0, identity=caller, hang_up_after_requests=1)
    assert first.steps[0].status == 200  # the database answers: the greeting and language menu

    proxy.stall()  # now every query waits forever: no error, no answer
    figures = {}
    for path, params in (
        ("/voice/incoming", phone.identity("+13125550162").voice_params("ringing")),
        ("/voice/menu/language?attempt=1", {**caller.voice_params("in-progress"), "Digits": "1"}),
        ("/voice/menu/need?lang=en&attempt=1", {**caller.voice_params("in-progress"), "Digits": "2"}),
    ):
        seconds, twiml = timed(phone, path, params)
        figures[path.split("?")[0]] = seconds
        dial = twiml.find("Dial")
        assert dial is not None and (dial.text or "").strip() == TEST_BACKUP_NUMBER
        assert seconds < DEADLINE + GRACE
    proxy.resume()
    print(f"\nhung database: backup-line TwiML after {', '.join(f'{p} {s:.2f} s' for p, s in figures.items())}")


def test_a_hung_database_keeps_a_holding_caller_on_hold_twice_then_the_backup_line(
    hung_database_client: tuple[FlaskClient, StallingProxy],
) -> None:
    client, proxy = hung_database_client
    phone = Phone(WsgiTransport(client), "http://localhost", *_credentials())
    params = phone.identity("+13125550163").voice_params("in-progress")
    proxy.stall()

    seconds, first = timed(phone, "/voice/hold?transfer=1&tick=3", params)
    redirect = first.find("Redirect")
    assert redirect is not None and first.find("Pause") is not None and first.find("Dial") is None
    assert "late=1" in (redirect.text or "")
    _, second = timed(phone, (redirect.text or "").strip(), params)
    # Never dead air: each late turn says a sentence (before, a bare 5 s pause: 16 s of silence
    # from the first late answer to the backup line's first word).
    for late in (first, second):
        assert "stay on the line" in " ".join(say.text or "" for say in late.iter("Say"))
        assert sum(int(pause.get("length", "1")) for pause in late.iter("Pause")) <= 3
    next_url = (second.find("Redirect").text or "").strip()  # type: ignore[union-attr]
    assert "late=2" in next_url
    _, third = timed(phone, next_url, params)
    proxy.resume()

    dial = third.find("Dial")
    assert dial is not None and (dial.text or "").strip() == TEST_BACKUP_NUMBER
    assert seconds < DEADLINE + GRACE
    print(f"\nhung database: a hold turn answered after {seconds:.2f} s; the third late turn dials the backup line")


def test_a_forged_request_is_refused_in_time_while_the_database_hangs(
    hung_database_client: tuple[FlaskClient, StallingProxy],
) -> None:
    client, proxy = hung_database_client
    params = CallIdentity(TEST_ACCOUNT_SID, "+13125550164", LINE_NUMBER).voice_params("ringing")
    proxy.stall()
    started = time.perf_counter()
    response = client.post("/voice/menu/need?lang=en&attempt=1", data=params, headers={"X-Twilio-Signature": "forged"})
    seconds = time.perf_counter() - started
    proxy.resume()

    assert response.status_code == 403
    assert seconds < DEADLINE + GRACE


@pytest.mark.usefixtures("wednesday_evening")
def test_a_slow_twilio_api_never_adds_to_a_callers_silence_past_the_deadline(
    app: Flask, settings: Settings, make_app: Callable[[Settings], Flask], fake: FakeTwilio
) -> None:
    line = make_app(
        settings_for(
            settings.database_url, settings.redis_url, VOICE_DEADLINE_SECONDS=str(DEADLINE),
            TWILIO_API_BASE_URL=settings.twilio_api_base_url or "", PUBLIC_BASE_URL=settings.public_base_url or "",
        )
    )  # fmt: skip
    transport = TimedTransport(WsgiTransport(line.test_client()))
    phone = Phone(transport, "http://localhost", *_credentials(), fake=fake)
    fake.inject_fault("POST", r"/Calls\.json$", status=200, delay=10.0, times=None)  # 10 s per call placed

    call = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    slowest = max(transport.seconds)

    need_answer = call.steps[-1]
    assert need_answer.status == 200 and need_answer.twiml is not None
    # Ringing runs off the request path: the caller holds in line (not the backup line), told
    # so within the ringing budget (half the deadline), while Twilio takes its time.
    assert call.ended_by == "on-hold" and not call.dials
    assert slowest < DEADLINE / 2 + GRACE
    print(f"\nslow Twilio REST (10 s): the need answer came after {slowest:.2f} s; the caller holds")


class TimedTransport:
    """Any transport, recording how long each webhook took to answer."""

    def __init__(self, inner: WsgiTransport) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        started = time.perf_counter()
        reply = self.inner.post(url, params, headers)
        self.seconds.append(time.perf_counter() - started)
        return reply


def _credentials() -> tuple[str, str, str]:
    return TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER


@pytest.mark.usefixtures("a_clock_leads")
def test_readiness_names_what_is_down_and_liveness_never_touches_it(
    hung_database_client: tuple[FlaskClient, StallingProxy],
) -> None:
    client, proxy = hung_database_client
    ready = {"status": "ready", "database": "ok", "redis": "ok", "routing": "ok", "clock": "ok"}
    assert client.get("/readyz").get_json() == ready

    proxy.stall()
    started = time.perf_counter()
    not_ready = client.get("/readyz")
    seconds = time.perf_counter() - started
    alive = client.get("/healthz")
    proxy.resume()

    assert not_ready.status_code == 503
    down = {"status": "not ready", "database": "down", "redis": "ok", "routing": "unknown", "clock": "ok"}
    assert not_ready.get_json() == down
    assert seconds < 1.5
    assert alive.get_json() == {"status": "ok"}


STATUS_CALLBACKS = [
    "/voice/status",
    "/voice/offer/status?offer=1",
    "/voice/conference/events?transfer=1",
    "/voice/callback/status?transfer=1",
    "/sms/status?message=1",
]


def test_status_callbacks_on_a_hung_database_are_acknowledged_in_time_and_leave_callers_a_thread(
    hung_database_client: tuple[FlaskClient, StallingProxy],
) -> None:
    """A status callback stuck on a hung database held its web thread for good: four of them
    (gunicorn's threads a worker) left the next caller's webhook unanswered until Twilio gave
    up. They now run on a lane of their own and are acknowledged at the deadline."""
    client, proxy = hung_database_client
    phone = Phone(WsgiTransport(client), "http://localhost", *_credentials())
    callers = [phone.identity(f"+131255501{n:02d}") for n in range(70, 80)]
    with ThreadPoolExecutor(max_workers=8) as warm:  # live pooled connections, as in production
        list(warm.map(lambda c: phone.post("http://localhost/voice/status", c.voice_params("ringing")), callers))
    proxy.stall()
    try:
        with without_collector_pauses(), ThreadPoolExecutor(max_workers=len(STATUS_CALLBACKS) * 2 + 1) as web_threads:
            started = time.perf_counter()
            statuses = [
                web_threads.submit(phone.post, "http://localhost" + path, callers[n].voice_params("completed"))
                for n, path in enumerate(STATUS_CALLBACKS * 2)
            ]
            time.sleep(0.2)
            new_caller = phone.identity("+13125550189").voice_params()
            incoming = web_threads.submit(timed, phone, "/voice/incoming", new_caller)
            replies = [future.result(timeout=15) for future in statuses]
            status_seconds = time.perf_counter() - started
            caller_seconds, twiml = incoming.result(timeout=15)
    finally:
        proxy.resume()

    assert [reply.status for reply in replies] == [204, 204, 204, 204, 200] * 2
    assert status_seconds < DEADLINE + GRACE
    dial = twiml.find("Dial")
    assert dial is not None and (dial.text or "").strip() == TEST_BACKUP_NUMBER
    assert caller_seconds < DEADLINE + GRACE
    print(f"\nhung database: 10 status callbacks acknowledged within {status_seconds:.2f} s; "
          f"a new caller answered after {caller_seconds:.2f} s")  # fmt: skip


def test_a_status_callback_waiting_for_a_thread_past_its_deadline_still_runs_once_the_database_returns(
    app: Flask, hung_database_client: tuple[FlaskClient, StallingProxy]
) -> None:
    """Found by a review: a status callback still queued for the status pool when its deadline
    passed was cancelled, and Twilio does not send it again; it now runs once a thread frees."""
    client, proxy = hung_database_client
    line = client.application
    deadline = line.extensions["crisisline.deadline"]
    phone = Phone(WsgiTransport(client), "http://localhost", *_credentials())
    stuck, waiting = phone.identity("+13125550201"), phone.identity("+13125550202")
    for caller in (stuck, waiting):  # their calls exist; the pool holds a live connection
        phone.post("http://localhost/voice/status", caller.voice_params("ringing"))
    deadline.status_pool.shutdown(wait=True)
    deadline.status_pool = ThreadPoolExecutor(max_workers=1)  # one thread: the second waits for it
    proxy.stall()
    try:
        with ThreadPoolExecutor(max_workers=2) as web_threads:
            first = web_threads.submit(phone.post, "http://localhost/voice/status", stuck.voice_params("completed"))
            time.sleep(0.2)
            second = web_threads.submit(phone.post, "http://localhost/voice/status", waiting.voice_params("completed"))
            replies = [first.result(timeout=15), second.result(timeout=15)]
    finally:
        proxy.resume()
    deadline.shutdown(wait=True)  # every status callback has run

    assert [reply.status for reply in replies] == [204, 204]  # both acknowledged at the deadline
    with line.app_context():
        statuses = {sid: status for sid, status in db.session.execute(select(Call.call_sid, Call.status))}
    assert statuses[waiting.call_sid] == "completed"  # the one that waited for a thread was not dropped
    assert statuses[stuck.call_sid] == "completed"
