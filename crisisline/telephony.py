"""The Twilio REST client, pointed at Twilio or at any stand-in through ``TWILIO_API_BASE_URL``."""

from __future__ import annotations

from typing import Any

from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from crisisline.settings import Settings

TWILIO_API_ORIGIN = "https://api.twilio.com"
# Twilio gives up on webhooks after 15 s; our own REST calls must give up sooner so a
# caller is never held by a slow API.
REST_TIMEOUT_SECONDS = 10.0


class RebasedHttpClient(TwilioHttpClient):
    """Sends every request meant for ``api.twilio.com`` to ``base_url`` instead.

    This is the custom ``http_client`` Twilio documents for mocking; the rest of
    twilio-python (auth, form encoding, error parsing) stays exactly as in production.
    """

    def __init__(self, base_url: str, timeout: float = REST_TIMEOUT_SECONDS) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API_ORIGIN):
            url = self.base_url + url[len(TWILIO_API_ORIGIN) :]
        return super().request(method, url, *args, **kwargs)


def make_rest_client(account_sid: str, auth_token: str, api_base_url: str | None = None) -> Client:
    """A twilio ``Client``; with ``api_base_url`` every request goes there instead of Twilio."""
    http_client = RebasedHttpClient(api_base_url) if api_base_url else TwilioHttpClient(timeout=REST_TIMEOUT_SECONDS)
    return Client(account_sid, auth_token, http_client=http_client)


def rest_client_for(settings: Settings) -> Client:
    """The REST client the line's settings describe (Twilio, or ``TWILIO_API_BASE_URL``)."""
    return make_rest_client(settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url)
