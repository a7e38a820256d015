"""A texter in line who writes again ("hello?", "is anyone there?") is answered: their words are
kept for the counselor and they are still in line. Before, a texter told the wait heard nothing
more until a counselor took them or the backup line's text (15 minutes on), so a distressed
person writing into silence could not tell whether anyone had seen it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import time_machine
from flask import Flask

from tests.conftest import TextingPhone
from tests.rota import ANA
from tests.sms.test_texting import TEXTER, conversation_of

STILL_WAITING = "We got your message, and the counselor who takes your text will read it."


def waiting_behind_three(app: Flask, texting: TextingPhone) -> None:
    """Ana, the only counselor on for this need, is busy with as many texters as she may take;
    the texter is told the wait."""
    for number in range(3):
        texting.send(f"+1312555019{number}", "I have been drinking all day and I can't stop")
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
