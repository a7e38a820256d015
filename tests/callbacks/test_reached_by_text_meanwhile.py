"""A person who asked to be called back and then texted the line, and whose text conversation
a counselor took, is not called as well: the callback is done (``called_in``), as when a
counselor has them on a later call. Before, only calls counted: the line rang a counselor, then
phoned someone already talking with another counselor by text."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from callbacks import requests as requests_module
from crisisline.db import db
from crisisline.models import Conversation
from sms import texting as sms_texting
from sms.conversations import RETRY_AFTER
from sms.views import FAILSAFE_TEXT
from tests.callbacks.test_callbacks import (
    BEN,
    CALLER,
    ask_for_callback,
    callbacks,
    contacts,
    responder_legs,
    run_contact,
)
from tests.conftest import TextingPhone
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio


def test_a_callback_whose_person_a_counselor_has_taken_by_text_since_is_done_without_a_call(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, rota: Callable[..., None]
) -> None:
    rota(on_call=("ben-carter",))
    ask_for_callback(phone)
    texting.send(CALLER, "I want to kill myself")
    with app.app_context():
        tag = db.session.scalars(select(Conversation.id)).one()
    texting.send(BEN, f"YES {tag}")
    legs_before = len(responder_legs(fake))

    (attempt,) = contacts(app, "callback")
    assert run_contact(app, attempt) == "not_needed"

    assert len(responder_legs(fake)) == legs_before  # nobody rung to call them
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("canceled", "called_in")


def test_a_text_nobody_has_taken_yet_leaves_the_callback_standing(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, rota: Callable[..., None]
) -> None:
    rota(on_call=("ben-carter",))
    ask_for_callback(phone)
    texting.send(CALLER, "I want to kill myself")  # offered to Ben, not taken

    (attempt,) = contacts(app, "callback")
    assert run_contact(app, attempt) == "sent"

    (callback,) = callbacks(app)
    assert callback.state == "waiting"


def test_a_callback_asked_for_by_call_is_made_though_a_counselors_yes_crossed_it_on_that_conversation(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, rota: Callable[..., None]
) -> None:
    """Found by review: a YES landing between the CALL's callback and its close stamped the
    conversation taken after the promise, and the callback was cancelled as ``called_in``
    though the conversation closed: the person got neither."""
    rota(on_call=("ben-carter",))
    texting.send(CALLER, "I want to kill myself")
    texting.send(CALLER, "CALL")
    with app.app_context():  # as the crossing YES leaves it: taken a moment after the promise
        (conversation,) = db.session.scalars(select(Conversation)).all()
        conversation.assigned_at = datetime.now(UTC) + timedelta(seconds=1)
        db.session.commit()

    (attempt,) = contacts(app, "callback")
    assert run_contact(app, attempt) == "sent"

    (callback,) = callbacks(app)
    assert (callback.origin, callback.state) == ("text", "waiting")


def test_a_callback_whose_call_handling_died_before_the_close_is_done_once_a_counselor_has_that_conversation(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, rota: Callable[..., None]
) -> None:
    """Found by review: the CALL's own conversation, left open when its handling died after
    storing the callback and then taken by a counselor, has them by text: no call as well."""
    rota(on_call=("ben-carter",))
    texting.send(CALLER, "I want to kill myself")
    texting.send(CALLER, "CALL")
    with app.app_context():  # as a handling that died before the close, then Ben's YES, leave it
        (conversation,) = db.session.scalars(select(Conversation)).all()
        conversation.state, conversation.close_reason, conversation.closed_at = "active", None, None
        conversation.counselor_id = "ben-carter"
        conversation.assigned_at = datetime.now(UTC) + timedelta(seconds=1)
        db.session.commit()

    (attempt,) = contacts(app, "callback")
    assert run_contact(app, attempt) == "not_needed"

    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("canceled", "called_in")


def crossed_by_a_yes(
    app: Flask, fake: FakeTwilio, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], list[str]]:
    """Their CALL, handled as Ben's YES for their conversation lands after the CALL's handling
    read the conversation (still offered) and before it acts on it. Returns the CALL's replies."""
    with app.app_context():
        tag = db.session.scalars(select(Conversation.id).order_by(Conversation.id.desc())).first()
    bens_phone = TextingPhone(texting.url.removesuffix("/sms/incoming"), fake)
    call_me_back = sms_texting._call_me_back

    def crossed_by_bens_yes(*args: Any) -> None:
        bens_phone.send(BEN, f"YES {tag}")
        call_me_back(*args)

    def send_call() -> list[str]:
        monkeypatch.setattr(sms_texting, "_call_me_back", crossed_by_bens_yes)
        try:
            return texting.send(CALLER, "CALL")
        finally:
            monkeypatch.setattr(sms_texting, "_call_me_back", call_me_back)

    return send_call


def test_a_call_request_crossed_by_a_yes_that_landed_first_leaves_the_texter_with_that_counselor(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, rota: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Before, the CALL closed the conversation Ben had just taken: he lost the person he was
    about to text, and they were told to wait for a call. Now his YES wins: the conversation
    stays his, he reads their CALL, and no callback is made (one would cross him, even after
    he ends the conversation)."""
    rota(on_call=("ben-carter",))
    texting.send(CALLER, "I want to kill myself")

    replies = crossed_by_a_yes(app, fake, texting, monkeypatch)()

    assert not any("call you" in reply for reply in replies), replies
    with app.app_context():
        conversation = db.session.scalars(select(Conversation)).one()
        assert (conversation.state, conversation.counselor_id) == ("active", "ben-carter")
    assert texting.inbox(BEN).count(f"#{conversation.tag}: CALL") == 1, texting.inbox(BEN)
    assert callbacks(app) == [] and contacts(app, "callback") == []


def test_a_call_request_crossed_by_a_yes_leaves_their_earlier_callback_to_end_as_called_in(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, rota: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Found by review: a CALL that joined the callback they had asked for on a call moved its
    promise past Ben's YES, and the line then rang a counselor to phone someone Ben was texting."""
    rota(on_call=("ben-carter",))
    ask_for_callback(phone)
    texting.send(CALLER, "I want to kill myself")
    crossed_by_a_yes(app, fake, texting, monkeypatch)()
    legs_before = len(responder_legs(fake))

    (attempt,) = contacts(app, "callback")
    assert run_contact(app, attempt) == "not_needed"

    assert len(responder_legs(fake)) == legs_before
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("canceled", "called_in")


def test_a_call_whose_callback_could_not_be_stored_keeps_its_conversation_for_the_clocks_retry(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, rota: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Found by review: the CALL now closes the conversation before the callback is stored; a
    database error in between left it closed, and the retry started them over at the menus,
    in the default language and at the back of the line. It is opened again as it was."""
    rota(on_call=())
    texting.send(CALLER, "2")  # Spanish at the language menu
    texting.send(CALLER, "quiero morir")
    with app.app_context():
        before = db.session.scalars(select(Conversation)).one()
        queued_at, language = before.queued_at, before.language

    def database_blip(*_args: Any) -> bool:
        raise OperationalError("INSERT INTO callbacks", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(requests_module, "request_from_text", database_blip)
    assert texting.send(CALLER, "LLAMAR") == [FAILSAFE_TEXT]
    with app.app_context():
        kept = db.session.scalars(select(Conversation)).one()
        assert (kept.state, kept.language, kept.queued_at) == ("queued", language, queued_at)
    monkeypatch.undo()  # the database is back
    wednesday_evening.shift(RETRY_AFTER + timedelta(seconds=1))
    clock_tick()

    (callback,) = callbacks(app)
    with app.app_context():
        conversations = db.session.scalars(select(Conversation)).all()
    assert [c.state for c in conversations] == ["closed"]  # the same conversation, no new one
    assert (callback.conversation_id, callback.language, callback.queue_since) == (
        conversations[0].id, "es", queued_at,
    )  # fmt: skip
    assert any(text.startswith("Le llamaremos") for text in texting.inbox(CALLER)), texting.inbox(CALLER)
