"""A counselor who picked up while Twilio's answer to the ring was still on its way, and that
answer was lost (a read timeout), then pressed 1: their offer had no call SID, so when the
caller hung up before reaching the room nobody told them or ended their leg, and they sat alone
in a silent room (found by a review of the responder's leg). Their pickup now stores the SID."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Offer
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID
from tests.rota import BEN, leg_to
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity

pytestmark = pytest.mark.usefixtures("fake")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_who_accepted_a_leg_whose_rest_answer_was_lost_is_told_when_the_caller_hangs_up(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch, clock_tick: object
) -> None:
    """Ben picks up while Twilio's REST answer is still on its way, and that answer is lost
    (a read timeout): his offer is answered, with no call sid. He presses 1; the caller hangs up
    before reaching the room. Ben, alone in the room, must be told and freed."""
    import requests

    from tests.transfer.test_lost_callbacks_and_failures import picked_up_while_twilio_answers

    picked_up_while_twilio_answers(fake, monkeypatch, then=requests.ReadTimeout("the REST answer never came"))
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    monkeypatch.undo()
    ben_leg = leg_to(fake, BEN)
    with app.app_context():
        offer_id = db.session.scalars(select(Offer.id).where(Offer.responder_id == "ben-carter")).one()
    ben = CallIdentity(TEST_ACCOUNT_SID, LINE_NUMBER, BEN, call_sid=ben_leg.sid, direction="outbound-api")
    phone.post(f"{phone.base_url}/voice/offer/decide?offer={offer_id}", ben.voice_params("in-progress", Digits="1"))

    phone.hang_up(caller)  # before the redirect into the room lands
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    clock_tick()  # type: ignore[operator]  # the minute's repair does not find him either

    told = [r.twiml or "" for r in fake.get_call(ben_leg.sid).redirects]
    assert any("hung up" in twiml for twiml in told) or fake.get_call(ben_leg.sid).status == "completed", (
        "Ben was left alone in the room, never told the caller hung up"
    )
