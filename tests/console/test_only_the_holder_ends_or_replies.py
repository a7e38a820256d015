"""A counselor's END and reply act only on a conversation that is still theirs, checked in the
database change itself: an END or a reply read just before their other tab (or the sweep)
passed the conversation on, and another counselor took it, does nothing to the new
counselor's conversation and sends nothing to its texter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from console.models import COUNSELOR
from crisisline.db import db
from crisisline.models import Conversation
from routing.document import RoutingDocument
from routing.store import active_routing
from sms import conversations as convo
from sms import staff
from tests.conftest import TextingPhone
from tests.console.conftest import MakeUser, csrf_token, sign_in
from tests.console.test_inbox_and_wrap_up import offered_tag
from tests.rota import ANA, around_the_clock

TEXTER = "+13125550177"


def passed_to_ben_first(conversation: Conversation, document: RoutingDocument) -> None:
    """What another of Ana's tabs and Ben's YES do at that moment (each commits)."""
    ana, ben = document.responder("ana-ruiz"), document.responder("ben-carter")
    assert ana is not None and ben is not None
    assert convo.pass_back(conversation, ana, document)
    db.session.refresh(conversation)
    assert convo.take(conversation, ben, document)


def holder(app: Flask, tag: str) -> tuple[str, str | None]:
    with app.app_context():
        conversation = db.session.get(Conversation, int(tag))
        assert conversation is not None
        return conversation.state, conversation.counselor_id


@pytest.fixture
def anas_conversation(
    client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int], make_user: MakeUser
) -> str:
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz",)))
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    return tag


def test_an_end_read_before_a_pass_and_another_counselors_take_leaves_their_conversation_open(
    app: Flask, client: FlaskClient, texting: TextingPhone, anas_conversation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag, close = anas_conversation, convo.close

    def passed_on_meanwhile(conversation: Conversation, document: RoutingDocument, reason: str, **kw: Any) -> bool:
        passed_to_ben_first(conversation, document)
        return close(conversation, document, reason, **kw)

    monkeypatch.setattr(staff.convo, "close", passed_on_meanwhile)
    before = len(texting.inbox(TEXTER))
    client.post(
        f"/console/me/texts/{tag}/end",
        data={"key": "end-key-00000000000001", "csrf_token": csrf_token(client, "/console/me")},
    )

    assert holder(app, tag) == ("active", "ben-carter")
    assert texting.inbox(TEXTER)[before:] == []  # not told "this conversation has ended"


def test_a_reply_read_before_a_pass_and_another_counselors_take_never_reaches_the_texter(
    app: Flask, client: FlaskClient, texting: TextingPhone, anas_conversation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag, relay = anas_conversation, staff._relay

    def passed_on_meanwhile(conversation: Conversation, *args: Any) -> staff.Reply:
        active = active_routing()  # in the reply's own request
        assert active is not None
        passed_to_ben_first(conversation, active.document)
        return relay(conversation, *args)

    monkeypatch.setattr(staff, "_relay", passed_on_meanwhile)
    before = len(texting.inbox(TEXTER))
    client.post(
        f"/console/me/texts/{tag}/reply",
        data={"body": "Ana's words", "key": "reply-key-000000000001", "csrf_token": csrf_token(client, "/console/me")},
    )

    assert holder(app, tag) == ("active", "ben-carter")
    assert "Ana's words" not in texting.inbox(TEXTER)[before:]
