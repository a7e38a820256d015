"""Never silent: every deadline-bound voice route, under each fault in turn, answers valid TwiML
within the deadline plus half a second, never a 5xx, and never hangs up on a caller before a
human or the backup line.

The faults are real: PostgreSQL and Redis behind TCP proxies that refuse, stall or slow every
connection; the fake Twilio REST API hung, slow, failing with 5xx or rate-limiting with 429.
Before each fault a caller is holding (their counselor ringing) and another is mid-menu, so the
routes run on live state. All routes are hit at once, as Twilio would during an incident.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import func, select

from crisisline.db import db
from crisisline.models import Callback, Offer, Transfer
from crisisline.redis_server import free_port
from crisisline.settings import Settings
from routing.store import active_routing
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, serving, settings_for
from tests.faults import StallingProxy, without_collector_pauses
from tests.rota import BEN, leg_to
from twilio_fake.phone import Keys, Phone, RequestsTransport
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity

DEADLINE = 2.0
GRACE = 0.5
FAULTS = [
    "database refused", "database hung", "database slow",
    "redis refused", "redis hung",
    "twilio hung", "twilio slow", "twilio 5xx", "twilio 429",
]  # fmt: skip
# Routes where the person on the line is one of the line's responders (hanging up on them
# after a message is right); everywhere else it is a caller, or a person called back.
RESPONDER_ROUTES = {"transfer.whisper", "transfer.decide", "transfer.responder_after", "transfer.counselor_menu",
                    "transfer.rejoin"}  # fmt: skip


@dataclass
class Line:
    app: Flask
    url: str
    phone: Phone
    database: StallingProxy
    redis: StallingProxy


@pytest.fixture
def line(
    app: Flask, settings: Settings, make_app: Callable[[Settings], Flask], fake: FakeTwilio, wednesday_evening: object
) -> Iterator[Line]:
    """The app on proxied PostgreSQL and Redis, served over real HTTP with the production deadline."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("database faults are modelled on PostgreSQL's TCP connection")
    database_url, redis_url = urlsplit(settings.database_url), urlsplit(settings.redis_url)
    with (
        StallingProxy(database_url.hostname or "127.0.0.1", database_url.port or 5432) as database,
        StallingProxy(redis_url.hostname or "127.0.0.1", redis_url.port or 6379) as redis,
    ):
        port = free_port()
        database_via = f"127.0.0.1:{database.port}"
        proxied = make_app(
            settings_for(
                settings.database_url.replace(f"{database_url.hostname}:{database_url.port}", database_via),
                settings.redis_url.replace(f"{redis_url.hostname}:{redis_url.port}", f"127.0.0.1:{redis.port}"),
                VOICE_DEADLINE_SECONDS=str(DEADLINE), TWILIO_API_BASE_URL=settings.twilio_api_base_url or "",
                PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
            )
        )  # fmt: skip
        with serving(proxied, port) as url:
            phone = Phone(RequestsTransport(), url, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
            try:
                yield Line(proxied, url, phone, database, redis)
            finally:
                database.resume()
                redis.resume()
                fake.clear_faults()
                proxied.extensions["crisisline.deadline"].shutdown(wait=True)
                proxied.extensions["crisisline.background"].shutdown()


def apply(fault: str, line: Line, fake: FakeTwilio) -> None:
    calls = r"/Calls(/[^/]+)?\.json$"
    match fault:
        case "database refused":
            line.database.refuse()
        case "database hung":
            line.database.stall()
        case "database slow":
            line.database.slow(0.25)  # a 500 ms round trip on every query
        case "redis refused":
            line.redis.refuse()
        case "redis hung":
            line.redis.stall()
        case "twilio hung":
            fake.inject_fault("*", calls, status=200, delay=30.0, times=None)
        case "twilio slow":
            fake.inject_fault("*", calls, status=200, delay=4.0, times=None)
        case "twilio 5xx":
            fake.inject_fault("*", calls, status=503, times=None)
        case "twilio 429":
            fake.inject_fault("*", calls, status=429, code=20429, message="Too Many Requests", times=None)


def _first_offer(line: Line, seconds: float = 10.0) -> int:
    """Ben's offer, once his phone rings: the first ring runs beside the need answer, which
    waits for it only part of its deadline (a loaded machine can answer first)."""
    ends = time.monotonic() + seconds
    while True:
        with line.app.app_context():
            offer_id = db.session.scalars(select(Offer.id).where(Offer.call_sid.is_not(None))).first()
        if offer_id is not None or time.monotonic() > ends:
            assert offer_id is not None, "Ben was never rung"
            return offer_id
        time.sleep(0.05)


def route_requests(line: Line, fake: FakeTwilio) -> dict[str, tuple[str, dict[str, str]]]:
    """One signed request per deadline-bound voice route, on live state: caller A holding with
    Ben's phone ringing; caller B at the need menu; caller C new."""
    phone = line.phone
    holding, menu, new = (phone.identity(number) for number in ("+13125550171", "+13125550172", "+13125550173"))
    phone.call([Keys("1"), Keys("2")], identity=holding, max_hold_turns=0)
    phone.call([Keys("1")], identity=menu, hang_up_after_requests=2)
    with line.app.app_context():
        transfer_id = db.session.scalars(select(Transfer.id)).one()
    offer_id = _first_offer(line)
    ben_leg = leg_to(fake, BEN)
    ben = CallIdentity(TEST_ACCOUNT_SID, LINE_NUMBER, BEN, call_sid=ben_leg.sid, direction="outbound-api")
    fake.advance_call(ben_leg.sid, "ringing")
    t, o = transfer_id, offer_id
    return {
        "voice.incoming": ("/voice/incoming", new.voice_params("ringing")),
        "voice.language_menu": ("/voice/menu/language?attempt=1", new.voice_params("in-progress", Digits="1")),
        "voice.need_menu": ("/voice/menu/need?lang=en&attempt=1", menu.voice_params("in-progress", Digits="2")),
        "voice.confirm_need": (
            "/voice/menu/confirm?lang=en&need=danger_now&attempt=1&asked=1",
            menu.voice_params("in-progress", Digits="1"),
        ),
        "voice.backup_result": (
            "/voice/backup-result?lang=en&attempt=1",
            new.voice_params("in-progress", DialCallStatus="busy"),
        ),
        "transfer.hold": (f"/voice/hold?transfer={t}&tick=3", holding.voice_params("in-progress")),
        "transfer.caller_join": (f"/voice/transfer/join?transfer={t}", holding.voice_params("in-progress")),
        "transfer.caller_after": (
            f"/voice/transfer/after?transfer={t}",
            holding.voice_params("in-progress", DialCallStatus="completed"),
        ),
        "transfer.staff_left": (f"/voice/transfer/staff-left?transfer={t}", holding.voice_params("in-progress")),
        "followups.consent": (f"/voice/checkin/consent?transfer={t}", holding.voice_params("in-progress")),
        "callbacks.caller_key": (
            f"/voice/callback/request?transfer={t}&tick=3",
            holding.voice_params("in-progress", Digits="9"),
        ),
        "callbacks.declined": (
            f"/voice/callback/declined?transfer={t}&reason=hold_limit",
            holding.voice_params("in-progress"),
        ),
        "callbacks.person_answer": ("/voice/callback/answer?callback=1", new.voice_params("in-progress")),
        "transfer.whisper": (f"/voice/offer/whisper?offer={o}", ben.voice_params("in-progress")),
        "transfer.decide": (f"/voice/offer/decide?offer={o}", ben.voice_params("in-progress", Digits="2")),
        "transfer.responder_after": (f"/voice/offer/after?offer={o}", ben.voice_params("in-progress")),
        "transfer.counselor_menu": (f"/voice/offer/menu?offer={o}", ben.voice_params("in-progress", Digits="1")),
        "transfer.rejoin": (f"/voice/offer/rejoin?offer={o}", ben.voice_params("in-progress")),
        # Status callbacks: acknowledged in time too (a stuck one held a web thread for good).
        "voice.status_callback": ("/voice/status", holding.voice_params("in-progress")),
        "transfer.offer_status": (f"/voice/offer/status?offer={o}", ben.voice_params("ringing")),
        "transfer.conference_events": (
            f"/voice/conference/events?transfer={t}",
            {**holding.voice_params("in-progress"), "StatusCallbackEvent": "conference-start"},
        ),
        "callbacks.person_status": (f"/voice/callback/status?transfer={t}", new.voice_params("ringing")),
    }


STATUS_ROUTES = {
    "voice.status_callback", "transfer.offer_status", "transfer.conference_events", "callbacks.person_status",
}  # fmt: skip


def deadline_bound_routes(app: Flask) -> set[str]:
    """The voice routes under the deadline (an inbound text's has its own: its own tests)."""
    return {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if getattr(app.view_functions[rule.endpoint], "on_deadline", None) is not None
        and not rule.endpoint.startswith("sms.")
    }


def caller_left_alone(twiml: ET.Element) -> bool:
    """A ``<Hangup/>`` before any ``<Dial>``, ``<Redirect>`` or ``<Gather>``: the caller cut off."""
    for verb in twiml:
        if verb.tag in ("Dial", "Redirect", "Gather", "Enqueue"):
            return False
        if verb.tag == "Hangup":
            return True
    return False


def promised_a_callback(line: Line, twiml: ET.Element) -> bool:
    """A call may end on "we will call you back" once the callback is stored: the callback
    key's answer, or a hold turn that meets the transfer already handed to its callback (the
    matrix sends both at once; which is first is a race, and one CI run saw the hold turn's)."""
    with line.app.app_context():
        stored = db.session.scalar(select(func.count()).select_from(Callback)) == 1
        active = active_routing()
        assert active is not None
        promise = active.document.language("en").prompt("callback_confirmed")
    return stored and any(verb.tag == "Say" and verb.text == promise for verb in twiml)


@pytest.mark.parametrize("fault", FAULTS)
def test_every_voice_route_answers_in_time_under_each_fault(line: Line, fake: FakeTwilio, fault: str) -> None:
    requests_by_route = route_requests(line, fake)
    assert set(requests_by_route) == deadline_bound_routes(line.app)  # a new route must join the matrix
    apply(fault, line, fake)

    def answer(route: str) -> tuple[str, int, str, float]:
        path, params = requests_by_route[route]
        started = time.perf_counter()
        reply = line.phone.post(line.url + path, params)
        return route, reply.status, reply.body, time.perf_counter() - started

    # The voice routes all at once, then the status callbacks all at once. Two CI runs failed
    # here with every route late by the same 0.04 s, then 2 s: a full collection of the test
    # process's garbage (up to 1.1 s measured late in the suite), not the app.
    voice = sorted(set(requests_by_route) - STATUS_ROUTES)
    with without_collector_pauses(), ThreadPoolExecutor(max_workers=len(requests_by_route)) as pool:
        answers = list(pool.map(answer, voice)) + list(pool.map(answer, sorted(STATUS_ROUTES)))

    problems = []
    for route, status, body, seconds in answers:
        if route in STATUS_ROUTES:
            if status != 204 or seconds > DEADLINE + GRACE:
                problems.append(f"{route}: HTTP {status} after {seconds:.2f} s")
            continue
        if status != 200:
            problems.append(f"{route}: HTTP {status}")
            continue
        twiml = ET.fromstring(body)  # noqa: S314 - our own TwiML; a parse error fails the test
        if twiml.tag != "Response":
            problems.append(f"{route}: not TwiML")
        if seconds > DEADLINE + GRACE:
            problems.append(f"{route}: {seconds:.2f} s")
        if route not in RESPONDER_ROUTES and caller_left_alone(twiml) and not promised_a_callback(line, twiml):
            problems.append(f"{route}: hung up on the caller")
    assert problems == []
    slowest = max(answers, key=lambda item: item[3])
    print(f"\n{fault}: {len(answers)} routes answered, slowest {slowest[0]} after {slowest[3]:.2f} s")
