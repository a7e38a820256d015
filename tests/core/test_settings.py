"""Settings are read once from the environment, typed, and every problem is reported together."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import crisisline.settings as settings_module
from crisisline.settings import Settings, SettingsError, new_data_encryption_key


def production_env(**changes: str) -> dict[str, str]:
    env = {
        "CRISISLINE_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATA_ENCRYPTION_KEY": new_data_encryption_key(),
        "DATABASE_URL": "postgres://line@db.internal/line",
        "REDIS_URL": "redis://cache.internal:6379/0",
        "BACKUP_NUMBER": "(800) 273-8255",
        "PUBLIC_BASE_URL": "https://line.example.org/",
        "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "TWILIO_AUTH_TOKEN": "f" * 32,
    }
    env.update(changes)
    return env


def test_production_settings_are_normalised() -> None:
    settings = Settings.from_env(production_env())

    assert settings.backup_number == "+18002738255"
    assert settings.database_url == "postgresql+psycopg://line@db.internal/line"
    assert settings.public_base_url == "https://line.example.org"
    assert not settings.twilio_is_local


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL: required in production"),
        ({"SECRET_KEY": "a" * 32}, "SECRET_KEY: looks weak or like a placeholder"),
        ({"SECRET_KEY": "change-me-to-a-long-random-string-please"}, "SECRET_KEY: looks weak or like a placeholder"),
        ({"DATA_ENCRYPTION_KEY": base64.urlsafe_b64encode(bytes(32)).decode()}, "DATA_ENCRYPTION_KEY: not random"),
        ({"PUBLIC_BASE_URL": "http://line.example.org"}, "PUBLIC_BASE_URL: must be https:// in production"),
        ({"VOICE_DEADLINE_SECONDS": "14"}, "VOICE_DEADLINE_SECONDS: must be a number of seconds from 0.5 to 5"),
        ({"VOICE_DEADLINE_SECONDS": "soon"}, "VOICE_DEADLINE_SECONDS: must be a number of seconds from 0.5 to 5"),
        ({"DATABASE_POOL_SIZE": "0"}, "DATABASE_POOL_SIZE: must be a whole number from 1 to 500"),
        ({"DATABASE_POOL_SIZE": "many"}, "DATABASE_POOL_SIZE: must be a whole number from 1 to 500"),
        ({"DATABASE_MAX_OVERFLOW": "-1"}, "DATABASE_MAX_OVERFLOW: must be a whole number from 0 to 500"),
    ],
)
def test_production_refuses_unsafe_settings_with_a_clear_message(changes: dict[str, str], refused: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(production_env(**changes))

    assert any(problem.startswith(refused) for problem in raised.value.problems), raised.value.problems


def test_the_voice_deadline_defaults_to_two_seconds_and_is_configurable() -> None:
    assert Settings.from_env(production_env()).voice_deadline_seconds == 2.0
    assert Settings.from_env(production_env(VOICE_DEADLINE_SECONDS="3.5")).voice_deadline_seconds == 3.5


def test_production_refuses_to_start_without_secrets_and_lists_every_problem() -> None:
    env = production_env()
    for name in (
        "SECRET_KEY",
        "DATA_ENCRYPTION_KEY",
        "BACKUP_NUMBER",
        "TWILIO_AUTH_TOKEN",
        "PUBLIC_BASE_URL",
    ):
        del env[name]

    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)

    problems = "\n".join(raised.value.problems)
    for name in (
        "SECRET_KEY",
        "DATA_ENCRYPTION_KEY",
        "BACKUP_NUMBER",
        "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        "PUBLIC_BASE_URL",
    ):
        assert name in problems


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BACKUP_NUMBER", "12345", "BACKUP_NUMBER: not a valid phone number"),
        ("BACKUP_NUMBER", "+1 312 555 0199 ext. 4", "BACKUP_NUMBER: has an extension"),
        ("LINE_PHONE_NUMBER", "(312) 555-0100 x12", "LINE_PHONE_NUMBER: has an extension"),
        ("DATA_ENCRYPTION_KEY", "c2hvcnQ=", "DATA_ENCRYPTION_KEY: must be 32 random bytes"),
        ("TRUSTED_PROXY_COUNT", "many", "TRUSTED_PROXY_COUNT: must be a whole number"),
        ("REDIS_URL", "http://cache", "REDIS_URL: must start with redis://"),
        ("LINE_MODE_OVERRIDE", "panic", "LINE_MODE_OVERRIDE: 'panic' is not one of"),
        ("CRISISLINE_ENV", "staging", "CRISISLINE_ENV: 'staging' is not one of"),
        ("TWILIO_ACCOUNT_SID", "XX123", "TWILIO_ACCOUNT_SID: must be 'AC'"),
    ],
)
def test_bad_values_get_a_clear_error(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(production_env(**{name: value}))

    assert any(message in problem for problem in raised.value.problems)


def test_a_backup_number_that_is_the_lines_own_number_is_refused_however_it_is_written() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(production_env(LINE_PHONE_NUMBER="+1 312 555 0100", BACKUP_NUMBER="(312) 555-0100"))

    assert any("BACKUP_NUMBER: is the line's own number" in problem for problem in raised.value.problems)
    assert not any("555" in problem for problem in raised.value.problems)  # the message repeats no number


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(production_env())

    with pytest.raises(AttributeError):
        settings.backup_number = "+15555555555"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("whose", "expected"), [("running", "redis://127.0.0.1:6390/0"), ("killed", "redis://127.0.0.1:6379/0")]
)
def test_outside_production_flask_commands_find_the_private_redis_of_a_running_line_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whose: str, expected: str
) -> None:
    """``dev.py run`` writes its private Redis (any free port) to ``instance/line.json``; a run
    killed outright leaves the file behind, and its Redis is gone: the default is used then."""
    monkeypatch.setattr(settings_module, "INSTANCE_DIR", tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid = os.getpid() if whose == "running" else dead.pid
    (tmp_path / "line.json").write_text(json.dumps({"redis_url": "redis://127.0.0.1:6390/0", "pid": pid}))

    assert Settings.from_env({"CRISISLINE_ENV": "development"}).redis_url == expected
