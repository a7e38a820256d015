"""Twilio's Fallback URL: when a webhook of ours fails (a 502 from the proxy while a web worker
restarts, say), Twilio asks ``/voice/fallback`` at once and the caller goes to the backup line.
The line then stops searching for them, as after its own fail-safe: a counselor accepting later
must not pull them off the backup line, and phones ringing for them stop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Transfer
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TEST_BACKUP_NUMBER
from tests.rota import BEN, leg_to, legs
from twilio_fake.phone import Dialled, HttpReply, Keys, Phone, RequestsTransport
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "wednesday_evening")


class FailingFirstHoldTurn:
    """The network as Twilio meets it, but the first hold turn gets a proxy's 502, once the
    caller's first counselor is being rung (the ring is not waited for by the need answer)."""

    def __init__(self, fake: FakeTwilio) -> None:
        self.inner = RequestsTransport()
        self.fake = fake
        self.failed: list[str] = []

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        if "/voice/hold" in url and not self.failed:
            wait_for(lambda: any(leg.to == BEN for leg in legs(self.fake)))
            self.failed.append(url)
            return HttpReply(502, "text/html", "<html><body>502 Bad Gateway</body></html>")
        return self.inner.post(url, params, headers)


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    ends = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < ends, "timed out"
        time.sleep(0.05)


def transfer_state(app: Flask) -> tuple[str, str | None]:
    with app.app_context():
        (transfer,) = db.session.scalars(select(Transfer))
        return transfer.state, transfer.end_reason


def test_a_caller_sent_to_the_backup_line_by_the_fallback_url_is_no_longer_searched_for(
    app: Flask, live_server: str, fake: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FailingFirstHoldTurn(fake)
    phone = Phone(transport, live_server, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
    caplog.set_level(logging.INFO)

    seen_on_the_backup_line: list[tuple[str, str | None, str]] = []

    def on_the_backup_line(dialled: Dialled) -> str:
        # While the caller talks to the backup line: the search for them is over.
        if dialled.numbers == [TEST_BACKUP_NUMBER] and not seen_on_the_backup_line:
            wait_for(lambda: transfer_state(app)[0] != "waiting")
            ben = leg_to(fake, BEN)
            wait_for(lambda: fake.get_call(ben.sid).status in ("canceled", "completed"))
            seen_on_the_backup_line.append((*transfer_state(app), fake.get_call(ben.sid).status))
        return "completed"

    call = phone.call([Keys("1"), Keys("2")], dial_outcomes=on_the_backup_line, max_hold_turns=2)

    assert transport.failed, "the hold turn never failed: the test did not reach the fallback"
    assert call.dials and call.dials[0].numbers == [TEST_BACKUP_NUMBER]
    # Ben's phone, rung for this caller before the fallback, stopped ringing.
    assert seen_on_the_backup_line == [("to_backup", "failsafe", "canceled")]
    # The operator learns which webhook failed and how, never who called.
    fallback_lines = [r.getMessage() for r in caplog.records if "fallback" in r.getMessage().lower()]
    assert any("11200" in line and "/voice/hold" in line for line in fallback_lines), fallback_lines
    assert not any(call.identity.from_number in r.getMessage() for r in caplog.records)
