"""Twilio may deliver a webhook twice or callbacks out of order: nothing is recorded twice and
nothing moves backwards."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from crisisline.db import db
from crisisline.models import Call, CallEvent
from tests.conftest import TEST_AUTH_TOKEN
from twilio_fake.signing import CallIdentity, gather_digits_params, signed_headers

IDENTITY = CallIdentity("AC" + "7" * 32, "+13125550123", "+13125550100")


def post(client: FlaskClient, path: str, params: dict[str, str]) -> int:
    url = "http://localhost" + path
    return client.post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params)).status_code


def counts(app: Flask) -> tuple[int, int]:
    with app.app_context():
        return (
            db.session.scalar(select(func.count(Call.id))) or 0,
            db.session.scalar(select(func.count(CallEvent.id))) or 0,
        )


def test_duplicated_incoming_webhook_creates_one_call_and_one_event(app: Flask, client: FlaskClient) -> None:
    params = IDENTITY.voice_params()

    first = client.post(
        "http://localhost/voice/incoming",
        data=params,
        headers=signed_headers(TEST_AUTH_TOKEN, "http://localhost/voice/incoming", params),
    )
    second = client.post(
        "http://localhost/voice/incoming",
        data=params,
        headers=signed_headers(TEST_AUTH_TOKEN, "http://localhost/voice/incoming", params),
    )

    assert first.data == second.data
    assert counts(app) == (1, 1)


def test_duplicated_menu_answer_is_recorded_once(app: Flask, client: FlaskClient) -> None:
    post(client, "/voice/incoming", IDENTITY.voice_params())
    answer = gather_digits_params(IDENTITY, "2")

    assert post(client, "/voice/menu/language?attempt=1", answer) == 200
    assert post(client, "/voice/menu/language?attempt=1", answer) == 200

    assert counts(app) == (1, 2)


def status(sequence: int, call_status: str, duration: str | None = None) -> dict[str, str]:
    extra = {
        "SequenceNumber": str(sequence),
        "CallbackSource": "call-progress-events",
        "Timestamp": "Wed, 02 Dec 2026 16:00:00 +0000",
    }
    if duration:
        extra["CallDuration"] = duration
    return IDENTITY.voice_params(call_status, **extra)


def call_state(app: Flask) -> tuple[str, int | None, bool]:
    with app.app_context():
        call = db.session.scalars(select(Call)).one()
        return call.status, call.duration_seconds, call.ended_at is not None


def test_out_of_order_status_callbacks_never_move_a_call_backwards(app: Flask, client: FlaskClient) -> None:
    post(client, "/voice/incoming", IDENTITY.voice_params())

    assert post(client, "/voice/status", status(2, "completed", "95")) == 204
    assert post(client, "/voice/status", status(1, "in-progress")) == 204
    assert post(client, "/voice/status", status(0, "ringing")) == 204
    assert post(client, "/voice/status", status(2, "completed", "95")) == 204

    assert call_state(app) == ("completed", 95, True)
    with app.app_context():
        kinds = db.session.scalars(select(CallEvent.kind)).all()
    assert kinds.count("call.status") == 1


def test_status_callbacks_in_order_advance_the_call(app: Flask, client: FlaskClient) -> None:
    post(client, "/voice/incoming", IDENTITY.voice_params())

    post(client, "/voice/status", status(0, "ringing"))
    post(client, "/voice/status", status(1, "in-progress"))
    assert call_state(app) == ("in-progress", None, False)
    post(client, "/voice/status", status(2, "completed", "30"))

    assert call_state(app) == ("completed", 30, True)


def test_status_callback_for_an_unknown_call_creates_its_record(app: Flask, client: FlaskClient) -> None:
    assert post(client, "/voice/status", status(3, "completed", "12")) == 204

    assert call_state(app) == ("completed", 12, True)
