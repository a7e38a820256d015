"""A burst of callers while the database hangs, against gunicorn as the Procfile runs it.

The in-process tests of the deadline serve each request on a thread of its own. gunicorn has
a few threads a worker: a webhook waiting out its deadline on a hung database holds one for
the whole deadline, and a caller whose webhook waits behind it for a thread is answered late
(the deadline counts from when the app sees the request). Every caller of a burst must still
hear the backup line within the deadline plus half a second.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from flask import Flask

from crisisline.redis_server import free_port
from crisisline.settings import Settings
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TEST_BACKUP_NUMBER, deployment_environment
from tests.faults import StallingProxy
from tests.web_process import gunicorn_serving
from twilio_fake.phone import Phone, RequestsTransport
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.server import FakeTwilioServer

DEADLINE = 2.0
GRACE = 0.5
BURST = 24  # callers whose first webhook arrives in the same instant


@pytest.fixture
def line_on_a_stalling_database(
    app: Flask, settings: Settings, fake_twilio_server: FakeTwilioServer
) -> Iterator[tuple[str, StallingProxy]]:
    """gunicorn with the Procfile's settings (workers and threads as shipped) on PostgreSQL
    behind a proxy the test can make go silent."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("a hung network link is modelled on PostgreSQL's TCP connection")
    database = urlsplit(settings.database_url)
    with StallingProxy(database.hostname or "127.0.0.1", database.port or 5432) as proxy:
        port = free_port()
        proxied = settings.database_url.replace(f"{database.hostname}:{database.port}", f"127.0.0.1:{proxy.port}")
        env = {
            **{name: value for name, value in os.environ.items() if name not in ("WEB_CONCURRENCY", "WEB_THREADS")},
            **deployment_environment(
                proxied, settings.redis_url, TWILIO_API_BASE_URL=fake_twilio_server.base_url,
                PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", VOICE_DEADLINE_SECONDS=str(DEADLINE),
            ),
        }  # fmt: skip
        try:
            with gunicorn_serving(env, port) as url:
                yield url, proxy
        finally:
            proxy.resume()  # the late handlers finish and the workers stop cleanly


def test_a_burst_of_callers_on_a_hung_database_all_hear_the_backup_line_in_time(
    line_on_a_stalling_database: tuple[str, StallingProxy], fake: FakeTwilio, wednesday_evening: object
) -> None:
    url, proxy = line_on_a_stalling_database
    phone = Phone(RequestsTransport(fresh_connections=True), url, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER,
                  fake=fake)  # fmt: skip
    callers = [phone.identity(f"+13125554{n:03d}") for n in range(BURST)]
    with ThreadPoolExecutor(max_workers=8) as warm:  # live pooled connections in both workers
        replies = list(warm.map(lambda c: phone.post(url + "/voice/incoming", c.voice_params("ringing")), callers[:8]))
    assert {reply.status for reply in replies} == {200}

    def answer(params: dict[str, str]) -> tuple[float, ET.Element]:
        started = time.perf_counter()
        reply = phone.post(url + "/voice/incoming", params)
        seconds = time.perf_counter() - started
        assert reply.status == 200
        return seconds, ET.fromstring(reply.body)  # noqa: S314 - our own TwiML

    proxy.stall()
    with ThreadPoolExecutor(max_workers=BURST) as twilio:
        answers = list(twilio.map(answer, [phone.identity(f"+13125555{n:03d}").voice_params("ringing")
                                           for n in range(BURST)]))  # fmt: skip
    proxy.resume()

    seconds = sorted(s for s, _ in answers)
    print(f"\n{BURST} callers at once on a hung database: answered after {seconds[0]:.2f} to {seconds[-1]:.2f} s")
    for _, twiml in answers:
        dial = twiml.find("Dial")
        assert dial is not None and (dial.text or "").strip() == TEST_BACKUP_NUMBER
    assert seconds[-1] < DEADLINE + GRACE
