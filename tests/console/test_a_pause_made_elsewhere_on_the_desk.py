"""A counselor paused from somewhere other than the desk's switch (missed calls in a row, their
OFF text, their phone blocking the line's texts) sees it on the open desk: the pause is part of
what makes the page reload (me.json's "inbox"), and the page then offers "Take contacts again"
and says why, in plain words. Found by review: the status word turned "paused" while the page
still said "You are taking contacts" with a "Pause me" button, and never said why."""

from __future__ import annotations

import html
import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crisisline.db import db
from line_queue import responders
from tests.console.conftest import Account, sign_in
from tests.console.test_board_and_desk import only_ana_on_call
from transfer import flow


def signature(client: FlaskClient) -> str:
    """me.json's "inbox": when it differs from the open page's, desk.js reloads the page."""
    now = json.loads(client.get("/console/me.json", headers={"X-Console-Poll": "1"}).get_data(as_text=True))
    return str(now["inbox"])


def desk_page(client: FlaskClient) -> str:
    return html.unescape(client.get("/console/me").get_data(as_text=True))


def test_paused_after_missed_calls_the_open_desk_reloads_and_says_why(
    app: Flask, client: FlaskClient, publish_routing: Callable[..., int], counselor: Account
) -> None:
    only_ana_on_call(publish_routing)
    sign_in(client, counselor)
    before = signature(client)
    assert "Pause me" in desk_page(client)

    with app.app_context():  # what the line does after her third missed call in a row
        assert flow.pause_for_missed("ana-ruiz")
        db.session.commit()

    assert signature(client) != before  # the open page reloads
    page = desk_page(client)
    assert "Take contacts again" in page and "Pause me" not in page
    assert "Paused after 3 missed calls in a row." in page

    with app.app_context():  # back by her ON text: the page reloads again, to "Pause me"
        assert responders.set_paused("ana-ruiz", False, None)
        db.session.commit()
    assert signature(client) == before
    assert "Pause me" in desk_page(client)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("self", "You paused yourself (here, or by texting OFF to the line)."),
        ("sms_blocked", "Your phone is blocking the line's texts: text START to the line, then take contacts again."),
    ],
)
def test_paused_by_a_text_or_a_blocked_phone_the_desk_says_so(
    app: Flask, client: FlaskClient, publish_routing: Callable[..., int], counselor: Account, reason: str, words: str
) -> None:
    only_ana_on_call(publish_routing)
    sign_in(client, counselor)
    before = signature(client)
    with app.app_context():  # as sms.staff (OFF) and sms.outbox (error 21610) pause them
        responders.set_paused("ana-ruiz", True, reason)
        db.session.commit()
    assert signature(client) != before
    page = desk_page(client)
    assert "Take contacts again" in page and words in page
