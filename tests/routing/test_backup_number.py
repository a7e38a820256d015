"""Issue 11, one place for each fact: the backup number is edited in the routing
(``line.backup_number``). The menus dial it, and so does every fail-safe once its process has
read the routing, with the database down since. ``BACKUP_NUMBER`` is only what a process
dials before it ever read the routing (it started with the database down); when the two
differ, ``check`` and ``load`` say so, naming both."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask

from crisisline.settings import DEFAULT_ROUTING_FILE, Settings
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, settings_for
from tests.faults import StallingProxy
from twilio_fake.signing import CallIdentity, signed_headers

DEAD_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/test"
ROUTING_BACKUP = "+18002738255"  # line.backup_number in the example
NEW_PARTNER_LINE = "+13125550177"


def test_a_backup_number_changed_in_the_routing_is_dialled_by_the_failsafe_with_the_database_down(
    app: Flask, settings: Settings, make_app: Callable[[Settings], Flask]
) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("the database goes down as PostgreSQL's TCP connection does (tests/faults.py)")
    server = urlsplit(settings.database_url)
    with StallingProxy(server.hostname or "127.0.0.1", server.port or 5432) as database:
        proxied = make_app(
            settings_for(settings.database_url.replace(server.netloc, f"{server.username}@127.0.0.1:{database.port}"),
                         settings.redis_url)
        )  # fmt: skip
        changed = DEFAULT_ROUTING_FILE.read_text(encoding="utf-8").replace("+1 800 273 8255", "+1 312 555 0177")
        with proxied.app_context():
            from routing import publishing

            publishing.publish(changed, base=publishing.history()[0].number, note="new partner line", author="ada")
        first = incoming_call(proxied)  # the line reads the routing as it answers
        database.refuse()
        down = incoming_call(proxied)

    assert dialled(first) is None  # the menus, not a fail-safe
    assert dialled(down) == NEW_PARTNER_LINE != settings.backup_number


def incoming_call(app: Flask) -> bytes:
    identity = CallIdentity(TEST_ACCOUNT_SID, "+13125550123", LINE_NUMBER)
    params = identity.voice_params("ringing")
    url = "http://localhost/voice/incoming"
    return app.test_client().post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params)).data


def dialled(answer: bytes) -> str | None:
    dial = ET.fromstring(answer).find("Dial")  # noqa: S314
    return dial.text if dial is not None else None


def test_a_process_that_never_read_the_routing_dials_the_environments_number_and_check_warns(
    redis_url: str, make_app: Callable[[Settings], Flask]
) -> None:
    changed = make_app(settings_for(DEAD_DATABASE, redis_url, BACKUP_NUMBER=NEW_PARTNER_LINE))

    check = changed.test_cli_runner().invoke(args=["routing", "check", str(DEFAULT_ROUTING_FILE)])
    identity = CallIdentity(TEST_ACCOUNT_SID, "+13125550123", LINE_NUMBER)
    params = identity.voice_params("ringing")
    url = "http://localhost/voice/incoming"
    answer = changed.test_client().post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params))

    assert check.exit_code == 0  # a warning: the file itself is valid
    assert (
        f"warning: line.backup_number: {ROUTING_BACKUP} here, but BACKUP_NUMBER in the environment is "
        f"{NEW_PARTNER_LINE}" in check.output
    )
    dial = ET.fromstring(answer.data).find("Dial")  # noqa: S314
    assert dial is not None and dial.text == NEW_PARTNER_LINE


def test_load_warns_before_publishing_a_backup_number_the_environment_does_not_have(app: Flask, tmp_path: Path) -> None:
    from routing import publishing

    with app.app_context():
        base = publishing.history()[0].number
    draft = tmp_path / "routing.yaml"
    draft.write_text(
        DEFAULT_ROUTING_FILE.read_text(encoding="utf-8").replace("+1 800 273 8255", "+1 312 555 0177"), encoding="utf-8"
    )

    result = app.test_cli_runner().invoke(
        args=["routing", "load", str(draft), "--base", str(base), "--note", "new partner line"]
    )

    assert result.exit_code == 0, result.output
    assert '-  backup_number: "+1 800 273 8255"' in result.output
    assert "+13125550177 here, but BACKUP_NUMBER in the environment is +18002738255" in result.output


def test_no_warning_when_both_places_agree(redis_url: str, make_app: Callable[[Settings], Flask]) -> None:
    agreeing = make_app(settings_for(DEAD_DATABASE, redis_url, BACKUP_NUMBER=ROUTING_BACKUP))

    check = agreeing.test_cli_runner().invoke(args=["routing", "check", str(DEFAULT_ROUTING_FILE)])

    assert check.exit_code == 0
    assert "BACKUP_NUMBER" not in check.output
