"""A form the console refuses because its page was open too long (an idle sign-out, or an
expired form token) gives back the free text it held, read-only to copy: a routing draft, a
wrap-up note, an unmask reason. And an unmask reason refused as too short stays in its box.
Found by review: each came back empty, so 35 minutes of routing edits, or a reason typed in an
emergency, had to be written again."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Transfer
from tests.console.conftest import Account, csrf_token, sign_in
from tests.console.test_bad_input_is_refused_clearly import editor_form
from tests.console.test_board_and_desk import MENTAL_HEALTH, caller, only_ana_on_call
from tests.console.test_routing_pages import live
from twilio_fake.phone import Phone

EDITS = "# 35 minutes of careful edits\n"
OURS = {"Origin": "http://localhost"}  # as a browser sends a form from the console's own page


def copy_boxes(page: str) -> list[str]:
    """The read-only boxes a refused form's words come back in (line breaks as a browser reads them)."""
    boxes = re.findall(r'<textarea id="typed-\d+"[^>]*readonly>\n(.*?)</textarea>', page, re.S)
    return [as_read(html.unescape(words)) for words in boxes]


def as_read(words: str) -> str:
    return words.replace("\r\n", "\n")


@pytest.mark.parametrize("another_tab_polled", [False, True], ids=["session-ended", "signed-out-while-a-board-polled"])
def test_a_routing_draft_sent_after_the_idle_timeout_comes_back_to_copy_and_nothing_is_published(
    app: Flask, client: FlaskClient, admin: Account, another_tab_polled: bool
) -> None:
    """Its session ended (the form's token with it), or a board open in another tab kept the
    session alive and the idle sign-out refused it: either way the draft comes back."""
    before = live(app)
    idle = timedelta(minutes=app.config["CONSOLE_IDLE_MINUTES"])
    with time_machine.travel("2026-12-02 16:00:00Z", tick=False) as traveller:
        sign_in(client, admin)
        token, base, text = editor_form(client)
        if another_tab_polled:  # its last refresh before the limit keeps the session's cookie alive
            traveller.shift(idle - timedelta(minutes=1))
            assert client.get("/console/board.json", headers={"X-Console-Poll": "1"}).status_code == 200
            traveller.shift(timedelta(minutes=6))
        else:
            traveller.shift(idle + timedelta(minutes=5))

        response = client.post(
            "/console/routing/preview", data={"csrf_token": token, "base": base, "text": text + EDITS}, headers=OURS
        )

    page = response.get_data(as_text=True)
    assert response.status_code == (401 if another_tab_polled else 400)
    assert "was not saved" in page
    assert copy_boxes(page) == [as_read(text + EDITS)]
    assert live(app) == before


def test_a_wrap_up_note_sent_with_an_expired_form_token_comes_back_to_copy(
    client: FlaskClient, counselor: Account
) -> None:
    sign_in(client, counselor)
    note = "Caller safe with sister tonight.\r\nFollow up tomorrow."

    response = client.post("/console/me/wrap-up/voice/1", data={"csrf_token": "expired", "note": note}, headers=OURS)

    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "This form could not be accepted" in page
    assert copy_boxes(page) == [as_read(note)]


def test_a_refusal_with_nothing_typed_shows_no_copy_box(client: FlaskClient, counselor: Account) -> None:
    sign_in(client, counselor)
    response = client.post("/console/me/wrap-up/voice/1", data={"csrf_token": "expired", "note": "  "}, headers=OURS)
    assert response.status_code == 400 and copy_boxes(response.get_data(as_text=True)) == []


def test_an_unmask_reason_refused_as_too_short_stays_in_its_box(
    app: Flask, client: FlaskClient, phone: Phone, publish_routing: Callable[..., int], supervisor: Account
) -> None:
    only_ana_on_call(publish_routing)
    caller(phone, "+13125550201", MENTAL_HEALTH)
    sign_in(client, supervisor)
    with app.app_context():
        transfer_id = db.session.scalars(select(Transfer)).one().id

    page = client.post(
        f"/console/board/unmask/voice/{transfer_id}",
        data={"reason": "OD", "csrf_token": csrf_token(client, "/console/board/unmask")},
    ).get_data(as_text=True)

    box = re.search(rf'<textarea id="reason-voice-{transfer_id}"[^>]*>\n?([^<]*)</textarea>', page)
    assert box and box.group(1) == "OD"
    assert "+13125550201" not in page


def test_a_form_another_site_sent_gets_no_words_of_its_own_shown_as_the_readers(client: FlaskClient) -> None:
    """Found by review: another site's page could send routing text of its own and have our
    page ask an administrator to paste it back."""
    forged = "backup_number: '+15550009999'\n"
    for where in ({"Origin": "https://elsewhere.example"}, {"Sec-Fetch-Site": "cross-site"}, {}):
        page = client.post("/console/routing/preview", data={"text": forged}, headers=where).get_data(as_text=True)
        assert "+15550009999" not in page and copy_boxes(page) == []
