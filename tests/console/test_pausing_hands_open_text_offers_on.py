"""A counselor who pauses ("Pause me" at the desk, or texting OFF) no longer keeps a texter
waiting on an offer they will not take: every text offer open to them goes to the next
counselor at once. The conversations they hold stay theirs, and the desk says which ("You
still hold #12"). Found by review: the offer stayed open on the paused phone until its two
minutes ran out, while another counselor was free."""

from __future__ import annotations

import html
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.models import COUNSELOR
from crisisline.db import db
from crisisline.models import Conversation, ConversationOffer
from tests.conftest import TextingPhone
from tests.console.conftest import Account, MakeUser, csrf_token, sign_in
from tests.rota import ANA, BEN, around_the_clock

TEXTER = "+13125550177"
WORDS = "I keep having panic attacks and I can't breathe"


def ana_and_ben(publish_routing: Callable[..., int], make_user: MakeUser) -> dict[str, Account]:
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz", "ben-carter")))
    return {ANA: make_user(COUNSELOR, "ana"), BEN: make_user(COUNSELOR, "ben", responder_id="ben-carter")}


def offers(texting: TextingPhone, number: str) -> list[str]:
    return [text for text in texting.inbox(number) if text.startswith("New text #")]


def offered(texting: TextingPhone) -> tuple[str, str, int]:
    """(the phone the text was offered to, the other one, the conversation)."""
    ((first, offer),) = [(number, text) for number in (ANA, BEN) for text in offers(texting, number)]
    return first, (BEN if first == ANA else ANA), int(offer.split("#")[1].split(":")[0])


def open_offers(app: Flask, conversation_id: int) -> list[str]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(ConversationOffer.responder_id).where(
                    ConversationOffer.conversation_id == conversation_id, ConversationOffer.state == "open"
                )
            )
        )


def pause_at_the_desk(app: Flask, client: FlaskClient) -> str:
    token = csrf_token(client, "/console/me")
    paused = client.post("/console/me/availability", data={"available": "0", "csrf_token": token})
    assert paused.status_code == 302
    app.extensions["crisisline.background"].wait_idle(timeout=30)  # the offer the hand-on started
    return html.unescape(client.get("/console/me").get_data(as_text=True))


def test_pausing_at_the_desk_hands_an_open_text_offer_to_the_next_counselor_at_once(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    accounts = ana_and_ben(publish_routing, make_user)
    texting.send(TEXTER, WORDS)
    first, other, conversation_id = offered(texting)
    sign_in(client, accounts[first])

    page = pause_at_the_desk(app, client)

    assert open_offers(app, conversation_id) == [accounts[other].responder_id]
    assert len(offers(texting, other)) == 1
    assert f"The text offered to you (#{conversation_id}) went to the next counselor." in page
    assert "You still hold" not in page


def test_texting_off_hands_an_open_text_offer_to_the_next_counselor_at_once(
    app: Flask, texting: TextingPhone, publish_routing: Callable[..., int], make_user: MakeUser
) -> None:
    accounts = ana_and_ben(publish_routing, make_user)
    texting.send(TEXTER, WORDS)
    first, other, conversation_id = offered(texting)

    texting.send(first, "OFF")
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert open_offers(app, conversation_id) == [accounts[other].responder_id]
    assert len(offers(texting, other)) == 1


def test_pausing_leaves_the_conversations_a_counselor_holds_with_her_and_the_desk_names_them(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    accounts = ana_and_ben(publish_routing, make_user)
    texting.send(TEXTER, WORDS)
    first, _other, conversation_id = offered(texting)
    texting.send(first, f"YES {conversation_id}")
    sign_in(client, accounts[first])

    page = pause_at_the_desk(app, client)

    assert f"You still hold #{conversation_id}: it stays yours until you end or pass it." in page
    assert page.count("You still hold") == 2  # the message after pausing, and the switch while paused
    with app.app_context():
        conversation = db.session.get(Conversation, conversation_id)
        assert conversation is not None
        assert (conversation.state, conversation.counselor_id) == ("active", accounts[first].responder_id)
