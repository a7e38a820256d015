"""A caller from any number Twilio can reach can be called back, even one libphonenumber does
not know yet; a withheld caller ID is never offered a callback (there is nobody to call)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call
from tests.rota import around_the_clock
from twilio_fake.phone import Keys, Phone

CALLBACK_OFFER = "If you would rather we call you back when someone is free, press 9."


@pytest.fixture
def rota(publish_routing: Callable[..., int]) -> None:
    publish_routing(around_the_clock)  # counselors on call, the callback key offered at once


def holding_call_from(phone: Phone, number: str) -> str:
    """English, thoughts of suicide, then one turn of the hold loop; what the caller heard."""
    call = phone.call([Keys("1"), Keys("2")], identity=phone.identity(number), max_hold_turns=1)
    assert call.ended_by == "on-hold"
    return call.heard_text()


@pytest.mark.usefixtures("rota", "clean_redis")
@pytest.mark.parametrize("number", ["+16725550123", "+8821234567890", "+15555550123"])
def test_a_caller_whose_number_libphonenumber_does_not_know_is_offered_the_callback_key(
    app: Flask, phone: Phone, number: str
) -> None:
    assert CALLBACK_OFFER in holding_call_from(phone, number)
    with app.app_context():
        call = db.session.scalars(select(Call)).one()
        assert call.sealed_caller is not None and number not in call.sealed_caller


@pytest.mark.usefixtures("rota", "clean_redis")
@pytest.mark.parametrize("withheld", ["anonymous", "+266696687", "+7378742833", ""])
def test_a_withheld_caller_is_never_offered_a_callback(app: Flask, phone: Phone, withheld: str) -> None:
    heard = holding_call_from(phone, withheld)

    assert "press 9" not in heard
    with app.app_context():
        assert db.session.scalars(select(Call)).one().sealed_caller is None
