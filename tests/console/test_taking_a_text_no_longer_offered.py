"""Taking a text from the desk after its offer closed: another counselor took it, it was
handed on, or the texter left. A page says so (409, nothing of the conversation on it) with
a way back to the desk; an id no conversation has stays a 404, and one the counselor holds
already (taken from their phone, or the form sent twice) simply opens it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from console.models import COUNSELOR
from crisisline.db import db
from crisisline.models import Conversation, ConversationOffer, utcnow
from routing.document import Responder, RoutingDocument
from sms import staff
from tests.conftest import TextingPhone
from tests.console.conftest import MakeUser, csrf_token, sign_in
from tests.console.test_inbox_and_wrap_up import offered_tag
from tests.console.test_only_the_holder_ends_or_replies import holder
from tests.rota import ANA, BEN, around_the_clock

TEXTER = "+13125550177"
WORDS = "I keep having panic attacks and I can't breathe"


@pytest.fixture
def offered_to_ana(
    client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int], make_user: MakeUser
) -> str:
    """A text offered to Ana, who is signed in at her desk; Ben is a counselor too."""
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz",)))
    make_user(COUNSELOR, "ben", responder_id="ben-carter")
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, WORDS)
    return offered_tag(texting)


def take(client: FlaskClient, tag: str | int, key: str = "take-key-0000000000001") -> Any:
    token = csrf_token(client, "/console/me")
    return client.post(f"/console/me/texts/{tag}/take", data={"key": key, "csrf_token": token})


def not_taken_page(response: Any, tag: str) -> str:
    page: str = response.get_data(as_text=True)
    assert response.status_code == 409, (response.status_code, page)
    assert f"#{tag} was not taken" in page
    assert 'href="/console/me">Back to my desk</a>' in page
    assert "panic attacks" not in page  # nothing the texter wrote
    return page


def test_taking_a_text_another_counselor_took_first_says_so_but_an_unknown_one_is_not_found(
    client: FlaskClient, texting: TextingPhone, offered_to_ana: str
) -> None:
    tag = offered_to_ana
    texting.send(BEN, f"YES {tag}")

    page = not_taken_page(take(client, tag), tag)

    assert f"#{tag} was taken by another counselor." in page
    assert take(client, int(tag) + 1000, key="take-key-0000000000002").status_code == 404


def test_taking_a_text_whose_texter_left_says_it_is_no_longer_waiting(
    app: Flask, client: FlaskClient, texting: TextingPhone, offered_to_ana: str
) -> None:
    tag = offered_to_ana
    texting.send(TEXTER, "STOP")

    page = not_taken_page(take(client, tag), tag)

    assert f"#{tag} is no longer waiting: it is closed: the texter texted STOP" in page
    assert holder(app, tag) == ("closed", None)


def test_taking_a_text_handed_on_to_the_next_counselor_says_so(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz", "ben-carter")))
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, WORDS)
    tag = offered_tag(texting)
    with app.app_context():  # Ana let the offer run out: the sweep offers it to Ben
        db.session.execute(update(ConversationOffer).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    clock_tick()
    assert any(text.startswith(f"New text #{tag}") for text in texting.inbox(BEN))

    page = not_taken_page(take(client, tag), tag)

    assert f"#{tag} is no longer offered to you: it was handed on" in page
    assert holder(app, tag) == ("offered", None)


def test_a_take_read_just_before_another_counselors_yes_says_so(
    app: Flask, client: FlaskClient, texting: TextingPhone, offered_to_ana: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offer was open when the page's take was read; Ben's YES won the claim meanwhile."""
    tag, claim = offered_to_ana, staff.convo.take

    def ben_first(conversation: Conversation, responder: Responder, document: RoutingDocument) -> bool:
        ben = document.responder("ben-carter")
        assert ben is not None and claim(conversation, ben, document)
        return claim(conversation, responder, document)

    monkeypatch.setattr(staff.convo, "take", ben_first)

    page = not_taken_page(take(client, tag), tag)

    assert f"#{tag} was taken by another counselor." in page
    assert holder(app, tag) == ("active", "ben-carter")


def test_taking_a_text_already_taken_from_her_own_phone_opens_it(
    client: FlaskClient, texting: TextingPhone, offered_to_ana: str
) -> None:
    tag = offered_to_ana
    texting.send(ANA, f"YES {tag}")

    taken = take(client, tag)

    assert taken.status_code == 302 and taken.headers["Location"].endswith(f"/console/me#text-{tag}")
    assert f"#{tag} is yours already." in client.get("/console/me").get_data(as_text=True)
