"""No number in the routing may be the line's own (``LINE_PHONE_NUMBER``): as the backup
number, ``mode: system_down`` would send every caller back into the line, and every fail-safe
dials it once read; as a responder's or supervisor's phone, the line would ring or text itself.
Refused by ``check``, ``load`` and the console; and a version published before this was
refused never makes the line dial itself: the backup dial falls back to ``BACKUP_NUMBER``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask

from crisisline.failsafe import failsafe_backup_number, remember_backup_number
from crisisline.settings import DEFAULT_ROUTING_FILE, Settings
from routing import publishing, store
from routing.review import check_text
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TEST_BACKUP_NUMBER, settings_for
from twilio_fake.server import FakeTwilioServer
from twilio_fake.signing import CallIdentity, signed_headers

EXAMPLE = DEFAULT_ROUTING_FILE.read_text(encoding="utf-8")
OWN = "+1 312 555 0100"  # LINE_NUMBER as an administrator writes it
BACKUP_IS_OWN = EXAMPLE.replace('backup_number: "+1 800 273 8255"', f'backup_number: "{OWN}"')
SYSTEM_DOWN = BACKUP_IS_OWN.replace("  mode: normal ", "  mode: system_down ")


@pytest.fixture
def settings(database_url: str, redis_url: str, fake_twilio_server: FakeTwilioServer, app_port: int) -> Settings:
    return settings_for(
        database_url, redis_url, TWILIO_API_BASE_URL=fake_twilio_server.base_url,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{app_port}", LINE_PHONE_NUMBER=LINE_NUMBER,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("old", "field"),
    [
        ('backup_number: "+1 800 273 8255"', "line.backup_number"),
        ('phone: "+1 312 555 0101"', "counselors[0].phone"),
        ('phone: "+1 312 555 0190"', "supervisors[0].phone"),
    ],
)
def test_a_number_in_the_routing_that_is_the_lines_own_is_an_error_naming_the_field(old: str, field: str) -> None:
    text = EXAMPLE.replace(old, old.split('"')[0] + f'"{OWN}"', 1)
    assert text != EXAMPLE

    report = check_text(text, now=datetime.now(UTC), line_number=LINE_NUMBER)

    assert report.document is None
    assert [error.path for error in report.errors] == [field]
    assert "is the line's own number (LINE_PHONE_NUMBER)" in report.errors[0].message
    assert LINE_NUMBER not in str(report.errors[0])


def test_a_co_responder_units_phone_that_is_the_lines_own_is_an_error_too() -> None:
    phone = EXAMPLE.split("co_responder_units:", 1)[1].split('phone: "', 1)[1].split('"', 1)[0]
    text = EXAMPLE.replace(f'phone: "{phone}"', f'phone: "{OWN}"')

    report = check_text(text, now=datetime.now(UTC), line_number=LINE_NUMBER)

    assert [error.path for error in report.errors] == ["co_responder_units[0].phone"]


def test_without_the_lines_number_nothing_is_compared() -> None:
    assert check_text(BACKUP_IS_OWN, now=datetime.now(UTC)).valid


def test_publishing_a_backup_number_that_is_the_lines_own_is_refused(app: Flask) -> None:
    with app.app_context():
        base = publishing.history()[0].number
        with pytest.raises(publishing.PublishRefused) as refused:
            publishing.publish(SYSTEM_DOWN, base=base, note="partner line", author="ada")
        assert publishing.history()[0].number == base
    assert refused.value.preview is not None
    assert [problem.path for problem in refused.value.preview.problems] == ["line.backup_number"]


def test_flask_routing_check_refuses_it(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(BACKUP_IS_OWN, encoding="utf-8")

    result = app.test_cli_runner().invoke(args=["routing", "check", str(path)])

    assert result.exit_code == 1
    assert "line.backup_number: is the line's own number" in result.output


def incoming_call(app: Flask) -> bytes:
    identity = CallIdentity(TEST_ACCOUNT_SID, "+13125550123", LINE_NUMBER)
    params = identity.voice_params("ringing")
    url = "http://localhost/voice/incoming"
    return app.test_client().post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params)).data


def test_a_version_published_before_this_was_refused_dials_backup_number_not_the_line(app: Flask) -> None:
    with app.app_context():
        store.publish(SYSTEM_DOWN, published_by="before the check")

    dial = ET.fromstring(incoming_call(app)).find("Dial")  # noqa: S314

    assert dial is not None and (dial.text or "").strip() == TEST_BACKUP_NUMBER != LINE_NUMBER


@pytest.mark.parametrize("line_setting", [LINE_NUMBER, None])
def test_the_failsafe_never_dials_the_calls_own_number_either(
    app: Flask, settings: Settings, line_setting: str | None
) -> None:
    form = {"To": LINE_NUMBER, "From": "+13125550123"}
    if line_setting is None:  # the call's own To is enough
        app.extensions["crisisline.settings"] = replace(settings, line_phone_number=None)
    with app.test_request_context("/voice/fallback", method="POST", data=form):
        remember_backup_number(LINE_NUMBER)
        assert failsafe_backup_number() == TEST_BACKUP_NUMBER
        remember_backup_number("+13125550177")  # another number: dialled as it is
        assert failsafe_backup_number() == "+13125550177"
