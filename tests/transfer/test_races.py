"""One winner: many responders' key presses for one caller at the same instant, on PostgreSQL
(the database the line scales out on), over real HTTP to a threaded server."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Offer, Transfer
from tests.rota import BEN, DIEGO, leg_to, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity, gather_digits_params

PRESSES = 50  # 25 presses of 1 from each of two ringing counselors, released together
ROUNDS = 20


def _press_one_request(fake: FakeTwilio, number: str) -> tuple[str, dict[str, str]]:
    """Answer a responder's leg; the signed-able request their pressing 1 makes."""
    leg = leg_to(fake, number)
    fake.advance_call(leg.sid, "ringing")
    whisper = ET.fromstring(fake.advance_call(leg.sid, "in-progress") or "")  # noqa: S314 - our own TwiML
    gather = whisper.find("Gather")
    assert gather is not None
    identity = CallIdentity(fake.account_sid, leg.from_, leg.to, call_sid=leg.sid, direction="outbound-api")
    return urljoin(leg.url or "", gather.get("action", "")), gather_digits_params(identity, "1")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_fifty_accepts_at_once_have_one_winner_and_one_bridge(
    app: Flask, settings: Any, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    wednesday_evening: Any, round_: int,
) -> None:  # fmt: skip
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("races are proven on PostgreSQL, the database the line scales out on")
    publish_routing(lambda document: document["transfer"].update(strategy="parallel"))
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    assert sorted(leg.to for leg in legs(fake)) == [BEN, DIEGO]
    presses = [_press_one_request(fake, number) for number in (BEN, DIEGO)]
    barrier = threading.Barrier(PRESSES)
    replies: list[tuple[str, str]] = []
    lock = threading.Lock()

    def press(url: str, params: dict[str, str]) -> None:
        barrier.wait()
        body = phone.post(url, params).body
        with lock:
            replies.append((params["CallSid"], body))

    threads = [threading.Thread(target=press, args=presses[i % 2]) for i in range(PRESSES)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    seconds = time.perf_counter() - started

    with app.app_context():
        accepted = db.session.scalars(select(Offer).where(Offer.state == "accepted")).all()
        (transfer,) = db.session.scalars(select(Transfer)).all()
    assert len(replies) == PRESSES
    assert len(accepted) == 1 and transfer.accepted_offer_id == accepted[0].id
    winner = accepted[0].call_sid
    joined = {sid for sid, body in replies if "<Conference" in body}
    assert joined == {winner}  # every press of the winner (a retry) joins; no press of the other does
    assert all("This caller has already been connected" in body for sid, body in replies if sid != winner)
    phone.resume(caller, max_hold_turns=0)
    # One bridge: one room, the caller in it, nobody but the winner's leg could join it (the
    # presses here were posted straight to the app, so their TwiML is not played by the fake).
    assert caller.conference == f"transfer-{transfer.id}"
    assert list(fake.conferences.values()) == [fake.get_conference(caller.conference)]
    assert caller.identity.call_sid in fake.get_conference(caller.conference).participants
    assert len(fake.get_call(caller.identity.call_sid).redirects) <= 1  # the caller moved once
    if round_ == ROUNDS - 1:
        print(f"\n{PRESSES} simultaneous accepts: one winner, one bridge; answered in {seconds:.2f} s")
