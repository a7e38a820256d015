"""A console served under a path behind a proxy (``X-Forwarded-Prefix: /crisis``, as
deploy/nginx.conf documents): after the idle sign-out, signing in again lands on the page the
person was on, prefix and all; a target off the site, or outside the console, is still refused."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from crisisline.settings import Settings
from tests.conftest import settings_for
from tests.console.conftest import Account

PREFIX = "/crisis"
FORWARDED = {
    "X-Forwarded-Proto": "http", "X-Forwarded-Host": "127.0.0.1:9", "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Prefix": PREFIX,
}  # fmt: skip
_TOKEN = re.compile(r'name="csrf[-_]token" (?:content|value)="([^"]+)"')


@pytest.fixture
def behind_proxy(app: Flask, settings: Settings, make_app: Callable[[Settings], Flask]) -> FlaskClient:
    line = make_app(
        settings_for(
            settings.database_url, settings.redis_url, PUBLIC_BASE_URL=f"http://127.0.0.1:9{PREFIX}",
            TRUSTED_PROXY_COUNT="1", TWILIO_API_BASE_URL=settings.twilio_api_base_url or "",
        )
    )  # fmt: skip
    return line.test_client()


def sign_in(client: FlaskClient, account: Account, next_target: str = "") -> str:
    """Through the real form, as the proxy forwards it; the Location it answers with."""
    page = client.get("/console/sign-in", headers=FORWARDED).get_data(as_text=True)
    found = _TOKEN.search(page)
    assert found is not None
    response = client.post(
        "/console/sign-in", headers=FORWARDED,
        data={"username": account.username, "password": account.password, "csrf_token": found.group(1),
              "next": next_target},
    )  # fmt: skip
    assert response.status_code == 302, response.status_code
    return response.headers["Location"]


def test_signing_in_again_after_the_idle_sign_out_lands_on_the_prefixed_page(
    behind_proxy: FlaskClient, supervisor: Account
) -> None:
    client = behind_proxy
    idle = timedelta(minutes=client.application.config["CONSOLE_IDLE_MINUTES"])
    with time_machine.travel("2026-12-02 16:00:00Z", tick=False) as traveller:
        sign_in(client, supervisor)
        traveller.shift(idle + timedelta(minutes=1))

        signed_out = client.get("/console/metrics?channel=text", headers=FORWARDED)

        assert signed_out.status_code == 302
        to_sign_in = urlsplit(signed_out.headers["Location"])
        assert to_sign_in.path == f"{PREFIX}/console/sign-in"
        (target,) = parse_qs(to_sign_in.query)["next"]
        assert target == f"{PREFIX}/console/metrics?channel=text"
        assert sign_in(client, supervisor, target) == f"{PREFIX}/console/metrics?channel=text"


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/x", "//evil.example/x", f"/{PREFIX}/console/board", "/console/board", f"{PREFIX}/sms/x"],
)
def test_under_a_prefix_sign_in_still_refuses_a_target_off_the_site_or_outside_the_console(
    behind_proxy: FlaskClient, supervisor: Account, target: str
) -> None:
    assert sign_in(behind_proxy, supervisor, target) == f"{PREFIX}/console/board"  # their start page
