"""The counselor's actions on a contact, from the console, with the contact made through the real
signed webhooks (over HTTP) and the fake Twilio: bringing the co-responder unit into a live call
(rung once with purpose ``join``, whoever clicks how often) and texting referrals from the
line's directory (stored sealed, sent once)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.models import COUNSELOR, AuditEntry
from crisisline.db import db
from crisisline.models import CallEvent, Message, Offer, Transfer
from routing.store import active_routing
from sms.outbox import BODY_CONTEXT
from tests.conftest import LINE_NUMBER, TextingPhone
from tests.console.conftest import MakeUser, audit_actions, csrf_token, sign_in
from tests.console.test_board_and_desk import MENTAL_HEALTH, without_digits_of
from tests.console.test_inbox_and_wrap_up import assert_labelled, offered_tag
from tests.rota import ANA, BEN, UNIT, legs
from transfer import joining
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio

CALLER = "+13125550188"
TEXTER = "+13125550177"
WHOLE_DAY = [{"days": "daily", "start": "00:00", "end": "12:00"}, {"days": "daily", "start": "12:00", "end": "24:00"}]


def rota(publish_routing: Callable[..., int], *, unit_on_shift: bool) -> None:
    """Ana (and Ben, for a second counselor) on call all day; the unit all day or never."""

    def change(document: dict[str, Any]) -> None:
        for counselor in document["counselors"]:
            counselor.pop("overrides", None)
            counselor["shifts"] = WHOLE_DAY if counselor["id"] == "ana-ruiz" else []
        for unit in document["co_responder_units"]:
            unit.pop("overrides", None)
            unit["shifts"] = WHOLE_DAY if unit_on_shift else []

    publish_routing(change)


def ana_on_a_live_call(phone: Phone, fake: FakeTwilio, number: str = CALLER) -> tuple[PhoneCall, PhoneCall]:
    """A caller (mental health) put through to Ana, who accepts: both in the conference."""
    caller = phone.call(MENTAL_HEALTH, identity=phone.identity(number), max_hold_turns=1)
    (leg,) = [leg for leg in legs(fake) if leg.to == ANA]
    ana = phone.answer(leg.sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference is not None and caller.conference == ana.conference
    return caller, ana


def the_transfer(app: Flask) -> Transfer:
    with app.app_context():
        transfer: Transfer = db.session.scalars(select(Transfer)).one()
        return transfer


def post(client: FlaskClient, app: Flask, path: str, **data: Any) -> Any:
    response = client.post(path, data={**data, "csrf_token": csrf_token(client, "/console/me")})
    app.extensions["crisisline.background"].wait_idle(timeout=30)  # the ringing or sending it started
    return response


def join_offers(app: Flask) -> list[tuple[str, str]]:
    with app.app_context():
        return [(o.responder_id, o.purpose) for o in db.session.scalars(select(Offer).where(Offer.purpose == "join"))]


def events(app: Flask, kind: str) -> list[dict[str, Any]]:
    with app.app_context():
        return [e.detail for e in db.session.scalars(select(CallEvent).where(CallEvent.kind == kind))]


def flashed(client: FlaskClient) -> str:
    return " ".join(
        re.findall(r'<p class="notice [a-z]+" role="status">([^<]*)</p>', client.get("/console/me").get_data(True))
    )


# --- bringing in the co-responder unit ------------------------------------------------------------


def test_a_double_submit_rings_the_unit_once_to_join_and_the_wrap_up_suggests_co_responder_dispatched(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    rota(publish_routing, unit_on_shift=True)
    sign_in(client, make_user(COUNSELOR, "ana"))
    caller, _ana = ana_on_a_live_call(phone, fake)
    transfer = the_transfer(app)
    page = client.get("/console/me").get_data(as_text=True)
    assert "Bring in the co-responder unit" in page and without_digits_of([CALLER], page)

    action = f"/console/me/calls/{transfer.id}/unit"
    first, second = post(client, app, action), post(client, app, action)

    assert first.status_code == second.status_code == 302
    assert [leg.to for leg in legs(fake)].count(UNIT) == 1
    assert join_offers(app) == [("unit-north", "join")]
    (requested,) = events(app, "unit.requested")
    assert (requested["responder"], requested["requested_by"], requested["transfer"]) == (
        "unit-north", "ana-ruiz", transfer.id,
    )  # fmt: skip
    assert without_digits_of([CALLER, UNIT], json.dumps(requested))
    assert [a for a in audit_actions(app) if a[1] == "unit_requested"] == [
        ("ana", "unit_requested", f"call:{transfer.id}")
    ]
    page = client.get("/console/me").get_data(as_text=True)
    assert "phone is ringing" in page and "Bring in the co-responder unit" not in page

    # The unit hears the join briefing, presses 1 and is in the caller's conference.
    (unit_leg,) = [leg for leg in legs(fake) if leg.to == UNIT]
    unit = phone.answer(unit_leg.sid, [Keys("1")])
    assert "a counselor asks the co-responder unit to join" in unit.heard[0].text
    assert unit.conference == caller.conference
    assert "has joined the call" in client.get("/console/me").get_data(as_text=True)
    assert post(client, app, action).status_code == 302  # with the unit there, nothing more is rung
    assert join_offers(app) == [("unit-north", "join")]

    phone.hang_up(caller)
    form = client.get(f"/console/me/wrap-up/voice/{transfer.id}").get_data(as_text=True)
    assert re.search(
        r'<input checked[^>]*value="co_responder_dispatched"|value="co_responder_dispatched"[^>]*checked', form
    )


def test_a_counselor_not_on_the_call_is_refused_and_nothing_rings(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    rota(publish_routing, unit_on_shift=True)
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    sign_in(client, ben)
    ana_on_a_live_call(phone, fake)
    transfer = the_transfer(app)

    assert "Bring in the co-responder unit" not in client.get("/console/me").get_data(as_text=True)
    refused = post(client, app, f"/console/me/calls/{transfer.id}/unit")

    assert refused.status_code == 302
    assert "You are not connected to that call" in flashed(client)
    assert UNIT not in [leg.to for leg in legs(fake)] and BEN not in [leg.to for leg in legs(fake)]
    assert join_offers(app) == [] and events(app, "unit.requested") == []
    assert not [a for a in audit_actions(app) if a[1] == "unit_requested"]


def test_with_no_unit_on_shift_the_request_is_refused_with_the_backup_route(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    rota(publish_routing, unit_on_shift=False)
    sign_in(client, make_user(COUNSELOR, "ana"))
    ana_on_a_live_call(phone, fake)
    transfer = the_transfer(app)
    assert "No co-responder unit is on shift now" in client.get("/console/me").get_data(as_text=True)

    refused = post(client, app, f"/console/me/calls/{transfer.id}/unit")

    assert refused.status_code == 302
    words = flashed(client)
    assert "No co-responder unit is on shift now" in words
    assert "emergency services" in words and "backup line" in words
    assert UNIT not in [leg.to for leg in legs(fake)]
    assert join_offers(app) == [] and events(app, "unit.requested") == []


# --- referrals by text ---------------------------------------------------------------------------


def test_a_referral_is_previewed_stored_sealed_and_texted_once_to_the_texter(
    app: Flask, client: FlaskClient, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    rota(publish_routing, unit_on_shift=False)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    page = f"/console/me/referral/text/{tag}"
    assert page in client.get("/console/me").get_data(as_text=True)

    # Filtered by their language and need: the mobile crisis team, not the detox centre.
    choose = client.get(page).get_data(as_text=True)
    assert "County Mobile Crisis Team" in choose and "Riverside Detox" not in choose
    assert_labelled(choose)
    preview = client.get(page, query_string={"service": "county-mobile-crisis"}).get_data(as_text=True)
    assert "The text they will get" in preview and "+13125550172" in preview
    assert without_digits_of([TEXTER], preview)

    before = len(texting.inbox(TEXTER))
    for _ in range(2):
        sent = post(client, app, f"{page}/send", service="county-mobile-crisis")
        assert sent.status_code == 302
    (referral,) = texting.inbox(TEXTER)[before:]
    assert "County Mobile Crisis Team" in referral and "+13125550172" in referral
    assert [m.from_ for m in fake.messages.values() if m.body == referral] == [LINE_NUMBER]
    assert "Already sent" in client.get(page).get_data(as_text=True)

    with app.app_context():
        (stored,) = db.session.scalars(select(Message).where(Message.idempotency_key.startswith("referral:")))
        assert (stored.idempotency_key or "").startswith(f"referral:text:{tag}:")
        assert stored.conversation_id == int(tag) and stored.sealed_body
        assert "Mobile" not in stored.sealed_body and "5550172" not in stored.sealed_body
        assert app.extensions["crisisline.vault"].open(stored.sealed_body, context=BODY_CONTEXT) == referral
        entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "referral_sent")).one()
        assert (entry.target, entry.detail) == (f"text:{tag}", {"services": ["county-mobile-crisis"]})
    assert "County Mobile Crisis Team" in client.get(f"/console/me/texts/{tag}").get_data(as_text=True)


def test_a_referral_after_a_call_goes_to_the_callers_number_and_is_recorded_as_an_event(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, texting: TextingPhone,
    publish_routing: Callable[..., int], make_user: MakeUser,
) -> None:  # fmt: skip
    rota(publish_routing, unit_on_shift=False)
    sign_in(client, make_user(COUNSELOR, "ana"))
    caller, ana = ana_on_a_live_call(phone, fake)
    transfer = the_transfer(app)
    live = client.get("/console/me").get_data(as_text=True)
    assert f"/console/me/referral/voice/{transfer.id}" in live  # offered during the call
    phone.hang_up(caller)
    phone.resume(ana)

    page = f"/console/me/referral/voice/{transfer.id}"
    for _ in range(2):
        assert post(client, app, f"{page}/send", service="county-mobile-crisis").status_code == 302

    (referral,) = texting.inbox(CALLER)
    assert "County Mobile Crisis Team: +13125550172" in referral
    (event,) = events(app, "referral.sent")
    assert event == {"transfer": transfer.id, "services": ["county-mobile-crisis"]}
    assert ("ana", "referral_sent", f"call:{transfer.id}") in audit_actions(app)


def test_a_withheld_number_gets_no_referral_and_the_button_says_why(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    rota(publish_routing, unit_on_shift=False)
    sign_in(client, make_user(COUNSELOR, "ana"))
    ana_on_a_live_call(phone, fake, number="anonymous")
    transfer = the_transfer(app)

    desk = client.get("/console/me").get_data(as_text=True)
    assert re.search(r"<button type=\"button\" disabled[^>]*>Text them a referral</button>", desk)
    assert "Their number was withheld" in desk
    preview = client.get(
        f"/console/me/referral/voice/{transfer.id}", query_string={"service": "county-mobile-crisis"}
    ).get_data(as_text=True)
    assert re.search(r'<button type="submit" class="go" disabled', preview)

    refused = post(client, app, f"/console/me/referral/voice/{transfer.id}/send", service="county-mobile-crisis")

    assert refused.status_code == 302
    assert not any("Mobile Crisis" in m.body for m in fake.messages.values())
    with app.app_context():
        assert (
            db.session.scalars(select(Message).where(Message.idempotency_key.startswith("referral:"))).first() is None
        )


def test_referrals_are_only_for_the_counselors_own_contacts_and_directory(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    rota(publish_routing, unit_on_shift=False)
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    sign_in(client, make_user(COUNSELOR, "ben", responder_id="ben-carter"))

    assert client.get(f"/console/me/referral/text/{tag}").status_code == 404
    assert post(client, app, f"/console/me/referral/text/{tag}/send", service="county-mobile-crisis").status_code == 404

    mine = app.test_client()
    sign_in(mine, make_user(COUNSELOR, "ana"))
    refused = post(mine, app, f"/console/me/referral/text/{tag}/send", service="no-such-service")
    assert refused.status_code == 302
    with app.app_context():
        assert (
            db.session.scalars(select(Message).where(Message.idempotency_key.startswith("referral:"))).first() is None
        )


def test_two_tabs_asking_at_the_same_moment_ring_the_unit_once(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    rota(publish_routing, unit_on_shift=True)
    ana_on_a_live_call(phone, fake)
    transfer = the_transfer(app)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def ask() -> None:
        with app.app_context():
            active = active_routing()
            assert active is not None
            start.wait(timeout=10)
            outcomes.append(joining.request_unit_join(transfer.id, "ana-ruiz", active.document).outcome)

    tabs = [threading.Thread(target=ask) for _ in range(2)]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join(timeout=30)

    assert sorted(outcomes) == [joining.ALREADY, joining.RINGING]
    assert [leg.to for leg in legs(fake)].count(UNIT) == 1
    assert join_offers(app) == [("unit-north", "join")]
    assert len(events(app, "unit.requested")) == 1


# --- the idle sign-out ----------------------------------------------------------------------------


def test_a_counselor_on_a_long_call_stays_signed_in_by_the_desks_refresh_until_the_call_ends(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    """An hour with a caller, the desk open and untouched: its refresh keeps Ana signed in while
    she talks. Once the call is over the refresh is not activity again, and the idle sign-out
    comes as for anyone."""
    rota(publish_routing, unit_on_shift=False)
    idle = timedelta(minutes=app.config["CONSOLE_IDLE_MINUTES"])
    poll = {"X-Console-Poll": "1"}
    with time_machine.travel(datetime.now(UTC), tick=True) as traveller:
        sign_in(client, make_user(COUNSELOR, "ana"))
        caller, ana = ana_on_a_live_call(phone, fake)
        for _ in range(3):  # 3 x (idle - 1 min) on the call, only the desk's own refresh
            traveller.shift(idle - timedelta(minutes=1))
            polled = client.get("/console/me.json", headers=poll)
            assert polled.status_code == 200 and polled.get_json()["status"] == "on a call"
        traveller.shift(idle - timedelta(minutes=1))
        assert client.get("/console/me?poll=1").status_code == 200  # the page's own reload too

        phone.hang_up(caller)
        phone.hang_up(ana)
        app.extensions["crisisline.background"].wait_idle(timeout=30)
        traveller.shift(idle - timedelta(minutes=1))
        polled = client.get("/console/me.json", headers=poll)
        assert polled.status_code == 200 and polled.get_json()["status"] != "on a call"
        traveller.shift(timedelta(minutes=2))
        assert client.get("/console/me.json", headers=poll).status_code == 401
    assert audit_actions(app)[-1] == ("ana", "signed_out_idle", None)


def test_a_desk_left_open_on_another_device_is_not_kept_signed_in_by_the_calls_that_follow(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    """Ana signed in at the office, then took calls on her own phone, her phone's desk open:
    each call keeps signed in a desk she used shortly before it began, not the office's screen
    she left, which shows her texters' threads (found by review)."""
    rota(publish_routing, unit_on_shift=False)
    idle = timedelta(minutes=app.config["CONSOLE_IDLE_MINUTES"])
    poll = {"X-Console-Poll": "1"}
    account = make_user(COUNSELOR, "ana")
    office = app.test_client()
    with time_machine.travel(datetime.now(UTC), tick=True) as traveller:
        sign_in(office, account)
        sign_in(client, account)
        caller, ana = ana_on_a_live_call(phone, fake)
        for _ in range(2):  # a long first call: both desks were used just before it began
            traveller.shift(idle - timedelta(minutes=1))
            assert [desk.get("/console/me.json", headers=poll).status_code for desk in (office, client)] == [200, 200]
        phone.hang_up(caller)
        phone.hang_up(ana)
        app.extensions["crisisline.background"].wait_idle(timeout=30)
        assert client.get("/console/me").status_code == 200  # between calls she looks at her phone's desk

        second = phone.call(MENTAL_HEALTH, identity=phone.identity("+13125550202"), max_hold_turns=1)
        counselor = phone.answer([leg for leg in legs(fake) if leg.to == ANA][-1].sid, [Keys("1")])
        phone.resume(second, max_hold_turns=0)
        assert second.conference is not None and second.conference == counselor.conference
        traveller.shift(idle - timedelta(minutes=1))
        assert [desk.get("/console/me.json", headers=poll).status_code for desk in (office, client)] == [200, 200]
        traveller.shift(timedelta(minutes=2))
        assert office.get("/console/me.json", headers=poll).status_code == 401  # the office screen
        assert client.get("/console/me.json", headers=poll).status_code == 200
        traveller.shift(idle - timedelta(minutes=1))
        assert client.get("/console/me.json", headers=poll).status_code == 200  # her phone's, on the call
