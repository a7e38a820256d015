"""What became of a text conversation (closed because the texter texted STOP, asked to be
called, is with another counselor now...) is told only to a counselor who held it or was
offered it. Any other counselor asking about it by id (the thread page's refresh, a reply,
END, PASS or "Take") is told only that it is not one of their conversations. Found by review:
a counselor who never saw a conversation could walk ids on /console/me/texts/<id>.json and
read "#N is closed: the texter texted STOP", what happened to someone else's texter."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.models import COUNSELOR
from crisisline.db import db
from crisisline.models import Conversation
from tests.conftest import TextingPhone
from tests.console.conftest import Account, MakeUser, csrf_token, sign_in
from tests.rota import BEN, around_the_clock

TEXTER = "+13125550177"
WORDS = "I keep having panic attacks and I can't breathe"


@pytest.fixture
def ben_and_chloe(publish_routing: Callable[..., int], make_user: MakeUser) -> tuple[Account, Account]:
    """Ben is on call; Chloe is a counselor the line does not offer texts to now."""
    publish_routing(lambda document: around_the_clock(document, on_call=("ben-carter",)))
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    return ben, make_user(COUNSELOR, "chloe", responder_id="chloe-nguyen")


def the_conversation(app: Flask) -> int:
    with app.app_context():
        return db.session.scalars(select(Conversation.id)).one()


def gone(client: FlaskClient, conversation_id: int) -> str:
    answer = client.get(f"/console/me/texts/{conversation_id}.json", headers={"X-Console-Poll": "1"}).get_json()
    assert answer["lines"] == []
    return str(answer["gone"])


def test_only_the_counselor_offered_a_conversation_learns_that_its_texter_texted_stop(
    app: Flask, client: FlaskClient, texting: TextingPhone, ben_and_chloe: tuple[Account, Account]
) -> None:
    ben, chloe = ben_and_chloe
    texting.send(TEXTER, WORDS)  # offered to Ben
    texting.send(TEXTER, "STOP")
    conversation_id = the_conversation(app)

    sign_in(client, chloe)
    assert gone(client, conversation_id) == f"#{conversation_id} is not one of your conversations."
    token = csrf_token(client, "/console/me")
    refused = client.post(
        f"/console/me/texts/{conversation_id}/reply",
        data={"csrf_token": token, "key": "reply-key-000000000001", "body": "hello?"},
    )
    refused_page = refused.get_data(as_text=True)
    assert refused.status_code == 409 and f"#{conversation_id} is not one of your conversations." in refused_page
    assert "STOP" not in refused_page and "hello?" in refused_page  # her words come back to copy

    client.post("/console/sign-out", data={"csrf_token": csrf_token(client, "/console/me")})
    sign_in(client, ben)
    assert gone(client, conversation_id) == (
        f"#{conversation_id} is closed: the texter texted STOP, so the line cannot text them any more."
    )


def test_a_counselor_never_offered_a_conversation_is_not_told_another_counselor_took_it(
    app: Flask, client: FlaskClient, texting: TextingPhone, ben_and_chloe: tuple[Account, Account]
) -> None:
    _ben, chloe = ben_and_chloe
    texting.send(TEXTER, WORDS)
    conversation_id = the_conversation(app)
    texting.send(BEN, f"YES {conversation_id}")
    sign_in(client, chloe)

    token = csrf_token(client, "/console/me")
    taken = client.post(f"/console/me/texts/{conversation_id}/take", data={"key": "take-key-0000000000001",
                                                                          "csrf_token": token})  # fmt: skip
    ended = client.post(f"/console/me/texts/{conversation_id}/end", data={"key": "end-key-00000000000001",
                                                                         "csrf_token": token})  # fmt: skip

    for response in (taken, ended):
        page = response.get_data(as_text=True)
        assert response.status_code == 409
        assert f"#{conversation_id} is not one of your conversations." in page
        assert "another counselor" not in page and "panic" not in page
    assert gone(client, conversation_id) == f"#{conversation_id} is not one of your conversations."
