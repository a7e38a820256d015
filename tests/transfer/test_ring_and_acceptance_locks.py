"""A ring stores its offer only while its caller still waits, holding the caller's transfer row
(``FOR SHARE``) until it commits (``dispatch._PLACE_OFFER``); a press of 1 moves that row. On
PostgreSQL the two run in separate processes at once: the press must wait for the ring's commit
(a weaker lock, ``FOR KEY SHARE``, would let it move the row under the ring and then miss the new
offer when it stops the other phones), and neither may deadlock: both take the transfer's row
first, then the offer's, then the responder's.

Driven step by step: the ring is held just after it claimed its responder, the press of 1 is
started and seen waiting on the transfer's row lock (``pg_stat_activity``), then the ring goes on."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from crisisline.db import db
from crisisline.models import Offer, ResponderState, Transfer
from routing.store import active_routing
from tests.rota import BEN, DIEGO, leg_to, legs
from transfer import dispatch, flow, state
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "wednesday_evening")
DIEGO_ID = "diego-morales"
STEP_TIMEOUT = 20.0

# A backend of this database waiting for a row lock while moving a transfer.
_WAITING_TO_MOVE_A_TRANSFER = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE transfers%'"
)


def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def test_a_press_of_one_waits_for_a_ring_placed_meanwhile_and_stops_it(
    app: Flask, settings: Any, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("row locks between processes: PostgreSQL (SQLite takes one writer at a time)")
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = leg_to(fake, BEN)
    fake.advance_call(ben.sid, "ringing")
    assert ET.fromstring(fake.advance_call(ben.sid, "in-progress") or "").find("Gather") is not None  # noqa: S314

    claimed, go_on = threading.Event(), threading.Event()
    claim_responder = state.claim_responder
    ring_thread: list[threading.Thread] = []

    def claim_then_hold(responder_id: str, offer_id: int) -> bool:
        won = claim_responder(responder_id, offer_id)
        if threading.current_thread() in ring_thread:
            claimed.set()  # the offer stored, the transfer's row held, Diego claimed: not committed
            assert go_on.wait(STEP_TIMEOUT)
        return won

    monkeypatch.setattr(state, "claim_responder", claim_then_hold)
    results: dict[str, Any] = {}

    def ring_diego() -> None:
        try:
            with app.app_context():
                routing = active_routing()
                assert routing is not None
                transfer = db.session.scalars(select(Transfer)).one()  # read as waiting
                diego = routing.document.responder(DIEGO_ID)
                assert diego is not None
                results["rung"] = dispatch._ring(transfer, diego, routing.document, purpose="answer")
        except BaseException as error:
            results["ring_error"] = error

    def press_one_for_ben() -> None:
        try:
            with app.app_context():
                routing = active_routing()
                assert routing is not None
                offer = db.session.scalars(select(Offer).where(Offer.call_sid == ben.sid)).one()
                transfer = db.session.get(Transfer, offer.transfer_id)
                assert transfer is not None
                results["decision"] = flow.offer_decided(offer, transfer, routing.document, "1")
        except BaseException as error:
            results["press_error"] = error

    ring = threading.Thread(target=ring_diego)
    ring_thread.append(ring)
    ring.start()
    _until(lambda: claimed.is_set() or not ring.is_alive(), "the ring stored its offer")
    assert claimed.is_set(), results

    press = threading.Thread(target=press_one_for_ben)
    press.start()

    def press_waits_on_the_transfer() -> bool:
        assert press.is_alive(), f"the press of 1 did not wait for the ring: {results}"
        with app.app_context():
            return bool(db.session.scalar(_WAITING_TO_MOVE_A_TRANSFER))

    try:
        _until(press_waits_on_the_transfer, "the press of 1 waited for the ring's lock")
    finally:
        go_on.set()  # the ring goes on (and, should the check fail, ends)
    ring.join(STEP_TIMEOUT)
    press.join(STEP_TIMEOUT)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert not ring.is_alive() and not press.is_alive()
    assert "ring_error" not in results and "press_error" not in results, results  # no DeadlockDetected
    assert results["decision"] == flow.Decision("joined")
    with app.app_context():
        diego_offer = db.session.scalars(select(Offer).where(Offer.responder_id == DIEGO_ID)).one()
        assert diego_offer.state == "ended"  # stopped by the acceptance, which saw it
        diego_state = db.session.get(ResponderState, DIEGO_ID)
        assert diego_state is None or diego_state.engaged_offer_id is None
    # Diego's leg, if Twilio was asked for it before the stop, rings no more.
    for leg in legs(fake):
        if leg.to == DIEGO:
            assert leg.status in ("canceled", "completed"), "Diego's phone rang on for a caller who was taken"
