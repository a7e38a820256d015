"""The live board lists the people the line cannot text back (they wrote after texting STOP),
one row per person with their case and whether the supervisors were texted, never a number or
words, for a day or until they text START."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from console.board.live import ago
from routing.store import active_routing
from sms import conversations as convo
from tests.conftest import TextingPhone
from tests.console.conftest import Account, sign_in
from tests.console.test_board_and_desk import board
from tests.sms.test_texts_after_stop import TEXTER, WORDS, last_inbound_id


@pytest.mark.usefixtures("wednesday_evening")
def test_someone_who_wrote_after_stop_is_on_the_board_once_with_whether_the_supervisors_were_texted(
    app: Flask, client: FlaskClient, supervisor: Account, texting: TextingPhone, clock_tick: Callable[[], Any]
) -> None:
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, "hello?")
    texting.send(TEXTER, WORDS)
    latest = last_inbound_id(app)
    sign_in(client, supervisor)

    before_the_sweep = board(client)
    clock_tick()
    after_the_sweep = board(client)
    page = client.get("/console/board").get_data(as_text=True)

    assert [(row["case"], row["alert"]) for row in before_the_sweep["after_stop"]] == [(f"T{latest}", "not yet")]
    assert [(row["case"], row["alert"]) for row in after_the_sweep["after_stop"]] == [(f"T{latest}", "yes (1)")]
    assert after_the_sweep["counts"]["after_stop"] == 1
    assert "People the line cannot text back" in page and f"T{latest}" in page
    for shown in (str(after_the_sweep), page):
        assert "5550177" not in shown and "kill" not in shown


@pytest.mark.usefixtures("wednesday_evening")
def test_someone_who_texts_start_again_leaves_the_board(
    client: FlaskClient, supervisor: Account, texting: TextingPhone
) -> None:
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, WORDS)
    sign_in(client, supervisor)
    assert len(board(client)["after_stop"]) == 1

    texting.send(TEXTER, "START")

    assert board(client)["after_stop"] == []
    assert 'id="after-stop-texts" aria-labelledby="after-stop-title" class="stuck" hidden' in client.get(
        "/console/board"
    ).get_data(as_text=True)


def test_a_person_the_sweep_never_alerted_about_is_shown_as_not_alerted_once_the_alert_window_has_passed(
    app: Flask, client: FlaskClient, supervisor: Account, texting: TextingPhone,
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    """The clock was down when they wrote: the board must not say "not yet" all day."""
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, WORDS)
    wednesday_evening.shift(convo.AFTER_STOP_ALERT_WINDOW + timedelta(minutes=1))
    sign_in(client, supervisor)

    (row,) = board(client)["after_stop"]

    assert row["alert"] == "no alert was sent"
    assert row["ago"] == "11 min ago"


def test_a_line_without_supervisors_says_there_was_nobody_to_text(
    app: Flask, client: FlaskClient, supervisor: Account, texting: TextingPhone,
    publish_routing: Callable[..., int], wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    publish_routing(lambda document: document.update(supervisors=[]))
    with app.app_context():
        active = active_routing()
        assert active is not None and active.document.supervisors == ()
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, WORDS)
    sign_in(client, supervisor)

    (row,) = board(client)["after_stop"]

    assert row["alert"] == "no supervisor is listed to text"


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(0, "just now"), (59, "just now"), (60, "1 min ago"), (3599, "59 min ago"), (3600, "1 h 00 min ago"),
     (86399, "23 h 59 min ago")],
)  # fmt: skip
def test_how_long_ago_reads_for_rows_listed_a_whole_day(seconds: int, said: str) -> None:
    assert ago(seconds) == said


def test_the_board_counts_each_supervisor_once_for_the_persons_latest_text_not_every_alert_of_the_day(
    client: FlaskClient, supervisor: Account, texting: TextingPhone, clock_tick: Callable[[], Any],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, WORDS)
    clock_tick()
    wednesday_evening.shift(timedelta(hours=1))
    texting.send(TEXTER, "please")
    clock_tick()  # a second alert to the same supervisor, for the new hour
    sign_in(client, supervisor)

    (row,) = board(client)["after_stop"]

    assert row["alert"] == "yes (1)"
