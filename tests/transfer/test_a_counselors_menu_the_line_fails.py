"""A counselor out of the room on their in-call menu (``*``) whose menu the line cannot answer:
its database failing, or the web process down (Twilio then asks the leg's fallback URL).

Found in review: both answered "Sorry, something went wrong" and hung the counselor up, mid-call,
leaving the caller alone in the room for a blip of a second. Now a pause, then the way back in
(``/offer/rejoin``) is asked again, up to ``BACK_TO_THE_CALL_TRIES`` times, before the apology.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import transfer.views
from crisisline.db import db
from crisisline.models import Offer
from tests.rota import ANA, leg_to, legs
from tests.transfer.test_counselor_star_menu import WENT_WRONG, ana_with_the_caller
from transfer.views import BACK_TO_THE_CALL_TRIES, ONE_MOMENT
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity

pytestmark = pytest.mark.usefixtures("fake", "wednesday_morning")


def database_fails(monkeypatch: pytest.MonkeyPatch, times: int, *, from_path: str = "") -> list[str]:
    """From the first request to ``from_path`` (any, by default), the next ``times`` reads of a
    responder's offer fail as a dropped connection does; the paths asked are returned."""
    read = transfer.views._offer
    asked: list[str] = []

    def failing() -> Any:
        path = transfer.views.request.full_path
        if asked or path.startswith(from_path):
            asked.append(path)
        if asked and len(asked) <= times:
            raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))
        return read()

    monkeypatch.setattr(transfer.views, "_offer", failing)
    return asked


def anas_offer(app: Flask) -> Offer:
    with app.app_context():
        return db.session.scalars(select(Offer).where(Offer.responder_id == "ana-ruiz")).one()


def test_a_counselors_menu_the_database_fails_takes_her_back_to_the_caller_after_a_moment(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller, ana = ana_with_the_caller(phone, fake)
    asked = database_fails(monkeypatch, times=2)

    assert phone.press_star(ana)  # out of the room: the menu's first step fails, then its first retry
    phone.resume(ana)

    heard = ana.heard_text()
    assert WENT_WRONG not in heard
    assert ONE_MOMENT in heard
    assert [path.split("?")[0] for path in asked] == ["/voice/offer/after", *["/voice/offer/rejoin"] * 2]
    assert asked[1].endswith("again=1") and asked[2].endswith("again=2")
    assert ana.conference == caller.conference is not None  # back in the room
    assert anas_offer(app).state == "accepted"


def test_a_counselors_choice_on_the_menu_the_database_fails_takes_her_back_to_the_caller(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller, ana = ana_with_the_caller(phone, fake)
    asked = database_fails(monkeypatch, times=1, from_path="/voice/offer/menu")

    assert phone.press_star(ana)
    phone.resume(ana, [Keys("2")])  # "back to the caller": that answer fails

    assert WENT_WRONG not in ana.heard_text()
    assert [path.split("?")[0] for path in asked] == ["/voice/offer/menu", "/voice/offer/rejoin"]
    assert ana.conference == caller.conference is not None
    assert anas_offer(app).state == "accepted"


def test_a_counselors_menu_failing_every_time_ends_in_the_apology_after_the_tries(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    _caller, ana = ana_with_the_caller(phone, fake)
    asked = database_fails(monkeypatch, times=100)

    assert phone.press_star(ana)
    phone.resume(ana)

    assert len(asked) == 1 + BACK_TO_THE_CALL_TRIES  # the menu, then each try, never more
    assert WENT_WRONG in ana.heard_text()
    assert ana.heard_text().count(ONE_MOMENT) == 1


@pytest.mark.parametrize("failed", ["menu", "after", "rejoin"])
def test_twilios_fallback_for_a_failed_in_call_menu_takes_the_counselor_back_not_off_the_call(
    app: Flask, phone: Phone, fake: FakeTwilio, failed: str
) -> None:
    """A 502 while a web process restarts: Twilio asks the leg's fallback URL, with the URL that
    failed (``ErrorUrl``)."""
    ana_with_the_caller(phone, fake)
    offer_id = anas_offer(app).id
    leg = CallIdentity(phone.account_sid, phone.line_number, ANA, call_sid=leg_to(fake, ANA).sid,
                       direction="outbound-api")  # fmt: skip

    def fallback(error_url: str) -> str:
        reply = phone.post(
            f"{phone.base_url}/voice/offer/fallback?offer={offer_id}",
            leg.voice_params("in-progress", ErrorCode="11200", ErrorUrl=error_url),
        )
        assert reply.status == 200
        return reply.body

    first = fallback(f"{phone.base_url}/voice/offer/{failed}?offer={offer_id}")
    last = fallback(f"{phone.base_url}/voice/offer/rejoin?offer={offer_id}&again={BACK_TO_THE_CALL_TRIES}")

    assert WENT_WRONG not in first
    assert f"/voice/offer/rejoin?offer={offer_id}&amp;again=1</Redirect>" in first
    assert "<Hangup" not in first
    assert WENT_WRONG in last  # tried enough: the apology
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    assert anas_offer(app).state == "accepted"  # still with the caller: nothing ended
    assert [leg.to for leg in legs(fake)] == [ANA]  # nobody else rung for the caller
