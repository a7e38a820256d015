"""Every Twilio-facing route refuses unsigned, forged, tampered and replayed requests (403),
writes nothing, and accepts genuine ones behind a TLS-terminating proxy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from crisisline.settings import Settings
from tests.conftest import TEST_AUTH_TOKEN, table_row_counts
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity, gather_digits_params, sign, signed_headers

IDENTITY = CallIdentity("AC" + "7" * 32, "+13125550123", "+13125550100")


def twilio_routes(app: Flask) -> list[str]:
    """Every route Twilio calls, taken from the URL map so a new route cannot be forgotten."""
    return sorted(rule.rule for rule in app.url_map.iter_rules() if rule.rule.startswith(("/voice", "/sms")))


def test_every_twilio_route_is_in_the_list_under_test(app: Flask) -> None:
    assert set(twilio_routes(app)) >= {
        "/voice/incoming",
        "/voice/menu/language",
        "/voice/menu/need",
        "/voice/menu/confirm",
        "/voice/hold",
        "/voice/offer/whisper",
        "/voice/offer/decide",
        "/voice/offer/status",
        "/voice/conference/events",
        "/voice/backup-result",
        "/voice/status",
        "/voice/fallback",
    }


FORGERIES = ["unsigned", "wrong-token", "tampered-param", "added-param", "other-route", "other-query"]


def forged(route: str, forgery: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """A request to ``route`` forged as ``forgery``: (url, params, headers)."""
    url = f"http://localhost{route}?attempt=1"
    params = gather_digits_params(IDENTITY, "2")
    headers = signed_headers(TEST_AUTH_TOKEN, url, params)
    if forgery == "unsigned":
        del headers["X-Twilio-Signature"]
    elif forgery == "wrong-token":
        headers["X-Twilio-Signature"] = sign("0" * 32, url, params)
    elif forgery == "tampered-param":
        params = {**params, "Digits": "1"}
    elif forgery == "added-param":
        params = {**params, "Extra": "x"}
    elif forgery == "other-route":
        headers["X-Twilio-Signature"] = sign(TEST_AUTH_TOKEN, "http://localhost/voice/fallback", params)
        if route == "/voice/fallback":
            url = "http://localhost/voice/fallback?attempt=1"
    elif forgery == "other-query":
        url = f"http://localhost{route}?attempt=2"
    return url, params, headers


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_requests_are_refused_on_every_route_and_write_nothing(
    app: Flask, client: FlaskClient, forgery: str, fake: FakeTwilio, clean_redis: redis.Redis
) -> None:
    before = table_row_counts(app)
    rest_before = (len(fake.calls), len(fake.messages))
    for route in twilio_routes(app):
        url, params, headers = forged(route, forgery)

        response = client.post(url, data=params, headers=headers)

        assert response.status_code == 403, route
        assert b"<Dial" not in response.data
    assert table_row_counts(app) == before
    assert (len(fake.calls), len(fake.messages)) == rest_before  # no REST call placed
    assert clean_redis.dbsize() == 0  # no job queued


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_requests_are_refused_on_every_route_with_the_database_and_redis_down(
    redis_url: str, make_app: Callable[[Settings], Flask], forgery: str
) -> None:
    from tests.conftest import settings_for

    dead = make_app(settings_for("postgresql+psycopg://postgres@127.0.0.1:1/none", "redis://127.0.0.1:1/0"))
    client = dead.test_client()
    for route in twilio_routes(dead):
        url, params, headers = forged(route, forgery)

        response = client.post(url, data=params, headers=headers)

        assert response.status_code == 403, route


def test_forged_request_is_refused_even_when_the_database_is_down(
    redis_url: str, make_app: Callable[[Settings], Flask]
) -> None:
    from tests.conftest import settings_for

    app = make_app(settings_for("postgresql+psycopg://postgres@127.0.0.1:1/none", redis_url))
    params = IDENTITY.voice_params()

    response = app.test_client().post("/voice/incoming", data=params, headers={"X-Twilio-Signature": "bogus"})

    assert response.status_code == 403


def test_genuine_request_with_an_unknown_new_twilio_parameter_is_accepted(client: FlaskClient) -> None:
    url = "http://localhost/voice/incoming"
    params = {**IDENTITY.voice_params(), "StirVerstat": "TN-Validation-Passed-A"}

    response = client.post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params))

    assert response.status_code == 200
    assert response.mimetype == "text/xml"


@pytest.fixture
def proxied_app(settings: Settings, app: Flask, make_app: Callable[[Settings], Flask]) -> Flask:
    """The same database as ``app``, served as if behind one TLS-terminating proxy."""
    from dataclasses import replace

    return make_app(replace(settings, trusted_proxy_count=1))


@pytest.mark.parametrize(
    "public_url",
    [
        "https://line.example.org/voice/incoming",
        "https://line.example.org:443/voice/incoming",
    ],
)
def test_signature_is_valid_behind_a_tls_terminating_proxy(proxied_app: Flask, public_url: str) -> None:
    params = IDENTITY.voice_params()
    headers = signed_headers(TEST_AUTH_TOKEN, public_url, params)
    headers.update(
        {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "line.example.org",
            "X-Forwarded-For": "54.172.60.1",
        }
    )

    response = proxied_app.test_client().post(
        "/voice/incoming", data=params, headers=headers, base_url="http://10.0.0.5:8000"
    )

    assert response.status_code == 200


def test_proxy_headers_are_ignored_unless_the_proxy_is_trusted(app: Flask) -> None:
    public_url = "https://line.example.org/voice/incoming"
    params = IDENTITY.voice_params()
    headers = signed_headers(TEST_AUTH_TOKEN, public_url, params)
    headers.update({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "line.example.org"})

    response = app.test_client().post("/voice/incoming", data=params, headers=headers, base_url="http://10.0.0.5:8000")

    assert response.status_code == 403


def test_public_base_url_validates_without_any_proxy_headers(
    settings: Settings, app: Flask, make_app: Callable[[Settings], Flask]
) -> None:
    from dataclasses import replace

    public_app = make_app(replace(settings, public_base_url="https://line.example.org"))
    params = IDENTITY.voice_params()
    headers = signed_headers(TEST_AUTH_TOKEN, "https://line.example.org/voice/incoming", params)

    response = public_app.test_client().post(
        "/voice/incoming", data=params, headers=headers, base_url="http://10.0.0.5:8000"
    )

    assert response.status_code == 200


PREVIOUS_AUTH_TOKEN = "the-token-being-rotated-out-0000"


@pytest.mark.parametrize("route", ["/voice/incoming", "/voice/fallback", "/sms/incoming"])
def test_while_the_auth_token_is_rotated_webhooks_signed_with_either_token_are_accepted_and_no_other(
    settings: Settings, app: Flask, make_app: Callable[[Settings], Flask], route: str
) -> None:
    """Twilio signs with the account's primary token, which changes the moment the new one is
    promoted: with the line told both, no call or text is refused on either side of it."""
    from dataclasses import replace

    rotating = make_app(replace(settings, twilio_previous_auth_token=PREVIOUS_AUTH_TOKEN)).test_client()
    url = f"http://localhost{route}"
    params = IDENTITY.voice_params() if route.startswith("/voice") else {
        "MessageSid": "SM" + "1" * 32, "AccountSid": IDENTITY.account_sid, "From": "+13125550123",
        "To": "+13125550100", "Body": "hello", "NumMedia": "0",
    }  # fmt: skip

    answers = {
        token: rotating.post(
            url, data=params, headers=signed_headers(token, url, params, voice=route.startswith("/voice"))
        )
        for token in (TEST_AUTH_TOKEN, PREVIOUS_AUTH_TOKEN, "a-token-nobody-was-given-00000000")
    }

    assert [answer.status_code for answer in answers.values()] == [200, 200, 403]
    assert all(answer.mimetype == "text/xml" for answer in list(answers.values())[:2])
    refused = app.test_client().post(
        url, data=params, headers=signed_headers(PREVIOUS_AUTH_TOKEN, url, params, voice=route.startswith("/voice"))
    )
    assert refused.status_code == 403  # once the rotation is over (no previous token), refused again


def test_a_previous_auth_token_equal_to_the_current_one_is_no_second_token() -> None:
    from tests.conftest import settings_for

    same = settings_for("sqlite://", "redis://127.0.0.1:1/0", TWILIO_PREVIOUS_AUTH_TOKEN=TEST_AUTH_TOKEN)
    other = settings_for("sqlite://", "redis://127.0.0.1:1/0", TWILIO_PREVIOUS_AUTH_TOKEN=f" {PREVIOUS_AUTH_TOKEN} ")

    assert same.twilio_previous_auth_token is None
    assert other.twilio_previous_auth_token == PREVIOUS_AUTH_TOKEN
