"""A counselor's press of 1 whose webhook outlasts its deadline (a slow Twilio API on the
caller's redirect, a slow database before the acceptance): the counselor hears what a timely
answer would have said, and the caller is never brought into a room nobody is in."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask, Response, request
from sqlalchemy import select

import transfer.state
import transfer.views
from crisisline.db import db
from crisisline.models import CallEvent, Offer, ResponderState, Transfer
from line_queue.responders import set_paused
from tests.rota import BEN, DIEGO, leg_to, legs
from transfer import flow
from transfer.views import active_document
from twilio_fake.phone import HttpReply, Keys, Phone
from twilio_fake.rest_api import FakeTwilio

DEADLINE = 2.0  # VOICE_DEADLINE_SECONDS, the production default
SLOWER_THAN_THE_DEADLINE = DEADLINE + 0.6


@pytest.fixture
def production_deadline(app: Flask) -> Iterator[None]:
    """The tests' app allows 5 s; these need the 2 s a production line has."""
    voice_deadline = app.extensions["crisisline.deadline"]
    allowed = voice_deadline.seconds
    voice_deadline.seconds = DEADLINE
    yield
    voice_deadline.seconds = allowed


class TimedTransport:
    """The phone's transport, timing each webhook: a counselor's press of 1 alone, not the
    whisper before it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: dict[str, float] = {}  # by the path's last two parts: "offer/decide"

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        started = time.monotonic()
        try:
            return self.inner.post(url, params, headers)  # type: ignore[no-any-return]
        finally:
            self.seconds["/".join(urlsplit(url).path.split("/")[-2:])] = time.monotonic() - started


def only_transfer(app: Flask) -> Transfer:
    with app.app_context():
        return db.session.scalars(select(Transfer)).one()


def offer_to(app: Flask, number: str, fake: FakeTwilio) -> Offer:
    with app.app_context():
        return db.session.scalars(select(Offer).where(Offer.call_sid == leg_to(fake, number).sid)).one()


def event_kinds(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(CallEvent.kind).order_by(CallEvent.id)))


def missed_in_a_row(app: Flask, responder_id: str) -> int:
    with app.app_context():
        state = db.session.get(ResponderState, responder_id)
        return state.missed_in_a_row if state else 0


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for the late handler, which finishes on its own thread after the deadline answered."""
    give_up = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < give_up, "the late handler did not finish in time"
        time.sleep(0.05)


def ben_whispered(app: Flask, phone: Phone, fake: FakeTwilio) -> tuple[Offer, Transfer]:
    """A caller holds; Ben has answered his leg and hears the whisper (no key pressed yet)."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN).sid
    fake.advance_call(ben_leg, "ringing")
    fake.advance_call(ben_leg, "in-progress")
    with app.app_context():
        offer = db.session.scalars(select(Offer).where(Offer.call_sid == ben_leg)).one()
        assert offer.state == "answered"
        return offer, db.session.get_one(Transfer, offer.transfer_id)


def decide(app: Flask, offer: Offer, *, still_answering: bool = True, promised: bool = True) -> flow.Decision:
    """Ben's press of 1, handled late: its deadline already apologised before the acceptance
    (``still_answering`` False) or while it was being written (``promised`` False)."""
    with app.app_context():
        own_offer = db.session.get_one(Offer, offer.id)
        decision = flow.offer_decided(
            own_offer, db.session.get_one(Transfer, own_offer.transfer_id), active_document(), "1",
            still_answering=lambda: still_answering, promise_join=lambda _lead: promised,
        )  # fmt: skip
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    return decision


@pytest.mark.usefixtures("wednesday_evening", "production_deadline")
def test_a_counselor_whose_acceptance_outlasts_the_deadline_on_a_slow_redirect_is_put_in_the_room_not_apologised_to(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Before: the deadline answered "Sorry, something went wrong" and hung Ben up, the late
    redirect then brought the caller into the empty room, and they were told their counselor
    had been disconnected and searched for again."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    caller_sid = caller.identity.call_sid
    fake.inject_fault("POST", rf"/Calls/{caller_sid}\.json$", status=200, delay=SLOWER_THAN_THE_DEADLINE)
    phone.transport = timed = TimedTransport(phone.transport)

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert timed.seconds["offer/decide"] < DEADLINE + 0.5  # the deadline's answer, not the handler's
    assert "sorry" not in ben.heard_text().lower()
    assert ben.conference is not None
    eventually(lambda: [r.fetched for r in fake.get_call(caller_sid).redirects] == [True])
    phone.resume(caller, max_hold_turns=1)
    assert caller.conference == ben.conference
    assert only_transfer(app).state == "connected"
    assert fake.get_call(leg_to(fake, BEN).sid).status == "in-progress"


@pytest.mark.usefixtures("wednesday_evening", "production_deadline")
def test_a_counselor_put_in_the_room_by_the_deadline_is_told_there_when_the_slow_redirect_finds_the_caller_gone(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    caller_sid = caller.identity.call_sid
    redirect = fake.inject_fault(
        "POST", rf"/Calls/{caller_sid}\.json$", status=404, code=20404, delay=SLOWER_THAN_THE_DEADLINE
    )  # the caller hung up while the redirect was on its way

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert ben.conference is not None  # the deadline's answer: the room, as the acceptance stood
    ben_sid = leg_to(fake, BEN).sid
    eventually(lambda: fake.get_call(ben_sid).redirects != [])
    told = fake.get_call(ben_sid).redirects[-1].twiml or ""
    assert "The caller has hung up." in told
    assert "<Hangup" in told  # not left in the empty room
    eventually(lambda: only_transfer(app).state == "abandoned")
    assert redirect.remaining == 0  # the redirect was tried, and found them gone


@pytest.mark.usefixtures("wednesday_evening", "production_deadline")
def test_a_refusal_decided_before_the_deadline_is_what_the_deadline_says_even_when_the_answer_is_slow_to_leave(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance promised the room; then the redirect found the caller gone and the handler
    decided on "hung up", but its answer was slow to leave: the deadline must not put Ben in the
    room it had been promised (nobody would tell him it is empty)."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    fake.inject_fault("POST", rf"/Calls/{caller.identity.call_sid}\.json$", status=404, code=20404, delay=0.5)
    answer = transfer.views.twiml_response

    def slow_to_leave(twiml: Any) -> Response:
        if request.path.endswith("/offer/decide"):
            time.sleep(DEADLINE)  # past the deadline, after the decision (about 0.6 s in)
        return answer(twiml)

    monkeypatch.setattr(transfer.views, "twiml_response", slow_to_leave)

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert ben.conference is None
    assert "The caller has hung up." in ben.heard_text()
    assert "sorry" not in ben.heard_text().lower()
    eventually(lambda: only_transfer(app).state == "abandoned")
    assert fake.get_call(leg_to(fake, BEN).sid).redirects == []  # told in his own answer, not over REST


@pytest.mark.usefixtures("wednesday_evening")
def test_a_press_of_1_handled_after_the_deadline_apologised_is_no_acceptance_and_the_next_counselor_is_rung(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """The deadline answered Ben with its apology (his webhook was stuck before the acceptance),
    and his leg's end has not been heard yet: the late handler must not accept for him."""
    offer, _ = ben_whispered(app, phone, fake)

    decision = decide(app, offer, still_answering=False)

    assert decision.kind == "staff"
    assert (offer_to(app, BEN, fake).state, offer_to(app, BEN, fake).outcome) == ("ended", flow.DEADLINE_PASSED)
    assert only_transfer(app).state == "waiting"
    assert fake.get_call(only_call_sid(app)).redirects == []
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]
    assert "offer.accepted" not in event_kinds(app)


@pytest.mark.usefixtures("wednesday_evening")
def test_an_acceptance_written_while_the_deadline_apologised_is_withdrawn_and_the_next_counselor_is_rung(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """A slow database: the deadline apologised to Ben while his acceptance was being written.
    Before, the caller was then brought into the room Ben never reached, told their counselor
    had been disconnected, and searched for again."""
    offer, _ = ben_whispered(app, phone, fake)

    decision = decide(app, offer, promised=False)

    assert decision.kind == "staff"
    assert (offer_to(app, BEN, fake).state, offer_to(app, BEN, fake).outcome) == ("ended", flow.DEADLINE_PASSED)
    transfer_now = only_transfer(app)
    assert (transfer_now.state, transfer_now.accepted_offer_id) == ("waiting", None)
    assert fake.get_call(only_call_sid(app)).redirects == []
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]
    assert "offer.accepted" not in event_kinds(app)

    fake.advance_call(leg_to(fake, BEN).sid, "completed")  # his leg's end, heard afterwards
    assert missed_in_a_row(app, "ben-carter") == 0
    assert offer_to(app, BEN, fake).outcome == flow.DEADLINE_PASSED


@pytest.mark.usefixtures("wednesday_evening")
def test_a_missed_deadline_before_the_acceptance_does_not_count_as_a_miss_of_the_counselors(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    offer, _ = ben_whispered(app, phone, fake)

    decide(app, offer, still_answering=False)
    fake.advance_call(leg_to(fake, BEN).sid, "completed")  # his leg's end arrives afterwards

    assert offer_to(app, BEN, fake).outcome == flow.DEADLINE_PASSED
    assert missed_in_a_row(app, "ben-carter") == 0


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_with_nobody_left_after_a_late_press_of_1_is_moved_on_at_once(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Not at their next hold turn, which a long hold-music clip can put minutes away."""
    offer, _ = ben_whispered(app, phone, fake)
    with app.app_context():  # everyone goes off shift meanwhile
        for responder_id in ("ben-carter", "diego-morales"):
            set_paused(responder_id, True, "self")
        db.session.commit()

    decide(app, offer, still_answering=False)

    redirected_to = [redirect.url or "" for redirect in fake.get_call(only_call_sid(app)).redirects]
    assert ["/voice/hold?" in url for url in redirected_to] == [True], redirected_to
    assert [leg.to for leg in legs(fake)] == [BEN]
    assert only_transfer(app).state == "waiting"


def only_call_sid(app: Flask) -> str:
    """The caller's call (their first round's: a counselor's leg end may have begun another)."""
    with app.app_context():
        first_round = db.session.scalars(select(Transfer).order_by(Transfer.round)).first()
        assert first_round is not None
        return first_round.caller_call_sid or ""


@pytest.mark.parametrize(
    ("state", "mode", "key"),
    [
        ("to_backup", "live", "caller_on_backup"),
        ("to_backup", "callback", "caller_gone"),  # a callback search given up: nobody was on a line
        ("callback", "live", "caller_gone"),  # they left the line to be called back
        ("abandoned", "live", "caller_gone"),
        ("ended", "live", "caller_gone"),
        ("connecting", "live", "already_connected"),
        ("connected", "callback", "already_connected"),
    ],
)
def test_a_counselor_too_late_for_a_caller_is_told_where_they_went(state: str, mode: str, key: str) -> None:
    assert flow.too_late_key(Transfer(state=state, mode=mode)) == key


@pytest.mark.usefixtures("wednesday_evening", "production_deadline")
def test_a_pass_whose_caller_is_moved_on_slowly_still_hears_passed_not_sorry(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Nobody left after Ben's 2: the caller is moved on at once, over a slow Twilio API."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    caller_sid = caller.identity.call_sid
    with app.app_context():
        for responder_id in ("ben-carter", "diego-morales"):
            set_paused(responder_id, True, "self")
        db.session.commit()
    fake.inject_fault("POST", rf"/Calls/{caller_sid}\.json$", status=200, delay=SLOWER_THAN_THE_DEADLINE)

    phone.transport = timed = TimedTransport(phone.transport)

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("2")])

    assert timed.seconds["offer/decide"] < DEADLINE + 0.5  # the deadline's answer, not the handler's
    assert "Passed. Thank you." in ben.heard_text()
    assert "sorry" not in ben.heard_text().lower()
    eventually(lambda: [r.fetched for r in fake.get_call(caller_sid).redirects] == [True])
    assert "/voice/hold?" in (fake.get_call(caller_sid).redirects[0].url or "")
    ben_leg = fake.get_call(leg_to(fake, BEN).sid)
    assert (ben_leg.redirects, ben_leg.status_updates) == ([], [])  # not told "Passed" again over REST


@pytest.mark.usefixtures("wednesday_evening")
def test_an_acceptance_the_deadline_apologised_for_too_long_ago_is_left_to_the_counselors_leg_end(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: Any
) -> None:
    """Written so slowly that the caller's own hold turn may already have joined them: it is
    not withdrawn from under them; Ben's leg end tells the caller and searches again."""
    offer, _ = ben_whispered(app, phone, fake)

    def too_late(_lead: str) -> bool:
        wednesday_evening.shift(flow.JOIN_REDIRECT_GRACE)
        return False

    with app.app_context():
        own_offer = db.session.get_one(Offer, offer.id)
        decision = flow.offer_decided(
            own_offer, db.session.get_one(Transfer, own_offer.transfer_id), active_document(), "1",
            promise_join=too_late,
        )  # fmt: skip
    assert decision.kind == "staff"
    assert (only_transfer(app).state, offer_to(app, BEN, fake).state) == ("connecting", "accepted")

    fake.advance_call(leg_to(fake, BEN).sid, "completed")  # he heard the apology and was hung up

    redirected_to = [redirect.url or "" for redirect in fake.get_call(only_call_sid(app)).redirects]
    assert ["/voice/transfer/staff-left" in url for url in redirected_to] == [True], redirected_to


@pytest.mark.usefixtures("wednesday_evening")
def test_a_hold_turn_told_to_join_a_transfer_no_longer_accepted_holds_instead_of_entering_an_empty_room(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance was withdrawn between the turn's read and its join: no room, no silence."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    monkeypatch.setattr(flow, "hold_step", lambda *_args, **_kwargs: flow.HoldStep("join"))

    phone.resume(caller, max_hold_turns=1)

    assert caller.conference is None
    assert only_transfer(app).state == "waiting"
    last = caller.steps[-1]
    assert "/voice/hold" in last.url and last.twiml is not None  # the turn told to join...
    assert "/voice/hold?" in ET.tostring(last.twiml, encoding="unicode")  # ...answered another turn


@pytest.mark.usefixtures("wednesday_evening")
def test_a_press_of_1_that_fails_after_promising_the_room_still_puts_the_counselor_there(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails after the acceptance and the redirect (stopping the other phones):
    the caller is on their way into the room, so Ben must be there, not hung up with an apology."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("simulated database failure")

    monkeypatch.setattr(flow, "stop_ringing", broken)

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert "sorry" not in ben.heard_text().lower()
    assert ben.conference is not None
    phone.resume(caller, max_hold_turns=1)
    assert caller.conference == ben.conference


def slower_than_the_deadline(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, seconds: float = SLOWER_THAN_THE_DEADLINE
) -> list[str]:
    """``module.name`` (a step of a counselor's webhook) outlasts the webhook's deadline (a slow
    database, a full pool), then runs for real: the returned list gets ``"done"`` when the late
    handler has finished."""
    finished: list[str] = []
    real = getattr(module, name)

    def slow(*args: Any, **kwargs: Any) -> Any:
        try:
            time.sleep(seconds)
            return real(*args, **kwargs)
        finally:
            finished.append("done")

    monkeypatch.setattr(module, name, slow)
    return finished


def whisper_slower_than_the_deadline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ben's whisper handler outlasts its deadline, then runs for real."""
    return slower_than_the_deadline(monkeypatch, flow, "offer_answered")


@pytest.mark.usefixtures("wednesday_evening", "production_deadline")
@pytest.mark.parametrize("line_ends_the_offer", [True, False], ids=["ended-at-once", "end-lost"])
def test_a_whisper_that_outlasts_its_deadline_is_not_the_counselors_miss(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch, line_ends_the_offer: bool
) -> None:
    """Found by a review: the deadline apologised to Ben and hung him up, the late handler then
    marked his offer answered, and his leg's end (heard after the apology was spoken) counted
    the line's slowness as his ``no_decision``. Also when the line's own end of the offer is
    lost (the database failing it too): the late handler must not brief a counselor nobody is
    briefing."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    finished = whisper_slower_than_the_deadline(monkeypatch)
    if not line_ends_the_offer:
        monkeypatch.setattr(flow, "line_failed_the_leg", lambda *_args, **_kwargs: None)
    ben_leg = leg_to(fake, BEN).sid
    fake.advance_call(ben_leg, "ringing")

    answer = fake.advance_call(ben_leg, "in-progress") or ""  # he picks up: the whisper's request
    eventually(lambda: finished == ["done"])
    fake.advance_call(ben_leg, "completed")  # the apology spoken, he is hung up

    assert "something went wrong" in answer
    assert offer_to(app, BEN, fake).outcome == transfer.state.NOT_BRIEFED
    assert missed_in_a_row(app, "ben-carter") == 0
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]


@pytest.mark.usefixtures("wednesday_evening", "production_deadline")
def test_a_press_of_1_stuck_past_its_deadline_whose_leg_end_is_heard_first_is_not_the_counselors_miss(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case left by the fix above: his press's handler is stuck before the acceptance (the
    pool full, a slow database), the deadline apologises, and his hang-up is handled before the
    late press: it was ``no_decision``, his miss."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    finished = slower_than_the_deadline(monkeypatch, flow, "offer_decided")

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])  # the apology, then his leg's end at once
    eventually(lambda: finished == ["done"])

    assert "something went wrong" in ben.heard_text()
    assert offer_to(app, BEN, fake).outcome == flow.DEADLINE_PASSED
    assert missed_in_a_row(app, "ben-carter") == 0
    assert only_transfer(app).state == "waiting"
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]
