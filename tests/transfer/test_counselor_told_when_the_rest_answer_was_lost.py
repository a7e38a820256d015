"""A counselor who picked up while Twilio's answer to the ring was still on its way, and that
answer was lost (a read timeout), then pressed 1: their offer had no call SID, so when the
caller hung up before reaching the room nobody told them or ended their leg, and they sat alone
in a silent room (found by a review of the responder's leg). Their pickup now stores the SID."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.rota import BEN, leg_to
from tests.transfer.test_lost_callbacks_and_failures import ben_presses_1_after_his_rest_answer_was_lost
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_who_accepted_a_leg_whose_rest_answer_was_lost_is_told_when_the_caller_hangs_up(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch, clock_tick: object
) -> None:
    """Ben picks up while Twilio's REST answer is still on its way, and that answer is lost
    (a read timeout): his offer is answered, with no call sid. He presses 1; the caller hangs up
    before reaching the room. Ben, alone in the room, must be told and freed."""
    caller = ben_presses_1_after_his_rest_answer_was_lost(app, phone, fake, monkeypatch)
    ben_leg = leg_to(fake, BEN)

    phone.hang_up(caller)  # before the redirect into the room lands
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    clock_tick()  # type: ignore[operator]  # the minute's repair does not find him either

    told = [r.twiml or "" for r in fake.get_call(ben_leg.sid).redirects]
    assert any("hung up" in twiml for twiml in told) or fake.get_call(ben_leg.sid).status == "completed", (
        "Ben was left alone in the room, never told the caller hung up"
    )
