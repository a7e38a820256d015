"""Texts that meet the clock or each other, each found by an audit and failing before its fix:
an idle close that lands between a texter's failed text and its retry, texts failing for
hours that hold fresh ones back from the retries, the empty conversation START left open to
idle-close an hour later, and texts at the language menu handled at once."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import func, select

from crisisline.db import db
from crisisline.models import Conversation, Message
from routing.document import RoutingDocument
from sms import conversations as convo
from tests.conftest import TextingPhone
from tests.rota import BEN
from tests.sms.stuck import HandlingFails
from tests.sms.test_texting_edge_cases import TEXTER, only_conversation, taken_by_ben_who_wrote
from twilio_fake.rest_api import FakeTwilio

OTHER_TEXTER, THIRD_TEXTER = "+13125550178", "+13125550176"
LANGUAGE_QUESTION = "Reply 1 for English / Responda 2 para español"
STARTED = "You will get our texts again. Text us any time you need to talk."
IDLE_CLOSED = "We have not heard from you"


def newest_inbound_id(app: Flask) -> int:
    with app.app_context():
        newest = db.session.scalar(select(func.max(Message.id)).where(Message.direction == "in"))
    assert newest is not None
    return newest


def test_an_idle_close_never_lands_between_a_failed_text_and_its_retry(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Before, the sweep at the idle mark closed it ("We have not heard from you"), Ben was told
    it closed, and the retry opened a new conversation: the words never reached Ben."""
    tag = taken_by_ben_who_wrote(app, texting)
    wednesday_evening.shift(timedelta(minutes=59))
    failing = HandlingFails(monkeypatch)
    texting.send(TEXTER, "no. i took the pills")  # stored; its handling fails

    wednesday_evening.shift(timedelta(minutes=1, seconds=30))  # the idle mark; the retry fails too
    assert clock_tick()["texts"]["idle_closed"] == 0
    failing.heal()
    wednesday_evening.shift(timedelta(minutes=1))
    assert clock_tick()["texts"]["retried"] == 1

    assert texting.inbox(BEN)[-1] == f"#{tag}: no. i took the pills"
    conversation = only_conversation(app)
    assert (conversation.state, conversation.counselor_id) == ("active", "ben-carter")
    assert not any(text.startswith(IDLE_CLOSED) for text in texting.inbox(TEXTER))


def test_a_quiet_conversation_with_every_text_handled_still_closes_when_idle(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any]
) -> None:
    taken_by_ben_who_wrote(app, texting)
    wednesday_evening.shift(timedelta(minutes=61))

    assert clock_tick()["texts"]["idle_closed"] == 1
    assert texting.inbox(TEXTER)[-1].startswith(IDLE_CLOSED)


def test_texts_already_escalated_are_retried_after_fresh_ones(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Before, the oldest texts came first: a batch of texts failing every time held a fresh
    one back for the retries' whole six hours."""
    HandlingFails(monkeypatch)
    texting.send(TEXTER, "hello")
    texting.send(OTHER_TEXTER, "hello")
    wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))
    assert clock_tick()["texts"]["escalated"] == 2  # failing for minutes: the supervisors know
    texting.send(THIRD_TEXTER, "I want to kill myself")
    fresh = newest_inbound_id(app)
    wednesday_evening.shift(timedelta(seconds=31))

    tried: list[int] = []

    def still_failing(document: RoutingDocument, inbound: Message, body: str) -> None:
        tried.append(inbound.id)
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(convo, "_INBOUND_HANDLERS", [still_failing])
    monkeypatch.setattr(convo, "RETRY_BATCH", 2)
    clock_tick()

    assert len(tried) == 2
    assert tried[0] == fresh


def test_start_with_nothing_open_leaves_nothing_to_idle_close(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any]
) -> None:
    """Before, START opened an empty conversation, and an hour later the line texted them "We
    have not heard from you in a while"."""
    texting.send(TEXTER, "STOP")
    assert texting.send(TEXTER, "START") == [STARTED]

    wednesday_evening.shift(timedelta(minutes=61))
    clock_tick()

    assert texting.inbox(TEXTER)[-1] == STARTED
    with app.app_context():
        assert db.session.scalars(select(Conversation).where(Conversation.state != "closed")).all() == []
    # Writing again opens a conversation at the menus, as any first text does.
    assert texting.send(TEXTER, "I need to talk to someone")[0].startswith("Riverside County Crisis Line.")
    assert db_states(app) == ["closed", "need"]


def test_start_while_a_conversation_is_open_leaves_it_open(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    texting.send(TEXTER, "I need to talk to someone")

    # Not opted out, at the need menu: an answer the menu did not take (asked again), never
    # "You will get our texts again" (they never stopped getting them).
    assert texting.send(TEXTER, "START") == ["Sorry, please reply with one of the numbers, or tell us in a few words."]
    assert db_states(app) == ["need"]


@pytest.mark.parametrize("word", ["Start", "Unstop"])
def test_start_from_a_texter_with_a_counselor_reaches_the_counselor(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, word: str
) -> None:
    """Not opted out, with Ben: "Start" is their words to Ben. Before, the line answered "You
    will get our texts again" and the word never reached Ben or the conversation."""
    tag = taken_by_ben_who_wrote(app, texting)

    replies = texting.send(TEXTER, word)

    assert STARTED not in replies
    assert texting.inbox(BEN)[-1] == f"#{tag}: {word}"
    conversation = only_conversation(app)
    assert (conversation.state, conversation.counselor_id) == ("active", "ben-carter")
    with app.app_context():
        text = db.session.get(Message, newest_inbound_id(app))
        assert text is not None and text.conversation_id == tag


def start_handled_up_to_its_close(texting: TextingPhone, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A texter who opted out sends START: handled up to the close of the conversation it
    opened for its reply, which waits (returned: that conversation as START's handling read it)."""
    texting.send(TEXTER, "STOP")
    real_close_unused = convo.close_unused
    read: list[SimpleNamespace] = []

    def held(conversation: Conversation) -> bool:
        read.append(SimpleNamespace(id=conversation.id, last_activity_at=conversation.last_activity_at))
        return True

    monkeypatch.setattr(convo, "close_unused", held)
    assert texting.send(TEXTER, "START") == [STARTED]
    monkeypatch.setattr(convo, "close_unused", real_close_unused)
    return read[0]


def none_open_when_their_text_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Their next text's handling reads no open conversation (it read before START's stored
    one); the insert that then collides with START's reads it as it is."""
    read_open = convo.open_conversation

    def before_start_stored(texter: Any) -> Any:
        if sys._getframe(1).f_code.co_name == "handle_texter_message":
            return None
        return read_open(texter)

    monkeypatch.setattr(convo, "open_conversation", before_start_stored)


def test_a_text_beside_start_is_never_linked_to_the_conversation_start_closes(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates
) -> None:
    """START and "I need to talk" sent at once: the text's insert met START's conversation, read
    it open, and START closed it (no text joined yet) before the text was linked. Before, the
    text was linked to the closed conversation and handled there: no reply, nobody saw it."""
    started = start_handled_up_to_its_close(texting, monkeypatch)
    read_open = convo.open_conversation

    def closed_by_start_once_read(texter: Any) -> Any:
        caller = sys._getframe(1).f_code.co_name
        if caller == "handle_texter_message":
            return None
        found = read_open(texter)
        if caller == "start_conversation":
            monkeypatch.setattr(convo, "open_conversation", read_open)
            convo.close_unused(started)  # type: ignore[arg-type]  # START's, as it read it
        return found

    monkeypatch.setattr(convo, "open_conversation", closed_by_start_once_read)

    replies = texting.send(TEXTER, "I need to talk to someone")

    assert replies and replies[0].startswith("Riverside County Crisis Line.")
    assert db_states(app) == ["closed", "need"]
    with app.app_context():
        text = db.session.get(Message, newest_inbound_id(app))
        assert text is not None and text.handled_at is not None
        linked = db.session.get(Conversation, text.conversation_id)
        assert linked is not None and linked.state == "need"  # the open one, at the need menu


def test_a_text_beside_start_linked_while_start_closes_keeps_the_conversation_open(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates
) -> None:
    """The same pair, START's close running while the text's link is not yet committed.
    PostgreSQL re-checks a waiting UPDATE's WHERE on the row as committed, but its subquery on
    the messages with the snapshot it began with: before, "no text joined" held and the
    conversation closed under the text (SQLite's lock made START wait and see the text)."""
    started = start_handled_up_to_its_close(texting, monkeypatch)
    none_open_when_their_text_is_read(monkeypatch)
    real_commit = convo.commit_keeping_loaded
    closed: list[bool] = []

    def start_closes_beside_the_link() -> None:
        if sys._getframe(1).f_code.co_name == "start_conversation" and not closed:

            def close() -> None:
                with app.app_context():
                    closed.append(convo.close_unused(started))  # type: ignore[arg-type]

            beside = threading.Thread(target=close)
            beside.start()
            time.sleep(0.5)  # START's UPDATE has run (and waits, or finds nothing to wait for)
            real_commit()
            beside.join(timeout=10)
            return
        real_commit()

    monkeypatch.setattr(convo, "commit_keeping_loaded", start_closes_beside_the_link)

    replies = texting.send(TEXTER, "I need to talk to someone")

    assert closed == [False]
    assert replies and replies[0].startswith("Riverside County Crisis Line.")
    assert db_states(app) == ["need"]


def db_states(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Conversation.state).order_by(Conversation.id)))


def texts_arriving_while_handled(
    monkeypatch: pytest.MonkeyPatch, live_server: str, fake: FakeTwilio, burst: dict[str, str]
) -> None:
    """While the line reads the language of a text in ``burst`` (its key), the text it names
    arrives and is handled whole: texts of one burst handled at once, deterministically."""
    import sms.texting

    real_detect = sms.texting.detect
    beside = TextingPhone(live_server, fake)

    def detect_while_another_arrives(document: RoutingDocument, text: str) -> Any:
        following = burst.pop(text.strip(), None)
        if following is not None:
            beside.send(TEXTER, following)
        return real_detect(document, text)

    monkeypatch.setattr(sms.texting, "detect", detect_while_another_arrives)


def test_texts_at_the_language_menu_handled_at_once_are_asked_once(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, live_server: str, fake: FakeTwilio,
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    assert texting.send(TEXTER, "ok") == [LANGUAGE_QUESTION]
    texts_arriving_while_handled(monkeypatch, live_server, fake, {"hmm": "umm"})

    texting.send(TEXTER, "hmm")

    assert texting.inbox(TEXTER) == [LANGUAGE_QUESTION, LANGUAGE_QUESTION]
    conversation = only_conversation(app)
    assert (conversation.state, conversation.menu_attempts) == ("language", 2)


def test_a_burst_of_three_unrecognised_texts_counts_one_try_not_three(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, live_server: str, fake: FakeTwilio,
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    """Before, each counted: three more tries than the retries allow, so the next text they
    wrote took the default language without their being asked again."""
    texting.send(TEXTER, "ok")
    texts_arriving_while_handled(monkeypatch, live_server, fake, {"hmm": "umm", "umm": "uhh"})
    texting.send(TEXTER, "hmm")

    assert texting.send(TEXTER, "??") == [LANGUAGE_QUESTION]  # still asked: one try left
    assert only_conversation(app).state == "language"
