"""Closing a console account and the routing's checks: ``flask routing check`` (a file, with
or without the line's database) and the simulator say who the line does not ring and why,
by routing entry and name, never by phone number."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from console.accounts import users
from console.audit.log import CLI
from console.models import COUNSELOR, User
from crisisline.db import db
from crisisline.settings import DEFAULT_ROUTING_FILE, Settings
from tests.conftest import settings_for
from tests.console.conftest import Account, MakeUser, sign_in

GAP = "coverage gap Mon, Tue, Fri 16:00–22:00, English (en) / suicide"
BEN_NOT_RUNG = "counselors[1] (Ben Carter): not rung: console account closed"


def close_ben(app: Flask, make_user: MakeUser) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    with app.app_context():
        users.deactivate(db.session.get_one(User, ben.id), actor=CLI)
        db.session.commit()


def test_routing_check_leaves_the_responder_of_a_closed_account_out_of_the_coverage_and_says_so(
    app: Flask, make_user: MakeUser
) -> None:
    runner = app.test_cli_runner()
    before = runner.invoke(args=["routing", "check", str(DEFAULT_ROUTING_FILE)])
    close_ben(app, make_user)

    after = runner.invoke(args=["routing", "check", str(DEFAULT_ROUTING_FILE)])

    assert before.exit_code == 0 and after.exit_code == 0, after.output
    assert GAP not in before.output and "not rung" not in before.output
    assert GAP in after.output  # as `routing load` of the same file warns
    assert f"{BEN_NOT_RUNG}; left out of the coverage warnings" in after.output
    assert "+1" not in after.output  # never a phone number


def test_routing_check_without_the_line_database_checks_the_file_and_says_what_it_could_not(
    make_app: Callable[[Settings], Flask], redis_url: str, tmp_path: Path
) -> None:
    never_created = tmp_path / "line.db"
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/crisisline"

    for url in (f"sqlite:///{never_created}", unreachable):
        checked = (
            make_app(settings_for(url, redis_url))
            .test_cli_runner()
            .invoke(args=["routing", "check", str(DEFAULT_ROUTING_FILE)])
        )

        assert checked.exit_code == 0, checked.output
        assert "valid (2 languages, 6 needs, 6 responders)" in checked.output
        assert "database could not be read: the coverage warnings count every responder" in checked.output
    assert not never_created.exists()  # checking a file made no database


def test_the_simulator_says_who_is_not_rung_and_why(
    app: Flask, client: FlaskClient, admin: Account, make_user: MakeUser
) -> None:
    close_ben(app, make_user)
    sign_in(client, admin)

    response = client.get("/console/routing/simulator?language=en&need=suicide&day=wed&time=19:00")

    shown = html.unescape(response.get_data(as_text=True))
    rung = re.search(r'<ol id="rung">(.*?)</ol>', shown, re.S)
    not_rung = re.search(r'<ul id="not-rung">(.*?)</ul>', shown, re.S)
    assert rung is not None and not_rung is not None, shown
    assert "Ben Carter" not in rung.group(1) and "Diego Morales" in rung.group(1)
    assert BEN_NOT_RUNG in not_rung.group(1)
    assert "+1" not in not_rung.group(1)


def test_the_cli_simulator_says_who_is_not_rung_and_why(app: Flask, make_user: MakeUser) -> None:
    close_ben(app, make_user)

    who = app.test_cli_runner().invoke(
        args=["routing", "who", "--language", "en", "--need", "suicide", "--at", "2026-12-02 19:00"]
    )

    assert who.exit_code == 0, who.output
    assert f"  {BEN_NOT_RUNG}" in who.output
    assert "+1" not in who.output
