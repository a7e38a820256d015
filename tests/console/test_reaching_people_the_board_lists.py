"""The board tells supervisors to reach the person behind a flagged check-in or a follow-up
the line could not finish. Found by review: nothing gave them the number (the emergency
unmask listed live contacts only), and an unfinished follow-up had no "a person has this".
Now both are on the unmask page, with a reason and audited like any unmask, and a follow-up
a person has taken on leaves the board (once, audited)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from tests.callbacks.test_callbacks import CALLER, ask_for_callback, contacts
from tests.conftest import TextingPhone
from tests.console.conftest import Account, audit_actions, csrf_token, sign_in
from tests.console.test_board_and_desk import board
from tests.console.test_unfinished_follow_ups_on_the_board import a_callback_the_line_could_not_make
from tests.console.test_unmask import unmask
from tests.followups.conftest import checkins, due_contacts_runner
from tests.followups.test_checkins import TEXTER
from tests.followups.test_checkins_when_things_go_wrong import flagged_no_reply
from tests.rota import around_the_clock
from twilio_fake.phone import Phone

pytestmark = pytest.mark.usefixtures("clean_redis")
REASON = "Their callback never happened; calling them from the office line"


def take_over(client: FlaskClient, contact_id: int) -> tuple[int, str]:
    response = client.post(
        f"/console/board/follow-ups/{contact_id}/taken",
        data={"csrf_token": csrf_token(client, "/console/board")},
        follow_redirects=True,
    )
    return response.status_code, response.get_data(as_text=True)


def test_a_supervisor_gets_the_number_of_a_callback_the_line_could_not_make_then_marks_it_taken_over(
    app: Flask, client: FlaskClient, supervisor: Account, phone: Phone, monkeypatch: pytest.MonkeyPatch,
    wednesday_evening: time_machine.Coordinates, publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    contact_id = a_callback_the_line_could_not_make(app, phone, monkeypatch, publish_routing)
    sign_in(client, supervisor)
    page = client.get("/console/board").get_data(as_text=True)
    assert "/console/board/unmask" in page.split('id="unfinished-contacts"')[1].split("</section>")[0]

    listing = client.get("/console/board/unmask").get_data(as_text=True)
    assert f"follow-up {contact_id}" in listing and "a callback we promised them" in listing
    assert CALLER not in listing and CALLER[-7:] not in listing
    refused, refused_page = unmask(client, f"/console/board/unmask/followup/{contact_id}", "")
    assert refused == 400 and CALLER not in refused_page
    shown, shown_page = unmask(client, f"/console/board/unmask/followup/{contact_id}", REASON)
    assert shown == 200 and CALLER in shown_page
    assert audit_actions(app)[-1] == ("sue-supervisor", "unmask", f"contact:{contact_id}")

    taken, taken_page = take_over(client, contact_id)
    again, again_page = take_over(client, contact_id)

    assert taken == 200 and f"Follow-up {contact_id} is marked as taken over" in taken_page
    assert again == 200 and "not one to take over" in again_page
    assert board(client)["unfinished"] == []
    assert [c.state for c in contacts(app, "callback")] == ["taken_over"]
    assert [a for a in audit_actions(app) if a[1] == "follow_up_taken_over"] == [
        ("sue-supervisor", "follow_up_taken_over", f"contact:{contact_id}")
    ]
    # Off the board, off the unmask page: nobody is told to reach them any more.
    assert f"follow-up {contact_id}" not in client.get("/console/board/unmask").get_data(as_text=True)
    assert unmask(client, f"/console/board/unmask/followup/{contact_id}", REASON)[0] == 404


def test_a_follow_up_the_line_is_still_running_cannot_be_taken_over_or_unmasked(
    app: Flask, client: FlaskClient, supervisor: Account, phone: Phone,
    wednesday_evening: time_machine.Coordinates, publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(around_the_clock)
    ask_for_callback(phone)
    (running,) = contacts(app, "callback")
    assert running.state == "pending"
    sign_in(client, supervisor)
    before = audit_actions(app)

    status, page = take_over(client, running.id)

    assert status == 200 and "not one to take over" in page
    assert unmask(client, f"/console/board/unmask/followup/{running.id}", REASON)[0] == 404
    assert [c.state for c in contacts(app, "callback")] == ["pending"]
    assert audit_actions(app) == before


def test_a_supervisor_gets_the_number_of_a_check_in_that_needs_a_person_until_it_is_followed_up(
    app: Flask, client: FlaskClient, supervisor: Account, texting: TextingPhone,
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    flagged_no_reply(app, texting, wednesday_evening, due_contacts_runner(app))
    (checkin,) = checkins(app)
    sign_in(client, supervisor)
    flagged_section = client.get("/console/board").get_data(as_text=True).split('id="flagged-checkins"')[1]
    assert "/console/board/unmask" in flagged_section.split("</section>")[0]

    listing = client.get("/console/board/unmask").get_data(as_text=True)
    assert f"check-in C{checkin.id}" in listing and "no reply to two check-in texts" in listing
    assert TEXTER not in listing and TEXTER[-7:] not in listing
    status, page = unmask(client, f"/console/board/unmask/checkin/{checkin.id}", "No reply to the check-in; calling")
    assert status == 200 and TEXTER in page
    assert audit_actions(app)[-1] == ("sue-supervisor", "unmask", f"checkin:{checkin.id}")

    client.post(
        f"/console/board/check-ins/{checkin.id}/followed-up", data={"csrf_token": csrf_token(client, "/console/board")}
    )

    assert f"check-in C{checkin.id}" not in client.get("/console/board/unmask").get_data(as_text=True)
    assert unmask(client, f"/console/board/unmask/checkin/{checkin.id}", "No reply to the check-in; calling")[0] == 404
