"""Staff see at the top of every console page when the line is down: the operator's emergency
switch (``LINE_MODE_OVERRIDE=system_down``) or a published ``mode: system_down``. Before, the
console showed nothing: a supervisor on the board, or a counselor waiting at their desk, could
not tell why nobody reached them, and the routing form still read ``normal`` under the switch."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete

from console.line_state import line_down_message
from crisisline.db import db
from crisisline.models import RoutingVersion
from tests.console.conftest import Account, sign_in
from tests.console.test_board_and_desk import board

BACKUP_SHOWN = "+1 800-273-8255"  # config/routing.example.yaml's backup_number, as staff read it
_BANNER = re.compile(r'<p id="line-down" class="notice error" role="alert"( hidden)?>([^<]*)</p>')


def banner(client: FlaskClient, path: str) -> tuple[bool, str]:
    """(shown, text) of the line-down banner on the page at ``path``."""
    page = client.get(path)
    assert page.status_code == 200, path
    found = _BANNER.search(page.get_data(as_text=True))
    assert found is not None, f"no line-down banner element on {path}"
    return found.group(1) is None, html.unescape(found.group(2))


@pytest.fixture
def switch_on(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = app.extensions["crisisline.settings"]
    monkeypatch.setitem(app.extensions, "crisisline.settings", replace(settings, line_mode_override="system_down"))


@pytest.mark.usefixtures("switch_on")
def test_the_emergency_switch_is_said_on_every_page_a_supervisor_opens_and_in_the_boards_refresh(
    client: FlaskClient, supervisor: Account
) -> None:
    sign_in(client, supervisor)

    for path in ("/console/board", "/console/metrics", "/console/routing/simulator"):
        shown, text = banner(client, path)
        assert shown, path
        assert "Emergency switch on" in text and BACKUP_SHOWN in text and "LINE_MODE_OVERRIDE" in text
    assert "Emergency switch on" in board(client)["line_down"]


@pytest.mark.usefixtures("switch_on")
def test_a_counselor_at_their_desk_is_told_the_line_is_down(client: FlaskClient, counselor: Account) -> None:
    sign_in(client, counselor)

    shown, text = banner(client, "/console/me")
    polled = client.get("/console/me.json", headers={"X-Console-Poll": "1"}).get_json()

    assert shown and "nothing is offered to counselors" in text
    assert "nothing is offered to counselors" in polled["line_down"]


def test_a_published_system_down_is_said_with_how_to_bring_the_line_back(
    client: FlaskClient, supervisor: Account, publish_routing: Callable[..., int]
) -> None:
    def down(document: dict[str, Any]) -> None:
        document["line"]["mode"] = "system_down"

    publish_routing(down)
    sign_in(client, supervisor)

    shown, text = banner(client, "/console/board")

    assert shown and "published routing's mode is system_down" in text and BACKUP_SHOWN in text
    assert "Emergency switch" not in text
    assert "published routing's mode is system_down" in board(client)["line_down"]


def test_a_line_running_as_published_shows_no_banner(
    app: Flask, client: FlaskClient, supervisor: Account, counselor: Account
) -> None:
    sign_in(client, supervisor)
    assert banner(client, "/console/board") == (False, "")
    assert board(client)["line_down"] is None

    at_the_desk = app.test_client()
    sign_in(at_the_desk, counselor)
    assert banner(at_the_desk, "/console/me") == (False, "")


def test_the_sign_in_page_says_nothing_of_the_line(client: FlaskClient, switch_on: None) -> None:
    page = client.get("/console/sign-in").get_data(as_text=True)

    assert 'id="line-down"' not in page and "Emergency switch" not in page


def test_the_switch_is_named_even_when_the_published_routing_is_down_too() -> None:
    both = line_down_message(switch_on=True, published_down=True, backup_number="+18002738255")
    published = line_down_message(switch_on=False, published_down=True, backup_number="+18002738255")

    assert both is not None and both.startswith("Emergency switch on") and BACKUP_SHOWN in both
    assert published is not None and published.startswith("The line is down")
    assert line_down_message(switch_on=False, published_down=False, backup_number="+18002738255") is None


def test_the_switch_is_said_before_any_routing_is_published(
    app: Flask, client: FlaskClient, supervisor: Account, switch_on: None
) -> None:
    """Found by review: with nothing published the banner said nothing of the switch."""
    sign_in(client, supervisor)
    with app.app_context():
        db.session.execute(delete(RoutingVersion))
        db.session.commit()

    shown, text = banner(client, "/console/audit")

    assert shown and "Emergency switch on" in text
