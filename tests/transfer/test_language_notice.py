"""A caller hears that nobody who speaks their language is available when the responder rung
for them does not speak it: said in the answer that puts them on hold when nobody free who
could take them speaks it, or on their next hold turn when the queue rang someone else than
that answer expected. Nobody waits for it: it is said while the phone rings. Signed webhooks
over real HTTP, the fake Twilio REST API, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import CallEvent, Offer, Transfer
from tests.rota import BEN, DIEGO, around_the_clock, diego_listed_first, legs
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio

ENGLISH_SUICIDE, SPANISH_SUICIDE = [Keys("1"), Keys("2")], [Keys("2"), Keys("2")]
NOTICE = "nadie disponible que hable español"  # the Spanish no_language_match prompt


def caller(phone: Phone, number: int, keys: list[Keys], **options: Any) -> PhoneCall:
    return phone.call(keys, identity=phone.identity(f"+131255503{number:02d}"), **options)


def connect(phone: Phone, fake: FakeTwilio, number: str, person: PhoneCall) -> PhoneCall:
    """The newest leg to ``number`` is answered with 1; the waiting person is brought in."""
    leg = [leg for leg in legs(fake) if leg.to == number][-1]
    counselor = phone.answer(leg.sid, [Keys("1")])
    phone.resume(person, max_hold_turns=0)
    assert person.conference is not None and person.conference == counselor.conference
    return counselor


def end_call(phone: Phone, person: PhoneCall, counselor: PhoneCall) -> None:
    phone.hang_up(person)
    phone.resume(counselor)


def spanish_caller_behind_two_calls(
    phone: Phone, fake: FakeTwilio
) -> tuple[tuple[PhoneCall, PhoneCall], tuple[PhoneCall, PhoneCall], PhoneCall]:  # fmt: skip
    """Ben and Diego each on a call with an English caller; then a Spanish caller holds (one
    turn). Returns (caller, Ben), (caller, Diego) and the Spanish caller."""
    first = caller(phone, 1, ENGLISH_SUICIDE, max_hold_turns=0)
    ben = connect(phone, fake, BEN, first)
    second = caller(phone, 3, ENGLISH_SUICIDE, max_hold_turns=0)
    diego = connect(phone, fake, DIEGO, second)
    return (first, ben), (second, diego), caller(phone, 2, SPANISH_SUICIDE, max_hold_turns=1)


def rung_for_spanish_caller(app: Flask) -> list[str]:
    """Who was rung for the Spanish caller (the newest transfer), in order."""
    with app.app_context():
        newest = db.session.scalars(select(Transfer).order_by(Transfer.id.desc())).first()
        assert newest is not None
        offers = db.session.scalars(select(Offer).where(Offer.transfer_id == newest.id).order_by(Offer.id))
        return [offer.responder_id for offer in offers]


def notices(app: Flask) -> list[str]:
    """When each notice was said, as the event log has it."""
    with app.app_context():
        events = db.session.scalars(select(CallEvent).where(CallEvent.kind == "transfer.language_notice"))
        return [event.detail["at"] for event in events]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_spanish_caller_rung_through_to_ben_while_diego_is_on_a_call_hears_so_before_holding(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    publish_routing(diego_listed_first)
    english = caller(phone, 1, ENGLISH_SUICIDE, max_hold_turns=0)
    connect(phone, fake, DIEGO, english)  # Diego, the only Spanish speaker, is on a call

    spanish = caller(phone, 2, SPANISH_SUICIDE, max_hold_turns=0)  # no hold turn: the need answer only

    assert rung_for_spanish_caller(app) == ["ben-carter"]  # at once, as before
    assert NOTICE in spanish.heard_text()
    assert notices(app) == ["put_on_hold"]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_spanish_caller_waiting_for_busy_counselors_hears_so_on_the_hold_turn_after_ben_is_rung_for_them(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    publish_routing(around_the_clock)
    (first, ben), _with_diego, spanish = spanish_caller_behind_two_calls(phone, fake)
    assert NOTICE not in spanish.heard_text()  # Diego speaks Spanish: they may get him yet

    end_call(phone, first, ben)  # Ben is free first: rung for the Spanish caller
    assert rung_for_spanish_caller(app) == ["ben-carter"]
    phone.resume(spanish, max_hold_turns=1)

    assert NOTICE in spanish.heard_text()
    phone.resume(spanish, max_hold_turns=2)
    assert spanish.heard_text().count(NOTICE) == 1  # said once
    assert notices(app) == ["hold_turn"]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_spanish_caller_waiting_for_busy_counselors_is_not_told_when_diego_is_rung_for_them(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    publish_routing(around_the_clock)
    _with_ben, (second, diego), spanish = spanish_caller_behind_two_calls(phone, fake)

    end_call(phone, second, diego)  # Diego is free first
    assert rung_for_spanish_caller(app) == ["diego-morales"]
    phone.resume(spanish, max_hold_turns=2)

    assert NOTICE not in spanish.heard_text()
    assert notices(app) == []
