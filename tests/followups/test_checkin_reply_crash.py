"""A check-in reply whose handling died after the answer was recorded: the clock's retry of
the same text carries out the rest (the prioritised conversation, the callback, their words
relayed), each thing once; a different, later text of theirs is an ordinary text."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Callback, Conversation, Message
from followups.checkins import CHECKIN_PRIORITY
from sms.views import FAILSAFE_TEXT
from tests.conftest import TextingPhone
from tests.followups.conftest import checkins
from tests.followups.test_checkins import TEXTER, checkin_sent, end_a_text_conversation
from twilio_fake.rest_api import FakeTwilio

CHLOE = "+13125550103"  # on the overnight shift when the check-in's reply arrives
TALK = "Thank you. A counselor will be with you shortly."
NOTED = "Thank you for telling us. A counselor will text you back."
LANGUAGE_QUESTION = "Reply 1 for English"


def crash_once(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[bool]:
    """Replace ``module.name`` by a stand-in that raises the first time (the process "dies"
    there) and is the real thing after; the list says whether the crash happened."""
    real = getattr(module, name)
    crashed: list[bool] = []

    def die(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(module, name, real)
        crashed.append(True)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(module, name, die)
    return crashed


def retry_later(clock: time_machine.Coordinates, clock_tick: Callable[[], Any]) -> None:
    clock.shift(timedelta(seconds=31))  # past sms.conversations.RETRY_AFTER
    clock_tick()


def talks(app: Flask) -> list[Conversation]:
    """The texter's conversations after the one the check-in followed (newest last)."""
    with app.app_context():
        return list(db.session.scalars(select(Conversation).order_by(Conversation.id)))[1:]


def unhandled(app: Flask) -> int:
    with app.app_context():
        waiting = select(Message.id).where(Message.direction == "in", Message.handled_at.is_(None))
        return len(db.session.scalars(waiting).all())


def assert_prioritised(conversation: Conversation) -> None:
    assert conversation.state in ("queued", "offered")
    assert (conversation.language, conversation.need) == ("en", "suicide")
    assert conversation.priority >= CHECKIN_PRIORITY


def crash_point(name: str) -> tuple[Any, str]:
    import line_queue
    from followups import replies

    module = {"open_prioritised": replies, "fill_soon": line_queue}[name]
    return module, name


@pytest.mark.parametrize("dies_in", ["open_prioritised", "fill_soon"])
def test_a_talk_reply_whose_handling_died_is_carried_out_by_the_retry_once(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any], dies_in: str,
) -> None:  # fmt: skip
    """Wherever between the recorded answer and the queue the handling dies, the person who
    asked to talk is queued ahead of ordinary texters, never sent back to the language menu."""
    checkin_sent(app, texting, wednesday_evening, run_due)
    crashed = crash_once(monkeypatch, *crash_point(dies_in))

    texting.send(TEXTER, "2")
    assert crashed
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.reply) == ("answered", "talk")  # recorded before the crash
    retry_later(wednesday_evening, clock_tick)

    (talk,) = talks(app)
    assert_prioritised(talk)
    assert texting.inbox(TEXTER).count(TALK) == 1
    assert not any(LANGUAGE_QUESTION in text for text in texting.inbox(TEXTER)[-3:])
    assert texting.inbox(CHLOE)[-1].startswith(f"New text #{talk.id}: English, thoughts of suicide")
    assert unhandled(app) == 0
    clock_tick()  # a later sweep changes nothing
    assert [c.id for c in talks(app)] == [talk.id]
    assert texting.inbox(TEXTER).count(TALK) == 1


def test_a_free_text_reply_whose_handling_died_reaches_the_counselor_on_the_retry(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    from followups import replies

    checkin_sent(app, texting, wednesday_evening, run_due)
    crashed = crash_once(monkeypatch, replies, "open_prioritised")

    # The crashed handling's answer is the fail-safe; the words follow the stored conversation.
    assert texting.send(TEXTER, "not great, couldn't sleep") == [FAILSAFE_TEXT]
    assert crashed
    retry_later(wednesday_evening, clock_tick)

    (talk,) = talks(app)
    assert_prioritised(talk)
    assert texting.inbox(TEXTER).count(NOTED) == 1
    taken = texting.send(CHLOE, f"YES {talk.id}")
    assert taken[0] == f"#{talk.id}: not great, couldn't sleep"


def test_a_free_text_reply_retried_after_another_conversation_of_theirs_opened_and_closed_still_reaches_a_counselor(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    from followups import replies
    from routing.store import active_routing
    from sms import conversations

    checkin_sent(app, texting, wednesday_evening, run_due)
    crashed = crash_once(monkeypatch, replies, "open_prioritised")
    texting.send(TEXTER, "not great, couldn't sleep")  # answer recorded; its handling dies
    assert crashed
    wednesday_evening.shift(timedelta(seconds=2))
    texting.send(TEXTER, "hello?")  # a conversation of its own, at the menus, closed before the retry
    (unrelated,) = talks(app)
    with app.app_context():
        document = active_routing().document  # type: ignore[union-attr]
        assert conversations.close(db.session.get_one(Conversation, unrelated.id), document, "idle", tell_texter=None)

    retry_later(wednesday_evening, clock_tick)

    closed, talk = talks(app)  # the answer's own, opened by the retry
    assert (closed.id, closed.state) == (unrelated.id, "closed")
    assert_prioritised(talk)
    taken = texting.send(CHLOE, f"YES {talk.id}")
    assert taken[0] == f"#{talk.id}: not great, couldn't sleep"


def test_a_talk_by_call_reply_whose_handling_died_requests_the_callback_on_the_retry(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    from followups import replies

    def talk_by_call(document: dict[str, Any]) -> None:
        document["followups"]["talk_by"] = "call"

    publish_routing(talk_by_call)
    checkin_sent(app, texting, wednesday_evening, run_due)
    crashed = crash_once(monkeypatch, replies, "_request_call")

    assert texting.send(TEXTER, "2") == [FAILSAFE_TEXT]  # the words follow the stored callback
    assert crashed
    retry_later(wednesday_evening, clock_tick)

    with app.app_context():
        (callback,) = db.session.scalars(select(Callback)).all()
        assert (callback.origin, callback.language, callback.need) == ("checkin", "en", "suicide")
    assert talks(app) == []  # called back, not texted
    assert texting.inbox(TEXTER).count(TALK) == 1
    assert unhandled(app) == 0


def test_a_later_text_after_an_answered_check_in_is_an_ordinary_first_text(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]],
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    checkin_sent(app, texting, wednesday_evening, run_due)
    assert texting.send(TEXTER, "1") == ["Thank you for letting us know. Text or call us any time."]

    wednesday_evening.shift(timedelta(minutes=5))
    later = texting.send(TEXTER, "2")
    retry_later(wednesday_evening, clock_tick)

    assert any(LANGUAGE_QUESTION in text for text in later)  # the ordinary menu, not the check-in's answer
    (talk,) = talks(app)
    assert (talk.state, talk.priority) == ("language", 0)
    assert TALK not in texting.inbox(TEXTER)


def test_a_later_text_after_a_carried_out_talk_reply_is_not_taken_for_its_retry(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    checkin_sent(app, texting, wednesday_evening, run_due)
    assert texting.send(TEXTER, "2") == [TALK]
    (talk,) = talks(app)
    texting.send(CHLOE, f"YES {talk.id}")
    texting.send(CHLOE, f"END {talk.id}")

    wednesday_evening.shift(timedelta(minutes=5))
    later = texting.send(TEXTER, "hello")
    retry_later(wednesday_evening, clock_tick)

    assert any(LANGUAGE_QUESTION in text for text in later)
    assert texting.inbox(TEXTER).count(TALK) == 1
    ordinary = talks(app)[-1]
    assert ordinary.id != talk.id and (ordinary.state, ordinary.priority) == ("language", 0)


def test_a_retry_running_after_the_answers_conversation_ended_opens_no_second_one(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    import line_queue

    checkin_sent(app, texting, wednesday_evening, run_due)
    crashed = crash_once(monkeypatch, line_queue, "fill_soon")  # dies once the conversation is queued
    texting.send(TEXTER, "2")
    assert crashed
    clock_tick()  # too early to retry the text; the queue offers the conversation
    (talk,) = talks(app)
    texting.send(CHLOE, f"YES {talk.id}")
    texting.send(CHLOE, f"END {talk.id}")

    retry_later(wednesday_evening, clock_tick)

    assert [(c.id, c.state) for c in talks(app)] == [(talk.id, "closed")]
    assert texting.inbox(TEXTER).count(TALK) == 1
    assert unhandled(app) == 0


def test_a_check_in_texter_writing_while_waiting_is_not_told_the_wait_or_welcomed_again(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]],
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    checkin_sent(app, texting, wednesday_evening, run_due)
    assert texting.send(TEXTER, "2") == [TALK]
    before = texting.inbox(TEXTER)

    wednesday_evening.shift(timedelta(seconds=20))  # past sms.conversations.WAIT_TOLD_LATE_AFTER
    texting.send(TEXTER, "hello? anyone")

    assert texting.inbox(TEXTER) == before  # the check-in's words were their wait
    (talk,) = talks(app)
    assert_prioritised(talk)


def test_a_talk_reply_whose_handling_died_after_its_conversation_was_stored_gets_its_words_from_the_retry(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """The moment between storing the conversation and sending the words that promise it: the
    retried text was written before that conversation began, so it is still read as the
    check-in's answer, and the answer is finished (its words, once), not told the wait."""
    from sms import conversations

    checkin_sent(app, texting, wednesday_evening, run_due)
    before = len(texting.inbox(TEXTER))
    crashed = crash_once(monkeypatch, conversations, "to_texter")

    assert texting.send(TEXTER, "2") == [FAILSAFE_TEXT]
    assert crashed
    retry_later(wednesday_evening, clock_tick)
    clock_tick()

    (talk,) = talks(app)
    assert_prioritised(talk)
    assert texting.inbox(TEXTER)[before:] == [FAILSAFE_TEXT, TALK]  # not the welcome and the wait


def test_a_talk_reply_retried_after_the_person_texted_again_still_gets_the_check_ins_place(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """No answer came, so they wrote again: that text opened a conversation at the menus. The
    retried "2" was written before it began, so it is the check-in's answer, not a menu answer:
    the conversation is sorted with the check-in's language and need and queued ahead."""
    from followups import replies

    checkin_sent(app, texting, wednesday_evening, run_due)
    crashed = crash_once(monkeypatch, replies, "open_prioritised")
    texting.send(TEXTER, "2")
    assert crashed

    wednesday_evening.shift(timedelta(seconds=5))
    texting.send(TEXTER, "??")  # an ordinary first text: which language?
    retry_later(wednesday_evening, clock_tick)

    (talk,) = talks(app)
    assert_prioritised(talk)
    assert texting.inbox(TEXTER).count(TALK) == 1
    assert texting.inbox(CHLOE)[-1].startswith(f"New text #{talk.id}: English, thoughts of suicide")


def test_a_free_text_reply_reaches_the_counselor_who_takes_its_conversation_before_the_retry(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Their words and the conversation they open are stored in one transaction: a crash just
    after it (here: the next statement) never leaves a conversation a counselor can take
    without the words that opened it."""
    from followups import replies

    checkin_sent(app, texting, wednesday_evening, run_due)
    crashed = crash_once(monkeypatch, replies, "update")

    texting.send(TEXTER, "not great, couldn't sleep")
    assert crashed
    clock_tick()  # too early to retry the text; the queue offers the conversation
    (talk,) = talks(app)

    taken = texting.send(CHLOE, f"YES {talk.id}")

    assert f"#{talk.id}: not great, couldn't sleep" in taken


def test_a_retried_free_text_answer_reaches_a_counselor_who_took_the_conversation_another_text_opened(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    from followups import replies

    checkin_sent(app, texting, wednesday_evening, run_due)
    crashed = crash_once(monkeypatch, replies, "open_prioritised")
    texting.send(TEXTER, "not great, couldn't sleep")
    assert crashed
    wednesday_evening.shift(timedelta(seconds=5))
    texting.send(TEXTER, "I want to kill myself")  # opens a conversation, offered at once
    (talk,) = talks(app)
    texting.send(CHLOE, f"YES {talk.id}")  # taken before the retry: the backlog has only the second text

    retry_later(wednesday_evening, clock_tick)

    assert f"#{talk.id}: not great, couldn't sleep" in texting.inbox(CHLOE)
    assert texting.inbox(CHLOE).count(f"#{talk.id}: not great, couldn't sleep") == 1


def test_a_yes_written_in_an_open_conversation_is_never_taken_for_consent_whatever_the_clocks_say(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates
) -> None:
    """The process that opened the conversation ran 2 s ahead, so "yes" looks written before
    the conversation began: it still goes to the conversation, and no consent is recorded."""
    from sms import conversations

    end_a_text_conversation(app, texting)  # the consent question is asked
    real_now = conversations.now
    monkeypatch.setattr(conversations, "now", lambda: real_now() + timedelta(seconds=2))
    texting.send(TEXTER, "I want to kill myself")
    monkeypatch.setattr(conversations, "now", real_now)
    wednesday_evening.shift(timedelta(seconds=1))

    texting.send(TEXTER, "yes")

    (checkin,) = checkins(app)
    assert checkin.state == "asked"
    (talk,) = talks(app)
    with app.app_context():
        words = db.session.scalars(
            select(Message.id).where(Message.conversation_id == talk.id, Message.direction == "in")
        ).all()
    assert len(words) == 2  # both texts are the conversation's
