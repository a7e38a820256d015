"""A texter's opt-out and opt-in follow the order they sent them in, as Twilio's own block does:
the latest by the time it was sent wins. News of an opt-out older than their latest START (a
repeated or late 21610 status callback of a text sent before it) changes nothing; a 21610 for
a text sent after it still opts them out. (Kept texts: ``tests/reliability/
test_texts_kept_through_outage.py``.)"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

import sms.texting
from crisisline.db import db
from crisisline.models import Conversation, Texter
from sms import outbox
from tests.conftest import TEST_AUTH_TOKEN, TextingPhone
from tests.rota import BEN
from tests.sms.test_texts_twilio_refuses_for_now import ben_holds_a_texter
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


def recorded_before_the_stop_is_handled(monkeypatch: pytest.MonkeyPatch, change: Callable[..., bool]) -> None:
    """As the STOP's handling opts them out, another process has just committed an opt change
    ``change`` sent a second after the STOP (a START handled first, a 21610 callback)."""
    mark_opted_out = sms.texting.mark_opted_out

    def with_a_later_change(texter: Texter, *, at: datetime) -> bool:
        assert change(texter, at=at + timedelta(seconds=1))
        db.session.commit()
        return mark_opted_out(texter, at=at)

    monkeypatch.setattr(sms.texting, "mark_opted_out", with_a_later_change)


def ben_holds(app: Flask, tag: int) -> bool:
    with app.app_context():
        conversation = db.session.get(Conversation, tag)
        assert conversation is not None
        return (conversation.state, conversation.counselor_id) == ("active", "ben-carter")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_stop_handled_after_the_start_sent_after_it_leaves_their_conversation_open(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their latest word is START: they are the line's to answer, and Ben still has them."""
    tag = ben_holds_a_texter(app, texting)
    recorded_before_the_stop_is_handled(monkeypatch, outbox.mark_opted_in)

    texting.send(TEXTER, "STOP")

    assert not opted_out(app)
    assert ben_holds(app, tag)


@pytest.mark.usefixtures("wednesday_evening")
def test_a_stop_handled_after_a_21610_for_a_text_sent_after_it_closes_their_conversation_at_once(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: Twilio blocks the number at their STOP, so a text to them sent a moment
    later fails with 21610, and its callback can be recorded before the STOP is handled. The
    STOP then found a later opt change and did nothing: Ben kept the conversation of someone
    whose last word was STOP (until the next sweep), and their check-ins were not canceled."""
    tag = ben_holds_a_texter(app, texting)
    recorded_before_the_stop_is_handled(monkeypatch, outbox.mark_opted_out)

    texting.send(TEXTER, "STOP")

    assert opted_out(app)
    assert not ben_holds(app, tag)
    assert f"#{tag} was closed (the texter stopped or went quiet)." in texting.inbox(BEN)
