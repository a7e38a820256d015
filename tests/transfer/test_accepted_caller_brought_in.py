"""A caller a counselor accepted whose redirect into the room failed is brought in by the
clock's repair, not left in a long hold-music clip until their next hold turn while the
counselor waits alone. Found by review: a transfer "connecting" was examined by no repair."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from crisisline.db import db
from crisisline.models import Transfer
from tests.conftest import TEST_BACKUP_NUMBER
from tests.rota import BEN, leg_to
from transfer import dispatch, flow
from twilio_fake.phone import TALKING, Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "clean_redis")
LONG_CLIP = "https://example.org/hold-10min.mp3"


def transfer_state(app: Flask) -> str:
    with app.app_context():
        return db.session.scalars(select(Transfer.state)).one()


def accepted_while_the_redirect_fails(
    phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> tuple[PhoneCall, PhoneCall]:
    publish_routing(lambda d: d["transfer"].update(hold_music_url=LONG_CLIP))
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # now inside the clip
    fake.inject_fault("POST", rf"/Calls/{caller.identity.call_sid}\.json$", status=500, times=1)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    assert ben.conference is not None  # Ben waits in the room
    return caller, ben


def test_an_accepted_caller_whose_join_redirect_failed_is_brought_into_the_room_by_the_clock(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    caller, ben = accepted_while_the_redirect_fails(phone, fake, publish_routing)
    assert fake.get_call(caller.identity.call_sid).redirects == []

    wednesday_evening.shift(timedelta(seconds=30))
    clock_tick()
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert len(fake.get_call(caller.identity.call_sid).redirects) == 1
    phone.resume(caller)  # Twilio carries out the redirect: the hold turn joins them
    assert caller.conference == ben.conference
    assert transfer_state(app) == "connected"


def test_the_repair_leaves_a_just_accepted_caller_to_the_press_of_ones_own_redirect(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    caller, _ben = accepted_while_the_redirect_fails(phone, fake, publish_routing)

    clock_tick()  # within the grace: their next hold turn may be seconds away

    assert fake.get_call(caller.identity.call_sid).redirects == []
    assert transfer_state(app) == "connecting"


def test_an_accepted_caller_who_hung_up_in_the_clip_ends_the_transfer_at_the_repair(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    caller, _ben = accepted_while_the_redirect_fails(phone, fake, publish_routing)
    fake.get_call(caller.identity.call_sid).status = "completed"  # its status callback lost

    wednesday_evening.shift(timedelta(seconds=30))
    clock_tick()

    assert transfer_state(app) not in ("connecting", "connected")


def database_fails(*_args: object, **_kwargs: object) -> bool:
    raise OperationalError("UPDATE transfers", {}, Exception("server closed the connection unexpectedly"))


def test_a_caller_on_the_backup_line_is_never_pulled_off_it_while_twilio_cannot_say(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch,
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Found by review: "Twilio cannot say" counted as "not on the backup line", so the repair
    redirected a caller talking there back into the hold loop."""
    monkeypatch.setattr(dispatch, "caller_dial_legs", lambda _sid: None)  # Twilio cannot say
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    with monkeypatch.context() as outage:  # their join fails: the fail-safe dials the backup line
        outage.setattr(flow, "caller_joined", database_fails)
        phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
        phone.resume(caller, dial_outcomes=[TALKING], max_hold_turns=0)
    assert caller.dials[-1].numbers == [TEST_BACKUP_NUMBER]
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    assert transfer_state(app) == "connecting"
    before = len(fake.get_call(caller.identity.call_sid).redirects)

    wednesday_evening.shift(timedelta(seconds=30))
    clock_tick()

    assert fake.get_call(caller.identity.call_sid).redirects[before:] == []


def test_a_caller_whose_own_hold_turn_joins_them_during_the_repair_is_not_redirected(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    caller, ben = accepted_while_the_redirect_fails(phone, fake, publish_routing)
    wednesday_evening.shift(timedelta(seconds=30))

    def the_clip_ends_while_twilio_is_asked(_transfer: Transfer) -> bool:
        phone.resume(caller)  # their hold turn joins them
        assert caller.conference == ben.conference
        return False

    monkeypatch.setattr(flow, "caller_is_off_our_line", the_clip_ends_while_twilio_is_asked)
    clock_tick()

    assert transfer_state(app) == "connected"
    assert fake.get_call(caller.identity.call_sid).redirects == []
