"""A counselor hangs up in the room during a short database failure (found by a review of the
deadlines). The two callbacks that move the caller on, the room's ``participant-leave`` and the
counselor leg's final status, both failed and were acknowledged, as a status callback is; Twilio
sends neither again. The caller, inside ``<Dial><Conference>``, has no hold turn of their own:
they sat alone in a silent room until the clock's minute repair, and for good with the clock
down. Now a failed leg end is handled again in a moment, in the web process itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import transfer.flow
from crisisline.db import db
from crisisline.models import Offer
from tests.rota import DIEGO, legs
from tests.transfer.test_lost_callbacks_and_failures import caller_and_ben_in_the_room
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("wednesday_evening")


def failing_for(calls: int, name: str = "offer_leg_ended") -> Callable[..., bool]:
    """``flow.<name>`` failing on the database for its first ``calls`` calls."""
    real, failed = getattr(transfer.flow, name), [0]

    def blip(*args: object, **kwargs: object) -> bool:
        if failed[0] < calls:
            failed[0] += 1
            raise OperationalError("UPDATE offers", {}, Exception("server closed the connection unexpectedly"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    return blip


def wait_for(condition: Callable[[], object], seconds: float) -> bool:
    ends = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > ends:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("failures", [2, 3], ids=["blip", "blip-outlasting-the-first-retry"])
def test_a_caller_left_alone_in_the_room_by_a_database_blip_is_moved_on_without_the_clock(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch, failures: int
) -> None:
    caller, ben, redirected = caller_and_ben_in_the_room(phone, fake)
    monkeypatch.setattr(transfer.flow, "offer_leg_ended", failing_for(failures))

    # Ben's phone drops: his leg completes and Twilio takes him out of the room. Both callbacks
    # fail on the database and are acknowledged. No worker, no clock.
    fake.advance_call(ben.identity.call_sid, "completed")

    moved = wait_for(lambda: len(fake.get_call(caller.identity.call_sid).redirects) > redirected, seconds=8)
    assert moved, "the caller is alone in the room with nothing but the clock to move them on"
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    with app.app_context():
        outcomes = [(o.state, o.outcome) for o in db.session.scalars(select(Offer).order_by(Offer.id))]
    assert outcomes[0] == ("ended", "completed")  # Ben's acceptance ended once
    assert len(fake.get_call(caller.identity.call_sid).redirects) == redirected + 1  # moved once
    phone.resume(caller, max_hold_turns=0)
    assert "The person you were talking with has been disconnected." in caller.heard_text()
    assert DIEGO in [leg.to for leg in legs(fake)]  # the search for someone else began


def test_a_leg_end_handled_meanwhile_is_not_handled_again(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller, ben, redirected = caller_and_ben_in_the_room(phone, fake)
    monkeypatch.setattr(transfer.flow, "offer_leg_ended", failing_for(1))  # only the status callback fails

    fake.advance_call(ben.identity.call_sid, "completed")  # the room's participant-leave handles it
    time.sleep(1.5)  # past the first retry
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert len(fake.get_call(caller.identity.call_sid).redirects) == redirected + 1


def test_a_failure_after_the_counselors_leaving_was_stored_still_moves_the_caller_on(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ben's leaving is stored, then moving the caller on fails: the room's participant-leave
    finds his offer closed already, so only the retry is left to move the caller."""
    caller, ben, redirected = caller_and_ben_in_the_room(phone, fake)
    monkeypatch.setattr(transfer.flow, "_after_staff_left", failing_for(1, "_after_staff_left"))

    fake.advance_call(ben.identity.call_sid, "completed")

    moved = wait_for(lambda: len(fake.get_call(caller.identity.call_sid).redirects) > redirected, seconds=8)
    assert moved, "the caller is alone in the room with nothing but the clock to move them on"
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    assert len(fake.get_call(caller.identity.call_sid).redirects) == redirected + 1
