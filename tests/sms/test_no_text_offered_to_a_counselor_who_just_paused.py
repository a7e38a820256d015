"""A text is never offered to a counselor whose pause committed after the queue chose them.
The queue reads who is free, then offers; a counselor who texts OFF (or pauses at the desk)
in between had their open offers handed on already, so an offer made after it would sit
unread on a paused phone until it expired (two minutes) while someone else was free. Found
by review: calls were safe (their claim reads ``paused`` in its UPDATE), texts were not."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation, ConversationOffer
from routing.store import active_routing
from sms.conversations import offer_conversation
from tests.conftest import TextingPhone
from tests.rota import ANA, BEN, around_the_clock

TEXTER = "+13125550178"
WORDS = "I keep having panic attacks and I can't breathe"


def offers_to(texting: TextingPhone, number: str) -> list[str]:
    return [text for text in texting.inbox(number) if text.startswith("New text #")]


def test_a_text_is_not_offered_to_a_counselor_whose_pause_committed_after_the_queue_chose_her(
    app: Flask, texting: TextingPhone, publish_routing: Callable[..., int]
) -> None:
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz", "ben-carter")))
    texting.send(BEN, "OFF")
    texting.send(ANA, "OFF")  # committed before the offer below: the queue had read her as free
    texting.send(TEXTER, WORDS)
    with app.app_context():
        conversation_id = db.session.scalars(select(Conversation.id)).one()
        active = active_routing()
        assert active is not None
        ana = active.document.responder("ana-ruiz")
        assert ana is not None

        offered = offer_conversation(conversation_id, [ana], active.document)

        assert offered == 0, "a text was offered to a counselor who had just paused"
        conversation = db.session.get(Conversation, conversation_id)
        assert conversation is not None and conversation.state == "queued"
        assert db.session.scalars(select(ConversationOffer)).all() == []
    assert offers_to(texting, ANA) == [], "the paused counselor was texted the offer"

    texting.send(BEN, "ON")  # someone free: the queue's next pass offers it to him
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert len(offers_to(texting, BEN)) == 1
    with app.app_context():
        ((responder_id, state),) = db.session.execute(
            select(ConversationOffer.responder_id, ConversationOffer.state)
        ).all()
        assert (responder_id, state) == ("ben-carter", "open")
        conversation = db.session.get(Conversation, conversation_id)
        assert conversation is not None and conversation.state == "offered"
    assert offers_to(texting, ANA) == []
