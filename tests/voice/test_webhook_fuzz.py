"""Fuzz: thousands of genuinely signed but random or malformed requests across every route
Twilio calls (taken from the URL map: every view behind ``twilio_signed``).

Each answer: never a 5xx, no stack trace or exception text in the body, TwiML that parses on
voice routes, 200/204 on status callbacks; and every inbound text that carried a MessageSid
and a Body is stored with exactly the words it came with. Seeded (``FUZZ_SEED``), so a failure
prints the seed and the request number to replay it; ``FUZZ_PAYLOADS`` sets the count.
"""

from __future__ import annotations

import os
import random
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from crisisline import twilio_params
from crisisline.db import db
from crisisline.models import Message, Offer, Transfer
from crisisline.twilio_auth import twilio_signed
from sms import outbox
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from twilio_fake.signing import FORM_CONTENT_TYPE, CallIdentity, new_sid, sms_params

SEED = int(os.environ.get("FUZZ_SEED", "20261202"))
PAYLOADS = int(os.environ.get("FUZZ_PAYLOADS", "5000"))  # per database: 10,000 in all
STATUS_CALLBACK = re.compile(r"/(status|events)$")
LEAKS = re.compile(
    r"Traceback|File \"|Internal Server Error|Exception|Error:|sqlalchemy|psycopg|sqlite3|"
    r"\b(Key|Value|Type|Attribute|Index|Assertion|Unicode\w*|Integrity|Data|Operational|Programming)Error\b"
)
QUERY_NAMES = ("attempt", "asked", "lang", "need", "transfer", "offer", "tick", "reason", "message")


def twilio_routes(app: Flask) -> list[str]:
    """Every route whose view is ``twilio_signed``'s wrapper: a new route cannot be forgotten."""
    signed_code = twilio_signed(lambda: None).__code__
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if getattr(app.view_functions[rule.endpoint], "__code__", None) is signed_code
    )


# --- values ------------------------------------------------------------------------------------

NASTY = [
    "", " ", "\t", "\r\n", "0", "-1", "1.5", "1e9", "NaN", "null", "true", "²", "①", "١٢", "٣", "Ⅻ",
    "2147483648", "99999999999999999999", "9" * 500, "x" * 500, "x" * 5000, "\x00", "a\x00b", "\x00" * 40,
    "\x07\x1b[31m", "\u202e\u200f", "\ufeff", "\U0001f600" * 50, "é" * 300, "Ã©Ã¨", "<Response><Hangup/></Response>",
    "]]><script>", "&amp;&lt;'\"", "%00%FF", "../../etc/passwd", "'; DROP TABLE calls; --", "{{7*7}}",
    "anonymous", "+266696687", "+7378742833", "client:alice", "sip:a@b.c", "whatsapp:+13125550123",
    "+8821234567890", "+16725550123", "+1", "+0123456789", "+1234567890123456", "(312) 555-0123",
    "Completed", "completed ", "in progress", "answered", "busy", "no-answer", "participant-join", "conference-end",
    "CA" + "A" * 32, "CA" + "0" * 31, "CA" + "0" * 33, "SM" + "0" * 32, "ca" + "0" * 32, "CA" + "g" * 32,
    "1", "2", "9", "#", "*", "1#", "12345678901234567890123456789012345", "machine_start", "fax", "human",
]  # fmt: skip
ALPHABETS = [
    string.printable,
    "0123456789*#",
    "".join(chr(c) for c in range(0x20, 0x250)),
    "".join(chr(c) for c in (*range(0x0600, 0x0700), *range(0x4E00, 0x4E80), *range(0x1F600, 0x1F650))),
    "".join(chr(c) for c in range(0, 0x20)),
]


def random_value(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.55:
        return rng.choice(NASTY)
    if roll < 0.9:
        alphabet = rng.choice(ALPHABETS)
        return "".join(rng.choice(alphabet) for _ in range(rng.choice((1, 2, 5, 20, 100, 700))))
    return rng.choice(NASTY) + rng.choice(NASTY)


# --- requests ----------------------------------------------------------------------------------


@dataclass
class Known:
    """Ids of real rows, so that part of the fuzz reaches deep into real transfers and offers."""

    call_sid: str
    transfers: list[int]
    offers: list[int]
    messages: list[int]


def base_params(route: str, rng: random.Random, known: Known) -> list[tuple[str, str]]:
    """The parameters Twilio really sends to ``route`` (a realistic starting point)."""
    if route == "/sms/incoming":
        sender = rng.choice(("+13125550177", "+8821234567890", "+13125550102", "+16725550123"))
        params = sms_params(TEST_ACCOUNT_SID, sender, LINE_NUMBER, rng.choice(("help", "hola", "1", "I feel alone")))
        return list(params.items())
    if route == "/sms/status":
        status = rng.choice(("sent", "delivered", "failed"))
        return [
            ("MessageSid", new_sid("SM")), ("MessageStatus", status), ("AccountSid", TEST_ACCOUNT_SID),
            ("To", "+13125550177"), ("From", LINE_NUMBER), ("ApiVersion", "2010-04-01"),
        ]  # fmt: skip
    call_sid = known.call_sid if rng.random() < 0.3 else new_sid("CA")
    identity = CallIdentity(TEST_ACCOUNT_SID, "+13125550123", LINE_NUMBER, call_sid=call_sid)
    extra = {
        "Digits": rng.choice(("1", "2", "9", "")),
        "SequenceNumber": str(rng.randint(0, 5)),
        "CallDuration": str(rng.randint(0, 300)),
        "DialCallStatus": rng.choice(sorted(twilio_params.DIAL_CALL_STATUSES)),
        "StatusCallbackEvent": rng.choice(sorted(twilio_params.CONFERENCE_EVENTS)),
        "ParticipantLabel": f"answer-{rng.choice(known.offers or [1])}",
        "AnsweredBy": rng.choice(("human", "machine_start", "unknown")),
    }
    status = rng.choice(sorted(twilio_params.CALL_STATUSES))
    return list(identity.voice_params(status, **{k: v for k, v in extra.items() if rng.random() < 0.6}).items())


def query(route: str, rng: random.Random, known: Known) -> str:
    """Our own query arguments (Twilio echoes the URL we gave it, signed), sometimes malformed."""
    real = {
        "transfer": [str(i) for i in known.transfers] or ["1"],
        "offer": [str(i) for i in known.offers] or ["1"],
        "message": [str(i) for i in known.messages] or ["1"],
        "attempt": ["1", "2", "3"], "asked": ["1", "2"], "tick": ["1", "2", "7"], "lang": ["en", "es"],
        "need": ["suicidal_thoughts", "emergency", "talk"], "reason": ["hold_limit", "nobody_left"],
    }  # fmt: skip
    pairs = []
    for name in QUERY_NAMES:
        if rng.random() < (0.9 if name in ("transfer", "offer", "message") else 0.7):
            value = rng.choice(real[name]) if rng.random() < 0.8 else random_value(rng)
            pairs.append((name, value))
    return urlencode(pairs, quote_via=quote) if pairs else ""


def mutate(params: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    names = sorted({name for name, _ in params} | {"CallSid", "From", "To", "Digits", "SpeechResult", "CallStatus"})
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.6:  # a parameter Twilio sends, with a malformed value
            name = rng.choice(names)
            params = [(n, v) for n, v in params if n != name] + [(name, random_value(rng))]
        elif roll < 0.75 and params:  # one missing
            del params[rng.randrange(len(params))]
        elif roll < 0.9:  # one repeated with another value
            params.append((rng.choice(names), random_value(rng)))
        else:  # one Twilio added without notice
            name = "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(1, 30)))
            params.append((name, random_value(rng)))
    return params


def encode(params: list[tuple[str, str]], rng: random.Random) -> bytes:
    """The form body; sometimes with bytes that are not UTF-8 at all."""
    body = urlencode(params, quote_via=quote).encode()
    if rng.random() < 0.05:
        glitch = rng.choice((b"%FF%FE", b"%C3%28", b"%ED%A0%80", b"\xff\xfe", b"%", b"%G1", b"&&=&"))
        at = rng.randrange(len(body) + 1)
        body = body[:at] + glitch + body[at:]
    return body


def as_the_app_reads_it(url: str, body: bytes) -> MultiDict[str, str]:
    """The form exactly as the app will parse it: that is what Twilio's signature covers."""
    environ = EnvironBuilder(url, method="POST", data=body, content_type=FORM_CONTENT_TYPE).get_environ()
    return Request(environ).form


# --- the test ----------------------------------------------------------------------------------


@pytest.fixture
def known(app: Flask, client: FlaskClient, post_signed: Callable[..., int]) -> Known:
    """A caller holding for a counselor (a real transfer, offers ringing) and a text answered."""
    identity = CallIdentity(TEST_ACCOUNT_SID, "+13125550123", LINE_NUMBER)
    post_signed("/voice/incoming", identity.voice_params())
    post_signed("/voice/menu/language?attempt=1", identity.voice_params("in-progress", Digits="1"))
    post_signed("/voice/menu/need?lang=en&attempt=1", identity.voice_params("in-progress", Digits="2"))
    post_signed("/sms/incoming", sms_params(TEST_ACCOUNT_SID, "+13125550177", LINE_NUMBER, "help"))
    with app.app_context():
        return Known(
            identity.call_sid,
            list(db.session.scalars(select(Transfer.id))),
            list(db.session.scalars(select(Offer.id))),
            list(db.session.scalars(select(Message.id).where(Message.direction == "out"))),
        )


@pytest.fixture
def post_signed(client: FlaskClient) -> Callable[..., int]:
    def post(path: str, params: dict[str, str]) -> int:
        url = "http://localhost" + path
        signature = RequestValidator(TEST_AUTH_TOKEN).compute_signature(url, params)
        return client.post(url, data=params, headers={"X-Twilio-Signature": signature}).status_code

    return post


@pytest.mark.usefixtures("wednesday_evening", "clean_redis")
def test_signed_random_and_malformed_payloads_never_break_a_twilio_route(
    app: Flask, client: FlaskClient, known: Known
) -> None:
    routes = twilio_routes(app)
    assert {"/voice/incoming", "/voice/status", "/sms/incoming", "/sms/status", "/voice/offer/status"} <= set(routes)
    rng = random.Random(SEED)
    validator = RequestValidator(TEST_AUTH_TOKEN)
    texts: dict[str, str] = {}  # storage key -> the body of the first delivery under it
    started = time.perf_counter()

    for number in range(PAYLOADS):
        route = routes[number % len(routes)] if number < len(routes) else rng.choice(routes)
        params = mutate(base_params(route, rng, known), rng)
        args = query(route, rng, known)
        url = f"http://localhost{route}" + (f"?{args}" if args else "")
        body = encode(params, rng)
        form = as_the_app_reads_it(url, body)
        headers = {"X-Twilio-Signature": validator.compute_signature(url, form), "User-Agent": "TwilioProxy/1.1"}

        response = client.post(url, data=body, content_type=FORM_CONTENT_TYPE, headers=headers)

        where = f"request {number} (FUZZ_SEED={SEED}) to {route}: {response.status_code}"
        text = response.get_data(as_text=True)
        assert response.status_code < 500, where
        assert response.status_code != 403, where  # the signature covered exactly what the app read
        assert not LEAKS.search(text), where
        if STATUS_CALLBACK.search(route):
            assert response.status_code in (200, 204), where
        elif route == "/sms/incoming" and not form.get("MessageSid"):
            assert response.status_code == 400, where
        else:
            assert response.status_code == 200 and response.mimetype == "text/xml", where
            assert ElementTree.fromstring(response.data).tag == "Response", where  # noqa: S314 - our own TwiML
        if route == "/sms/incoming" and form.get("MessageSid") and "Body" in form:
            texts.setdefault(twilio_params.message_key(form["MessageSid"]), form["Body"])

    elapsed = time.perf_counter() - started
    with app.app_context():
        stored = {
            row.message_sid: outbox.vault().open(row.sealed_body or "", context=outbox.BODY_CONTEXT)
            for row in db.session.scalars(select(Message).where(Message.message_sid.in_(list(texts))))
        }
    assert len(texts) > PAYLOADS // (2 * len(routes))  # the SMS route really was fuzzed
    assert stored == texts  # every text, with exactly its words
    print(f"\nfuzz: {PAYLOADS} signed payloads over {len(routes)} routes in {elapsed:.1f}s, {len(texts)} texts kept")


@pytest.mark.parametrize(
    ("query_value", "form_extra"),
    [
        ("²", {}),
        ("1", {"ErrorCode": "²"}),
        ("1", {"ErrorCode": "9" * 30}),
        ("1", {"MessageStatus": "x" * 500}),
        ("1", {"MessageStatus": "sent\x00"}),
    ],
)
def test_sms_status_with_malformed_values_is_acknowledged(
    post_signed: Callable[..., int], query_value: str, form_extra: dict[str, str]
) -> None:
    params = {"MessageSid": new_sid("SM"), "MessageStatus": "delivered", **form_extra}

    assert post_signed(f"/sms/status?message={quote(query_value)}", params) in (200, 204)
