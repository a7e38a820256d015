"""The live board lists, for a day, each callback the line gave up without reaching its person
(nobody free in time, no answer, a number our phone service refuses for good), with the
follow-ups it could not finish: by the case the supervisors were texted (CB12), why in that
text's words, when, and the language and need the queue showed, never a number. Before, only
the supervisors' text and the emergency unmask page said so: a supervisor watching the board
did not see that someone who asked to be called back never was."""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from callbacks.attempts import (
    LINE_FAILED,
    NUMBER_INVALID,
    NUMBER_NOT_CALLABLE,
    UNREACHED_ALERT,
    UNREACHED_LISTED_FOR,
    UNREACHED_REASON,
    give_up,
)
from console.board.live import UNREACHED_WHAT
from crisisline.db import db
from crisisline.models import Callback, ScheduledContact
from tests.callbacks.test_callbacks import CALLER, ask_for_callback, callbacks
from tests.console.conftest import Account, sign_in
from tests.console.test_board_and_desk import board, without_digits_of
from tests.console.test_unfinished_follow_ups_on_the_board import a_callback_the_line_could_not_make
from tests.rota import around_the_clock
from tests.workers.test_one_text_refused_for_now import a_callback_given_up
from twilio_fake.phone import Phone
from workers.contacts import schedule

pytestmark = pytest.mark.usefixtures("clean_redis")
OTHER_CALLER = "+13125550177"


def the_board(client: FlaskClient) -> tuple[dict[str, Any], str]:
    """What the board's script polls, and the page as first drawn (entities unescaped)."""
    return board(client), html.unescape(client.get("/console/board").get_data(as_text=True))


def unfinished_section(page: str) -> str:
    return page.split('id="unfinished-contacts"')[1].split("</section>")[0]


def two_callbacks_asked_with_nobody_on_call(app: Flask, phone: Phone, publish_routing: Callable[..., int]) -> list[int]:
    """Two people (English, thoughts of suicide) asked to be called back: both still open."""
    publish_routing(lambda document: around_the_clock(document, on_call=()))
    ask_for_callback(phone, CALLER)
    ask_for_callback(phone, OTHER_CALLER)
    asked = callbacks(app)
    assert [callback.state for callback in asked] == ["waiting", "waiting"]
    return [callback.id for callback in asked]


def given_up(app: Flask, callback_id: int, outcome: str) -> None:
    with app.app_context():
        callback = db.session.get(Callback, callback_id)
        assert callback is not None and give_up(callback, outcome, text=outcome != NUMBER_INVALID)


def test_a_callback_nobody_was_free_to_make_is_on_the_board_by_its_case_for_a_day_without_the_number(
    app: Flask, client: FlaskClient, supervisor: Account, phone: Phone,
    wednesday_evening: time_machine.Coordinates, publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    a_callback_given_up(app, phone, wednesday_evening, publish_routing)  # tended: nobody took its search in time
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("gave_up", "nobody_free")
    wednesday_evening.shift(timedelta(minutes=7))
    sign_in(client, supervisor)

    listed, page = the_board(client)

    (row,) = listed["unfinished"]
    assert row == {
        "contact_id": None,  # nothing to mark taken over: it leaves the board after its day
        "what": "a callback we promised them reached nobody: no counselor was free to call them back in time",
        "ago": "7 min ago",
        "case": f"CB{callback.id}",  # as the supervisors' text named it
        "language": "English",
        "need": "Thoughts of suicide",
    }
    assert listed["counts"]["unfinished"] == 1
    section = unfinished_section(page)
    assert 'class="stuck" hidden' not in page.split('id="unfinished-contacts"')[1].split(">")[0]
    assert f'<tr data-case="CB{callback.id}"><td>CB{callback.id}</td><td>{row["what"]}</td>' in section
    assert "<td>English</td><td>Thoughts of suicide</td><td>7 min ago</td><td></td></tr>" in section
    assert "A person has this" not in section  # no follow-up of its own to mark
    assert without_digits_of([CALLER], str(listed)) and without_digits_of([CALLER], page)

    wednesday_evening.shift(UNREACHED_LISTED_FOR)
    sign_in(client, supervisor)  # a day on: the session has long ended
    listed, page = the_board(client)
    assert listed["unfinished"] == [] and f'data-case="CB{callback.id}"' not in page


@pytest.mark.parametrize("outcome", ["no_answer", NUMBER_INVALID, NUMBER_NOT_CALLABLE])
def test_why_a_callback_was_given_up_is_said_in_the_words_the_supervisors_were_texted(
    app: Flask, client: FlaskClient, supervisor: Account, phone: Phone,
    wednesday_evening: time_machine.Coordinates, publish_routing: Callable[..., int], outcome: str,
) -> None:  # fmt: skip
    first, _ = two_callbacks_asked_with_nobody_on_call(app, phone, publish_routing)
    given_up(app, first, outcome)
    sign_in(client, supervisor)

    listed, page = the_board(client)

    why = UNREACHED_WHAT.format(reason=UNREACHED_REASON[outcome])
    assert [(row["case"], row["what"]) for row in listed["unfinished"]] == [(f"CB{first}", why)]
    assert why in unfinished_section(page)
    assert without_digits_of([CALLER, OTHER_CALLER], str(listed) + page)


@pytest.mark.parametrize(
    ("state", "outcome"),
    [("waiting", None), ("retry_wait", None), ("connected", "connected"), ("canceled", "called_in")],
    ids=["still-searching", "waiting-to-retry", "reached", "called-in-themselves"],
)
def test_a_callback_still_open_or_that_reached_its_person_is_not_on_the_board(
    app: Flask, client: FlaskClient, supervisor: Account, phone: Phone,
    wednesday_evening: time_machine.Coordinates, publish_routing: Callable[..., int], state: str, outcome: str | None,
) -> None:  # fmt: skip
    first, second = two_callbacks_asked_with_nobody_on_call(app, phone, publish_routing)
    given_up(app, first, "no_answer")
    if outcome is not None:  # as the line ends one that reached its person
        with app.app_context():
            db.session.execute(
                update(Callback)
                .where(Callback.id == second)
                .values(state=state, outcome=outcome, finished_at=datetime.now(UTC))
            )
            db.session.commit()
    elif state != "waiting":
        with app.app_context():
            db.session.execute(update(Callback).where(Callback.id == second).values(state=state))
            db.session.commit()
    assert [callback.state for callback in callbacks(app)] == ["gave_up", state]
    sign_in(client, supervisor)

    listed, page = the_board(client)

    assert [row["case"] for row in listed["unfinished"]] == [f"CB{first}"]  # the one given up, only
    assert f'data-case="CB{second}"' not in page


def test_a_callback_the_line_failed_to_make_is_listed_once_as_its_follow_up_with_its_language_and_need(
    app: Flask, client: FlaskClient, supervisor: Account, phone: Phone, monkeypatch: pytest.MonkeyPatch,
    wednesday_evening: time_machine.Coordinates, publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """Its attempt kept failing: the callback ends ``line_failed`` and its supervisors are
    texted, but the board has it already as the follow-up "a person has this" takes off."""
    contact_id = a_callback_the_line_could_not_make(app, phone, monkeypatch, publish_routing)
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("gave_up", LINE_FAILED)
    sign_in(client, supervisor)

    listed, page = the_board(client)

    assert [(row["contact_id"], row["case"], row["language"], row["need"]) for row in listed["unfinished"]] == [
        (contact_id, str(contact_id), "English", "Thoughts of suicide")
    ]
    assert f'data-case="CB{callback.id}"' not in page
    assert "<td>English</td><td>Thoughts of suicide</td>" in unfinished_section(page)


@pytest.mark.parametrize("round_", [0, 2], ids=["its-first-alert", "an-alert-sent-again"])
def test_a_callback_whose_alert_found_nothing_to_tell_is_not_on_the_board_nor_unmaskable(
    app: Flask, client: FlaskClient, supervisor: Account, phone: Phone,
    wednesday_evening: time_machine.Coordinates, publish_routing: Callable[..., int], round_: int,
) -> None:  # fmt: skip
    """Its supervisors' alert ran and found nothing to tell (a counselor has had them since, or
    a check-in's "2" rode on it and is listed as that check-in): the worker's outcome for it is
    ``not_needed``. Before, the board still asked a supervisor to reach them, by a case nobody
    was texted, and the unmask page offered their number. So too when an alert sent again
    (Twilio refused the first for now) finds it: the board looked at the first round only."""
    first, second = two_callbacks_asked_with_nobody_on_call(app, phone, publish_routing)
    given_up(app, first, "no_answer")
    given_up(app, second, "no_answer")
    key = f"{UNREACHED_ALERT}:{second}" + (f":again:{round_}" if round_ else "")
    with app.app_context():
        if round_:  # as ``callbacks.attempts._alert_again`` schedules it
            schedule(UNREACHED_ALERT, key, datetime.now(UTC), callback_id=second)
        db.session.execute(
            update(ScheduledContact)
            .where(ScheduledContact.dedupe_key == key)
            .values(state="sent", outcome="not_needed", finished_at=datetime.now(UTC))
        )
        db.session.commit()
    sign_in(client, supervisor)

    listed, page = the_board(client)

    assert [row["case"] for row in listed["unfinished"]] == [f"CB{first}"]
    assert f'data-case="CB{second}"' not in page
    unmask_page = html.unescape(client.get("/console/board/unmask").get_data(as_text=True))
    assert f"CB{first}" in unmask_page and f"CB{second}" not in unmask_page
