"""A free counselor is offered a waiting caller however many contacts wait ahead of them that
cannot take another offer (texters already offered to someone, callers already ringing as
many phones as they may), and, with ``queue.channels: separate``, however many texters wait.

Before the fix, ``fill`` looked only at the first ``HEAD_LIMIT`` (50) contacts of the merged
queue: after a busy spell with 50 texters waiting, a caller behind them was never rung by any
fill (need answer, hold turn, clock), although a counselor was free for calls. SQLite and
PostgreSQL, signed webhooks over real HTTP, the fake Twilio REST API.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call, Conversation, ConversationOffer, Offer, Texter, Transfer
from line_queue import matching
from line_queue.matching import DEEPER_HEAD_LIMIT, HEAD_LIMIT
from line_queue.waiting import now
from routing.store import active_routing
from tests.conftest import LINE_NUMBER
from tests.rota import ANA, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

MENTAL_HEALTH = [Keys("1"), Keys("3")]  # Ana is on for it on Wednesday morning


def texters_waiting(app: Flask, count: int, state: str, passed_by: str | None = None) -> None:
    """``count`` texters queued a second apart, the last of them a minute ago (ahead of any
    caller now), in ``state``; each passed a moment ago by the responder ``passed_by`` if given."""
    with app.app_context():
        since = now() - timedelta(minutes=1, seconds=count)
        for index in range(count):
            texter = Texter(number_hash=hashlib.sha256(f"head-of-line-{index}".encode()).hexdigest())
            db.session.add(texter)
            db.session.flush()
            db.session.add(
                conversation := Conversation(texter_id=texter.id, state=state, language="en", need="mental_health",
                                             priority=0, queued_at=since + timedelta(seconds=index))
            )  # fmt: skip
            if passed_by is not None:
                db.session.flush()
                db.session.add(
                    ConversationOffer(conversation_id=conversation.id, responder_id=passed_by, state="passed",
                                      created_at=now() - timedelta(seconds=30), expires_at=now(), decided_at=now())
                )  # fmt: skip
        db.session.commit()


@pytest.mark.parametrize("channels", ["separate", "shared"])
def test_a_caller_behind_a_full_head_of_offered_texters_is_rung(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    wednesday_morning: time_machine.Coordinates, channels: str,
) -> None:  # fmt: skip
    publish_routing(lambda document: document["queue"].update(channels=channels))
    # Each of them has its one text offer out already (to counselors not on shift now): none
    # can be offered anything more, but they fill the head of the queue.
    texters_waiting(app, HEAD_LIMIT, "offered")

    call = phone.call(MENTAL_HEALTH, identity=phone.identity("+13125550201"), max_hold_turns=2)

    assert [leg.to for leg in legs(fake)] == [ANA], "Ana is free and takes calls: she must be rung"
    assert call.dials == []


def test_with_separate_channels_queued_texters_do_not_hide_a_caller(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_morning: time_machine.Coordinates
) -> None:
    # The example routing's channels are separate: texts and calls are two lines. Ana is
    # offered the first text, and rung for the caller all the same.
    texters_waiting(app, HEAD_LIMIT + 5, "queued")

    call = phone.call(MENTAL_HEALTH, identity=phone.identity("+13125550202"), max_hold_turns=2)

    assert [leg.to for leg in legs(fake)] == [ANA]
    assert call.dials == []


def text_offers_made(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(ConversationOffer.responder_id).order_by(ConversationOffer.id)))


def test_with_separate_channels_a_new_callers_pass_rings_without_offering_the_texters_ahead(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_morning: time_machine.Coordinates
) -> None:
    # Texters queued before the caller. With two lines a new caller changes nothing for the
    # texts' line, so the need answer's pass looks at the callers' line only: its ring never
    # waits behind text offers (each a REST request; after a busy spell, 60 of them).
    texters_waiting(app, 5, "queued")

    call = phone.call(MENTAL_HEALTH, identity=phone.identity("+13125550204"), max_hold_turns=0)

    assert [leg.to for leg in legs(fake)] == [ANA]
    assert text_offers_made(app) == []
    # The texts' line is served by every event that frees someone: the caller hangs up, Ana's
    # phone stops ringing, and she is offered the first texter.
    phone.hang_up(call)
    assert text_offers_made(app) == ["ana-ruiz"]


def test_a_free_counselor_is_rung_for_a_caller_behind_fifty_texters_she_just_passed(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    wednesday_morning: time_machine.Coordinates,
) -> None:  # fmt: skip
    # One line for both channels: the head is 50 texters Ana passed a moment ago (not offered
    # to her again before the cooldown), so the caller behind them is the one she can take.
    publish_routing(lambda document: document["queue"].update(channels="shared"))
    texters_waiting(app, HEAD_LIMIT, "queued", passed_by="ana-ruiz")

    call = phone.call(MENTAL_HEALTH, identity=phone.identity("+13125550203"), max_hold_turns=2)

    assert [leg.to for leg in legs(fake)] == [ANA], "the pass must look past a head Ana cannot take"
    assert call.dials == []


def callers_waiting(app: Flask, count: int, need: str, *, first: int = 0) -> None:
    """``count`` callers holding for ``need`` since a few minutes ago, nobody ringing for them
    (``first``: the index of the first, to add more later)."""
    with app.app_context():
        since = now() - timedelta(minutes=5)
        for index in range(first, first + count):
            db.session.add(call := Call(call_sid=f"CA{index:032x}", language="en", need=need, line_number=LINE_NUMBER))
            db.session.flush()
            db.session.add(
                Transfer(call_id=call.id, caller_call_sid=call.call_sid, language="en", need=need, state="waiting",
                         priority=0, started_at=since, queued_since=since + timedelta(milliseconds=index),
                         last_hold_at=now())
            )  # fmt: skip
        db.session.commit()


def ana_only_mental_health(document: dict[str, Any]) -> None:
    for counselor in document["counselors"]:
        if counselor["id"] == "ana-ruiz":
            counselor["skills"] = ["mental_health"]


def test_a_caller_behind_more_callers_than_a_pass_reads_is_rung_by_the_one_free_for_them(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    wednesday_morning: time_machine.Coordinates,
) -> None:  # fmt: skip
    # A busy spell: more callers wait for substance use than a pass reads (the head and the
    # deeper look), and nobody free takes it; Ana, free, takes only mental health now. The
    # mental-health caller behind them must be rung, not starve until the queue ahead drains.
    publish_routing(ana_only_mental_health)
    callers_waiting(app, HEAD_LIMIT + DEEPER_HEAD_LIMIT + 10, "substance_use")

    call = phone.call(MENTAL_HEALTH, identity=phone.identity("+13125550204"), max_hold_turns=0)

    assert [leg.to for leg in legs(fake)] == [ANA], "Ana is free and the caller is one she takes"
    with app.app_context():
        (offer,) = db.session.scalars(select(Offer)).all()
        assert db.session.get(Transfer, offer.transfer_id).need == "mental_health"  # type: ignore[union-attr]
    assert call.dials == []


@pytest.fixture
def routing_engine_asks(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How often one pass (``fill``) asks the routing engine, starting with nothing kept from
    an earlier pass (``takeable``'s answers)."""
    asked: list[str] = []
    routing_engine = matching.decide_route

    def counted(*args: Any, **kwargs: Any) -> Any:
        asked.append(args[1])
        return routing_engine(*args, **kwargs)

    monkeypatch.setattr(matching, "decide_route", counted)

    def asked_in_one_pass() -> int:
        asked.clear()
        app.extensions.pop("line_queue.takeable", None)
        with app.app_context():
            active = active_routing()
            assert active is not None
            assert matching.fill(active.document) == 0  # nobody free takes them
        return len(asked)

    return asked_in_one_pass


@pytest.mark.parametrize(
    "need",
    [
        # A surge: everyone who takes substance use is busy, Ana is free but takes only mental
        # health. A pass used to read the queue 550 deep and ask the routing engine about every
        # caller it read, over every responder's shifts; now it reads only callers someone free
        # could take: here none.
        "substance_use",
        # A need the routing no longer knows: such callers are always read (the routing engine
        # takes them as its default need, "something else", which nobody free takes); the pass
        # asks once per kind of caller, not once per caller.
        "a_need_since_renamed",
    ],
)
def test_a_pass_behind_callers_nobody_free_takes_costs_the_same_behind_60_as_behind_600(
    app: Flask, publish_routing: Callable[..., int], wednesday_morning: time_machine.Coordinates,
    routing_engine_asks: Callable[[], int], need: str,
) -> None:  # fmt: skip
    publish_routing(ana_only_mental_health)
    callers_waiting(app, HEAD_LIMIT + 10, need)
    behind_60 = routing_engine_asks()
    callers_waiting(app, 540, need, first=HEAD_LIMIT + 10)

    assert routing_engine_asks() == behind_60


def test_a_caller_waiting_with_a_need_the_routing_no_longer_has_is_still_rung(
    app: Flask, fake: FakeTwilio, wednesday_morning: time_machine.Coordinates
) -> None:
    # Waiting since before a routing that renamed their need (or came back for a callback, or
    # from a check-in, with the old key): the routing engine takes them as its default need,
    # so the pass must read them, however it narrows the queue to what someone free can take.
    callers_waiting(app, 1, "a_need_since_renamed")
    with app.app_context():
        active = active_routing()
        assert active is not None
        assert active.document.need("a_need_since_renamed") is None

        assert matching.fill(active.document) >= 1

        (transfer,) = db.session.scalars(select(Transfer)).all()
        assert db.session.scalars(select(Offer).where(Offer.transfer_id == transfer.id)).first() is not None
    assert legs(fake), "someone free was rung for them"


def test_a_texter_queued_with_a_need_the_routing_no_longer_has_is_still_offered(
    app: Flask, wednesday_morning: time_machine.Coordinates
) -> None:
    # A check-in's "2" queues them with the need stored hours ago, under an older routing.
    with app.app_context():
        texter = Texter(number_hash=hashlib.sha256(b"renamed-need").hexdigest())
        db.session.add(texter)
        db.session.flush()
        db.session.add(
            Conversation(texter_id=texter.id, state="queued", language="en", need="a_need_since_renamed",
                         priority=5, queued_at=now(), line_number=LINE_NUMBER)
        )  # fmt: skip
        db.session.commit()
        active = active_routing()
        assert active is not None

        assert matching.fill(active.document) >= 1

    assert text_offers_made(app), "a counselor free for texts was offered them"
