"""A counselor who pauses while their phone rings for a caller (the desk's "Pause me", or
texting OFF) no longer keeps that caller waiting on it: the offer ends as their press of 2
would end it, their phone stops ringing, and the next counselor is rung at once. Found by
review: the paused phone rang on for the whole ring timeout (20 s, up to 120) while the desk
said "the line will not offer you contacts". A call they picked up and accepted is theirs:
pausing does not touch it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.models import COUNSELOR
from crisisline.db import db
from crisisline.models import Offer, ResponderState, Transfer
from sms import outbox
from tests.conftest import LINE_NUMBER, TextingPhone
from tests.console.conftest import Account, MakeUser, csrf_token, sign_in
from tests.rota import ANA, BEN, around_the_clock, leg_to, legs
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake")


def ana_then_ben(publish_routing: Callable[..., int], make_user: MakeUser) -> Account:
    """Ana and Ben on call, one phone at a time, Ana first; Ana's console account."""
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz", "ben-carter")))
    return make_user(COUNSELOR, "ana")


def a_caller_rings_ana(phone: Phone, fake: FakeTwilio) -> PhoneCall:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    assert [leg.to for leg in legs(fake)] == [ANA]
    return caller


def pause_at_the_desk(app: Flask, client: FlaskClient) -> None:
    token = csrf_token(client, "/console/me")
    paused = client.post("/console/me/availability", data={"available": "0", "csrf_token": token})
    assert paused.status_code == 302
    app.extensions["crisisline.background"].wait_idle(timeout=30)  # the hang-up and the next ring


def offers(app: Flask) -> dict[str, Offer]:
    with app.app_context():
        return {offer.responder_id: offer for offer in db.session.scalars(select(Offer).order_by(Offer.id))}


def the_transfer(app: Flask) -> Transfer:
    with app.app_context():
        return db.session.scalars(select(Transfer)).one()


def assert_ana_let_go_and_ben_rung(app: Flask, fake: FakeTwilio, ana_leg_sid: str) -> None:
    assert [leg.to for leg in legs(fake)] == [ANA, BEN], "the caller still waits on a paused counselor's phone"
    ana, ben = offers(app)["ana-ruiz"], offers(app)["ben-carter"]
    assert (ana.state, ana.outcome) == ("ended", "passed")
    assert fake.get_call(ana_leg_sid).status == "canceled", "the paused counselor's phone rings on"
    assert "canceled" in fake.get_call(ana_leg_sid).status_updates
    # Rung at once, not after Ana's ring timeout (20 s).
    assert (ben.created_at - ana.created_at).total_seconds() < 10
    with app.app_context():
        state = db.session.get(ResponderState, "ana-ruiz")
        assert state is not None and state.paused and state.engaged_offer_id is None
        assert state.missed_in_a_row == 0, "pausing was counted as a missed call"


def test_pausing_at_the_desk_while_the_phone_rings_rings_the_next_counselor_at_once(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    ana = ana_then_ben(publish_routing, make_user)
    caller = a_caller_rings_ana(phone, fake)
    ana_leg = leg_to(fake, ANA)
    sign_in(client, ana)

    pause_at_the_desk(app, client)

    assert_ana_let_go_and_ben_rung(app, fake, ana_leg.sid)
    # Her leg's own status callback (``canceled``) came after: nothing more happens.
    fake.advance_call(ana_leg.sid, "canceled")
    assert [leg.to for leg in legs(fake)] == [ANA, BEN]
    assert offers(app)["ana-ruiz"].outcome == "passed"
    counselor = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference is not None and caller.conference == counselor.conference
    transfer = the_transfer(app)
    assert transfer.state == "connected"
    assert offers(app)["ben-carter"].state == "accepted"


def test_texting_off_while_the_phone_rings_rings_the_next_counselor_at_once(
    app: Flask, phone: Phone, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    ana_then_ben(publish_routing, make_user)
    a_caller_rings_ana(phone, fake)
    ana_leg = leg_to(fake, ANA)

    texting.send(ANA, "OFF")
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert_ana_let_go_and_ben_rung(app, fake, ana_leg.sid)


def test_a_phone_that_blocks_the_lines_texts_while_it_rings_rings_the_next_counselor_at_once(
    app: Flask, phone: Phone, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    """Ana texts STOP while her phone rings: Twilio opts her phone out, the line's answer fails
    with 21610 and pauses her (``sms_blocked``). Her caller was left on her phone's ring timeout."""
    ana_then_ben(publish_routing, make_user)
    a_caller_rings_ana(phone, fake)
    ana_leg = leg_to(fake, ANA)

    fake.receive_keyword(ANA, "STOP")  # Twilio's own keyword handling, first
    texting.send(ANA, "STOP")
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    with app.app_context():
        state = db.session.get(ResponderState, "ana-ruiz")
        assert state is not None and state.paused_reason == "sms_blocked"
    assert_ana_let_go_and_ben_rung(app, fake, ana_leg.sid)


def test_a_text_to_a_ringing_counselor_refused_as_blocked_rings_the_next_counselor_at_once(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], make_user: MakeUser
) -> None:
    """The same, found when the line next texts her over the REST API (a relay, a staff alert):
    Twilio refuses it at once with 21610. Found by review: only a status callback's 21610 rang
    the caller's next person."""
    ana_then_ben(publish_routing, make_user)
    a_caller_rings_ana(phone, fake)
    ana_leg = leg_to(fake, ANA)
    fake.receive_keyword(ANA, "STOP")  # Twilio's own keyword handling; the line has not heard it

    with app.test_request_context():
        sent = outbox.send_text(key="test:to-ana", to_number=ANA, from_number=LINE_NUMBER, body="A note",
                                party="counselor", responder_id="ana-ruiz", in_twiml=False)  # fmt: skip
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert not sent
    with app.app_context():
        state = db.session.get(ResponderState, "ana-ruiz")
        assert state is not None and state.paused_reason == "sms_blocked"
    assert_ana_let_go_and_ben_rung(app, fake, ana_leg.sid)


def test_pausing_after_accepting_leaves_the_call_alone(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    ana = ana_then_ben(publish_routing, make_user)
    caller = a_caller_rings_ana(phone, fake)
    counselor = phone.answer(leg_to(fake, ANA).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference is not None and caller.conference == counselor.conference
    sign_in(client, ana)

    pause_at_the_desk(app, client)

    assert [leg.to for leg in legs(fake)] == [ANA], "someone else was rung for a caller Ana is talking to"
    ana_leg = fake.get_call(counselor.identity.call_sid)
    assert ana_leg.status == "in-progress" and ana_leg.status_updates == []
    room = fake.get_conference(caller.conference)
    assert set(room.participants) == {caller.identity.call_sid, counselor.identity.call_sid}
    assert offers(app)["ana-ruiz"].state == "accepted"
    assert the_transfer(app).state == "connected"
    with app.app_context():
        state = db.session.get(ResponderState, "ana-ruiz")
        assert state is not None and state.paused
