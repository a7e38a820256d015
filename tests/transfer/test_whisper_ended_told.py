"""A counselor still hearing the whisper when the round ends is told why as their phone is
freed (the caller hung up, or someone else took them), rather than the call dropping
mid-sentence. Found by review: only a counselor already in the room was told."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from callbacks import attempts as callback_attempts
from crisisline.db import db
from crisisline.models import Callback, Transfer
from tests.callbacks.test_callbacks import ask_for_callback, contacts, run_contact
from tests.rota import BEN, DIEGO, around_the_clock, leg_to, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "clean_redis", "wednesday_evening")


def what_the_leg_was_told(app: Flask, fake: FakeTwilio, sid: str) -> str:
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    updates = fake.get_call(sid).redirects
    return (updates[-1].twiml or "") if updates else ""


def picked_up_mid_whisper(fake: FakeTwilio, number: str) -> str:
    """The counselor answers and hears the whisper, but has not pressed anything yet."""
    return picked_up_mid_whisper_of(fake, leg_to(fake, number).sid)


def picked_up_mid_whisper_of(fake: FakeTwilio, sid: str) -> str:
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


def test_a_counselor_hearing_a_callbacks_whisper_when_its_search_gives_up_is_not_told_of_a_backup_line(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    """Nobody free in time ends a callback's search as ``to_backup``, but nobody is on any line:
    the leg ends as it did before, with nothing said (found reading this change again)."""
    publish_routing(lambda document: around_the_clock(document, on_call=("ben-carter",)))
    ask_for_callback(phone)
    (attempt,) = contacts(app, "callback")
    assert run_contact(app, attempt) == "sent"  # its search rings Ben
    ben = picked_up_mid_whisper_of(fake, legs(fake)[-1].sid)

    with app.app_context():
        search = db.session.scalars(select(Transfer).where(Transfer.mode == "callback")).one()
        (callback,) = db.session.scalars(select(Callback)).all()
        assert callback_attempts._give_up_search(search, callback)

    assert "backup line" not in what_the_leg_was_told(app, fake, ben)
