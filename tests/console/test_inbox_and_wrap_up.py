"""The counselor's SMS inbox, wrap-ups and earlier contacts, with texts and calls made through
the real signed webhooks (over HTTP) and the fake Twilio: replies go out from the line's
number exactly once, only the counselor holding a conversation reads or answers it, a
wrap-up schedules the check-in through ``followups`` and keeps its note sealed."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.models import COUNSELOR, NOTE_CONTEXT, AuditEntry, WrapUp
from crisisline.db import db
from crisisline.models import CheckIn, Conversation, Message, ScheduledContact, Transfer
from tests.conftest import TextingPhone
from tests.console.conftest import MakeUser, audit_actions, csrf_token, sign_in
from tests.console.test_board_and_desk import MENTAL_HEALTH, caller, only_ana_on_call, without_digits_of
from tests.rota import ANA, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

TEXTER = "+13125550177"
CALLER = "+13125550188"
KEY = "double-submit-key-000001"


def me(client: FlaskClient) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(client.get("/console/me.json", headers={"X-Console-Poll": "1"}).get_data(True))
    return data


def offered_tag(texting: TextingPhone) -> str:
    (offer,) = [text for text in texting.inbox(ANA) if text.startswith("New text #")]
    return offer.split("#")[1].split(":")[0]


def assert_labelled(page: str) -> None:
    fields = set(re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', page))
    assert fields and fields <= set(re.findall(r'<label for="([^"]+)"', page))


def post(client: FlaskClient, path: str, **data: str) -> Any:
    return client.post(path, data={**data, "csrf_token": csrf_token(client, "/console/me")})


def test_a_counselor_takes_a_text_replies_from_the_browser_once_and_ends_it(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    only_ana_on_call(publish_routing)
    ana = make_user(COUNSELOR, "ana")
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    sign_in(client, ana)
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    thread = f"/console/me/texts/{tag}"

    # Offered: not readable yet; taken from the page, as YES <tag> by text would.
    assert client.get(thread).status_code == 404
    assert f"Take #{tag}" in client.get("/console/me").get_data(as_text=True)
    assert post(client, f"{thread}/take", key="take-key-0000000000001").status_code == 302
    with app.app_context():
        conversation = db.session.get(Conversation, int(tag))
        assert conversation is not None and (conversation.state, conversation.counselor_id) == ("active", "ana-ruiz")
    assert any(text.startswith(f"#{tag}: I keep having panic attacks") for text in texting.inbox(ANA))

    # The inbox shows the thread, decrypted for her, never the texter's number.
    page = client.get("/console/me").get_data(as_text=True)
    assert "My text conversations" in page and "panic attacks" in page and "Mental health" in page
    assert without_digits_of([TEXTER], page + client.get(thread).get_data(as_text=True))
    assert_labelled(page)
    assert_labelled(client.get(thread).get_data(as_text=True))

    # A reply from the browser reaches the texter from the line's number, once however often
    # the form is submitted.
    before = len(texting.inbox(TEXTER))
    for _ in range(2):
        sent = post(client, f"{thread}/reply", body="I'm here with you. Are you safe right now?", key=KEY)
        assert sent.status_code == 302
    replies = texting.inbox(TEXTER)[before:]
    assert replies == ["I'm here with you. Are you safe right now?"]
    assert "Already done" in client.get("/console/me").get_data(as_text=True)
    texting.send(TEXTER, "yes, at home")
    thread_page = client.get(thread).get_data(as_text=True)
    assert "Are you safe right now?" in thread_page and "yes, at home" in thread_page
    with app.app_context():
        (stored,) = db.session.scalars(select(Message).where(Message.idempotency_key == f"console:{ana.id}:{KEY}"))
        assert stored.responder_id == "ana-ruiz" and stored.handled_at is not None
        assert "safe" not in (stored.sealed_body or "")  # sealed like every text

    # Another counselor can neither read nor answer it (nor end it).
    other = app.test_client()
    sign_in(other, ben)
    assert other.get(thread).status_code == 404
    assert "panic attacks" not in other.get("/console/me").get_data(as_text=True)
    for refused in (
        post(other, f"{thread}/reply", body="hello", key="ben-key-0000000000001"),
        post(other, f"{thread}/end", key="ben-key-0000000000002"),
    ):  # a page says nothing was sent and why, and shows nothing of the conversation
        assert refused.status_code == 409 and "panic attacks" not in refused.get_data(as_text=True)
    assert len(texting.inbox(TEXTER)) == before + 1

    # END from the page: closed, the texter told (and asked about a check-in), as END <tag>.
    assert post(client, f"{thread}/end", key="end-key-00000000000001").status_code == 302
    with app.app_context():
        conversation = db.session.get(Conversation, int(tag))
        assert conversation is not None
        assert (conversation.state, conversation.close_reason) == ("closed", "counselor_ended")
    assert any("This conversation has ended" in text for text in texting.inbox(TEXTER))
    assert client.get(thread).status_code == 404
    assert f"Wrap up the text #{tag}" in client.get("/console/me").get_data(as_text=True)


def test_the_wrap_up_of_a_text_schedules_the_check_in_and_seals_the_note(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    only_ana_on_call(publish_routing)
    ana = make_user(COUNSELOR, "ana")
    sign_in(client, ana)
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    texting.send(ANA, f"END {tag}")  # ended by text this time: the form is offered all the same
    form = f"/console/me/wrap-up/text/{tag}"
    assert "Outcome" in client.get(form).get_data(as_text=True)
    assert_labelled(client.get(form).get_data(as_text=True))

    note = "Talked through breathing; sister nearby tonight"
    refused = post(client, form, note=note)
    assert refused.status_code == 400 and "Choose an outcome" in refused.get_data(as_text=True)
    saved = post(client, form, outcome="de_escalated", consent="y", note=note)
    assert saved.status_code == 302
    assert "A check-in is scheduled." in client.get("/console/me").get_data(as_text=True)
    assert post(client, form, outcome="other").status_code == 302  # a second one is refused
    assert "already has a wrap-up" in client.get("/console/me").get_data(as_text=True)

    with app.app_context():
        (wrap_up,) = db.session.scalars(select(WrapUp))
        assert (wrap_up.contact_key, wrap_up.outcome, wrap_up.followup_consent, wrap_up.followup) == (
            f"text:{tag}", "de_escalated", True, "scheduled",
        )  # fmt: skip
        assert wrap_up.sealed_note and note not in wrap_up.sealed_note and "sister" not in wrap_up.sealed_note
        assert app.extensions["crisisline.vault"].open(wrap_up.sealed_note, context=NOTE_CONTEXT) == note
        checkin = db.session.scalars(select(CheckIn).where(CheckIn.dedupe_key == f"text:{tag}")).one()
        assert checkin.state == "consented" and checkin.consented_at is not None
        scheduled = db.session.scalars(select(ScheduledContact).where(ScheduledContact.checkin_id == checkin.id))
        kinds = {contact.kind for contact in scheduled}
        assert "checkin" in kinds
        entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "wrap_up")).one()
        assert "sister" not in json.dumps(entry.detail) and entry.sealed_detail is None
    assert ("ana", "wrap_up", f"text:{tag}") in audit_actions(app)
    assert f"Wrap up the text #{tag}" not in client.get("/console/me").get_data(as_text=True)


def test_a_call_shows_earlier_contacts_by_the_same_person_and_its_wrap_up_schedules_a_check_in(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, texting: TextingPhone,
    publish_routing: Callable[..., int], make_user: MakeUser,
) -> None:  # fmt: skip
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(CALLER, "hello?")  # the same person texted first

    call = caller(phone, CALLER, MENTAL_HEALTH)
    (contact,) = [c for c in me(client)["contacts"] if c["channel"] == "voice"]
    assert contact["state"] == "ringing" and contact["earlier_count"] == 1
    assert [e["channel"] for e in contact["earlier"]] == ["text"]
    page = client.get("/console/me").get_data(as_text=True)
    assert "Earlier contacts by this person: 1" in page and without_digits_of([CALLER], page)

    (leg,) = [leg for leg in legs(fake) if leg.to == ANA]
    counselor = phone.answer(leg.sid, [Keys("1")])
    phone.resume(call, max_hold_turns=0)
    assert call.conference is not None and call.conference == counselor.conference
    phone.hang_up(call)
    phone.resume(counselor)
    with app.app_context():
        transfer = db.session.scalars(select(Transfer)).one()
        transfer_id, call_id = transfer.id, transfer.call_id
        assert transfer.state not in ("waiting", "connecting", "connected")

    form = f"/console/me/wrap-up/voice/{transfer_id}"
    assert f"Wrap up the call {transfer_id}" in client.get("/console/me").get_data(as_text=True)
    assert post(client, form, outcome="referred", consent="y", note="gave the clinic's number").status_code == 302
    with app.app_context():
        checkin = db.session.scalars(select(CheckIn).where(CheckIn.dedupe_key == f"call:{call_id}")).one()
        assert checkin.state == "consented"
        wrap_up = db.session.scalars(select(WrapUp)).one()
        assert (wrap_up.channel, wrap_up.call_id, wrap_up.followup) == ("voice", call_id, "scheduled")

    # They call again: two earlier contacts now, the call and the text, newest first.
    caller(phone, CALLER, MENTAL_HEALTH)
    (again,) = [c for c in me(client)["contacts"] if c["channel"] == "voice"]
    assert again["earlier_count"] == 2
    assert [e["channel"] for e in again["earlier"]] == ["voice", "text"]
    assert again["earlier"][0]["need"] == "Mental health"


def test_a_wrap_up_is_only_for_the_counselors_own_ended_contacts(
    client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int], make_user: MakeUser
) -> None:
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ben", responder_id="ben-carter"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    texting.send(ANA, f"END {tag}")

    assert client.get(f"/console/me/wrap-up/text/{tag}").status_code == 404
    assert post(client, f"/console/me/wrap-up/text/{tag}", outcome="other").status_code == 404


def test_a_reply_from_the_browser_reaches_the_texter_exactly_as_typed(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    """The reply box went through the SMS parser as ``#12 words``, which strips a leading "-",
    ":" or "," as the tag's separator: "-1 is not…" arrived as "1 is not…" and "--" as nothing,
    while the page said "Sent" (found by a bug hunt)."""
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    thread = f"/console/me/texts/{tag}"
    assert post(client, f"{thread}/take", key="take-key-0000000000001").status_code == 302
    before = len(texting.inbox(TEXTER))
    typed = ["-1 is not an answer, tell me more", ":-)", "--", ", and then?"]

    for number, words in enumerate(typed):
        post(client, f"{thread}/reply", body=words, key=f"reply-key-0000000000{number}")

    assert texting.inbox(TEXTER)[before:] == typed
    assert f"Sent to #{tag}." in client.get("/console/me").get_data(as_text=True)
