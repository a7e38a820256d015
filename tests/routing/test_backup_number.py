"""Issue 11, one place for each fact: the backup number lives in the routing
(``line.backup_number``, dialled by the menus) and in ``BACKUP_NUMBER`` (dialled by every
fail-safe, with no database). Changed in one place only, ``check`` and ``load`` say so,
naming both, and the fail-safe dials the environment's number with the database down."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from crisisline.settings import DEFAULT_ROUTING_FILE, Settings
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, settings_for
from twilio_fake.signing import CallIdentity, signed_headers

DEAD_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/test"
ROUTING_BACKUP = "+18002738255"  # line.backup_number in the example
NEW_PARTNER_LINE = "+13125550177"


def test_a_backup_number_changed_only_in_the_environment_is_warned_about_and_dialled_by_the_failsafe(
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
    assert "+13125550177 here, but BACKUP_NUMBER in the environment is +18005550199" in result.output


def test_no_warning_when_both_places_agree(redis_url: str, make_app: Callable[[Settings], Flask]) -> None:
    agreeing = make_app(settings_for(DEAD_DATABASE, redis_url, BACKUP_NUMBER=ROUTING_BACKUP))

    check = agreeing.test_cli_runner().invoke(args=["routing", "check", str(DEFAULT_ROUTING_FILE)])

    assert check.exit_code == 0
    assert "BACKUP_NUMBER" not in check.output
