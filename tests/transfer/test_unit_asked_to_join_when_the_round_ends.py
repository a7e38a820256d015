"""A counselor rang the co-responder unit into a live call and then left before the unit picked
up: the caller is still on the line (being asked about a check-in, or searched for again). The
unit's phone must stop ringing (and the unit be free again), not ring on into an empty room;
a unit's press of 1 handled just after the round ended must not put them alone in it; nor may
one that committed just before the round ended, after the counselor's leaving had found nobody
with the caller and moved them on: the unit is told and freed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import CallEvent, Offer, ResponderState, Transfer
from routing.store import active_routing
from tests.rota import ANA, UNIT, leg_to
from transfer import dispatch, flow, state
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "wednesday_morning")
UNIT_ID = "unit-north"


def ana_rings_the_unit(phone: Phone, fake: FakeTwilio) -> tuple[PhoneCall, PhoneCall]:
    """Ana talks with the caller, then (her menu, key 1) asks the co-responder unit to join:
    the unit's phone rings."""
    caller = phone.call([Keys("1"), Keys("3")], max_hold_turns=0)
    ana = phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    fake.leave_conference(ana.conference or "", ana.identity.call_sid)
    phone.resume(ana, [Keys("1")])
    assert fake.get_call(leg_to(fake, UNIT).sid).status in ("queued", "initiated", "ringing")
    return caller, ana


def unit_outcome_events(app: Flask) -> list[tuple[str, str | None]]:
    """The unit offer's outcome as the figures have it: (kind, outcome) of its events."""
    with app.app_context():
        offer = db.session.scalars(select(Offer).where(Offer.purpose == "join")).one()
        events = db.session.scalars(select(CallEvent).where(CallEvent.dedupe_key == f"offer:{offer.id}:outcome"))
        return [(event.kind, event.detail.get("outcome")) for event in events]


def unit_offer(app: Flask) -> tuple[str, str | None, int | None]:
    with app.app_context():
        offer = db.session.scalars(select(Offer).where(Offer.purpose == "join")).one()
        engaged = db.session.get(ResponderState, UNIT_ID)
        return offer.state, offer.outcome, engaged.engaged_offer_id if engaged else None


@pytest.mark.parametrize("checkins", [False, True], ids=["searched-for-again", "asked-about-a-check-in"])
def test_the_units_phone_stops_ringing_when_the_counselor_leaves_before_it_answers(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], checkins: bool
) -> None:
    publish_routing(lambda document: document["followups"].update(checkins=checkins))
    caller, ana = ana_rings_the_unit(phone, fake)

    phone.hang_up(ana)  # the caller is moved on (the staff-left turn); the unit has not answered
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    with app.app_context():
        asked = db.session.scalar(select(CallEvent.id).where(CallEvent.kind == "checkin.asked"))
        first = db.session.scalars(select(Transfer).order_by(Transfer.round)).first()
        assert first is not None and (first.state, first.end_reason) == ("ended", "staff_left")
    assert (asked is not None) == checkins  # the path under test was the one taken
    assert fake.get_call(leg_to(fake, UNIT).sid).status == "canceled"
    assert unit_offer(app) == ("ended", "superseded", None)  # and the unit is free again
    assert fake.get_call(caller.identity.call_sid).status == "in-progress"  # the caller is still with us


def test_a_units_press_of_one_handled_after_the_round_ended_is_refused(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    _caller, _ana = ana_rings_the_unit(phone, fake)
    unit = leg_to(fake, UNIT)
    fake.advance_call(unit.sid, "ringing")
    whisper = ET.fromstring(fake.advance_call(unit.sid, "in-progress") or "")  # noqa: S314 - our own TwiML
    assert whisper.find("Gather") is not None  # briefed, asked for 1

    with app.app_context():
        # The unit's press of 1 reads its offer and the call: connected.
        offer = db.session.scalars(select(Offer).where(Offer.purpose == "join")).one()
        transfer = db.session.get(Transfer, offer.transfer_id)
        assert transfer is not None and transfer.state == "connected"
        # Meanwhile the counselor left and the round ended (before its ringing is stopped).
        with app.app_context():
            assert state.move_transfer(transfer.id, ("connecting", "connected"), "ended", end_reason="staff_left")
            db.session.commit()
        routing = active_routing()
        assert routing is not None
        decision = flow.offer_decided(offer, transfer, routing.document, "1")

    assert decision == flow.Decision("staff", "unit_not_needed")  # not "the caller has hung up": they have not
    assert unit_offer(app)[0] != "accepted"


@pytest.mark.parametrize("checkins", [False, True], ids=["searched-for-again", "asked-about-a-check-in"])
def test_a_unit_whose_press_of_one_commits_as_the_caller_is_moved_on_is_told_and_freed(
    app: Flask,
    phone: Phone,
    fake: FakeTwilio,
    publish_routing: Callable[..., int],
    monkeypatch: pytest.MonkeyPatch,
    checkins: bool,
) -> None:
    publish_routing(lambda document: document["followups"].update(checkins=checkins))
    caller, ana = ana_rings_the_unit(phone, fake)
    unit = leg_to(fake, UNIT)
    fake.advance_call(unit.sid, "ringing")
    fake.advance_call(unit.sid, "in-progress")  # briefed, asked for 1
    pressed: list[flow.Decision] = []
    redirect_caller = dispatch.redirect_caller

    def press_of_one_first(transfer: Transfer, endpoint: str) -> str:
        # Ana's leg's end found nobody from the line with the caller (the unit had not pressed
        # 1) and is moving them on: the unit's press of 1 is handled now, by another process.
        if endpoint == "transfer.staff_left" and not pressed:
            with app.app_context():
                offer = db.session.scalars(select(Offer).where(Offer.purpose == "join")).one()
                round_ = db.session.get(Transfer, offer.transfer_id)
                routing = active_routing()
                assert round_ is not None and routing is not None
                pressed.append(flow.offer_decided(offer, round_, routing.document, "1"))
        return redirect_caller(transfer, endpoint)

    monkeypatch.setattr(dispatch, "redirect_caller", press_of_one_first)
    phone.hang_up(ana)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert pressed == [flow.Decision("joined")]  # committed while the round was connected
    with app.app_context():
        first = db.session.scalars(select(Transfer).order_by(Transfer.round)).first()
        assert first is not None and (first.state, first.end_reason) == ("ended", "staff_left")
    assert unit_offer(app) == ("ended", "caller_gone", None), "the unit was left alone in the caller's room"
    assert unit_outcome_events(app) == [("offer.ended", "caller_gone")]  # it never joined the caller
    told = fake.get_call(unit.sid).redirects
    assert told and "not needed on it" in (told[-1].twiml or "") and "<Hangup" in (told[-1].twiml or "")
    assert fake.get_call(caller.identity.call_sid).status == "in-progress"  # the caller is still with us


def test_a_unit_whose_round_ends_right_after_its_acceptance_commits_is_told_at_once(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    ana_rings_the_unit(phone, fake)
    unit = leg_to(fake, UNIT)
    fake.advance_call(unit.sid, "ringing")
    fake.advance_call(unit.sid, "in-progress")
    accept_join = state.accept_join

    def round_ends_once_accepted(offer_id: int) -> bool:
        accepted = accept_join(offer_id)
        db.session.commit()  # the acceptance is in; the round's end waited for it and now commits
        with app.app_context():
            round_ = db.session.scalars(select(Transfer)).one()
            assert state.move_transfer(round_.id, ("connected",), "ended", end_reason="staff_left")
            db.session.commit()  # (its ``stop_ringing`` has not run yet)
        return accepted

    monkeypatch.setattr(state, "accept_join", round_ends_once_accepted)
    with app.app_context():
        offer = db.session.scalars(select(Offer).where(Offer.purpose == "join")).one()
        transfer = db.session.get(Transfer, offer.transfer_id)
        routing = active_routing()
        assert transfer is not None and transfer.state == "connected" and routing is not None
        decision = flow.offer_decided(offer, transfer, routing.document, "1")

    assert decision == flow.Decision("staff", "unit_not_needed"), "the unit was sent into the room the caller left"
    assert unit_offer(app) == ("ended", "caller_gone", None)
    assert unit_outcome_events(app) == [("offer.ended", "caller_gone")]
