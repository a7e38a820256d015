"""A callback through the real processes (see conftest): the caller holds, presses the callback
key and hangs up; the Procfile's worker starts the attempt and rings a counselor; only once the
counselor accepts does the line dial the person, who answers into the counselor's conference."""

from __future__ import annotations

import time
from typing import Any

import requests
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Callback, Offer, ScheduledContact, Transfer
from tests.conftest import LINE_NUMBER
from tests.e2e.conftest import COUNSELOR_PHONES, Line, on_call
from tests.e2e.test_stories import TERMINAL, _engaged, _eventually
from twilio_fake.phone import Keys
from twilio_fake.rest_api import CallRecord

PERSON = "+13125550177"
BEN = COUNSELOR_PHONES["ben-carter"]
PROMISE = "We will call you back at this number as soon as someone is free."


def _offer_sids(line: Line, *, mode: str) -> list[str | None]:
    """The responder legs placed for the line's searches in ``mode`` (live, callback)."""
    query = select(Offer.call_sid).join(Transfer, Transfer.id == Offer.transfer_id).where(Transfer.mode == mode)
    return list(line.query(lambda: db.session.scalars(query.order_by(Offer.id)).all()))


def _callback_offer_leg(line: Line) -> CallRecord | None:
    """The counselor leg the callback attempt placed, once the stand-in has it ringing."""
    legs = [line.twilio.get_call(sid) for sid in _offer_sids(line, mode="callback") if sid]
    ringing = [leg for leg in legs if leg.status == "ringing"]
    return ringing[0] if ringing else None


def _legs_to(line: Line, number: str) -> list[CallRecord]:
    return [leg for leg in line.twilio.calls(to=number) if leg.direction == "outbound-api"]


def _conference(line: Line, friendly_name: str) -> dict[str, Any]:
    state = requests.get(f"{line.twilio_url}/_fake/state", timeout=10).json()
    (room,) = [room for room in state["conferences"] if room["friendly_name"] == friendly_name]
    return dict(room)


def test_callback_rings_the_counselor_first_then_the_person_into_their_conference(fresh_line: Line) -> None:
    line = fresh_line
    line.publish(on_call("ben-carter"))
    person_phone, counselor_phone = line.phone(), line.phone()

    # English, thoughts of suicide, then the callback key at the first hold turn.
    caller = person_phone.call([Keys("1"), Keys("2"), Keys("9")], identity=person_phone.identity(PERSON))

    heard = caller.heard_text()
    assert "If you would rather we call you back when someone is free, press 9." in heard
    assert PROMISE in heard
    assert caller.ended_by == "hangup"  # the line said its promise and hung up
    (live,) = line.query(lambda: db.session.scalars(select(Transfer).where(Transfer.mode == "live")).all())
    assert live.state == "callback"  # the live search was handed over to the callback
    # Ben's phone rings while the caller holds, unless the ring (off the need answer's request)
    # had not been placed when the 9 came, on a loaded machine: then the search has ended and
    # nobody is rung for it (tests/transfer/test_no_ring_for_a_caller_who_moved_on.py).
    live_sids = [sid for sid in _offer_sids(line, mode="live") if sid]
    if live_sids:
        _eventually(lambda: {line.twilio.get_call(sid).status for sid in live_sids} == {"canceled"})  # stopped

    # The worker (its own process) runs the attempt: Ben's phone rings, and nobody calls the person yet.
    found: list[CallRecord] = []

    def counselor_rings() -> bool:
        leg = _callback_offer_leg(line)
        if leg is not None:
            found.append(leg)
            assert _legs_to(line, PERSON) == [], "the person was called before a counselor was on the line"
        return leg is not None

    _eventually(counselor_rings, seconds=30)
    counselor_leg = found[0]
    assert counselor_leg.to == BEN
    attempts: list[ScheduledContact] = []

    def attempt_done() -> bool:
        attempts[:] = line.query(
            lambda: db.session.scalars(select(ScheduledContact).where(ScheduledContact.kind == "callback")).all()
        )
        assert [(a.state, a.outcome, a.attempt) for a in attempts] == [("sent", "sent", 1)]
        return True

    _eventually(attempt_done)
    job_id = attempts[0].job_id  # run by the Procfile's worker: it logs each job it takes
    _eventually(lambda: job_id in (line.logs / "worker.log").read_text(errors="replace"))
    time.sleep(1.0)  # a second of ringing: still nobody calls the person
    assert _legs_to(line, PERSON) == []

    counselor = counselor_phone.answer(counselor_leg.sid, [Keys("1")])

    briefing = counselor.heard_text()
    assert briefing.startswith("Crisis line callback: English-speaking person, thoughts of suicide"), briefing
    assert "We are calling them now." in briefing
    assert counselor.conference is not None, briefing
    person_legs: list[CallRecord] = []

    def person_rings() -> bool:
        person_legs[:] = [leg for leg in _legs_to(line, PERSON) if leg.status == "ringing"]
        return bool(person_legs)

    _eventually(person_rings, seconds=15)
    (person_leg,) = person_legs
    assert person_leg.from_ == LINE_NUMBER  # the line's number, never the counselor's
    outbound = [leg.sid for leg in line.twilio.calls() if leg.direction == "outbound-api"]
    assert outbound.index(counselor_leg.sid) < outbound.index(person_leg.sid)  # counselor first, then the person

    person = person_phone.answer(person_leg.sid)

    assert "calling you back" in person.heard_text()
    assert person.conference is not None and person.conference == counselor.conference
    room = _conference(line, person.conference)
    assert room["status"] == "in-progress"
    assert {p["call_sid"] for p in room["participants"]} == {counselor_leg.sid, person_leg.sid}
    (callback,) = line.query(lambda: db.session.scalars(select(Callback)).all())
    assert (callback.origin, callback.state, callback.outcome) == ("call", "connected", "connected")
    assert callback.attempts == 1
    (attempt_transfer,) = line.query(
        lambda: db.session.scalars(select(Transfer).where(Transfer.mode == "callback")).all()
    )
    assert (attempt_transfer.state, attempt_transfer.caller_call_sid) == ("connected", person_leg.sid)
    assert _engaged(line).get("ben-carter") is not None

    person_phone.hang_up(person)  # they talked; the person hangs up

    deadline = time.monotonic() + 20
    while not counselor.finished and time.monotonic() < deadline:  # the line ends Ben's leg
        time.sleep(0.2)
        counselor_phone.resume(counselor, max_hold_turns=0)
    assert counselor.finished, counselor.heard_text()
    _eventually(
        lambda: line.query(lambda: db.session.get(Transfer, attempt_transfer.id).state) == "ended"  # type: ignore[union-attr]
    )
    _eventually(lambda: _engaged(line).get("ben-carter") is None)
    _eventually(lambda: {leg.status for leg in line.twilio.calls()} <= TERMINAL)
    assert line.query(lambda: db.session.scalars(select(Callback)).one().state) == "connected"
    assert [text for text in line.inbox(PERSON) if "we tried to call you back" in text] == []  # they were reached
