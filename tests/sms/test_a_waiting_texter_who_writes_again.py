"""A texter in line who writes again ("hello?", "is anyone there?") is answered: their words are
kept for the counselor and they are still in line. Before, a texter told the wait heard nothing
more until a counselor took them or the backup line's text (15 minutes on), so a distressed
person writing into silence could not tell whether anyone had seen it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask

from sms import conversations as convo
from tests.conftest import TextingPhone
from tests.rota import ANA
from tests.sms.test_texting import TEXTER, conversation_of

STILL_WAITING = "We got your message, and the counselor who takes your text will read it."


def waiting_behind_three(app: Flask, texting: TextingPhone) -> None:
    """Ana, the only counselor on for this need, is busy with as many texters as she may take;
    the texter is told the wait."""
    for number in range(3):
        texting.send(f"+1312555026{number}", "I have been drinking all day and I can't stop")
        texting.send(ANA, f"YES {conversation_of(app, number + 1).tag}")
    replies = texting.send(TEXTER, "I have been drinking all day and I can't stop")
    assert replies[-1].split("\n\n")[-1].startswith("All our counselors are busy right now")


def still_waiting_replies(texting: TextingPhone) -> list[str]:
    return [text for text in texting.inbox(TEXTER) if text.startswith(STILL_WAITING)]


def test_a_waiting_texter_who_writes_again_is_told_they_are_still_in_line_and_their_words_reach_the_counselor(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates
) -> None:
    waiting_behind_three(app, texting)

    wednesday_morning.shift(timedelta(minutes=3))
    replies = texting.send(TEXTER, "hello?")

    assert replies == [STILL_WAITING + " You are still in line. If you are in danger, call 911."]
    assert conversation_of(app, 4).state in ("queued", "offered")

    # Ana ends one conversation and takes them: "hello?" reaches her with their first words.
    texting.send(ANA, f"END {conversation_of(app, 1).tag}")
    tag = conversation_of(app, 4).tag
    taken = texting.send(ANA, f"YES {tag}")
    assert f"#{tag}: hello?" in taken


def test_a_burst_of_texts_while_waiting_gets_one_reply_and_a_text_minutes_later_another(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates
) -> None:
    waiting_behind_three(app, texting)
    wednesday_morning.shift(timedelta(minutes=3))

    for words in ("hello?", "is anyone there", "please"):
        texting.send(TEXTER, words)
    assert len(still_waiting_replies(texting)) == 1

    wednesday_morning.shift(timedelta(seconds=90))
    texting.send(TEXTER, "???")
    assert len(still_waiting_replies(texting)) == 1  # within two minutes of the last reply

    wednesday_morning.shift(timedelta(seconds=40))
    texting.send(TEXTER, "I'm still here")
    assert len(still_waiting_replies(texting)) == 2


def test_a_text_right_after_being_told_the_wait_gets_no_second_answer(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates
) -> None:
    waiting_behind_three(app, texting)
    wednesday_morning.shift(timedelta(seconds=30))

    assert texting.send(TEXTER, "ok thanks") == []
    assert still_waiting_replies(texting) == []


def test_texts_handled_side_by_side_while_waiting_send_one_reply(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates
) -> None:
    waiting_behind_three(app, texting)
    wednesday_morning.shift(timedelta(minutes=3))

    start = threading.Barrier(4)

    def write(words: str) -> None:
        start.wait()
        texting.send(TEXTER, words)

    writers = [threading.Thread(target=write, args=(f"hello {n}",)) for n in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert len(still_waiting_replies(texting)) == 1


def test_a_texter_no_counselor_on_shift_can_take_who_writes_again_hears_they_are_still_in_line_not_the_backup_again(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates, clock_tick: Callable[[], Any]
) -> None:
    texting.send(ANA, "OFF")  # the only counselor on for this need
    replies = texting.send(TEXTER, "I have been drinking all day and I can't stop")
    assert replies[-1].split("\n\n")[-1].startswith("If you cannot wait")

    wednesday_morning.shift(timedelta(minutes=5))
    clock_tick()
    texting.send(TEXTER, "hello?")

    assert len(still_waiting_replies(texting)) == 1
    assert sum("If you cannot wait" in text for text in texting.inbox(TEXTER)) == 1


def test_two_texts_straddling_a_two_minute_mark_send_one_reply(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: keyed by the window since queueing, a text read at 3:59 and one
    handled at 4:01 before the first one's send each had a key of their own."""
    waiting_behind_three(app, texting)
    queued_at = conversation_of(app, 4).queued_at
    assert queued_at is not None
    wednesday_morning.move_to(queued_at + timedelta(minutes=4) - timedelta(seconds=1))
    real = convo.to_texter
    other_handled = threading.Event()

    def another_text_handled_meanwhile(conversation: Any, key: str, body: str) -> bool:
        if key.startswith("still-waiting") and not other_handled.is_set():
            other_handled.set()
            convo.db.session.commit()
            wednesday_morning.shift(timedelta(seconds=2))
            other = threading.Thread(target=texting.send, args=(TEXTER, "is anyone there"))
            other.start()
            other.join()
        return real(conversation, key, body)

    monkeypatch.setattr(convo, "to_texter", another_text_handled_meanwhile)
    texting.send(TEXTER, "hello?")

    assert other_handled.is_set()
    assert len(still_waiting_replies(texting)) == 1


def test_a_texter_a_counselor_took_while_their_text_was_handled_is_not_told_they_are_still_in_line(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting_behind_three(app, texting)
    texting.send(ANA, f"END {conversation_of(app, 1).tag}")  # a place with Ana: the texter is offered to her
    wednesday_morning.shift(timedelta(minutes=3))
    real = convo.tell_still_waiting

    def ana_takes_them_first(conversation: Any, document: Any) -> bool:
        convo.db.session.commit()
        taker = threading.Thread(target=texting.send, args=(ANA, f"YES {conversation.tag}"))
        taker.start()
        taker.join()
        return real(conversation, document)

    monkeypatch.setattr(convo, "tell_still_waiting", ana_takes_them_first)
    texting.send(TEXTER, "hello?")

    assert conversation_of(app, 4).state == "active"
    assert still_waiting_replies(texting) == []


def test_with_a_config_written_before_the_still_waiting_text_a_waiting_texter_writing_again_gets_nothing_new(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates,
    publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    def without_still_waiting(document: dict[str, Any]) -> None:
        for language in document["languages"]:
            del language["sms"]["still_waiting"]

    publish_routing(without_still_waiting)
    waiting_behind_three(app, texting)
    wednesday_morning.shift(timedelta(minutes=3))

    assert texting.send(TEXTER, "hello?") == []
