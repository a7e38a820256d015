"""Closing a console account and the phone of its responder: the line stops ringing a person
whose account was closed, the administrator is told plainly what happens to their calls and
what to do about the routing, and the warning stays where they look until it is dealt with."""

from __future__ import annotations

import pytest
from flask import Flask

from console.accounts import users
from console.audit.log import CLI
from console.models import COUNSELOR, User
from crisisline.db import db
from tests.console.conftest import MakeUser
from tests.rota import BEN, DIEGO, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio


def close(app: Flask, user_id: int) -> None:
    with app.app_context():
        users.deactivate(db.session.get_one(User, user_id), actor=CLI)
        db.session.commit()


@pytest.mark.usefixtures("wednesday_evening")
@pytest.mark.xfail(reason="found by review: closing an account leaves its responder in the rota", strict=True)
def test_a_caller_is_not_offered_the_responder_of_a_closed_account(
    app: Flask, phone: Phone, fake: FakeTwilio, make_user: MakeUser
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")  # first for thoughts of suicide now
    close(app, ben.id)

    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    assert [leg.to for leg in legs(fake)] == [DIEGO]
    assert BEN not in [leg.to for leg in legs(fake)]
