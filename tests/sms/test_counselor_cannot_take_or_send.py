"""When a counselor cannot take a texter, or their text to the line sends nothing, they are told
so and the texter is handed on at once: a phone that blocks the line's texts, a YES at the
conversation limit, a bare "#12"; and a long text whose first part failed is never sent with
that part missing (found by an audit)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
import yaml
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation, ConversationOffer, Message, ResponderState
from crisisline.settings import DEFAULT_ROUTING_FILE
from crisisline.sms_segments import split_for_sms
from routing.validation import validate_text
from sms import outbox
from tests.conftest import LINE_NUMBER, TextingPhone
from tests.rota import BEN, DIEGO
from twilio_fake.rest_api import FakeTwilio

TEXTER = "+13125550177"
OTHER_TEXTER = "+13125550178"


def conversations(app: Flask) -> list[Conversation]:
    with app.app_context():
        return list(db.session.scalars(select(Conversation).order_by(Conversation.id)))


def offers_of(app: Flask, conversation_id: int) -> list[tuple[str, str]]:
    with app.app_context():
        return [
            (offer.responder_id, offer.state)
            for offer in db.session.scalars(
                select(ConversationOffer)
                .where(ConversationOffer.conversation_id == conversation_id)
                .order_by(ConversationOffer.id)
            )
        ]


# --- a phone that blocks the line's texts ----------------------------------------------------


def test_a_texter_offered_to_a_phone_that_blocks_the_line_is_offered_to_the_next_counselor_on_the_next_sweep(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, clock_tick: Callable[[], Any],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    """Ben was paused, but his offer (never read: Twilio refused it, 21610) ran its full two
    minutes while the texter waited for nobody."""
    fake.opt_out(BEN)
    texting.send(TEXTER, "I want to kill myself")  # the offer text to Ben fails with 21610
    (conversation,) = conversations(app)
    assert offers_of(app, conversation.id) == [("ben-carter", "open")]
    with app.app_context():
        state = db.session.get(ResponderState, "ben-carter")
        assert state is not None and (state.paused, state.paused_reason) == (True, "sms_blocked")

    wednesday_evening.shift(timedelta(seconds=5))  # far within the offer's two minutes
    clock_tick()

    assert offers_of(app, conversation.id) == [("ben-carter", "expired"), ("diego-morales", "open")]
    assert texting.inbox(DIEGO)[-1].startswith(f"New text #{conversation.id}")


# --- YES at the conversation limit -----------------------------------------------------------


@pytest.mark.usefixtures("wednesday_evening")
def test_a_yes_at_the_conversation_limit_says_so_and_the_texter_is_offered_to_the_next_counselor(
    app: Flask, texting: TextingPhone, publish_routing: Callable[..., int]
) -> None:
    publish_routing(lambda document: document["sms"].update(max_conversations_per_counselor=1))
    texting.send(TEXTER, "I want to kill myself")
    first = conversations(app)[0].id
    assert offers_of(app, first) == [("ben-carter", "open")]
    texting.send(OTHER_TEXTER, "I have thoughts of suicide")
    second = conversations(app)[1].id
    texting.send(BEN, f"YES {second}")  # Ben takes the other texter: now at his limit of 1
    assert conversations(app)[1].counselor_id == "ben-carter"

    answer = texting.send(BEN, f"YES {first}")

    assert answer == [
        f"Not taken: you are at your limit of open conversations (1). #{first} goes to someone else. To take more,"
        " END or PASS one first."
    ]
    assert offers_of(app, first)[0] == ("ben-carter", "expired")
    assert offers_of(app, first)[-1] == ("diego-morales", "open")
    assert any(text.startswith(f"New text #{first}") for text in texting.inbox(DIEGO))
    texting.send(DIEGO, f"YES {first}")
    assert conversations(app)[0].counselor_id == "diego-morales"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_yes_to_a_conversation_someone_else_took_still_says_it_is_taken(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversations(app)[0].id
    texting.send(DIEGO, f"YES {tag}")

    assert texting.send(BEN, f"YES {tag}") == [f"#{tag} is already taken or closed. Thank you."]
    assert conversations(app)[0].counselor_id == "diego-morales"


# --- a tag with no words ---------------------------------------------------------------------


@pytest.mark.usefixtures("wednesday_evening")
def test_a_tag_with_no_words_is_answered_that_nothing_was_sent(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversations(app)[0].id
    texting.send(BEN, f"YES {tag}")
    to_texter = sum(1 for m in fake.messages.values() if m.to == TEXTER)

    answer = texting.send(BEN, f"#{tag}")

    assert answer == [f"Not sent: nothing came after #{tag}. Write your words after the tag, like #{tag} I'm here."]
    assert sum(1 for m in fake.messages.values() if m.to == TEXTER) == to_texter


@pytest.mark.usefixtures("wednesday_evening")
def test_a_bare_tag_of_a_conversation_not_theirs_is_answered_as_not_theirs(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversations(app)[0].id
    texting.send(DIEGO, f"YES {tag}")

    assert texting.send(BEN, f"#{tag}") == [f"#{tag} is already taken or closed. Thank you."]


# --- a long text whose first part failed -----------------------------------------------------

LONG = " ".join(f"word{i}" for i in range(400))  # over 1600 characters: two parts


def test_a_long_text_sent_again_never_sends_its_later_parts_when_its_first_failed_for_good(
    app: Flask, fake: FakeTwilio
) -> None:
    parts = split_for_sms(LONG)
    assert len(parts) == 2
    fake.inject_fault("POST", r"/Messages\.json$", status=400, code=21211, message="Invalid 'To' Phone Number")

    with app.app_context():
        first_run = outbox.send_text(key="long:1", to_number=DIEGO, from_number=LINE_NUMBER, body=LONG,
                                     party="counselor")  # fmt: skip
        again = outbox.send_text(key="long:1", to_number=DIEGO, from_number=LINE_NUMBER, body=LONG,
                                 party="counselor")  # fmt: skip
        rows = [(m.idempotency_key, m.status) for m in db.session.scalars(select(Message).order_by(Message.id))]

    assert (first_run, again) == (False, False)
    assert rows == [("long:1", "failed")]
    assert not [m for m in fake.messages.values() if m.to == DIEGO]


def test_a_long_text_sent_again_after_it_went_out_sends_nothing_more(app: Flask, fake: FakeTwilio) -> None:
    with app.app_context():
        first_run = outbox.send_text(key="long:2", to_number=DIEGO, from_number=LINE_NUMBER, body=LONG,
                                     party="counselor")  # fmt: skip
        again = outbox.send_text(key="long:2", to_number=DIEGO, from_number=LINE_NUMBER, body=LONG,
                                 party="counselor")  # fmt: skip

    assert (first_run, again) == (True, False)
    assert [m.body for m in fake.messages.values() if m.to == DIEGO] == split_for_sms(LONG)


# --- older configs ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sms_at_limit", "sms_empty_reply"])
def test_a_config_written_before_the_new_counselor_prompts_stays_valid_with_an_english_stand_in(key: str) -> None:
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    example = raw["staff_prompts"].pop(key)

    document, problems = validate_text(yaml.safe_dump(raw, allow_unicode=True))

    assert document is not None and [str(p) for p in problems] == []
    assert document.staff_prompt(key, tag=12, count=3) == example.format(tag=12, count=3)
