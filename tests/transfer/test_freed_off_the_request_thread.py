"""Work a webhook leaves to other threads (``crisisline.background``'s pool and its side-by-side
lanes, the voice deadline's after-fail-safe hook) runs in an app context and a session of its
own. When it frees a counselor (stopping the search for a caller the fail-safe sent to the
backup line, say), the ``responder_freed`` it notes must be published there, as after a request
or a job: the counselor is offered the next waiting caller at once, not at that caller's next
hold turn (which a long hold-music clip can put minutes away)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline import background
from crisisline.db import db
from crisisline.models import Offer, Transfer
from tests.rota import ANA, legs
from transfer import flow
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "wednesday_morning")


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Work on the deadline's own pool cannot be waited for otherwise."""
    ends = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > ends:
            return False
        time.sleep(0.05)
    return True


def on_the_pool(app: Flask, sid: str) -> None:
    pool: background.Background = app.extensions["crisisline.background"]
    pool.submit(f"backup-check:{sid}", partial(flow.failsafe_took_over, sid)).result(timeout=30)
    pool.wait_idle(timeout=30)


def on_a_lane(app: Flask, sid: str) -> None:
    pool: background.Background = app.extensions["crisisline.background"]
    pool.lane("phones").submit(background._in_app_context, app, partial(flow.failsafe_took_over, sid)).result(30)


def after_the_deadlines_failsafe(app: Flask, sid: str) -> None:
    app.extensions["crisisline.deadline"]._after_failsafe(sid)


@pytest.mark.parametrize("runner", [on_the_pool, on_a_lane, after_the_deadlines_failsafe])
def test_a_counselor_freed_off_the_request_thread_is_offered_the_next_waiting_caller_at_once(
    app: Flask, phone: Phone, fake: FakeTwilio, runner: Callable[[Flask, str], None]
) -> None:
    first = phone.call([Keys("1"), Keys("3")], max_hold_turns=0)  # Ana (the only one on) rings for them
    second = phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550126"), max_hold_turns=0)
    assert [leg.to for leg in legs(fake)] == [ANA]  # the second caller waits behind

    # The fail-safe answered the first caller (the backup line): their search stops, freeing Ana.
    runner(app, first.identity.call_sid)

    assert wait_for(lambda: [leg.to for leg in legs(fake)] == [ANA, ANA]), "Ana was not offered the next caller"
    first_leg, second_leg = legs(fake)
    assert fake.get_call(first_leg.sid).status == "canceled"

    def offer_recorded() -> bool:
        # The fake holds the leg the moment it is created; the app records its sid once the
        # create returns, on the thread that placed it.
        with app.app_context():
            return db.session.scalars(select(Offer.id).where(Offer.call_sid == second_leg.sid)).first() is not None

    assert wait_for(offer_recorded), "the second ring's call was not recorded on its offer"
    with app.app_context():
        offer = db.session.scalars(select(Offer).where(Offer.call_sid == second_leg.sid)).one()
        transfer = db.session.get(Transfer, offer.transfer_id)
        assert transfer is not None and transfer.caller_call_sid == second.identity.call_sid
