"""A texter's words never go to the phone of a counselor whose console account was closed,
even when the closing's hand-back has not run (a text handled while it ran, or a closing that
died before it): the conversation goes back to the queue, and the next counselor to take it
gets those words with the rest."""

from __future__ import annotations

import pytest
from flask import Flask

from crisisline.db import db
from crisisline.models import Conversation
from line_queue import responders
from tests.conftest import TextingPhone
from tests.rota import BEN, DIEGO

TEXTER = "+13125550178"


def offered_tag(texting: TextingPhone, number: str) -> str:
    offers = [text for text in texting.inbox(number) if text.startswith("New text #")]
    assert offers, texting.inbox(number)
    return offers[-1].split("#", 1)[1].split()[0].rstrip(":.")


def counselor_of(app: Flask, tag: str) -> str | None:
    with app.app_context():
        return db.session.get_one(Conversation, int(tag)).counselor_id


def stop_ringing_without_hand_back(app: Flask, responder_id: str) -> None:
    """The closing's own unit of work, committed, and nothing handed back after it."""
    with app.app_context():
        responders.stop_ringing(responder_id)
        db.session.commit()


@pytest.mark.usefixtures("wednesday_evening")
def test_a_texters_words_to_a_closed_accounts_counselor_go_to_the_next_counselor(
    app: Flask, texting: TextingPhone
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = offered_tag(texting, BEN)
    texting.send(BEN, f"YES {tag}")
    stop_ringing_without_hand_back(app, "ben-carter")

    texting.send(TEXTER, "I have the pills in front of me")

    assert not any("pills in front of me" in text for text in texting.inbox(BEN))
    assert counselor_of(app, tag) is None
    assert offered_tag(texting, DIEGO) == tag
    texting.send(DIEGO, f"YES {tag}")
    assert counselor_of(app, tag) == "diego-morales"
    assert any("pills in front of me" in text for text in texting.inbox(DIEGO))


@pytest.mark.usefixtures("wednesday_evening")
def test_a_texters_words_still_reach_an_open_accounts_counselor(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = offered_tag(texting, BEN)
    texting.send(BEN, f"YES {tag}")

    texting.send(TEXTER, "I have the pills in front of me")

    assert any("pills in front of me" in text for text in texting.inbox(BEN))
    assert counselor_of(app, tag) == "ben-carter"
