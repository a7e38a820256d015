"""A counselor's text reaches the texter they meant, or nobody (found by a review of the texts).

Before:
- an untagged reply sent just after taking a second conversation went to the first texter:
  who "wrote last" was judged by when each texter wrote, though the conversation just taken
  brought its older words to the counselor's phone that very moment;
- a command with one word more ("End 1 thanks", "Yes, 2") went to the texter as words, and
  nothing was done;
- an untagged reply kept in Redis through a database outage was judged by when the clock
  stored it, so it reached a texter the counselor took after writing it;
- a counselor's picture was dropped without a word to them.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation
from line_queue.responders import set_paused
from routing.store import active_routing
from sms import conversations as convo
from sms.inbound import receive_kept
from sms.unstored import KeptText
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TextingPhone
from tests.rota import BEN
from twilio_fake.signing import sms_params

TEXTER = "+13125550177"
OTHER_TEXTER = "+13125550178"
GREETING = "Hi, I'm Ben. I'm here. Are you safe right now?"


def conversation_ids(app: Flask) -> list[int]:
    with app.app_context():
        return list(db.session.scalars(select(Conversation.id).order_by(Conversation.id)))


def conversation_states(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Conversation.state).order_by(Conversation.id)))


def test_an_untagged_reply_just_after_taking_a_second_conversation_reaches_neither_texter(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    first = conversation_ids(app)[0]
    texting.send(BEN, f"YES {first}")
    texting.send(OTHER_TEXTER, "I want to die")  # waits; Ben takes it minutes later
    second = conversation_ids(app)[1]
    wednesday_evening.shift(timedelta(minutes=3))
    texting.send(TEXTER, "I have the pills in my hand")
    wednesday_evening.shift(timedelta(seconds=70))
    texting.send(BEN, f"YES {second}")  # the waiting texter's words reach his phone now
    assert f"#{second}: I want to die" in texting.inbox(BEN)

    answer = texting.send(BEN, GREETING)  # untagged: meant for the texter just taken

    assert GREETING not in texting.inbox(TEXTER)
    assert GREETING not in texting.inbox(OTHER_TEXTER)
    assert "Start your reply with the tag" in " ".join(answer)


def test_an_untagged_reply_a_while_after_taking_a_conversation_goes_to_the_one_whose_words_came_last(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    first = conversation_ids(app)[0]
    texting.send(BEN, f"YES {first}")
    texting.send(OTHER_TEXTER, "I want to die")
    second = conversation_ids(app)[1]
    wednesday_evening.shift(timedelta(minutes=3))
    texting.send(TEXTER, "I have the pills in my hand")
    wednesday_evening.shift(timedelta(minutes=3))
    texting.send(BEN, f"YES {second}")
    wednesday_evening.shift(timedelta(minutes=3))

    texting.send(BEN, GREETING)  # nothing new since he took #2: it answers #2

    assert GREETING in texting.inbox(OTHER_TEXTER)
    assert GREETING not in texting.inbox(TEXTER)


@pytest.mark.usefixtures("wednesday_evening")
@pytest.mark.parametrize("with_more", ["End {tag} thanks", "END {tag}, thank you", "end #{tag} please"])
def test_end_with_words_after_it_is_neither_sent_to_the_texter_nor_done(
    app: Flask, texting: TextingPhone, with_more: str
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversation_ids(app)[0]
    texting.send(BEN, f"YES {tag}")
    text = with_more.format(tag=tag)

    answer = texting.send(BEN, text)

    assert text not in texting.inbox(TEXTER)
    assert conversation_states(app) == ["active"]
    assert "Not sent, and nothing done" in " ".join(answer)


@pytest.mark.usefixtures("wednesday_evening")
def test_yes_with_a_comma_to_a_new_offer_is_not_sent_to_the_texter_he_holds(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")
    first = conversation_ids(app)[0]
    texting.send(BEN, f"YES {first}")
    with app.app_context():
        set_paused("diego-morales", True, "self")  # so the next texter is offered to Ben
        db.session.commit()
    texting.send(OTHER_TEXTER, "I want to die")
    second = conversation_ids(app)[1]
    assert f"Reply YES {second} to take it." in " ".join(texting.inbox(BEN))

    answer = texting.send(BEN, f"Yes, {second}")

    assert f"Yes, {second}" not in texting.inbox(TEXTER)
    assert "write YES and the number alone" in " ".join(answer)


@pytest.mark.usefixtures("wednesday_evening")
@pytest.mark.parametrize(
    "words",
    ["Yesterday must have been hard. I'm listening.", "Yes, 24/7 someone is here for you.", "End 2023 was hard"],
)
def test_words_that_only_start_like_a_command_still_reach_the_texter(
    app: Flask, texting: TextingPhone, words: str
) -> None:
    """A number after YES or END that names no conversation of theirs is words (found by a
    review of the fix: "Yes, 24/7 someone is here for you" was refused)."""
    texting.send(TEXTER, "I want to kill myself")
    texting.send(BEN, f"YES {conversation_ids(app)[0]}")

    texting.send(BEN, words)

    assert words in texting.inbox(TEXTER)


def test_a_reply_kept_through_a_database_outage_never_reaches_a_texter_taken_after_it_was_written(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    texting.send(BEN, f"YES {conversation_ids(app)[0]}")
    with app.app_context():
        written_at = convo.now()
    # Ben's reply to his only texter arrives while the database refuses it: kept in Redis.
    kept = KeptText(sms_params(TEST_ACCOUNT_SID, BEN, LINE_NUMBER, "Please put the pills in another room"), written_at)
    wednesday_evening.shift(timedelta(minutes=3))  # the database is back; another texter writes
    texting.send(OTHER_TEXTER, "I want to end my life")
    texting.send(BEN, f"YES {conversation_ids(app)[1]}")
    texting.send(OTHER_TEXTER, "are you there")
    wednesday_evening.shift(timedelta(seconds=70))

    with app.app_context():  # the clock stores and handles the kept text
        active = active_routing()
        assert active is not None
        assert receive_kept(active.document, kept, line_number=LINE_NUMBER)

    assert not any("pills" in text for text in texting.inbox(OTHER_TEXTER))


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselors_picture_is_never_passed_on_and_they_are_told(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversation_ids(app)[0]
    texting.send(BEN, f"YES {tag}")
    before = list(texting.inbox(TEXTER))

    alone = texting.send(BEN, "", num_media=1)
    with_words = texting.send(BEN, f"#{tag} Here is the flyer I mentioned", num_media=1)

    assert texting.inbox(TEXTER) == [*before, "Here is the flyer I mentioned"]
    assert ["Your picture was not sent" in " ".join(answer) for answer in (alone, with_words)] == [True, True]
