"""A callback stored while something after it is slow is confirmed to the caller.

Before: once the callback request had committed, anything slow after it (the RQ enqueue of its
first attempt on a hung Redis, a slow database) ran past the 2 s deadline; the deadline
answered "one more hold turn", and that turn, finding the transfer no longer waiting, sent the
caller to the backup line with "all our counselors are helping other callers", though their
callback was stored and would be made. Now the request promises the deadline the confirmation
as soon as the callback is committed, and a hold turn for a transfer already handed to its
callback answers the same confirmation.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Callback, Transfer
from crisisline.redis_server import free_port
from crisisline.settings import Settings
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, serving, settings_for
from tests.faults import StallingProxy
from twilio_fake.phone import Keys, Phone, RequestsTransport
from twilio_fake.rest_api import FakeTwilio

DEADLINE = 2.0
CONFIRMED = "We will call you back"


@dataclass
class Line:
    app: Flask
    url: str
    phone: Phone
    redis: StallingProxy


@pytest.fixture
def line(
    app: Flask, settings: Settings, make_app: Callable[[Settings], Flask], fake: FakeTwilio, wednesday_evening: object
) -> Iterator[Line]:
    """The app served over real HTTP with the production deadline, Redis behind a stalling proxy."""
    redis_url = urlsplit(settings.redis_url)
    with StallingProxy(redis_url.hostname or "127.0.0.1", redis_url.port or 6379) as redis:
        port = free_port()
        proxied = make_app(
            settings_for(
                settings.database_url,
                settings.redis_url.replace(f"{redis_url.hostname}:{redis_url.port}", f"127.0.0.1:{redis.port}"),
                VOICE_DEADLINE_SECONDS=str(DEADLINE), TWILIO_API_BASE_URL=settings.twilio_api_base_url or "",
                PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
            )
        )  # fmt: skip
        with serving(proxied, port) as url:
            phone = Phone(RequestsTransport(), url, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
            try:
                yield Line(proxied, url, phone, redis)
            finally:
                redis.resume()
                fake.clear_faults()
                proxied.extensions["crisisline.deadline"].shutdown(wait=True)
                proxied.extensions["crisisline.background"].shutdown()


def parsed(twiml: str) -> ET.Element:
    return ET.fromstring(twiml)  # noqa: S314 - our own TwiML; a parse error fails the test


def said(twiml: str) -> str:
    return " ".join(say.text or "" for say in parsed(twiml).iter("Say"))


def test_a_callback_stored_while_redis_hangs_is_confirmed_not_answered_with_the_backup_line(
    line: Line, fake: FakeTwilio
) -> None:
    phone = line.phone
    caller = phone.identity("+13125550171")
    phone.call([Keys("1"), Keys("2")], identity=caller, max_hold_turns=0)
    with line.app.app_context():
        transfer_id = db.session.scalars(select(Transfer.id)).one()
    line.redis.stall()

    started = time.perf_counter()
    first = phone.post(
        line.url + f"/voice/callback/request?transfer={transfer_id}&tick=3",
        caller.voice_params("in-progress", Digits="9"),
    )
    assert time.perf_counter() - started <= DEADLINE + 0.5
    heard = [first.body]
    redirect = parsed(first.body).find("Redirect")
    if redirect is not None and redirect.text:  # Twilio follows it (no Digits this time)
        heard.append(phone.post(line.url + redirect.text, caller.voice_params("in-progress")).body)

    with line.app.app_context():
        states = [c.state for c in db.session.scalars(select(Callback))]
    assert states == ["waiting"]  # the promise is stored and will be kept
    last = parsed(heard[-1])
    assert last.find("Dial") is None, f"callback stored, yet the caller heard {said(heard[-1])!r} and the backup line"
    assert CONFIRMED in said(heard[-1])


@pytest.mark.usefixtures("rota")
def test_a_late_hold_turn_after_the_callback_key_answers_the_callback_confirmation(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """The deadline's "one more hold turn" (``late=1``, no Digits) arriving once the callback is
    stored: the confirmation again, never the backup line."""
    caller = phone.identity("+13125550172")
    phone.call([Keys("1"), Keys("2"), Keys("9")], identity=caller)
    with app.app_context():
        transfer_id = db.session.scalars(select(Transfer.id)).one()
        assert db.session.get(Transfer, transfer_id).state == "callback"
    for path in ("/voice/callback/request", "/voice/hold"):
        late = phone.post(
            phone.base_url + f"{path}?transfer={transfer_id}&tick=3&late=1", caller.voice_params("in-progress")
        ).body
        assert parsed(late).find("Dial") is None, f"{path}: {said(late)!r} and the backup line"
        assert CONFIRMED in said(late), path
