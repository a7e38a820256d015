"""A texter's opt-out and opt-in follow the order they sent them in, as Twilio's own block does:
the latest by the time it was sent wins. News of an opt-out older than their latest START (a
repeated or late 21610 status callback of a text sent before it) changes nothing; a 21610 for
a text sent after it still opts them out. (Kept texts: ``tests/reliability/
test_texts_kept_through_outage.py``.)"""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation, Texter
from tests.conftest import TEST_AUTH_TOKEN, TextingPhone
from tests.rota import BEN
from twilio_fake.rest_api import FakeTwilio, WebhookLogEntry
from twilio_fake.signing import signed_headers

TEXTER = "+13125550177"
STARTED = "You will get our texts again. Text us any time you need to talk."


def opted_out(app: Flask) -> bool:
    with app.app_context():
        return db.session.scalars(select(Texter)).one().opted_out


def refused_callbacks(fake: FakeTwilio) -> list[WebhookLogEntry]:
    return [entry for entry in fake.webhooks() if entry.params.get("ErrorCode") == "21610"]


def post_again(texting: TextingPhone, entry: WebhookLogEntry) -> None:
    """Twilio delivers this callback again (a retry, or the same failure on the other URL)."""
    headers = signed_headers(TEST_AUTH_TOKEN, entry.url, entry.params, voice=False)
    assert texting.session.post(entry.url, data=entry.params, headers=headers, timeout=15).status_code == 200


@pytest.mark.usefixtures("wednesday_evening")
def test_a_21610_callback_repeated_after_the_texter_sent_start_does_not_opt_them_out_again(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    fake.opt_out(TEXTER)  # blocked at Twilio: the line's reply fails with 21610
    texting.send(TEXTER, "I want to kill myself")
    failed = refused_callbacks(fake)
    assert failed and opted_out(app)
    fake.receive_keyword(TEXTER, "START")
    assert texting.send(TEXTER, "START") == [STARTED]

    for entry in failed:  # a TwiML reply's failure comes twice by design; either may come late
        post_again(texting, entry)

    assert not opted_out(app), "a 21610 for a text sent before their START opted them out again"
    with app.app_context():
        tag = db.session.scalars(select(Conversation.id)).one()
    texting.send(BEN, f"YES {tag}")
    texting.send(BEN, f"#{tag} I'm here. What's happening?")
    assert "I'm here. What's happening?" in texting.inbox(TEXTER)  # the line still reaches them


@pytest.mark.usefixtures("wednesday_evening")
def test_a_21610_for_a_text_sent_after_the_texters_start_still_opts_them_out(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    texting.send(TEXTER, "STOP")
    assert texting.send(TEXTER, "START") == [STARTED]
    fake.opt_out(TEXTER)  # blocked again since, with their carrier say: the line hears it as 21610

    texting.send(TEXTER, "I want to kill myself")

    assert refused_callbacks(fake)
    assert opted_out(app)


@pytest.mark.usefixtures("wednesday_evening")
def test_a_repeated_21610_callback_is_no_news_even_when_the_time_of_their_start_is_not_known(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    """A texter whose START came before ``opt_changed_at`` existed: only a callback that moves
    its text's status is news."""
    fake.opt_out(TEXTER)
    texting.send(TEXTER, "I want to kill myself")
    failed = refused_callbacks(fake)
    fake.receive_keyword(TEXTER, "START")
    assert texting.send(TEXTER, "START") == [STARTED]
    with app.app_context():
        db.session.scalars(select(Texter)).one().opt_changed_at = None
        db.session.commit()

    for entry in failed:
        post_again(texting, entry)

    assert not opted_out(app)
