"""A ring's REST answer (its leg's SID) is stored by one statement (``dispatch._PLACED``) while
the round it rings for may be ending (``flow.stop_ringing``). Whichever commits second must end
the leg: if the end read the offer before its SID was stored, it must still learn the SID, or
the counselor's phone rings on for a caller who has moved on.

Driven in that order, not with sleeps: the end reads the offer as ``placing`` with no SID, the
ring's answer is stored and committed on another connection, then the end closes the offer."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, update

from crisisline.db import db
from crisisline.models import Offer, Transfer
from tests.rota import BEN, leg_to
from transfer import dispatch, state
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio


def _as_if_still_placing(app: Flask) -> tuple[int, str]:
    """Ben's offer as it is while Twilio places his leg: ``placing``, no SID stored yet."""
    with app.app_context():
        offer = db.session.scalars(select(Offer)).one()
        sid = offer.call_sid
        assert sid is not None and offer.state == "ringing"
        db.session.execute(update(Offer).where(Offer.id == offer.id).values(state="placing", call_sid=None))
        db.session.commit()
        return offer.id, sid


def _ring_answer_stored_after_the_read(
    app: Flask, offer_id: int, sid: str, monkeypatch: pytest.MonkeyPatch
) -> list[bool]:
    """``state.offers_to_stop`` as the end reads it, then the ring's answer committed elsewhere."""
    read = state.offers_to_stop
    stored: list[bool] = []

    def read_then_ring_answered(transfer_id: int) -> list[Offer]:
        offers = read(transfer_id)
        if offers and not stored:
            other = create_engine(app.extensions["crisisline.settings"].database_url)
            with other.begin() as connection:
                placed = connection.execute(dispatch._PLACED, {"offer": offer_id, "sid": sid})
                stored.append(bool(placed.rowcount))
            other.dispose()
        return offers

    monkeypatch.setattr(state, "offers_to_stop", read_then_ring_answered)
    return stored


@pytest.mark.usefixtures("wednesday_evening")
def test_a_leg_whose_sid_is_stored_as_its_round_ends_is_still_stopped(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    offer_id, sid = _as_if_still_placing(app)
    stored = _ring_answer_stored_after_the_read(app, offer_id, sid, monkeypatch)

    phone.hang_up(caller)  # the round ends: ``flow.stop_ringing``, as for a callback or an acceptance
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert stored == [True]  # the ring's answer came between the end's read and its close
    with app.app_context():
        transfer = db.session.scalars(select(Transfer)).one()
        offer = db.session.get(Offer, offer_id)
        assert transfer.state == "abandoned"
        assert offer is not None and (offer.state, offer.call_sid) == ("ended", sid)
    assert leg_to(fake, BEN).status == "canceled", "Ben's phone rang on for a caller who had moved on"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_who_picked_up_before_the_rings_rest_answer_hears_why_it_ended_in_full(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Ben picked up (the whisper stored his leg's SID) before the REST answer that placed it
    came back; the caller hung up meanwhile, and the round's end told Ben why over REST. The
    late REST answer finds the offer closed: it must not hang his leg up, cutting that short."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    offer_id, sid = _as_if_still_placing(app)
    fake.advance_call(sid, "ringing")
    fake.advance_call(sid, "in-progress")  # he picks up: the whisper stores his leg's SID
    with app.app_context():
        offer = db.session.get(Offer, offer_id)
        assert offer is not None and (offer.state, offer.call_sid) == ("answered", sid)
    phone.hang_up(caller)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    with app.app_context():
        dispatch.end_a_leg_placed_too_late(offer_id, sid)  # the REST answer, at last

    leg = leg_to(fake, BEN)
    assert any("hung up" in (redirect.twiml or "") for redirect in leg.redirects), "Ben was not told"
    assert leg.status_updates == [], "his leg was hung up over what he was being told"
