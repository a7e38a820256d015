"""A slow Twilio API in a surge: a pass asks for its callers' phones side by side once Twilio is
slow, instead of one request after another (each caller then waited for every request before
theirs). While Twilio answers quickly they go one after another, in queue order, which is the
order Twilio places them. SQLite and PostgreSQL, signed webhooks, the fake Twilio REST API
with an injected delay."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from crisisline import telephony
from crisisline.telephony import REST_EXTENSION, SLOW_API_SECONDS, api_is_slow
from line_queue import matching
from routing.document import RoutingDocument
from tests.line_queue.test_first_offers_first import (
    SUICIDE_IN_ENGLISH,
    callers_waiting_unrung,
    one_pass,
    parallel_of_three,
    parallel_of_three_among_five,
    rung_for,
    transfer_ids,
)
from tests.rota import legs
from transfer import dispatch
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio

API_SECONDS = 0.8  # each call request, in the slow API


@pytest.fixture
def slow_calls(fake: FakeTwilio) -> Iterator[Callable[[], None]]:
    """Make every ``calls.create`` take ``API_SECONDS`` before it is answered, for this test only."""
    yield lambda: fake.inject_fault("POST", r"/Calls\.json$", status=200, delay=API_SECONDS, times=None)
    fake.clear_faults()


@pytest.fixture
def never_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """However loaded the machine, no request counts as slow: the quick path, for certain."""
    monkeypatch.setattr(telephony, "SLOW_API_SECONDS", 3600.0)


def recording_legs_after_each_pass(fake: FakeTwilio, after_each: list[int]) -> Callable[..., tuple[int, int, bool]]:
    """The real queue pass, noting in ``after_each`` how many legs exist once each pass ends."""
    real = matching._fill_pass

    def recorded(
        document: RoutingDocument, channels: tuple[str, ...] = matching.CHANNELS, *, may_defer: bool = False
    ) -> tuple[int, int, bool]:
        outcome = real(document, channels, may_defer=may_defer)
        after_each.append(len(legs(fake)))
        return outcome

    return recorded


def creation_gaps(fake: FakeTwilio) -> list[float]:
    """Seconds between one leg's call request being taken and the next's, in order."""
    created = sorted(leg.created_at for leg in legs(fake))
    return [later - earlier for earlier, later in itertools.pairwise(created)]


@pytest.mark.usefixtures("wednesday_evening")
def test_with_a_slow_api_a_pass_asks_for_the_rest_of_its_callers_phones_side_by_side(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    monkeypatch: pytest.MonkeyPatch, slow_calls: Callable[[], None], database_url: str,
) -> None:  # fmt: skip
    publish_routing(parallel_of_three)
    callers_waiting_unrung(phone, monkeypatch, *[SUICIDE_IN_ENGLISH] * 5)
    slow_calls()

    one_pass(app)

    # Four counselors, five callers: each of the first four has a phone, whatever the API's speed.
    assert sorted(rung_for(app, fake)) == transfer_ids(app)[:4]
    assert len({leg.to for leg in legs(fake)}) == 4
    first, *rest = creation_gaps(fake)
    if database_url.startswith("sqlite"):
        # One writer at a time: one after another, each request waiting for the one before.
        assert min(first, *rest) >= API_SECONDS * 0.9
    else:
        # The first request showed the API slow; the other three went together.
        assert first >= API_SECONDS * 0.9
        assert sum(rest) < API_SECONDS  # one after another: at least three times that
        assert app.extensions["crisisline.background"].lanes_used() == ["voice+text"]


@pytest.mark.usefixtures("wednesday_evening")
def test_with_a_slow_api_a_lone_callers_parallel_phones_are_asked_for_side_by_side(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    monkeypatch: pytest.MonkeyPatch, slow_calls: Callable[[], None], database_url: str,
) -> None:  # fmt: skip
    publish_routing(parallel_of_three)
    callers_waiting_unrung(phone, monkeypatch, SUICIDE_IN_ENGLISH)
    slow_calls()

    one_pass(app)

    assert len({leg.to for leg in legs(fake)}) == 3  # parallel ringing's three phones
    first, second = creation_gaps(fake)
    if database_url.startswith("sqlite"):
        assert min(first, second) >= API_SECONDS * 0.9
    else:
        assert first >= API_SECONDS * 0.9  # the first showed the API slow
        assert second < API_SECONDS * 0.75  # the other two went together
        assert app.extensions["crisisline.background"].lanes_used() == ["phones"]


@pytest.mark.usefixtures("wednesday_evening")
def test_with_a_slow_api_a_pass_rings_first_phones_and_leaves_extra_phones_to_a_pass_of_their_own(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    monkeypatch: pytest.MonkeyPatch, slow_calls: Callable[[], None],
) -> None:  # fmt: skip
    """Whoever joins the queue while the first phones are asked for is rung before the extras."""
    publish_routing(parallel_of_three_among_five)
    callers_waiting_unrung(phone, monkeypatch, *[SUICIDE_IN_ENGLISH] * 2)
    legs_after_each_pass: list[int] = []

    monkeypatch.setattr(matching, "_fill_pass", recording_legs_after_each_pass(fake, legs_after_each_pass))
    slow_calls()

    one_pass(app)

    first, second = transfer_ids(app)
    assert legs_after_each_pass == [2, 5]  # a phone each, then the extras (3 for the first, 2 for the second)
    assert sorted(rung_for(app, fake)[:2]) == [first, second]


@pytest.mark.usefixtures("wednesday_evening", "never_slow")
def test_while_the_api_answers_quickly_a_pass_asks_for_phones_one_after_another_in_queue_order(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_routing(parallel_of_three_among_five)
    callers_waiting_unrung(phone, monkeypatch, *[SUICIDE_IN_ENGLISH] * 2)
    legs_after_each_pass: list[int] = []
    monkeypatch.setattr(matching, "_fill_pass", recording_legs_after_each_pass(fake, legs_after_each_pass))

    one_pass(app)

    first, second = transfer_ids(app)
    assert rung_for(app, fake) == [first, second, first, first, second]  # the order Twilio places them in
    assert legs_after_each_pass == [5]  # one pass: nothing left for the next
    assert app.extensions["crisisline.background"].lanes_used() == []  # all on the pass's thread
    with app.app_context():
        assert not api_is_slow()


def test_only_placing_calls_and_sending_texts_tell_whether_the_api_is_slow(
    app: Flask, fake: FakeTwilio, slow_calls: Callable[[], None]
) -> None:
    with app.app_context():
        rest = dispatch.rest_client()
        slow_calls()
        placed = rest.calls.create(to="+13125550100", from_="+13125550199", twiml="<Response/>")

        rest.calls(placed.sid).update(status="canceled")  # quick: ending a leg is not placing one
        rest.messages.create(to="+13125550100", from_="+13125550199", body="test")  # quick texts do not hide slow calls

        assert api_is_slow()


def test_the_api_counts_as_slow_from_one_slow_request_until_a_quick_one(
    app: Flask, fake: FakeTwilio, slow_calls: Callable[[], None]
) -> None:
    with app.app_context():
        rest = dispatch.rest_client()
        rest.calls.create(to="+13125550100", from_="+13125550199", twiml="<Response/>")
        assert not api_is_slow()
        slow_calls()

        rest.calls.create(to="+13125550101", from_="+13125550199", twiml="<Response/>")
        slow = api_is_slow()
        fake.clear_faults()
        rest.calls.create(to="+13125550102", from_="+13125550199", twiml="<Response/>")

        assert slow
        assert not api_is_slow()
        assert app.extensions[REST_EXTENSION] is rest
        assert SLOW_API_SECONDS < API_SECONDS
