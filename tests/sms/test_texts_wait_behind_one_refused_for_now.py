"""A text Twilio refused for now waits for the minute's sweep (``RETRYING``); a later text to the
same person must not overtake it. Found by review: the counselor's next words, or the line's
next reply, went straight out over REST (or in the webhook's TwiML) while the first waited, so
the texter read "2" before "1" (for someone in crisis, "don't" and "do it" swap meaning). A
later text to that person now waits behind it, unsent, and the sweep sends both in order;
texts to anyone else go out as before."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import bindparam, select, update

from crisisline.db import db
from crisisline.models import Conversation, Message
from crisisline.settings import Settings
from sms import conversations as convo
from sms import outbox
from tests.conftest import TextingPhone
from tests.console.test_delivery_in_the_thread import plan_of
from tests.rota import BEN, DIEGO
from tests.sms.test_texts_twilio_refuses_for_now import MESSAGES, TEXTER, ben_holds_a_texter
from twilio_fake.rest_api import FakeTwilio

OTHER_TEXTER = "+13125550188"
FIRST = "Please don't. Put the pills down"
SECOND = "Now call 911 and tell them where you are"


def bodies_to(fake: FakeTwilio, number: str) -> list[str]:
    """What Twilio took for ``number``, in the order it took it."""
    return [m.body for m in fake.messages.values() if m.to == number]


def position(texts: list[str], words: str) -> int:
    (found,) = [index for index, text in enumerate(texts) if words in text]
    return found


def waiting_texts(app: Flask) -> list[tuple[str, int | None]]:
    """(key, error code) of each text left for the sweep, oldest first."""
    with app.app_context():
        return [(m.idempotency_key or "", m.error_code) for m in db.session.scalars(convo.refused_texts()).all()]


def test_a_counselors_next_words_wait_behind_their_words_twilio_refused_for_now_and_arrive_after_them(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    tag = ben_holds_a_texter(app, texting)
    refusal = fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)
    texting.send(BEN, f"#{tag} {FIRST}")  # refused for now: left for the sweep
    assert refusal.remaining == 0

    texting.send(BEN, f"#{tag} {SECOND}")  # Twilio would take it now: it must not go first

    assert not any(SECOND in text for text in bodies_to(fake, TEXTER))
    # Held unsent, behind the first: never refused by Twilio itself (no code of its own).
    first_key, second_key = (key for key, _code in waiting_texts(app))
    assert [code for _key, code in waiting_texts(app)] == [20503, None]
    assert ":relay:" in first_key and ":relay:" in second_key

    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    texts = bodies_to(fake, TEXTER)
    assert sum(FIRST in text for text in texts) == 1 and sum(SECOND in text for text in texts) == 1
    assert position(texts, FIRST) < position(texts, SECOND)
    assert waiting_texts(app) == []
    assert not any("not delivered" in text.lower() for text in texting.inbox(BEN))


def test_the_lines_reply_in_twiml_waits_behind_a_counselors_words_refused_for_now_while_the_counselor_gets_theirs(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """The texter's picture is answered in the webhook's own TwiML ("pictures are not kept"):
    that answer must not reach them before Ben's words Twilio refused a moment ago. Their
    caption goes to Ben at once: he is someone else."""
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)
    texting.send(BEN, f"#{tag} {FIRST}")
    before = len(bodies_to(fake, TEXTER))

    answered = texting.send(TEXTER, "look at this", num_media=1)

    assert answered == []  # nothing in the TwiML: the reply waits for the sweep, behind Ben's words
    assert len(bodies_to(fake, TEXTER)) == before
    assert any("look at this" in text for text in texting.inbox(BEN))  # Ben is another person
    assert len(waiting_texts(app)) == 2

    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    texts = bodies_to(fake, TEXTER)[before:]
    assert len(texts) == 2 and FIRST in texts[0], texts  # Ben's words, then the line's reply
    assert waiting_texts(app) == []


def test_texts_to_other_people_go_out_at_once_while_one_texters_text_waits_for_the_sweep(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    tag = ben_holds_a_texter(app, texting)
    texting.send(OTHER_TEXTER, "I can't stop crying")
    texting.send(OTHER_TEXTER, "3")  # the need menu: mental health
    with app.app_context():
        other = db.session.scalars(select(Conversation.id).where(Conversation.id != tag)).one()
    texting.send(DIEGO, f"YES {other}")
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)
    texting.send(BEN, f"#{tag} {FIRST}")  # refused for now

    texting.send(DIEGO, f"#{other} I'm Diego, I'm here with you")  # another texter
    texting.send(TEXTER, "ok. I'm still here")  # the texter's words to Ben: another person

    assert any("I'm Diego, I'm here with you" in text for text in texting.inbox(OTHER_TEXTER))
    assert any("ok. I'm still here" in text for text in texting.inbox(BEN))
    ((key, code),) = waiting_texts(app)  # only Ben's words to his texter wait
    assert key.startswith(f"c{tag}:relay:") and code == 20503

    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()
    assert sum(FIRST in text for text in texting.inbox(TEXTER)) == 1


def test_a_counselors_backlog_too_long_for_one_answer_keeps_its_order_when_twilio_refuses_its_first_text(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """More of the texter's words than one TwiML answer carries: those taken for it go over REST
    first, in order. Twilio refusing the first of them for now left it for the sweep while the
    rest went out at once, ahead of it."""
    texting.send(TEXTER, "I want to kill myself")
    with app.app_context():
        tag = db.session.scalars(select(Conversation.id)).one()
    words = [f"text {number} of 12" for number in range(2, 13)]
    for text in words:
        texting.send(TEXTER, text)
    refusal = fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)

    texting.send(BEN, f"YES {tag}")  # his backlog: twelve texts, more than an answer carries

    assert refusal.remaining == 0
    assert not any(text in body for text in words for body in bodies_to(fake, BEN))
    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    relayed = [body for body in bodies_to(fake, BEN) if body.startswith(f"#{tag}: ")]
    assert [body.removeprefix(f"#{tag}: ") for body in relayed] == ["I want to kill myself", *words]
    assert waiting_texts(app) == []


def test_on_sqlite_a_texts_claim_finds_earlier_refused_texts_through_an_index(
    app: Flask, texting: TextingPhone, settings: Settings
) -> None:
    """The check rides in the claim's INSERT (no statement of its own), and reads an index: the
    retrying texts', or the conversation's, never the whole table."""
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite's plan")
    tag = ben_holds_a_texter(app, texting)
    with app.app_context():
        conversation = db.session.get(Conversation, tag)
        assert conversation is not None
        plan = plan_of(lambda: convo.to_texter(conversation, "plan", "words"))
    assert any(step.startswith("SEARCH messages USING INDEX") for step in plan), plan
    assert not any(step.startswith("SCAN messages") for step in plan), plan


def test_a_text_held_only_for_order_is_tried_again_when_its_earlier_text_got_through_late(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Twilio refuses Ben's first words until its last try, five minutes on, when it takes them
    and refuses his second words, which had only waited behind them and are as old: that was
    the second's first refusal, so it is tried again a minute later, not failed for good."""
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)
    texting.send(BEN, f"#{tag} {FIRST}")
    texting.send(BEN, f"#{tag} {SECOND}")  # held behind the first
    refusing = fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=4)
    for _ in range(4):
        wednesday_evening.shift(timedelta(minutes=1))
        clock_tick()  # the first refused again: the second waits behind it
    assert refusing.remaining == 0
    assert [code for _key, code in waiting_texts(app)] == [20503, None]
    fake.inject_fault("POST", MESSAGES, status=200, times=1)  # the first goes (a 0 s "slow" fault)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)  # the second is refused

    wednesday_evening.shift(timedelta(minutes=1))  # the first's last try
    clock_tick()
    assert [code for _key, code in waiting_texts(app)] == [20503]  # the second, refused for now
    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    texts = bodies_to(fake, TEXTER)
    assert sum(FIRST in text for text in texts) == 1 and sum(SECOND in text for text in texts) == 1, texts
    assert position(texts, FIRST) < position(texts, SECOND)
    assert waiting_texts(app) == []


def test_words_sent_while_the_sweep_is_trying_the_refused_text_again_still_wait_behind_it(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Found by review: the sweep's retry claims the refused text (``claimed``) before its REST
    request; Ben's next words, sent in that moment, saw nothing ``RETRYING`` and went out, and
    the retry, refused again, left the first behind them."""
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)
    texting.send(BEN, f"#{tag} {FIRST}")
    ((first_key, _code),) = waiting_texts(app)
    with app.app_context():  # the sweep's claim of its next try, committed before its request
        first = db.session.scalar(select(Message.id).where(Message.idempotency_key == first_key))
        assert db.session.execute(outbox._TRY_AGAIN, {"message": first}).rowcount == 1  # type: ignore[attr-defined]
        db.session.commit()

    texting.send(BEN, f"#{tag} {SECOND}")  # meanwhile

    assert not any(SECOND in text for text in bodies_to(fake, TEXTER))
    with app.app_context():  # the sweep's try refused again, as ``_send_over_rest`` writes it
        db.session.execute(
            update(Message).where(Message.id == first, Message.status == "claimed")
            .values(status=outbox.RETRYING, error_code=20503)
        )  # fmt: skip
        db.session.commit()
    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    texts = bodies_to(fake, TEXTER)
    assert position(texts, FIRST) < position(texts, SECOND)
    assert waiting_texts(app) == []


def test_a_later_held_text_is_not_tried_while_another_process_is_trying_the_earlier_one(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Two processes may try held texts at once (a webhook's held texts sent beside its answer,
    the minute's sweep): the one that finds only the later text waiting must leave it, or it
    would overtake the earlier one in flight (found by review)."""
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)
    texting.send(BEN, f"#{tag} {FIRST}")
    texting.send(BEN, f"#{tag} {SECOND}")  # held behind it
    (first_key, _), (second_key, _) = waiting_texts(app)
    with app.app_context():  # another process has claimed the first's try: its request is in flight
        id_of = select(Message.id).where(Message.idempotency_key == bindparam("key"))
        first, second = (db.session.scalar(id_of, {"key": key}) for key in (first_key, second_key))
        assert db.session.execute(outbox._TRY_AGAIN, {"message": first}).rowcount == 1  # type: ignore[attr-defined]
        db.session.commit()

        outcome = outbox.retry_refused(second, TEXTER, "", responder_id=None, texter=None, last_try=False)

    assert outcome == "taken"
    assert not any(SECOND in text for text in bodies_to(fake, TEXTER))
    with app.app_context():  # the first's try refused again, as ``_send_over_rest`` writes it
        db.session.execute(update(Message).where(Message.id == first).values(status=outbox.RETRYING, error_code=20503))
        db.session.commit()
    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    texts = bodies_to(fake, TEXTER)
    assert position(texts, FIRST) < position(texts, SECOND)
