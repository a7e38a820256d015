"""A counselor rang the co-responder unit into a live call and then left before the unit picked
up: the caller is still on the line (being asked about a check-in, or searched for again). The
unit's phone must stop ringing (and the unit be free again), not ring on into an empty room;
and a unit's press of 1 handled just after the round ended must not put them alone in it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import CallEvent, Offer, ResponderState, Transfer
from routing.store import active_routing
from tests.rota import ANA, UNIT, leg_to
from transfer import flow, state
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "wednesday_morning")
UNIT_ID = "unit-north"


def ana_rings_the_unit(phone: Phone, fake: FakeTwilio) -> tuple[PhoneCall, PhoneCall]:
    """Ana talks with the caller, then (her menu, key 1) asks the co-responder unit to join:
    the unit's phone rings."""
    caller = phone.call([Keys("1"), Keys("3")], max_hold_turns=0)
    ana = phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    fake.leave_conference(ana.conference or "", ana.identity.call_sid)
    phone.resume(ana, [Keys("1")])
    assert fake.get_call(leg_to(fake, UNIT).sid).status in ("queued", "initiated", "ringing")
    return caller, ana


def unit_offer(app: Flask) -> tuple[str, str | None, int | None]:
    with app.app_context():
        offer = db.session.scalars(select(Offer).where(Offer.purpose == "join")).one()
        engaged = db.session.get(ResponderState, UNIT_ID)
        return offer.state, offer.outcome, engaged.engaged_offer_id if engaged else None


@pytest.mark.parametrize("checkins", [False, True], ids=["searched-for-again", "asked-about-a-check-in"])
def test_the_units_phone_stops_ringing_when_the_counselor_leaves_before_it_answers(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], checkins: bool
) -> None:
    publish_routing(lambda document: document["followups"].update(checkins=checkins))
    caller, ana = ana_rings_the_unit(phone, fake)

    phone.hang_up(ana)  # the caller is moved on (the staff-left turn); the unit has not answered
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    with app.app_context():
        asked = db.session.scalar(select(CallEvent.id).where(CallEvent.kind == "checkin.asked"))
        first = db.session.scalars(select(Transfer).order_by(Transfer.round)).first()
        assert first is not None and (first.state, first.end_reason) == ("ended", "staff_left")
    assert (asked is not None) == checkins  # the path under test was the one taken
    assert fake.get_call(leg_to(fake, UNIT).sid).status == "canceled"
    assert unit_offer(app) == ("ended", "superseded", None)  # and the unit is free again
    assert fake.get_call(caller.identity.call_sid).status == "in-progress"  # the caller is still with us


def test_a_units_press_of_one_handled_after_the_round_ended_is_refused(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    _caller, _ana = ana_rings_the_unit(phone, fake)
    unit = leg_to(fake, UNIT)
    fake.advance_call(unit.sid, "ringing")
    whisper = ET.fromstring(fake.advance_call(unit.sid, "in-progress") or "")  # noqa: S314 - our own TwiML
    assert whisper.find("Gather") is not None  # briefed, asked for 1

    with app.app_context():
        # The unit's press of 1 reads its offer and the call: connected.
        offer = db.session.scalars(select(Offer).where(Offer.purpose == "join")).one()
        transfer = db.session.get(Transfer, offer.transfer_id)
        assert transfer is not None and transfer.state == "connected"
        # Meanwhile the counselor left and the round ended (before its ringing is stopped).
        with app.app_context():
            assert state.move_transfer(transfer.id, ("connecting", "connected"), "ended", end_reason="staff_left")
            db.session.commit()
        routing = active_routing()
        assert routing is not None
        decision = flow.offer_decided(offer, transfer, routing.document, "1")

    assert decision == flow.Decision("staff", "caller_gone")
    assert unit_offer(app)[0] != "accepted"
