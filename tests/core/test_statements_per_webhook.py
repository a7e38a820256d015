"""What each webhook asks of the database, counted statement by statement (as ``bench.queries``
does; counts do not depend on the machine, timings would): every webhook within the budget
measured when its re-reads were removed, a hold turn that has nothing new to say writes
nothing, and an inbound text costs the same however many texters wait. On SQLite and
PostgreSQL, signed as Twilio signs, with the fake Twilio's REST API taking the ringing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from bench.queries import StatementLog, next_path
from crisisline.db import db
from crisisline.models import Conversation
from crisisline.settings import Settings
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from twilio_fake.signing import CallIdentity, gather_digits_params, signed_headers, sms_params

# Measured (bench.queries, 2026-12-01, 04:00 and 20:20 UTC; first_text 2026-12-02 03:50) with a few to
# spare for a legitimate change: a webhook that needs more than this has started re-reading rows again, or
# sweeping the queue.
BUDGET = {
    "incoming": 4,
    "language_answer": 4,
    # 17-18 (one INSERT for its events, its own line's pass); +1 for a responder's first ring; +1 (2026-12-03):
    # the caller's status read after the commit, so no one is rung for a caller whose hang-up came first;
    # +1 (2026-12-04): whether the caller's own callback search is ringing someone (``live_search_started``)
    "need_answer": 21,
    "hold_turn": 4,
    "status_callback": 15,
    "first_text": 13,  # 12: the welcome and the need menu are one text; one look for a pending follow-up
    # 15: the need stored by the queue's own UPDATE, a pass of the texts' line; +1 (2026-12-05): who
    # is paused, so a texter no counselor on shift could ever take is told the backup line at once
    "need_answer_text": 17,
}
# A text while waiting: 10 when the line stays quiet (the wait told seconds ago), 12 when it says
# they are still in line (2026-12-05: the last text to them, read while they still wait, and the
# reply's claim and send); more would mean it re-reads the queue.
TEXT_WHILE_WAITING_BUDGET = {"quiet": 10, "still_waiting": 12}
WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


@pytest.fixture
def statements(app: Flask) -> Iterator[StatementLog]:
    log = StatementLog()
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", log.record)
    yield log
    with app.app_context():
        event.remove(db.engine, "before_cursor_execute", log.record)


@pytest.fixture
def webhook(client: FlaskClient, settings: Settings, statements: StatementLog) -> Callable[..., tuple[str, list[str]]]:
    """POST a signed webhook; returns the reply and the statements it sent, counting the work
    it started off its request thread (the ringing, a freed responder's pass) as its own."""
    background = client.application.extensions["crisisline.background"]

    def post(path: str, params: dict[str, str], *, voice: bool = True) -> tuple[str, list[str]]:
        start = len(statements.statements)
        headers = signed_headers(TEST_AUTH_TOKEN, f"{settings.public_base_url}{path}", params, voice=voice)
        reply = client.post(path, data=params, headers=headers)
        assert reply.status_code in (200, 204), (path, reply.status_code)
        background.wait_idle(timeout=30)
        return reply.get_data(as_text=True), statements.statements[start:]

    return post


def one_call(post: Callable[..., tuple[str, list[str]]], caller: str) -> dict[str, list[str]]:
    """A caller chooses English and a need, holds three turns and hangs up."""
    identity = CallIdentity(TEST_ACCOUNT_SID, caller, LINE_NUMBER)
    sent: dict[str, list[str]] = {}
    twiml, sent["incoming"] = post("/voice/incoming", identity.voice_params("ringing"))
    twiml, sent["language_answer"] = post(next_path(twiml), gather_digits_params(identity, "1"))
    twiml, sent["need_answer"] = post(next_path(twiml), gather_digits_params(identity, "2"))
    for turn in (1, 2, 3):
        twiml, sent[f"hold_turn_{turn}"] = post(next_path(twiml), identity.voice_params("in-progress"))
    params = identity.voice_params("completed", CallDuration="60", SequenceNumber="3")
    _, sent["status_callback"] = post("/voice/status", params)
    return sent


def one_texter(post: Callable[..., tuple[str, list[str]]], number: str) -> dict[str, list[str]]:
    """A new texter writes a first text, then answers the need menu."""
    sent: dict[str, list[str]] = {}
    for kind, body in (("first_text", "I am not doing well tonight and need to talk"), ("need_answer_text", "3")):
        _, sent[kind] = post("/sms/incoming", sms_params(TEST_ACCOUNT_SID, number, LINE_NUMBER, body), voice=False)
    return sent


@pytest.mark.usefixtures("wednesday_evening")
def test_every_webhook_of_a_call_stays_within_its_statement_budget(
    webhook: Callable[..., tuple[str, list[str]]],
) -> None:
    one_call(webhook, "+13125550123")  # the first call creates what every later one finds
    sent = one_call(webhook, "+13125550124")

    for kind in ("incoming", "language_answer", "need_answer", "status_callback"):
        assert len(sent[kind]) <= BUDGET[kind], (kind, len(sent[kind]), sent[kind])
    for turn in (1, 2, 3):
        assert len(sent[f"hold_turn_{turn}"]) <= BUDGET["hold_turn"], sent[f"hold_turn_{turn}"]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_hold_turn_with_nothing_new_writes_nothing(webhook: Callable[..., tuple[str, list[str]]]) -> None:
    sent = one_call(webhook, "+13125550125")

    for turn in (1, 2, 3):
        assert [statement for statement in sent[f"hold_turn_{turn}"] if WRITES.match(statement)] == []


@pytest.mark.usefixtures("wednesday_evening")
def test_an_inbound_text_costs_the_same_with_few_and_many_texters_waiting(
    app: Flask, webhook: Callable[..., tuple[str, list[str]]]
) -> None:
    few = [one_texter(webhook, f"+1773555{index:04d}") for index in range(3)][-1]
    for index in range(3, 40):
        one_texter(webhook, f"+1773555{index:04d}")
    with app.app_context():
        waiting = db.session.scalar(select(func.count(Conversation.id)).where(Conversation.state == "queued"))
    assert (waiting or 0) >= 25  # the counselors on shift hold a few; the rest wait

    many = one_texter(webhook, "+17735559999")

    for kind in ("first_text", "need_answer_text"):
        assert len(many[kind]) == len(few[kind]), (kind, len(few[kind]), len(many[kind]))
        assert len(many[kind]) <= BUDGET[kind], (kind, many[kind])


def test_a_text_while_waiting_stays_within_its_statement_budget_whether_or_not_it_is_answered(
    webhook: Callable[..., tuple[str, list[str]]], wednesday_evening: time_machine.Coordinates
) -> None:
    number = "+17735550001"
    one_texter(webhook, number)

    wednesday_evening.shift(timedelta(seconds=30))
    quiet, sent_quiet = webhook("/sms/incoming", sms_params(TEST_ACCOUNT_SID, number, LINE_NUMBER, "ok"), voice=False)
    wednesday_evening.shift(timedelta(minutes=3))
    told, sent_told = webhook("/sms/incoming", sms_params(TEST_ACCOUNT_SID, number, LINE_NUMBER, "hello?"), voice=False)

    assert "still in line" not in quiet and "still in line" in told
    assert len(sent_quiet) <= TEXT_WHILE_WAITING_BUDGET["quiet"], sent_quiet
    assert len(sent_told) <= TEXT_WHILE_WAITING_BUDGET["still_waiting"], sent_told
