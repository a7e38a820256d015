"""TWILIO_API_BASE_URL sends every REST request to the local stand-in, over real HTTP."""

from __future__ import annotations

from dataclasses import replace

import pytest
from twilio.base.exceptions import TwilioRestException

from crisisline.settings import Settings
from crisisline.telephony import rest_client_for
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
