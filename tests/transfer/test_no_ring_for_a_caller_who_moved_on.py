"""A ring is decided on a read of the caller's transfer (``ring_for_transfer``'s lease,
``_ring_while_waiting``, ``invite_unit``); the caller may hang up, or their round end, before
the ring stores its offer, and the hang-up's ``stop_ringing`` then finds nothing to stop. The
ring must not be placed: nobody's phone rings, or stays engaged, for a caller who has moved on.

Driven in that order, not with sleeps: the read, the caller's move over HTTP (signed, as Twilio
sends it), then the ring with what was read."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Offer, ResponderState, Transfer
from routing.document import RoutingDocument
from routing.store import active_routing
from tests.rota import ANA, BEN, DIEGO, UNIT, leg_to, legs
from transfer import dispatch
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake")


def document() -> RoutingDocument:
    routing = active_routing()
    assert routing is not None
    return routing.document


def nobody_engaged(app: Flask) -> bool:
    with app.app_context():
        return all(row.engaged_offer_id is None for row in db.session.scalars(select(ResponderState)))


@pytest.mark.usefixtures("wednesday_evening")
def test_no_counselor_is_rung_for_a_caller_who_hung_up_after_the_ring_read_their_transfer(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    assert [leg.to for leg in legs(fake)] == [BEN]

    with app.app_context():
        transfer = db.session.scalars(select(Transfer)).one()  # read as waiting, to ring Diego next
        assert transfer.state == "waiting"
        phone.hang_up(caller)  # meanwhile: abandoned, Ben's phone stopped
        diego = document().responder("diego-morales")
        assert diego is not None
        rung = dispatch._ring(transfer, diego, document(), purpose="answer")

    assert rung == 0
    assert [leg.to for leg in legs(fake)] == [BEN], "Diego was rung for a caller who had hung up"
    assert DIEGO not in [leg.to for leg in legs(fake)]
    with app.app_context():
        active = db.session.scalars(select(Offer).where(Offer.state.in_(("placing", "ringing", "answered"))))
        assert list(active) == []
    assert nobody_engaged(app)


@pytest.mark.usefixtures("wednesday_morning")
def test_no_unit_is_rung_into_a_call_whose_round_ended_after_the_invitation_read_it(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing
) -> None:
    publish_routing(lambda d: d["followups"].update(checkins=False))
    caller = phone.call([Keys("1"), Keys("3")], max_hold_turns=0)
    ana = phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)

    with app.app_context():
        transfer = db.session.scalars(select(Transfer)).one()  # Ana's menu (key 1) read it: connected
        assert transfer.state == "connected"
        phone.hang_up(ana)  # meanwhile: she left, the round ended, the caller is searched for again
        app.extensions["crisisline.background"].wait_idle(timeout=30)
        invited = dispatch.invite_unit(transfer, document())

    assert not invited
    assert UNIT not in [leg.to for leg in legs(fake)], "the unit was rung into an empty room"
    with app.app_context():
        assert db.session.scalars(select(Offer).where(Offer.purpose == "join")).all() == []
