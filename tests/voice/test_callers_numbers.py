"""A caller from any number Twilio can reach can be called back, even one libphonenumber does
not know yet; a withheld caller ID is never offered a callback (there is nobody to call)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call
from tests.conftest import LINE_NUMBER, TEST_BACKUP_NUMBER
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


@pytest.mark.usefixtures("clean_redis")
@pytest.mark.parametrize("withheld", ["anonymous", "Restricted", "+266696687", ""])
def test_a_withheld_caller_sent_to_the_backup_line_reaches_it_from_the_lines_number(
    phone: Phone, publish_routing: Callable[..., int], withheld: str
) -> None:
    """Twilio passes an invalid caller ID on to a ``<Dial>`` without ``callerId``, and "this may
    cause some destination providers to reject the call" (error 13214): the line's number,
    which Twilio allows as the call's ``To``, stands in."""
    publish_routing(lambda document: document["line"].update(mode="system_down"))

    call = phone.call([], identity=phone.identity(withheld))

    (dial, *_) = call.dials
    assert dial.numbers == [TEST_BACKUP_NUMBER]
    assert dial.attributes.get("callerId") == LINE_NUMBER


@pytest.mark.usefixtures("clean_redis")
def test_a_caller_with_a_number_reaches_the_backup_line_with_their_own_caller_id(
    phone: Phone, publish_routing: Callable[..., int]
) -> None:
    publish_routing(lambda document: document["line"].update(mode="system_down"))

    call = phone.call([], identity=phone.identity("+13125550123"))

    (dial, *_) = call.dials
    assert "callerId" not in dial.attributes  # the backup line sees who is calling
