"""A called-back person who hangs up while their answer is being handled: the end of their leg
is handled first (the attempt still ``connecting``), and is settled off its request
(``_settle_answered_unjoined``); their answer then joins them (``connected``) after all.

Found in review: the settling found the attempt ``connected`` and did nothing, so the counselor
waited in the room for someone who had gone, never told, and the callback counted as made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

import callbacks.attempts
from crisisline.db import db
from crisisline.models import Transfer
from tests.callbacks.test_callbacks import ask_for_callback, person_legs, ringing_responder
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio


@pytest.mark.usefixtures("rota")
def test_a_person_who_hung_up_as_their_answer_joined_them_is_not_waited_for_in_the_room(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    ask_for_callback(phone)
    run_worker()
    counselor_leg = ringing_responder(fake)
    counselor = phone.answer(counselor_leg.sid, [Keys("1")])
    assert "We are calling them now." in counselor.heard_text()
    (person_leg,) = person_legs(fake)
    settling: list[Callable[[], Any]] = []
    monkeypatch.setattr(callbacks.attempts, "start_soon", lambda _key, job: settling.append(job))

    fake.advance_call(person_leg.sid, "ringing")
    fake.advance_call(person_leg.sid, "completed")  # their leg's end, handled before their answer
    assert len(settling) == 1
    with app.app_context():  # ...whose join then stored them as in the room
        transfer = db.session.scalars(select(Transfer).where(Transfer.mode == "callback")).one()
        assert transfer.state == "connecting"
        db.session.execute(
            update(Transfer).where(Transfer.id == transfer.id)
            .values(state="connected", caller_call_sid=person_leg.sid)
        )  # fmt: skip
        db.session.commit()
        settling[0]()
        db.session.remove()

    with app.app_context():
        transfer = db.session.scalars(select(Transfer).where(Transfer.mode == "callback")).one()
        assert (transfer.state, transfer.end_reason) == ("ended", "caller_left")
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    leg = fake.get_call(counselor_leg.sid)
    told = [redirect.twiml or "" for redirect in leg.redirects]
    assert leg.status == "completed" or any("<Hangup" in twiml for twiml in told), "left waiting in the room"
