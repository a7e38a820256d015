"""Never drop a caller: with the database dead, Redis dead, or a bug in a handler, every voice
webhook still answers valid TwiML that dials the backup line from settings."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import redis
import time_machine
from flask import Flask

import ivr.views
from crisisline.settings import Settings
from tests.conftest import (
    LINE_NUMBER,
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    TEST_BACKUP_NUMBER,
    SettledTransport,
    serving,
    settings_for,
)
from twilio_fake.phone import Keys, Phone, RequestsTransport, WsgiTransport
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity, gather_digits_params, signed_headers

DEAD_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:1/test"
DEAD_REDIS = "redis://127.0.0.1:1/0"
MID_CALL_WEBHOOKS = [
    ("/voice/incoming", {}),
    ("/voice/menu/language?attempt=1", {"Digits": "2"}),
    ("/voice/menu/language?attempt=3", {}),
    ("/voice/menu/need?lang=es&attempt=1", {"Digits": "2"}),
    ("/voice/menu/confirm?lang=en&need=danger_now&attempt=1&asked=1", {"Digits": "1"}),
    ("/voice/hold?transfer=1&tick=2&late=2", {}),  # held twice without a database already
    ("/voice/transfer/join?transfer=1", {}),
    ("/voice/transfer/staff-left?transfer=1", {}),
    ("/voice/backup-result?lang=es&attempt=1", {"DialCallStatus": "busy"}),
    ("/voice/fallback", {"ErrorCode": "11200"}),
]


def assert_dials_backup(body: bytes) -> None:
    root = ET.fromstring(body)  # noqa: S314
    assert root.tag == "Response"
    dials = root.findall("Dial")
    assert dials, "no <Dial> in the fail-safe answer"
    assert dials[0].text == TEST_BACKUP_NUMBER
    assert root.find("Hangup") is None


@pytest.fixture(params=["database-down", "database-and-redis-down", "database-unmigrated"])
def broken_app(
    request: pytest.FixtureRequest,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    make_app: Callable[[Settings], Flask],
) -> Flask:
    database = DEAD_POSTGRES
    if request.param == "database-unmigrated":  # reachable, but every query fails
        database = f"sqlite:///{tmp_path_factory.mktemp('unmigrated') / 'never-migrated.db'}"
    redis = DEAD_REDIS if request.param == "database-and-redis-down" else redis_url
    return make_app(settings_for(database, redis))


def test_with_redis_down_a_caller_still_reaches_a_counselor(
    app: Flask, settings: Settings, make_app: Callable[[Settings], Flask], fake: FakeTwilio, app_port: int
) -> None:
    redis_down = make_app(replace(settings, redis_url=DEAD_REDIS))
    with (
        serving(redis_down, app_port) as url,
        time_machine.travel(datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("America/Chicago")), tick=True),
    ):
        # Settled: the first ring is started by the need answer, not waited for.
        transport = SettledTransport(RequestsTransport(), redis_down)
        phone = Phone(transport, url, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
        call = phone.call([Keys("2"), Keys("2")], max_hold_turns=0)
        (leg,) = [c for c in fake.calls.values() if c.direction == "outbound-api"]
        counselor = phone.answer(leg.sid, [Keys("1")])
        phone.resume(call, max_hold_turns=0)

    assert leg.to == "+13125550101"
    assert counselor.conference is not None
    assert call.conference == counselor.conference


@pytest.mark.parametrize(("path", "extra"), MID_CALL_WEBHOOKS)
def test_every_voice_webhook_dials_the_backup_line_when_services_are_down(
    broken_app: Flask, path: str, extra: dict[str, str]
) -> None:
    identity = CallIdentity(TEST_ACCOUNT_SID, "+13125550123", LINE_NUMBER)
    params = identity.voice_params("in-progress", **extra)
    url = "http://localhost" + path

    response = broken_app.test_client().post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params))

    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert_dials_backup(response.data)


def test_a_holding_caller_is_held_twice_more_while_the_database_is_down_then_sent_to_the_backup_line(
    broken_app: Flask,
) -> None:
    identity = CallIdentity(TEST_ACCOUNT_SID, "+13125550124", LINE_NUMBER)
    params = identity.voice_params("in-progress")
    client = broken_app.test_client()
    path, turns = "/voice/hold?transfer=1&tick=4", []
    for _ in range(3):
        url = "http://localhost" + path
        response = client.post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params))
        assert response.status_code == 200
        root = ET.fromstring(response.data)  # noqa: S314
        turns.append(root)
        redirect = root.find("Redirect")
        if redirect is None:
            break
        path = (redirect.text or "").strip()

    assert [turn.find("Pause") is not None for turn in turns] == [True, True, False]
    assert "late=2" in path and "tick=4" in path
    assert_dials_backup(ET.tostring(turns[-1]))
    # Each late turn speaks: before, a bare 5 s pause (with the waits for us, 16 s of dead air).
    assert ["stay on the line" in " ".join(s.text or "" for s in turn.iter("Say")) for turn in turns[:2]] == [True] * 2


def test_a_bug_in_the_routing_engine_still_connects_the_caller(
    app: Flask, phone: Phone, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(ivr.views, "decide_route", broken)

    call = phone.call([Keys("1"), Keys("2")], dial_outcomes=["completed"])

    assert call.dials[0].numbers == [TEST_BACKUP_NUMBER]
    assert call.steps[-1].status == 200


def test_what_the_fail_safe_says_after_a_finished_backup_conversation_is_true(
    app: Flask, phone: Phone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fail-safe's TwiML runs on after its first dial however that ended (it needs no
    request to a line that may be failing): after a conversation that ended with the caller
    still on, "We could not connect your call" was untrue."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(ivr.views, "decide_route", broken)

    call = phone.call([Keys("1"), Keys("2")], dial_outcomes=["completed", "completed"])

    after = call.heard_text().split("connecting you with someone who can help.", 1)[-1]
    assert "could not connect" not in after and "still trying" not in after
    assert "If you still need someone to talk to, please stay on the line." in after


def test_line_mode_override_sends_callers_to_backup_without_touching_the_database(
    redis_url: str, make_app: Callable[[Settings], Flask]
) -> None:
    app = make_app(settings_for(DEAD_POSTGRES, redis_url, LINE_MODE_OVERRIDE="system_down"))
    phone = Phone(WsgiTransport(app.test_client()), "http://localhost", TEST_AUTH_TOKEN, TEST_ACCOUNT_SID)

    call = phone.call([], dial_outcomes=["completed"])
    ready = app.test_client().get("/readyz").get_json()

    assert call.dials[0].numbers == [TEST_BACKUP_NUMBER]
    assert ready["line_mode_override"] == "system_down"  # monitoring sees the switch is on


def test_no_published_routing_still_connects_callers_to_backup(app: Flask) -> None:
    from tests.conftest import _empty_all_tables

    _empty_all_tables(app.config["SQLALCHEMY_DATABASE_URI"])
    identity = CallIdentity(TEST_ACCOUNT_SID, "+13125550123", LINE_NUMBER)
    url = "http://localhost/voice/menu/language?attempt=1"
    params = gather_digits_params(identity, "1")

    response = app.test_client().post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params))

    assert_dials_backup(response.data)


@pytest.mark.usefixtures("a_clock_leads")
def test_readiness_is_refused_while_no_routing_is_published_and_given_once_one_is(
    app: Flask, publish_routing: Callable[..., int]
) -> None:
    """With no routing every caller and texter gets the backup line: monitoring must see it
    (a deployment whose first routing was never published, say). Liveness is unaffected."""
    from tests.conftest import _empty_all_tables

    _empty_all_tables(app.config["SQLALCHEMY_DATABASE_URI"])
    client = app.test_client()

    without = client.get("/readyz")
    alive = client.get("/healthz")
    publish_routing()
    with_one = client.get("/readyz")

    assert (without.status_code, without.get_json()) == (
        503, {"status": "not ready", "database": "ok", "redis": "ok", "routing": "none", "clock": "ok"}
    )  # fmt: skip
    assert alive.status_code == 200
    assert (with_one.status_code, with_one.get_json()["routing"]) == (200, "ok")


def test_failsafe_logs_no_phone_number_or_secret(broken_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    identity = CallIdentity(TEST_ACCOUNT_SID, "+13125550188", LINE_NUMBER)
    params = identity.voice_params()
    url = "http://localhost/voice/incoming"

    with caplog.at_level("DEBUG"):
        broken_app.test_client().post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params))

    logged = caplog.text
    assert "voice webhook failed" in logged
    assert "5550188" not in logged
    assert TEST_AUTH_TOKEN not in logged


@pytest.mark.parametrize("path", ["/voice/hold?transfer=999", "/voice/transfer/join?transfer=abc"])
def test_a_voice_webhook_for_an_unknown_transfer_still_dials_the_backup_line(app: Flask, path: str) -> None:
    identity = CallIdentity(TEST_ACCOUNT_SID, "+13125550123", LINE_NUMBER)
    params = identity.voice_params("in-progress")
    url = "http://localhost" + path

    response = app.test_client().post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params))

    assert response.status_code == 200
    assert_dials_backup(response.data)


def test_a_voice_webhook_without_a_call_sid_still_dials_the_backup_line(app: Flask) -> None:
    url = "http://localhost/voice/menu/language?attempt=1"
    params = {"AccountSid": TEST_ACCOUNT_SID, "Digits": "1"}

    response = app.test_client().post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params))

    assert response.status_code == 200
    assert_dials_backup(response.data)


@pytest.mark.parametrize("withheld", ["anonymous", "+266696687", ""])
def test_the_fail_safe_dials_the_backup_line_for_a_withheld_caller_from_the_lines_number(
    broken_app: Flask, withheld: str
) -> None:
    identity = CallIdentity(TEST_ACCOUNT_SID, withheld, LINE_NUMBER)
    params = identity.voice_params("in-progress")
    url = "http://localhost/voice/incoming"

    response = broken_app.test_client().post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params))

    assert_dials_backup(response.data)
    dials = ET.fromstring(response.data).findall("Dial")  # noqa: S314
    assert [dial.get("callerId") for dial in dials] == [LINE_NUMBER] * len(dials)


def test_readiness_is_refused_while_no_clock_holds_its_lease_and_given_once_one_does(
    app: Flask, clean_redis: redis.Redis
) -> None:
    """Without a clock no safety net runs (searches nobody took are never given up, lost jobs
    never re-queued): monitoring must see it. The lease lapses within the clock's
    ``LEASE_SECONDS`` of its last renewal; liveness is unaffected."""
    from crisisline.app import CLOCK_LEADER_KEY

    client = app.test_client()
    without = client.get("/readyz")
    clean_redis.set(CLOCK_LEADER_KEY, "host:123:abc", ex=90)  # as the leading clock takes it
    with_one = client.get("/readyz")

    assert (without.status_code, without.get_json()) == (
        503, {"status": "not ready", "database": "ok", "redis": "ok", "routing": "ok", "clock": "down"}
    )  # fmt: skip
    assert client.get("/healthz").status_code == 200
    assert (with_one.status_code, with_one.get_json()["clock"]) == (200, "ok")
