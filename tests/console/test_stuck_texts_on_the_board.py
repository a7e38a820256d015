"""The live board lists texts the line could not handle (a case number, who sent it, for how
long, whether the supervisors were texted; never a number or words) until a retry handles
them or a supervisor marks that a person has the sender, which stops the retries, audited."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from crisisline.db import db
from crisisline.models import Message
from sms import conversations as convo
from tests.conftest import TextingPhone
from tests.console.conftest import Account, audit_actions, csrf_token, sign_in
from tests.console.test_board_and_desk import board
from tests.sms.stuck import HandlingFails

TEXTER = "+13125550177"
WORDS = "I want to kill myself"


@pytest.fixture
def stuck_text(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> tuple[int, HandlingFails]:  # fmt: skip
    """A texter's text that failed in the webhook and in every retry, escalated by the clock."""
    failing = HandlingFails(monkeypatch)
    texting.send(TEXTER, WORDS)
    wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))
    assert clock_tick()["texts"]["escalated"] == 1
    with app.app_context():
        message_id = db.session.query(Message.id).filter(Message.direction == "in").scalar()
    return int(message_id), failing


def test_the_board_lists_a_stuck_text_by_its_case_never_its_words_or_number(
    client: FlaskClient, supervisor: Account, stuck_text: tuple[int, HandlingFails]
) -> None:  # fmt: skip
    message_id, _ = stuck_text
    sign_in(client, supervisor)

    data = board(client)
    page = client.get("/console/board").get_data(as_text=True)

    assert data["counts"]["stuck_texts"] == 1
    (row,) = data["stuck_texts"]
    assert (row["message_id"], row["case"], row["sender"], row["supervisors_told"], row["alert"]) == (
        message_id, f"T{message_id}", "texter", 1, "yes (1)"
    )  # fmt: skip
    assert row["waiting_seconds"] >= convo.ESCALATE_AFTER.total_seconds()
    assert f"T{message_id}" in page and "Texts the line could not handle" in page
    for shown in (str(data), page):
        assert "kill" not in shown and "5550177" not in shown


def test_a_supervisor_marks_a_stuck_text_taken_over_and_the_retries_stop(
    app: Flask, client: FlaskClient, supervisor: Account, stuck_text: tuple[int, HandlingFails],
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    message_id, failing = stuck_text
    sign_in(client, supervisor)
    token = csrf_token(client, "/console/board")

    response = client.post(f"/console/board/stuck-texts/{message_id}/taken", data={"csrf_token": token})
    again = client.post(f"/console/board/stuck-texts/{message_id}/taken", data={"csrf_token": token})

    assert response.status_code == 302 and again.status_code == 302
    followed = client.get("/console/board").get_data(as_text=True)
    assert "handled or taken over already" in followed
    assert board(client)["stuck_texts"] == []
    taken = [entry for entry in audit_actions(app) if entry[1] == "stuck_text_taken_over"]
    assert taken == [("sue-supervisor", "stuck_text_taken_over", f"message:{message_id}")]
    attempts = failing.attempts
    wednesday_evening.shift(timedelta(minutes=1))
    assert clock_tick()["texts"]["retried"] == 0
    assert failing.attempts == attempts


def test_taking_over_without_the_form_token_or_as_a_counselor_changes_nothing(
    app: Flask, client: FlaskClient, supervisor: Account, counselor: Account, stuck_text: tuple[int, HandlingFails],
) -> None:  # fmt: skip
    message_id, _ = stuck_text
    sign_in(client, supervisor)
    forged = client.post(f"/console/board/stuck-texts/{message_id}/taken", data={})

    other = app.test_client()
    sign_in(other, counselor)
    token = csrf_token(other)
    refused = other.post(f"/console/board/stuck-texts/{message_id}/taken", data={"csrf_token": token})

    assert forged.status_code == 400
    assert refused.status_code == 403
    assert len(board(client)["stuck_texts"]) == 1
    assert not [entry for entry in audit_actions(app) if entry[1] == "stuck_text_taken_over"]


def test_a_counselors_stuck_text_is_listed_as_from_a_counselor(
    app: Flask, client: FlaskClient, supervisor: Account, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch,
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    import sms.inbound

    def staff_fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(sms.inbound, "handle_staff_message", staff_fails)
    texting.send("+13125550101", "STATUS")  # Ana, a counselor in the example routing
    wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))
    clock_tick()
    sign_in(client, supervisor)

    (row,) = board(client)["stuck_texts"]

    assert row["sender"] == "counselor" and re.fullmatch(r"T\d+", row["case"])


def test_a_supervisor_can_unmask_the_sender_of_a_stuck_text_who_has_no_conversation(
    app: Flask, client: FlaskClient, supervisor: Account, stuck_text: tuple[int, HandlingFails]
) -> None:  # fmt: skip
    message_id, _ = stuck_text
    sign_in(client, supervisor)

    listed = client.get("/console/board/unmask").get_data(as_text=True)
    token = csrf_token(client, "/console/board/unmask")
    shown = client.post(
        f"/console/board/unmask/stuck/{message_id}", data={"csrf_token": token, "reason": "said they would end it"}
    )

    assert f"text T{message_id}" in listed and "5550177" not in listed
    assert shown.status_code == 200
    assert TEXTER in shown.get_data(as_text=True)
    assert ("sue-supervisor", "unmask", f"message:{message_id}") in audit_actions(app)


def test_texts_told_of_by_one_summary_show_the_supervisor_told_on_the_board(
    client: FlaskClient, supervisor: Account, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch,
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    HandlingFails(monkeypatch)
    for number in range(convo.SUMMARY_ABOVE + 2):
        texting.send(f"+1312555018{number}", WORDS)
    wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))
    assert clock_tick()["texts"]["escalated"] == convo.SUMMARY_ABOVE + 2
    sign_in(client, supervisor)

    rows = board(client)["stuck_texts"]

    assert len(rows) == convo.SUMMARY_ABOVE + 2
    assert {(row["supervisors_told"], row["alert"]) for row in rows} == {(1, "yes (1)")}
