"""First offers first: when several callers wait, a pass rings a phone for each of them before
a second phone rings for any (parallel ringing's extra legs come last). Twilio places the line's
REST calls in the order they came, at the account's calls per second, so in a surge this order
is the order phones start ringing; and when responders are scarce they go to different callers.
SQLite and PostgreSQL, signed webhooks, the fake Twilio REST API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

import line_queue
from crisisline import telephony
from crisisline.db import db
from crisisline.models import Offer, Transfer
from line_queue.matching import fill
from routing.store import active_routing
from tests.rota import BEN, DIEGO, around_the_clock, diego_listed_first, legs
from transfer import dispatch
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

SUICIDE_IN_ENGLISH, SUICIDE_IN_SPANISH = [Keys("1"), Keys("2")], [Keys("2"), Keys("2")]


@pytest.fixture(autouse=True)
def quick_api_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the order offers are made in, which only the quick path keeps:
    however loaded the machine, no request counts as slow (``crisisline.telephony``)."""
    monkeypatch.setattr(telephony, "SLOW_API_SECONDS", 3600.0)


FOUR = ("ana-ruiz", "ben-carter", "diego-morales", "erin-walsh")


def parallel_of_three(document: dict[str, Any]) -> None:
    around_the_clock(document, on_call=FOUR)
    document["transfer"].update(strategy="parallel", parallel_max=3)


def callers_waiting_unrung(phone: Phone, monkeypatch: pytest.MonkeyPatch, *menus: list[Keys]) -> None:
    """Callers answer the need menu (``menus``, in this order) while no pass runs (as when they
    arrive together and one pass serves them all): each waits with nobody rung yet."""
    with monkeypatch.context() as patched:
        patched.setattr(line_queue, "fill_soon", lambda *_args, **_kwargs: 0)
        for index, keys in enumerate(menus):
            phone.call(keys, identity=phone.identity(f"+1312555{4000 + index}"), max_hold_turns=0)


def rung_for(app: Flask, fake: FakeTwilio) -> list[int]:
    """For each leg the line placed, in the order its REST request came: the caller (transfer) it rings for."""
    with app.app_context():
        transfer_of = {sid: transfer for sid, transfer in db.session.execute(select(Offer.call_sid, Offer.transfer_id))}
    return [transfer_of[leg.sid] for leg in legs(fake)]


def transfer_ids(app: Flask) -> list[int]:
    """The waiting callers' transfers, in the order they joined the queue."""
    with app.app_context():
        return list(db.session.scalars(select(Transfer.id).order_by(Transfer.id)))


def one_pass(app: Flask) -> None:
    with app.app_context():
        active = active_routing()
        assert active is not None
        fill(active.document)


@pytest.mark.usefixtures("wednesday_evening")
def test_a_pass_rings_one_phone_for_each_waiting_caller_before_a_second_for_any(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_routing(parallel_of_three)
    callers_waiting_unrung(phone, monkeypatch, *[SUICIDE_IN_ENGLISH] * 2)
    assert legs(fake) == []

    one_pass(app)

    first, second = transfer_ids(app)
    order = rung_for(app, fake)
    assert order[:2] == [first, second]  # a phone rings for each, in queue order
    assert order[2:] == [first, first]  # then the first caller's extra phones, as many as are free
    assert len({leg.to for leg in legs(fake)}) == 4  # nobody rung twice


@pytest.mark.usefixtures("wednesday_evening")
def test_scarce_responders_go_one_to_each_caller_in_queue_order(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_routing(parallel_of_three)
    callers_waiting_unrung(phone, monkeypatch, *[SUICIDE_IN_ENGLISH] * 5)

    one_pass(app)

    transfers = transfer_ids(app)
    # Four counselors, five callers: the first four callers each have a phone ringing (three
    # for the first caller would leave two waiting with nobody, though only one can answer).
    assert rung_for(app, fake) == transfers[:4]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_lone_caller_still_rings_all_the_phones_parallel_ringing_allows_at_once(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    publish_routing(parallel_of_three)

    phone.call(SUICIDE_IN_ENGLISH, max_hold_turns=0)

    assert len(legs(fake)) == 3


FIVE = ("ana-ruiz", "ben-carter", "chloe-nguyen", "diego-morales", "erin-walsh")


@pytest.fixture
def cps(fake: FakeTwilio) -> Iterator[Callable[[float], None]]:
    """Set the fake account's calls per second for this test only (the fake outlives it)."""
    yield fake.set_calls_per_second
    fake.set_calls_per_second(None)


def parallel_of_three_among_five(document: dict[str, Any]) -> None:
    around_the_clock(document, on_call=FIVE)
    document["transfer"].update(strategy="parallel", parallel_max=3)


@pytest.mark.usefixtures("wednesday_evening")
def test_while_twilios_call_queue_is_behind_a_new_caller_is_rung_one_phone_and_the_rest_once_it_caught_up(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], cps: Callable[[float], None]
) -> None:
    publish_routing(parallel_of_three_among_five)
    cps(1.0)  # Twilio's default: the first caller's three legs hold its queue for 2 s
    phone.call(SUICIDE_IN_ENGLISH, identity=phone.identity("+13125554000"), max_hold_turns=0)
    assert len(legs(fake)) == 3

    phone.call(SUICIDE_IN_ENGLISH, identity=phone.identity("+13125554001"), max_hold_turns=0)

    first, second = transfer_ids(app)
    # One phone for the second caller: two would queue behind it and hold up the next caller's first.
    assert rung_for(app, fake) == [first, first, first, second]
    assert [leg.queue_time_ms > 0 for leg in legs(fake)] == [False, True, True, True]

    cps(None)
    queue = app.extensions["line_queue.call_queue"]
    deadline = time.monotonic() + 10
    while queue.behind() and time.monotonic() < deadline:
        time.sleep(0.1)  # Twilio's queue places the four calls, one a second
    one_pass(app)

    assert rung_for(app, fake) == [first, first, first, second, second]  # the free fifth counselor too


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_with_no_phone_ringing_is_rung_before_one_already_ringing_gets_another(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_routing(lambda document: (around_the_clock(document), document["transfer"].update(strategy="parallel")))
    callers_waiting_unrung(phone, monkeypatch, *[SUICIDE_IN_ENGLISH] * 2)
    first, second = transfer_ids(app)
    with app.app_context():
        active = active_routing()
        assert active is not None
        ben = next(r for r in active.document.responders if r.id == "ben-carter")
        assert dispatch.ring_for_transfer(first, [ben], active.document) == 1

    one_pass(app)  # Diego is the only one free: the second caller's first phone, not the first's second

    assert rung_for(app, fake) == [first, second]


def rung_to(app: Flask, fake: FakeTwilio) -> dict[int, str]:
    """Each caller (transfer) rung and the number rung for them."""
    with app.app_context():
        transfer_of = {sid: transfer for sid, transfer in db.session.execute(select(Offer.call_sid, Offer.transfer_id))}
    return {transfer_of[leg.sid]: leg.to for leg in legs(fake)}


@pytest.mark.usefixtures("wednesday_evening")
def test_an_english_caller_first_in_line_leaves_the_only_spanish_speaker_to_the_spanish_caller_behind(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_routing(diego_listed_first)
    callers_waiting_unrung(phone, monkeypatch, SUICIDE_IN_ENGLISH, SUICIDE_IN_SPANISH)

    one_pass(app)

    english, spanish = transfer_ids(app)
    assert rung_for(app, fake) == [english, spanish]  # still in queue order, both in this pass
    assert rung_to(app, fake) == {english: BEN, spanish: DIEGO}


@pytest.mark.usefixtures("wednesday_evening")
def test_a_lone_english_caller_still_gets_the_counselor_first_in_the_rotation(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_routing(diego_listed_first)
    callers_waiting_unrung(phone, monkeypatch, SUICIDE_IN_ENGLISH, SUICIDE_IN_ENGLISH)

    one_pass(app)

    first, second = transfer_ids(app)
    assert rung_to(app, fake) == {first: DIEGO, second: BEN}  # nobody behind needs Diego more


@pytest.mark.usefixtures("wednesday_evening")
def test_a_spanish_caller_first_in_line_keeps_the_only_spanish_speaker_over_a_second_spanish_caller(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_routing(diego_listed_first)
    callers_waiting_unrung(phone, monkeypatch, SUICIDE_IN_SPANISH, SUICIDE_IN_ENGLISH, SUICIDE_IN_SPANISH)

    one_pass(app)

    first, english, _second = transfer_ids(app)
    # The first Spanish caller keeps Diego; the English caller, ahead of the second, gets Ben;
    # nobody is left to ring for the second Spanish caller.
    assert rung_to(app, fake) == {first: DIEGO, english: BEN}
