"""Genuinely signed requests with malformed values (oversized, NUL bytes, "²", junk) get a safe
answer: voice routes TwiML, status callbacks 204, never a 5xx; nothing bad reaches the database."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import quote
from xml.etree import ElementTree

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from crisisline.db import db
from crisisline.models import Call, CallEvent
from tests.conftest import TEST_AUTH_TOKEN, TEST_BACKUP_NUMBER
from twilio_fake.signing import CallIdentity, gather_digits_params, signed_headers

IDENTITY = CallIdentity("AC" + "7" * 32, "+13125550123", "+13125550100")
BAD_SIDS = {"5,000 characters": "CA" + "a" * 4998, "NUL byte": IDENTITY.call_sid[:10] + "\x00" + IDENTITY.call_sid[11:]}


def post(client: FlaskClient, path: str, params: Mapping[str, str]) -> TestResponse:
    url = "http://localhost" + quote(path, safe="/?=&")  # as Twilio requests (and signs) it
    return client.post(url, data=dict(params), headers=signed_headers(TEST_AUTH_TOKEN, url, params))


def twiml(response: TestResponse) -> ElementTree.Element:
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    root = ElementTree.fromstring(response.data)  # noqa: S314 - our own app's TwiML
    assert root.tag == "Response"
    return root


def dials_backup(root: ElementTree.Element) -> bool:
    return any((dial.text or "").strip() == TEST_BACKUP_NUMBER for dial in root.iter("Dial"))


def status(call_status: str, **extra: str) -> dict[str, str]:
    return IDENTITY.voice_params(call_status, CallbackSource="call-progress-events", **extra)


def call_rows(app: Flask) -> list[tuple[str, str]]:
    with app.app_context():
        return [(c.call_sid, c.status) for c in db.session.scalars(select(Call))]


def test_status_callback_with_a_500_character_call_status_is_acknowledged_and_ignored(
    app: Flask, client: FlaskClient
) -> None:
    assert post(client, "/voice/incoming", IDENTITY.voice_params()).status_code == 200

    response = post(client, "/voice/status", status("x" * 500, SequenceNumber="3"))

    assert response.status_code == 204
    assert call_rows(app) == [(IDENTITY.call_sid, "ringing")]


@pytest.mark.parametrize("kind", BAD_SIDS)
def test_status_callback_with_a_malformed_call_sid_is_acknowledged_ignored_and_logged_by_kind(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    params = {**status("completed", CallDuration="30"), "CallSid": BAD_SIDS[kind]}

    with caplog.at_level(logging.WARNING):
        response = post(client, "/voice/status", params)

    assert response.status_code == 204
    assert call_rows(app) == []
    assert "CallSid" in caplog.text
    assert "aaaaaaaa" not in caplog.text and IDENTITY.call_sid[11:] not in caplog.text


def test_status_callback_numbers_that_only_look_like_digits_are_ignored_not_fatal(
    app: Flask, client: FlaskClient
) -> None:
    post(client, "/voice/incoming", IDENTITY.voice_params())

    response = post(client, "/voice/status", status("completed", SequenceNumber="²", CallDuration="²"))

    assert response.status_code == 204
    with app.app_context():
        call = db.session.scalars(select(Call)).one()
        assert (call.status, call.duration_seconds, call.ended_at is not None) == ("completed", None, True)


@pytest.mark.parametrize("kind", BAD_SIDS)
@pytest.mark.parametrize("path", ["/voice/incoming", "/voice/menu/language?attempt=1", "/voice/backup-result"])
def test_a_voice_webhook_for_a_call_sid_we_cannot_follow_dials_the_backup_line(
    app: Flask, client: FlaskClient, path: str, kind: str
) -> None:
    params = {**gather_digits_params(IDENTITY, "1"), "CallSid": BAD_SIDS[kind]}

    root = twiml(post(client, path, params))

    assert dials_backup(root)
    assert call_rows(app) == []


@pytest.mark.parametrize(
    "digits", ["²", "1\x00", "x" * 5000, "<Dial>911</Dial>"], ids=["superscript", "NUL", "5000 chars", "markup"]
)
def test_malformed_keypad_input_asks_again_instead_of_failing(app: Flask, client: FlaskClient, digits: str) -> None:
    post(client, "/voice/incoming", IDENTITY.voice_params())

    root = twiml(post(client, "/voice/menu/language?attempt=1", gather_digits_params(IDENTITY, digits)))

    assert root.find("Gather") is not None  # the language menu again
    assert not dials_backup(root)
    with app.app_context():
        kinds = db.session.scalars(select(CallEvent.kind).order_by(CallEvent.id)).all()
    assert kinds == ["call.started", "menu.language.no_input"]


def test_speech_with_nul_bytes_and_of_any_length_is_understood_or_asked_again(client: FlaskClient) -> None:
    post(client, "/voice/incoming", IDENTITY.voice_params())
    params = IDENTITY.voice_params("in-progress", SpeechResult="English\x00 " + "please " * 2000, Confidence="0.9")

    root = twiml(post(client, "/voice/menu/language?attempt=1", params))

    assert not dials_backup(root)


@pytest.mark.parametrize("attempt", ["²", "99999999999999999999", "-1", ""])
def test_a_malformed_attempt_counter_in_our_own_url_starts_over_instead_of_failing(
    client: FlaskClient, attempt: str
) -> None:
    post(client, "/voice/incoming", IDENTITY.voice_params())

    root = twiml(post(client, f"/voice/menu/language?attempt={attempt}", gather_digits_params(IDENTITY, "7")))

    assert root.find("Gather") is not None
    assert not dials_backup(root)


@pytest.mark.parametrize(
    "path",
    [
        "/voice/offer/status?offer=²",
        "/voice/offer/status?offer=99999999999",
        "/voice/offer/status?offer=1",
        "/voice/conference/events?transfer=²",
        "/voice/conference/events?transfer=1",
        "/voice/callback/status?transfer=²",
        "/voice/callback/status?transfer=1",
    ],
)
def test_status_callbacks_for_nothing_we_know_are_acknowledged(app: Flask, client: FlaskClient, path: str) -> None:
    params = status("x" * 500, SequenceNumber="²", StatusCallbackEvent="y" * 500, ParticipantLabel="\x00" * 10)

    assert post(client, path, params).status_code == 204
    with app.app_context():
        assert db.session.scalar(select(func.count(CallEvent.id))) == 0
