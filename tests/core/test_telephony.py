"""TWILIO_API_BASE_URL sends every REST request to the local stand-in, over real HTTP."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
from twilio.base.exceptions import TwilioRestException

from crisisline.settings import Settings
from crisisline.telephony import TwilioRest, rest_client_for
from tests.conftest import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from twilio_fake.server import FakeTwilioServer


def test_settings_point_the_rest_client_at_the_fake_twilio(settings: Settings) -> None:
    with FakeTwilioServer(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN) as server:
        client = rest_client_for(replace(settings, twilio_api_base_url=server.base_url))

        message = client.messages.create(to="+13125550123", from_="+13125550100", body="Check-in")

        assert message.sid in server.fake.messages
        assert message.status == "queued"


def test_twilio_errors_surface_with_their_code(settings: Settings) -> None:
    with FakeTwilioServer(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN) as server:
        client = rest_client_for(replace(settings, twilio_api_base_url=server.base_url))

        with pytest.raises(TwilioRestException) as raised:
            client.messages.create(to="+1555", from_="+13125550100", body="x")

    assert raised.value.code == 21211


def lean_rest(settings: Settings, server: FakeTwilioServer) -> TwilioRest:
    return TwilioRest(rest_client_for(replace(settings, twilio_api_base_url=server.base_url)))


def test_the_lean_client_places_a_call_with_every_parameter_as_twilio_names_it(settings: Settings) -> None:
    with FakeTwilioServer(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN) as server:
        placed = lean_rest(settings, server).calls.create(
            to="+13125550123", from_="+13125550100", url="https://line.example/voice/whisper?offer=1",
            method="POST", status_callback="https://line.example/voice/offer/status?offer=1",
            status_callback_event=["initiated", "ringing", "answered", "completed"], timeout=25,
            machine_detection="Enable",
        )  # fmt: skip

        record = server.fake.calls[placed.sid]
    assert placed.sid.startswith("CA") and placed.status == "queued"
    assert placed.date_created is not None and placed.date_created.tzinfo is not None
    assert record.to == "+13125550123" and record.from_ == "+13125550100"
    assert record.url == "https://line.example/voice/whisper?offer=1"
    assert record.status_callback_events == ["initiated", "ringing", "answered", "completed"]
    assert record.timeout == 25 and record.machine_detection == "Enable"


def test_the_lean_client_updates_fetches_and_lists_calls(settings: Settings) -> None:
    with FakeTwilioServer(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN) as server:
        rest = lean_rest(settings, server)
        placed = rest.calls.create(to="+13125550123", from_="+13125550100", url="https://line.example/x")
        other = rest.calls.create(to="+13125550124", from_="+13125550100", url="https://line.example/x")

        rest.calls(placed.sid).update(status="canceled")

        assert rest.calls(placed.sid).fetch().status == "canceled"
        assert [call.sid for call in rest.calls.list(to="+13125550124", from_="+13125550100", limit=20)] == [other.sid]


def test_the_lean_client_raises_twilios_own_errors(settings: Settings) -> None:
    with FakeTwilioServer(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN) as server:
        rest = lean_rest(settings, server)
        with pytest.raises(TwilioRestException) as refused:
            rest.messages.create(to="+1555", from_="+13125550100", body="x")
        with pytest.raises(TwilioRestException) as unknown:
            rest.calls("CA" + "0" * 32).fetch()

    assert refused.value.code == 21211 and refused.value.status == 400
    assert unknown.value.status == 404


def test_a_misspelt_parameter_is_refused_before_anything_is_sent(settings: Settings) -> None:
    with FakeTwilioServer(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN) as server:
        with pytest.raises(TypeError, match="status_callback_events"):
            lean_rest(settings, server).calls.create(to="+13125550123", status_callback_events=["completed"])
        assert server.fake.calls == {}


def test_the_lean_client_leaves_twilios_generated_resources_unimported() -> None:
    """They cost 7 MiB in every web process; the line only needs Calls and Messages."""
    probe = (
        "import sys; from crisisline.telephony import TwilioRest, make_rest_client;"
        "rest = TwilioRest(make_rest_client('AC' + '0' * 32, 'token', 'http://127.0.0.1:9'));"
        "rest.calls('CA' + '0' * 32);"
        "print(sorted(m for m in sys.modules if m.startswith('twilio.rest.api')))"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)  # noqa: S603
    assert found.stdout.strip() == "[]"


def test_a_proxy_named_in_the_environment_carries_rest_requests(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    with FakeTwilioServer(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN) as server:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        through_proxy = lean_rest(settings, server)

        with pytest.raises(requests.exceptions.ProxyError):
            through_proxy.messages.create(to="+13125550123", from_="+13125550100", body="Check-in")


def test_the_environment_is_read_once_when_the_client_is_made(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeTwilioServer(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN) as server:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the fake's host: no proxy for it
        rest = lean_rest(settings, server)
        monkeypatch.delenv("NO_PROXY")  # too late: the client read its settings when made

        message = rest.messages.create(to="+13125550123", from_="+13125550100", body="Check-in")

        assert message.sid in server.fake.messages
