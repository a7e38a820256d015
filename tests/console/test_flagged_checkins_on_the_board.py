"""The live board lists the check-ins that need a person (no reply to two texts, or a text the
line could not send) with their case, why, and whether the supervisors were texted; never a
number or words. A supervisor marks one followed up (audited); an answer takes it off too."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import TextingPhone
from tests.console.conftest import Account, audit_actions, csrf_token, sign_in
from tests.console.test_board_and_desk import board
from tests.followups.conftest import checkins, due_contacts_runner
from tests.followups.test_checkins import TEXTER
from tests.followups.test_checkins_when_things_go_wrong import flagged_no_reply


@pytest.fixture
def run_due(app: Flask) -> Callable[[], list[str]]:
    return due_contacts_runner(app)


def test_a_check_in_nobody_answered_is_on_the_board_until_a_supervisor_marks_it_followed_up(
    app: Flask, client: FlaskClient, supervisor: Account, texting: TextingPhone,
    wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]],
) -> None:  # fmt: skip
    flagged_no_reply(app, texting, wednesday_evening, run_due)
    (checkin,) = checkins(app)
    sign_in(client, supervisor)

    shown = board(client)
    page = client.get("/console/board").get_data(as_text=True)

    assert [(row["case"], row["reason"], row["alert"]) for row in shown["flagged_checkins"]] == [
        (f"C{checkin.id}", "no reply to two check-in texts", "yes (1)")
    ]
    assert shown["counts"]["flagged_checkins"] == 1
    assert "Check-ins that need a person" in page and f"C{checkin.id}" in page
    assert "5550181" not in page and "5550181" not in str(shown)

    done = client.post(
        f"/console/board/check-ins/{checkin.id}/followed-up", data={"csrf_token": csrf_token(client, "/console/board")}
    )
    again = client.post(
        f"/console/board/check-ins/{checkin.id}/followed-up",
        data={"csrf_token": csrf_token(client, "/console/board")},
        follow_redirects=True,
    )

    assert done.status_code == 302
    assert "not one to follow up" in again.get_data(as_text=True)
    assert board(client)["flagged_checkins"] == []
    assert checkins(app)[0].state == "followed_up"
    assert audit_actions(app)[-1] == ("sue-supervisor", "checkin_followed_up", f"checkin:{checkin.id}")


def test_a_flagged_check_in_the_person_then_answers_leaves_the_board_by_itself(
    app: Flask, client: FlaskClient, supervisor: Account, texting: TextingPhone,
    wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]],
) -> None:  # fmt: skip
    flagged_no_reply(app, texting, wednesday_evening, run_due)
    sign_in(client, supervisor)
    assert len(board(client)["flagged_checkins"]) == 1

    texting.send(TEXTER, "1")

    assert board(client)["flagged_checkins"] == []
