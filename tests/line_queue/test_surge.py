"""A surge against the real web process: 20 callers, 4 counselors, gunicorn with two worker
processes (as the Procfile runs it) on PostgreSQL, every webhook over real HTTP and every
counselor's phone played through the fake Twilio, concurrently.

Talk time is scaled down (a few seconds instead of 40) so the suite stays quick; what is
checked does not depend on it: everyone reaches a counselor (nobody to the backup line),
offers go out in queue order, nobody is rung while busy, and each caller is accepted once.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Offer, Transfer
from crisisline.redis_server import free_port
from crisisline.settings import Settings
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, deployment_environment
from tests.rota import around_the_clock
from tests.web_process import gunicorn_serving
from twilio_fake.phone import Keys, Phone, PhoneCall, RequestsTransport
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.server import FakeTwilioServer

CALLERS = 20
COUNSELORS = {"ana-ruiz": "+13125550101", "ben-carter": "+13125550102", "diego-morales": "+13125550104",
              "erin-walsh": "+13125550105"}  # fmt: skip
TALK_SECONDS = 2.0
DEADLINE_SECONDS = 150.0
TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
SIMULTANEOUS = timedelta(milliseconds=500)


@pytest.fixture
def gunicorn_line(
    app: Flask, settings: Settings, fake_twilio_server: FakeTwilioServer, publish_routing: Callable[..., int]
) -> Iterator[str]:
    """The Procfile's web process (gunicorn, its workers and threads as shipped) on this test's
    database, serving the public URL the fake Twilio calls back."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("the surge runs on PostgreSQL, as a scaled-out line does")
    publish_routing(lambda document: around_the_clock(document, on_call=tuple(COUNSELORS)))
    port = free_port()
    env = {
        **{name: value for name, value in os.environ.items() if name not in ("WEB_CONCURRENCY", "WEB_THREADS")},
        **deployment_environment(
            settings.database_url, settings.redis_url, TWILIO_API_BASE_URL=fake_twilio_server.base_url,
            PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        ),
    }  # fmt: skip
    with gunicorn_serving(env, port) as url:
        yield url


def _counselor(phone: Phone, fake: FakeTwilio, number: str, stop: threading.Event, errors: list[str]) -> None:
    """Answers every leg that rings this phone, presses 1, stays until the caller leaves."""
    handled: set[str] = set()
    while not stop.is_set():
        ringing = [
            leg for leg in list(fake.calls.values())
            if leg.direction == "outbound-api" and leg.to == number and leg.sid not in handled
            and leg.status in ("queued", "initiated")
        ]  # fmt: skip
        if not ringing:
            time.sleep(0.05)
            continue
        leg = ringing[0]
        handled.add(leg.sid)
        try:
            counselor = phone.answer(leg.sid, [Keys("1")])
            # With the caller until the line ends the leg: the room ends when the caller
            # leaves (or a REST update takes them out), then the line says so and hangs up.
            while not stop.is_set() and not counselor.finished:
                record = fake.get_call(leg.sid)
                if record.conference_sid is None or len(record.redirects) > counselor.redirects_seen:
                    phone.resume(counselor)
                else:
                    time.sleep(0.05)
        except Exception as error:  # reported by the test, not swallowed
            errors.append(f"counselor {number}: {type(error).__name__}: {error}")


def _caller(phone: Phone, index: int, results: dict[int, PhoneCall], errors: list[str]) -> None:
    """Calls, holds (a hold turn every second) until brought to a counselor, talks, hangs up."""
    try:
        call = phone.call([Keys("1"), Keys("2")], identity=phone.identity(f"+1312555{3000 + index:04d}"),
                          max_hold_turns=0)  # fmt: skip
        results[index] = call
        deadline = time.monotonic() + DEADLINE_SECONDS
        while call.conference is None and not call.dials and time.monotonic() < deadline:
            time.sleep(1.0)  # a real hold turn lasts 15 s or more; the events do the work
            phone.resume(call, max_hold_turns=1, dial_outcomes=["completed"])
        if call.conference is not None:
            talk_until = time.monotonic() + TALK_SECONDS
            while time.monotonic() < talk_until:  # a redirect may still move the call: follow it
                time.sleep(0.2)
                phone.resume(call, max_hold_turns=0)
            phone.hang_up(call)
    except Exception as error:
        errors.append(f"caller {index}: {type(error).__name__}: {error}")


def test_a_surge_of_twenty_callers_all_reach_one_of_four_counselors_in_queue_order(
    app: Flask, gunicorn_line: str, fake: FakeTwilio
) -> None:
    transport = RequestsTransport(timeout=20, fresh_connections=True)
    # A caller holds by the clock (a turn a second until the deadline), so on a slow machine a
    # caller who waits long makes many requests without looping.
    phone = Phone(transport, gunicorn_line, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake,
                  max_requests=int(DEADLINE_SECONDS) + 60)  # fmt: skip
    stop, errors, results = threading.Event(), [], {}
    counselors = [
        threading.Thread(target=_counselor, args=(phone, fake, number, stop, errors), daemon=True)
        for number in COUNSELORS.values()
    ]
    for thread in counselors:
        thread.start()
    callers = []
    for index in range(CALLERS):  # a surge: a new caller every 50 ms
        callers.append(threading.Thread(target=_caller, args=(phone, index, results, errors), daemon=True))
        callers[-1].start()
        time.sleep(0.05)
    started = time.monotonic()
    for thread in callers:
        thread.join(timeout=DEADLINE_SECONDS + 30)
    print(f"\nsurge: {CALLERS} callers, {len(COUNSELORS)} counselors, all done in {time.monotonic() - started:.1f} s")
    stop.set()
    for thread in counselors:
        thread.join(timeout=30)

    assert errors == []
    assert len(results) == CALLERS
    assert [index for index, call in sorted(results.items()) if call.dials] == []  # nobody to the backup line
    stuck = [index for index, call in sorted(results.items()) if call.ended_by != "caller-hung-up"]
    if stuck:  # each talked with a counselor
        calls = "\n".join(
            f"caller {index} {results[index].identity.call_sid} ended_by={results[index].ended_by} "
            f"steps={[step.url.split('/voice/')[-1] for step in results[index].steps[-6:]]} "
            f"heard={[heard.text[:40] for heard in results[index].heard[-4:]]}"
            for index in stuck
        )
        pytest.fail(f"callers {stuck} never reached a counselor:\n{calls}\n{_story(app, fake)}")
    _assert_offers_in_queue_order_to_free_counselors_and_one_acceptance_each(app, fake)


def _assert_offers_in_queue_order_to_free_counselors_and_one_acceptance_each(app: Flask, fake: FakeTwilio) -> None:
    with app.app_context():
        transfers = list(db.session.scalars(select(Transfer).order_by(Transfer.queued_since, Transfer.id)))
        offers = list(db.session.scalars(select(Offer).where(Offer.purpose == "answer").order_by(Offer.id)))
    assert len(transfers) == CALLERS
    assert all(transfer.state == "ended" for transfer in transfers)
    accepted: dict[int, int] = {}
    for offer in offers:
        if offer.decided_at is not None and offer.outcome in (None, "completed"):
            accepted[offer.transfer_id] = accepted.get(offer.transfer_id, 0) + 1
    assert accepted == {transfer.id: 1 for transfer in transfers}
    # Queue order: nobody is offered before someone who waited longer, except offers made at
    # the same moment by two processes (two free counselors, two callers: both rung at once).
    first_offered = {}
    for offer in offers:
        first_offered.setdefault(offer.transfer_id, offer.created_at)
    in_queue_order = [first_offered[transfer.id] for transfer in transfers]
    for place, offered in enumerate(in_queue_order):
        later_first = [t for t in in_queue_order[place + 1 :] if t < offered - SIMULTANEOUS]
        assert later_first == [], f"caller {place + 1} in line was offered after a later caller"
    by_number: dict[str, list[Any]] = {}
    for leg in fake.calls.values():
        if leg.direction == "outbound-api":
            by_number.setdefault(leg.to, []).append(leg)
    for number_legs in by_number.values():
        number_legs.sort(key=lambda leg: leg.date_created)
        for earlier, later in itertools.pairwise(number_legs):
            assert earlier.status in TERMINAL
            assert earlier.end_time is not None and earlier.end_time <= later.date_created, "rung while busy"


def _story(app: Flask, fake: FakeTwilio) -> str:
    """What happened, for a failure message: each transfer's offers, and the rooms left open."""
    lines = []
    with app.app_context():
        for transfer in db.session.scalars(select(Transfer).order_by(Transfer.id)):
            offers = db.session.scalars(select(Offer).where(Offer.transfer_id == transfer.id).order_by(Offer.id))
            lines.append(
                f"transfer {transfer.id} {transfer.state}/{transfer.end_reason} caller {transfer.caller_call_sid}: "
                + ", ".join(f"{o.responder_id} {o.call_sid} {o.state}/{o.outcome}" for o in offers)
            )
    for leg in list(fake.calls.values()):
        if leg.status not in TERMINAL:
            lines.append(f"live leg {leg.sid} {leg.direction} in {leg.conference_sid} exit {leg.last_conference_exit}")
    for entry in fake.webhooks("call-redirect"):
        if entry.error or (entry.status_code or 0) >= 400:
            lines.append(f"failed redirect fetch {entry.sid}: {entry.status_code} {entry.error}")
    for room in list(fake.conferences.values()):
        if room.status != "completed":
            lines.append(f"open room {room.sid} {room.friendly_name} {room.status} {list(room.participants)}")
    return "\n".join(lines)
