"""The live board lists, for a day, the follow-ups the line promised someone and gave up
running (a callback, a "we missed your call" or "we tried to call you back" text), and a
"we tried" text that did not reach them. Found by review: neither was shown anywhere but the
worker's log, so a broken promise to a person in crisis went unseen."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from callbacks import attempts as callback_attempts
from console.board.live import UNFINISHED_KINDS, UNFINISHED_LISTED_FOR
from tests.callbacks.test_an_attempt_interrupted import a_bug_in_the_attempts_path, run_each_try_of_the_attempt
from tests.callbacks.test_callbacks import CALLER, ask_for_callback, contacts
from tests.console.conftest import Account, sign_in
from tests.console.test_board_and_desk import board, without_digits_of
from tests.rota import around_the_clock
from tests.workers.test_one_text_refused_for_now import MESSAGES, a_callback_given_up, kinds_and_outcomes
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("clean_redis")


def a_callback_the_line_could_not_make(
    app: Flask, phone: Phone, monkeypatch: pytest.MonkeyPatch, publish_routing: Callable[..., int]
) -> int:
    publish_routing(around_the_clock)
    ask_for_callback(phone)
    monkeypatch.setattr(callback_attempts, "_reached_us_since", a_bug_in_the_attempts_path)
    run_each_try_of_the_attempt(app)
    monkeypatch.undo()
    (given_up,) = contacts(app, "callback")
    assert given_up.state == "needs_human"
    return given_up.id


def test_a_callback_the_line_could_not_make_is_on_the_board_for_a_day_without_the_number(
    app: Flask, client: FlaskClient, supervisor: Account, phone: Phone, monkeypatch: pytest.MonkeyPatch,
    wednesday_evening: time_machine.Coordinates, publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    contact_id = a_callback_the_line_could_not_make(app, phone, monkeypatch, publish_routing)
    sign_in(client, supervisor)

    listed = board(client)
    page = client.get("/console/board").get_data(as_text=True)

    assert [(row["contact_id"], row["what"]) for row in listed["unfinished"]] == [
        (contact_id, UNFINISHED_KINDS["callback"])
    ]
    assert listed["counts"]["unfinished"] == 1
    assert "Follow-ups the line could not finish" in page and f'data-contact="{contact_id}"' in page
    assert without_digits_of([CALLER], str(listed)) and without_digits_of([CALLER], page)
    wednesday_evening.shift(UNFINISHED_LISTED_FOR + timedelta(minutes=1))
    sign_in(client, supervisor)  # a day on: the session has long ended
    assert board(client)["unfinished"] == []


def test_the_unfinished_list_is_hidden_while_nothing_is_in_it(client: FlaskClient, supervisor: Account) -> None:
    sign_in(client, supervisor)
    assert board(client)["unfinished"] == []
    page = client.get("/console/board").get_data(as_text=True)
    assert 'id="unfinished-contacts" aria-labelledby="unfinished-title" class="stuck" hidden' in page


def test_a_we_tried_text_that_did_not_reach_the_person_is_on_the_board(
    app: Flask, client: FlaskClient, supervisor: Account, phone: Phone, fake: FakeTwilio,
    wednesday_evening: time_machine.Coordinates, publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    run_due = a_callback_given_up(app, phone, wednesday_evening, publish_routing)
    fake.inject_fault("POST", MESSAGES, status=400, code=21211, message="Invalid 'To' Phone Number")
    assert run_due() == ["send_failed"]
    assert kinds_and_outcomes(app, "callback_missed") == [("failed", "send_failed")]
    sign_in(client, supervisor)

    (row,) = board(client)["undelivered"]

    assert (row["tag"], row["counselor"]) == (None, None)  # nobody holds it: someone may need to reach them
