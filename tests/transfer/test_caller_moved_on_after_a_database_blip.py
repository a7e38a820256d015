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
import transfer.views
from crisisline.db import db
from crisisline.models import Offer
from tests.rota import ANA, DIEGO, UNIT, leg_to, legs
from tests.transfer.test_lost_callbacks_and_failures import caller_and_ben_in_the_room
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio


def failing_for(calls: int, name: str = "offer_leg_ended", module: object = transfer.flow) -> Callable[..., bool]:
    """``<module>.<name>`` failing on the database for its first ``calls`` calls."""
    real, failed = getattr(module, name), [0]

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


@pytest.mark.usefixtures("wednesday_evening")
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


@pytest.mark.usefixtures("wednesday_evening")
def test_a_leg_end_handled_meanwhile_is_not_handled_again(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller, ben, redirected = caller_and_ben_in_the_room(phone, fake)
    monkeypatch.setattr(transfer.flow, "offer_leg_ended", failing_for(1))  # only the status callback fails

    fake.advance_call(ben.identity.call_sid, "completed")  # the room's participant-leave handles it
    time.sleep(1.5)  # past the first retry
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert len(fake.get_call(caller.identity.call_sid).redirects) == redirected + 1


@pytest.mark.usefixtures("wednesday_evening")
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


@pytest.mark.usefixtures("wednesday_evening")
def test_a_participant_leave_failing_on_its_first_read_is_handled_again(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review of the fix: only a failure inside the room's leaving handling was
    retried, not one on the callback's first read, where a blip is most likely to land."""
    caller, ben, redirected = caller_and_ben_in_the_room(phone, fake)
    monkeypatch.setattr(transfer.views, "found_transfer", failing_for(1, "found_transfer", transfer.views))

    # Ben's phone drops; his leg's own final status callback is lost; the room's participant-leave
    # fails on the database.
    fake.calls[ben.identity.call_sid].status = "completed"
    fake.leave_conference(ben.conference or "", ben.identity.call_sid)

    moved = wait_for(lambda: len(fake.get_call(caller.identity.call_sid).redirects) > redirected, seconds=8)
    assert moved, "the caller is alone in the room with nothing but the clock to move them on"


@pytest.mark.usefixtures("wednesday_morning")
def test_the_unit_leaving_last_during_a_blip_still_moves_the_caller_on(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review of the fix: the caller stays with the unit after their counselor left;
    the unit hangs up and moving the caller on fails after its leaving was stored."""
    caller = phone.call([Keys("1"), Keys("3")], max_hold_turns=0)
    ana = phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    fake.leave_conference(ana.conference or "", ana.identity.call_sid)  # *
    phone.resume(ana, [Keys("1")])  # 1: the unit
    unit = phone.answer(leg_to(fake, UNIT).sid, [Keys("1")])
    phone.hang_up(ana)  # the caller stays with the unit
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference is not None
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    redirected = len(fake.get_call(caller.identity.call_sid).redirects)
    monkeypatch.setattr(transfer.flow, "_after_staff_left", failing_for(1, "_after_staff_left"))

    fake.advance_call(unit.identity.call_sid, "completed")  # the unit hangs up

    moved = wait_for(lambda: len(fake.get_call(caller.identity.call_sid).redirects) > redirected, seconds=8)
    assert moved, "the caller is alone in the room with nothing but the clock to move them on"
