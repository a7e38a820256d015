"""Never more phones ringing for one caller than the need allows: the queue chooses whom to
ring from a snapshot taken before the transfer's lease, so a second pass that chose from the
same snapshot must count the phones already ringing again, under the lease."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Transfer
from routing.store import active_routing
from tests.rota import BEN, DIEGO, legs
from transfer import dispatch
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio


@pytest.mark.usefixtures("wednesday_evening")
def test_a_pass_that_chose_from_a_stale_head_rings_nobody_once_the_caller_rings_all_they_may(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    publish_routing(lambda document: document["transfer"].update(strategy="parallel", parallel_max=1))
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    (first,) = legs(fake)
    other = DIEGO if first.to == BEN else BEN
    with app.app_context():
        transfer_id = db.session.scalars(select(Transfer.id)).one()
        active = active_routing()
        assert active is not None
        responder = next(r for r in active.document.responders if r.phone == other)

        rung = dispatch.ring_for_transfer(transfer_id, [responder], active.document)

    assert rung == 0
    assert [leg.to for leg in legs(fake)] == [first.to]  # one phone rings, as the need allows
