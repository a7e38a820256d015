"""A person who asked for a callback and then calls in again keeps their place in the queue.

Before: their new live call queued from the moment it started, behind everyone who had called
since they first asked (their callback, which kept their place, waits while they hold live), so
the counselor who came free was rung for a later caller. Now their live search queues from
their callback's place (its ``queue_since``) and takes the higher of the two priorities.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call, Callback, Offer, Transfer
from ivr.call_log import phone_hash
from tests.callbacks.test_callbacks import CALLER, ask_for_callback, ringing_responder
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("clean_redis")
LATER = "+13125550193"


def test_a_person_who_asked_for_a_callback_and_calls_in_again_is_rung_for_before_a_later_caller(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    rota(on_call=("ben-carter",))
    busy = phone.call([Keys("1"), Keys("2")], identity=phone.identity("+13125550191"), max_hold_turns=0)
    with_first = phone.answer(ringing_responder(fake).sid, [Keys("1")])  # Ben is busy with the first caller
    phone.resume(busy, max_hold_turns=0)
    ask_for_callback(phone)  # t0: the person asks for a callback (their place: t0)
    run_worker()  # its search waits for Ben
    phone.call([Keys("1"), Keys("2")], identity=phone.identity(LATER), max_hold_turns=0)  # t1: a later caller
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # t2: the person calls in again and holds

    phone.hang_up(busy)  # Ben is free again
    phone.resume(with_first)

    with app.app_context():
        rung_for = db.session.scalars(
            select(Call.caller_hash)
            .join(Transfer, Transfer.call_id == Call.id)
            .join(Offer, Offer.transfer_id == Transfer.id)
            .where(Offer.state.in_(("ringing", "queued", "initiated", "answered", "placing", "placed")))
        ).all()
        assert rung_for == [phone_hash(CALLER)], "Ben was rung for the later caller, not for the person who asked first"


@pytest.mark.usefixtures("rota")
def test_the_live_call_of_a_person_whose_callback_waits_queues_from_its_place_with_the_higher_priority(
    app: Flask, phone: Phone, run_worker: Callable[..., None], rota: Callable[..., None]
) -> None:
    rota(on_call=())  # nobody on shift: the callback waits, the live call is what it is
    phone.call([Keys("1"), Keys("2"), Keys("9")])  # thoughts of suicide (priority 8), a callback
    rota(on_call=("ben-carter",))
    phone.call([Keys("1"), Keys("3")], max_hold_turns=0)  # mental health (priority 0), live
    with app.app_context():
        callback = db.session.scalars(select(Callback)).one()
        live = db.session.scalars(select(Transfer).where(Transfer.mode == "live").order_by(Transfer.id.desc())).first()
        assert live is not None
        assert (live.state, live.queued_since, live.priority) == ("waiting", callback.queue_since, 8)
