"""A counselor still hearing the whisper when the round ends is told why as their phone is
freed (the caller hung up, or someone else took them), rather than the call dropping
mid-sentence. Found by review: only a counselor already in the room was told."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.rota import BEN, DIEGO, around_the_clock, leg_to
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "clean_redis", "wednesday_evening")


def what_the_leg_was_told(app: Flask, fake: FakeTwilio, sid: str) -> str:
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    updates = fake.get_call(sid).redirects
    return (updates[-1].twiml or "") if updates else ""


def picked_up_mid_whisper(fake: FakeTwilio, number: str) -> str:
    """The counselor answers and hears the whisper, but has not pressed anything yet."""
    sid = leg_to(fake, number).sid
    fake.advance_call(sid, "ringing")
    fake.advance_call(sid, "in-progress")  # the whisper is fetched: the offer is answered
    return sid


def test_a_counselor_hearing_the_whisper_when_the_caller_hangs_up_is_told_so(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    publish_routing(lambda document: around_the_clock(document, on_call=("ben-carter",)))
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = picked_up_mid_whisper(fake, BEN)

    phone.hang_up(caller)

    assert "The caller has hung up" in what_the_leg_was_told(app, fake, ben)


def test_a_counselor_hearing_the_whisper_when_someone_else_takes_the_caller_is_told_so(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    publish_routing(lambda document: (around_the_clock(document), document["transfer"].update(strategy="parallel")))
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = picked_up_mid_whisper(fake, BEN)

    phone.answer(leg_to(fake, DIEGO).sid, [Keys("1")])

    assert "This caller has already been connected" in what_the_leg_was_told(app, fake, ben)
