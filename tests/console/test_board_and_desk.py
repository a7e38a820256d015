"""The live board and the counselor's page, with contacts made through the real voice and
SMS webhooks (signed, over HTTP) and the fake Twilio: queue order, statuses, no numbers, and
the availability switch acting on the same state as the SMS ON/OFF commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.board import live
from console.models import COUNSELOR
from crisisline.db import db
from crisisline.models import ResponderState
from tests.conftest import TextingPhone
from tests.console.conftest import Account, MakeUser, audit_actions, csrf_token, sign_in
from tests.rota import ANA, around_the_clock, legs
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio

MENTAL_HEALTH, SUICIDE = [Keys("1"), Keys("3")], [Keys("1"), Keys("2")]
CALLERS = ["+13125550201", "+13125550202"]
TEXTER = "+13125550177"


def only_ana_on_call(publish_routing: Callable[..., int]) -> None:
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz",)))


def caller(phone: Phone, number: str, keys: list[Keys]) -> PhoneCall:
    call = phone.call(keys, identity=phone.identity(number), max_hold_turns=1)
    assert call.ended_by == "on-hold"
    return call


def board(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/console/board.json", headers={"X-Console-Poll": "1"})
    assert response.status_code == 200
    data: dict[str, Any] = json.loads(response.get_data(as_text=True))
    return data


def without_digits_of(numbers: list[str], text: str) -> bool:
    """True if no form of any of ``numbers`` (E.164, national, last seven) appears in ``text``."""
    return not any(form in text for number in numbers for form in (number, number[2:], number[-7:]))


def test_the_board_shows_callers_waiting_in_queue_order_and_never_a_number(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, texting: TextingPhone,
    publish_routing: Callable[..., int], supervisor: Account, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    only_ana_on_call(publish_routing)
    caller(phone, CALLERS[0], MENTAL_HEALTH)  # Ana's phone rings for the first caller
    caller(phone, CALLERS[1], SUICIDE)  # priority: ahead of the first in line
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    sign_in(client, supervisor)

    data = board(client)
    waiting = data["waiting"]
    assert [(w["place"], w["channel"], w["kind"]) for w in waiting] == [
        (1, "voice", "call"),
        (2, "voice", "call"),
        (3, "text", "text"),
    ]
    assert [w["need"] for w in waiting[:2]] == ["Thoughts of suicide", "Mental health"]
    assert all(w["language"] == "English" for w in waiting)
    assert waiting[1]["being_offered"] is True  # Ana's phone rings for the first caller
    assert waiting[2]["tag"].startswith("#")
    assert data["counts"]["waiting"] == 3 and data["counts"]["voice"] == 2
    assert data["longest_wait_seconds"] == max(w["waiting_seconds"] for w in waiting)
    statuses = {r["id"]: (r["on_shift"], r["status"]) for r in data["responders"]}
    assert statuses["ana-ruiz"] == (True, "ringing")
    assert statuses["ben-carter"] == (False, "off shift")
    assert [leg.to for leg in legs(fake)] == [ANA]

    page = client.get("/console/board").get_data(as_text=True)
    everything = page + json.dumps(data) + client.get("/console/audit").get_data(as_text=True)
    assert "Thoughts of suicide" in page and "Ana Ruiz" in page
    assert without_digits_of([*CALLERS, TEXTER], everything)

    # A long queue: the board lists its head, and still counts everyone.
    monkeypatch.setattr(live, "BOARD_LIMIT", 2)
    head_only = board(client)
    assert [w["place"] for w in head_only["waiting"]] == [1, 2]
    assert (head_only["counts"]["waiting"], head_only["counts"]["shown"], head_only["counts"]["text"]) == (3, 2, 1)


def test_a_counselor_sees_what_rings_for_them_and_pauses_like_the_sms_off_command(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    only_ana_on_call(publish_routing)
    ana = make_user(COUNSELOR, "ana", display_name="Ana")
    sign_in(client, ana)
    caller(phone, CALLERS[0], MENTAL_HEALTH)

    now = json.loads(client.get("/console/me.json", headers={"X-Console-Poll": "1"}).get_data(as_text=True))
    assert now["status"] == "ringing" and now["on_shift"] is True
    (contact,) = now["contacts"]
    assert (contact["channel"], contact["state"], contact["language"], contact["need"]) == (
        "voice", "ringing", "English", "Mental health",
    )  # fmt: skip
    page = client.get("/console/me").get_data(as_text=True)
    assert "Pause me" in page and without_digits_of(CALLERS, page)

    response = client.post(
        "/console/me/availability", data={"available": "0", "csrf_token": csrf_token(client, "/console/me")}
    )
    assert response.status_code == 302
    with app.app_context():
        state = db.session.scalars(select(ResponderState).where(ResponderState.responder_id == "ana-ruiz")).one()
        assert (state.paused, state.paused_reason) == (True, "self")  # as if she had texted OFF
    assert "Take contacts again" in client.get("/console/me").get_data(as_text=True)
    assert audit_actions(app)[-1] == ("ana", "availability_changed", "responder:ana-ruiz")


def test_paused_from_the_web_nobody_rings_her_and_un_pausing_offers_the_next_caller(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ana"))
    client.post("/console/me/availability", data={"available": "0", "csrf_token": csrf_token(client, "/console/me")})

    first = phone.call(MENTAL_HEALTH, identity=phone.identity(CALLERS[0]), dial_outcomes=["completed"])
    assert legs(fake) == []  # paused: not rung; the caller is put through to the backup line
    assert first.dials and first.dials[0].numbers

    client.post("/console/me/availability", data={"available": "1", "csrf_token": csrf_token(client, "/console/me")})
    caller(phone, CALLERS[1], MENTAL_HEALTH)
    assert [leg.to for leg in legs(fake)] == [ANA]
    with app.app_context():
        state = db.session.get(ResponderState, "ana-ruiz")
        assert state is not None and state.paused is False


def test_a_counselor_sees_a_text_offered_to_them_then_the_conversation_they_took(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    (offer_text,) = texting.inbox(ANA)
    tag = offer_text.split("#")[1].split(":")[0]

    def contacts() -> list[tuple[str, str, str, str]]:
        now = json.loads(client.get("/console/me.json", headers={"X-Console-Poll": "1"}).get_data(as_text=True))
        return [(c["channel"], c["state"], c["tag"], c["need"]) for c in now["contacts"]]

    assert contacts() == [("text", "offered", f"#{tag}", "Mental health")]
    texting.send(ANA, f"YES {tag}")  # she takes it by text, as ever
    assert contacts() == [("text", "active", f"#{tag}", "Mental health")]
    assert without_digits_of([TEXTER], client.get("/console/me").get_data(as_text=True))


def test_a_counselor_whose_responder_left_the_routing_is_told_so(
    client: FlaskClient, make_user: MakeUser, publish_routing: Callable[..., int]
) -> None:
    account = make_user(COUNSELOR, "erin", responder_id="erin-walsh")
    publish_routing(lambda document: document.update(
        counselors=[c for c in document["counselors"] if c["id"] != "erin-walsh"]
    ))  # fmt: skip
    sign_in(client, account)

    assert "not linked to a responder of the current routing" in client.get("/console/me").get_data(as_text=True)
    refused = client.post(
        "/console/me/availability", data={"available": "0", "csrf_token": csrf_token(client, "/console/me")}
    )
    assert refused.status_code == 302
    assert json.loads(client.get("/console/me.json").get_data(as_text=True)) == {
        "error": "not linked to a responder of the routing config"
    }
