"""A line served under a path behind a proxy (``PUBLIC_BASE_URL=https://…/crisis``): every URL
it hands Twilio keeps the prefix, and Twilio's signatures for those URLs are accepted."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crisisline.settings import Settings
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, settings_for
from tests.rota import legs
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity, signed_headers

PUBLIC = "http://127.0.0.1:9/crisis"  # port 9: nothing listens, so the fake's callbacks fail fast


@pytest.fixture(params=["prefix forwarded", "prefix stripped silently"])
def behind_proxy(
    request: pytest.FixtureRequest, app: Flask, settings: Settings, make_app: Callable[[Settings], Flask]
) -> tuple[FlaskClient, dict[str, str]]:
    line = make_app(
        settings_for(
            settings.database_url, settings.redis_url, PUBLIC_BASE_URL=PUBLIC, TRUSTED_PROXY_COUNT="1",
            TWILIO_API_BASE_URL=settings.twilio_api_base_url or "",
        )
    )  # fmt: skip
    forwarded = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "127.0.0.1:9", "X-Forwarded-For": "203.0.113.7"}
    if request.param == "prefix forwarded":
        forwarded["X-Forwarded-Prefix"] = "/crisis"
    return line.test_client(), forwarded


def post(client: FlaskClient, forwarded: dict[str, str], path: str, params: dict[str, str]) -> ET.Element:
    signed_for = PUBLIC + path  # what Twilio requested, and signed
    response = client.post(
        path, data=params, headers={**signed_headers(TEST_AUTH_TOKEN, signed_for, params), **forwarded}
    )
    assert response.status_code == 200, response.status_code
    return ET.fromstring(response.data)  # noqa: S314 - our own TwiML


@pytest.mark.usefixtures("wednesday_evening")
def test_every_url_handed_to_twilio_keeps_the_lines_path_prefix(
    behind_proxy: tuple[FlaskClient, dict[str, str]], fake: FakeTwilio
) -> None:
    client, forwarded = behind_proxy
    caller = CallIdentity(TEST_ACCOUNT_SID, "+13125550181", LINE_NUMBER)

    greeting = post(client, forwarded, "/voice/incoming", caller.voice_params("ringing"))
    language_action = greeting.find("Gather").get("action", "")  # type: ignore[union-attr]
    assert language_action.startswith("/crisis/voice/menu/language")
    need_menu = post(client, forwarded, language_action.removeprefix("/crisis"), caller.voice_params(Digits="1"))
    need_action = need_menu.find("Gather").get("action", "")  # type: ignore[union-attr]
    assert need_action.startswith("/crisis/voice/menu/need")
    holding = post(client, forwarded, need_action.removeprefix("/crisis"), caller.voice_params(Digits="2"))

    redirect = holding.find("Redirect")
    assert redirect is not None and (redirect.text or "").startswith("/crisis/voice/hold?")
    client.application.extensions["crisisline.background"].wait_idle(timeout=30)  # the ring, started off the request
    (leg,) = legs(fake)  # the counselor's call, placed over REST with absolute URLs
    assert (leg.url or "").startswith(f"{PUBLIC}/voice/offer/whisper?offer=")
    assert (leg.status_callback or "").startswith(f"{PUBLIC}/voice/offer/status?offer=")


def test_a_signature_for_another_prefix_is_refused(behind_proxy: tuple[FlaskClient, dict[str, str]]) -> None:
    client, forwarded = behind_proxy
    params = CallIdentity(TEST_ACCOUNT_SID, "+13125550182", LINE_NUMBER).voice_params("ringing")
    elsewhere = "http://127.0.0.1:9/other/voice/incoming"

    response = client.post(
        "/voice/incoming", data=params, headers={**signed_headers(TEST_AUTH_TOKEN, elsewhere, params), **forwarded}
    )

    assert response.status_code == 403
