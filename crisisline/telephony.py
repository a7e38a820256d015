"""The Twilio REST client, pointed at Twilio or at any stand-in through ``TWILIO_API_BASE_URL``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from flask import current_app
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.base.version import Version
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
    _read_environment_once(http_client, api_base_url or TWILIO_API_ORIGIN)
    return Client(account_sid, auth_token, http_client=http_client)


def _read_environment_once(http_client: TwilioHttpClient, origin: str) -> None:
    """Take the proxy and CA-bundle settings (``HTTPS_PROXY``, ``NO_PROXY``,
    ``REQUESTS_CA_BUNDLE``...) from the environment now, for the one origin every request goes
    to, instead of on every request: requests reads and parses the whole environment each time
    (5% of an inbound text's time)."""
    session = http_client.session
    if session is None:
        return
    found = session.merge_environment_settings(origin, {}, None, None, None)
    session.proxies.update(found["proxies"] or {})
    session.verify = found["verify"]
    session.trust_env = False


def rest_client_for(settings: Settings) -> Client:
    """The REST client the line's settings describe (Twilio, or ``TWILIO_API_BASE_URL``)."""
    return make_rest_client(settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url)


# Our keyword → Twilio's parameter name, for the few REST calls the line makes.
TWILIO_PARAMETERS = {
    "to": "To", "from_": "From", "url": "Url", "method": "Method", "fallback_url": "FallbackUrl",
    "fallback_method": "FallbackMethod", "status_callback": "StatusCallback",
    "status_callback_event": "StatusCallbackEvent", "status_callback_method": "StatusCallbackMethod",
    "timeout": "Timeout", "machine_detection": "MachineDetection", "twiml": "Twiml", "status": "Status",
    "body": "Body", "parent_call_sid": "ParentCallSid",
}  # fmt: skip


@dataclass(frozen=True)
class PlacedCall:
    """What the line reads of a Call resource."""

    sid: str
    status: str
    date_created: datetime | None
    queue_time: str | None
    start_time: datetime | None = None


@dataclass(frozen=True)
class SentMessage:
    sid: str
    status: str


@dataclass(frozen=True)
class ListedMessage:
    """What the line reads of a Message resource found by a list (never its body)."""

    sid: str
    to: str
    from_: str
    status: str
    date_created: datetime | None
    date_sent: datetime | None


class TwilioRest:
    """The Call and Message resources the line uses, through twilio-python's own ``Client``
    (its auth, headers, HTTP client and exceptions) without its generated resource classes:
    reaching ``calls`` through them imports some 80 modules, 7 MiB in every web process, for
    two endpoints. Same keywords as twilio-python (``to``, ``from_``, ``status_callback``...)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.calls = _Calls(self)
        self.messages = _Messages(self)
        # How long the last request placing a call, and the last sending a text, took, answered
        # or not (``api_is_slow``); the quick updates that end a leg say nothing about offers.
        # Both keys from the start: threads only replace values, so a reader's loop over them
        # never sees the dict change size.
        self.create_seconds: dict[str, float] = dict.fromkeys(CREATES, 0.0)

    def request(self, method: str, path: str, *, data: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        """One request to ``/2010-04-01/Accounts/<sid>/<path>``; its JSON, or Twilio's error raised.
        ``timeout``: this request's own, shorter than the client's."""
        return self._send(method, f"{self.account_root()}/{path}", path, data=data, params=params, timeout=timeout)

    def account_root(self) -> str:
        """Where the account's resources are: ``https://api.twilio.com/2010-04-01/Accounts/<sid>``."""
        return f"{TWILIO_API_ORIGIN}/2010-04-01/Accounts/{self.client.account_sid}"

    def next_page(self, next_page_uri: str, resource: str, *, timeout: float | None = None) -> dict[str, Any]:
        """The page a list's ``next_page_uri`` names (a path on Twilio's API, resolved against
        its origin as twilio-python does): only one of the account's own ``resource`` lists."""
        own = self.account_root()[len(TWILIO_API_ORIGIN) :] + f"/{resource}?"
        if not next_page_uri.startswith(own):
            raise ValueError("next_page_uri is not a page of the list asked for")
        return self._send("GET", TWILIO_API_ORIGIN + next_page_uri, resource, timeout=timeout)

    def _send(self, method: str, uri: str, path: str, *, data: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        headers = {"Accept": "application/json"}
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        started = time.monotonic()
        try:
            response = self.client.request(method, uri, params=params, data=data, headers=headers, timeout=timeout)
        finally:
            if method == "POST" and path in CREATES:
                self.create_seconds[path] = time.monotonic() - started
        if not 200 <= response.status_code < 300:
            # Without a next page's query string, which may name a number (``To=``).
            raise Version.exception(method, uri.split("?", 1)[0], response, f"Unable to {method} {path}")
        body: dict[str, Any] = json.loads(response.text) if response.text else {}
        return body

    def delete(self, path: str, *, timeout: float | None = None) -> bool:
        """``DELETE`` one record (204): True; False if Twilio has no such record (404, 20404:
        deleted before), so deleting twice is harmless. Any other refusal is raised."""
        try:
            self.request("DELETE", path, timeout=timeout)
        except (TwilioRestException, TwilioServiceException) as error:
            if error.status == 404:
                return False
            raise
        return True


# The app's ``TwilioRest`` (``transfer.dispatch.rest_client`` makes it on first use).
REST_EXTENSION = "crisisline.rest"
# A Twilio API placing a call or sending a text slower than this is slow: a queue pass then
# makes its offers side by side rather than one after another (``line_queue``), giving up the
# order Twilio places them in (the order their requests came) to spare the last of a surge's
# callers every earlier request's wait.
SLOW_API_SECONDS = 0.5
CREATES = frozenset({"Calls.json", "Messages.json"})


def api_is_slow() -> bool:
    """Whether this app's last request placing a call, or its last sending a text, took longer
    than ``SLOW_API_SECONDS`` (each kind on its own: quick texts do not hide slow calls)."""
    rest: TwilioRest | None = current_app.extensions.get(REST_EXTENSION)
    return rest is not None and any(seconds > SLOW_API_SECONDS for seconds in rest.create_seconds.values())


def twilio_form(**values: Any) -> dict[str, Any]:
    """Keywords to Twilio's form parameters (a list repeats its parameter; None is left out)."""
    unknown = set(values) - set(TWILIO_PARAMETERS)
    if unknown:
        raise TypeError(f"unknown Twilio parameters: {sorted(unknown)}")
    return {TWILIO_PARAMETERS[key]: value for key, value in values.items() if value is not None}


def _placed(payload: dict[str, Any]) -> PlacedCall:
    created, started = payload.get("date_created"), payload.get("start_time")
    return PlacedCall(
        sid=str(payload.get("sid", "")),
        status=str(payload.get("status", "")),
        date_created=parsedate_to_datetime(created) if created else None,
        queue_time=payload.get("queue_time"),
        start_time=parsedate_to_datetime(started) if started else None,
    )


class _CallContext:
    def __init__(self, rest: TwilioRest, sid: str) -> None:
        self.rest, self.sid = rest, sid

    def update(self, **values: Any) -> PlacedCall:
        return _placed(self.rest.request("POST", f"Calls/{self.sid}.json", data=twilio_form(**values)))

    def fetch(self) -> PlacedCall:
        return _placed(self.rest.request("GET", f"Calls/{self.sid}.json"))

    def delete(self, *, timeout: float | None = None) -> bool:
        """Delete the call's record at Twilio (its numbers, times, price); False if it was gone
        already. Twilio refuses a call not over yet (20009: "cannot delete this resource before
        it is complete")."""
        return self.rest.delete(f"Calls/{self.sid}.json", timeout=timeout)


class _Calls:
    def __init__(self, rest: TwilioRest) -> None:
        self.rest = rest

    def __call__(self, sid: str) -> _CallContext:
        return _CallContext(self.rest, sid)

    def create(self, **values: Any) -> PlacedCall:
        return _placed(self.rest.request("POST", "Calls.json", data=twilio_form(**values)))

    def list(self, *, limit: int = 50, timeout: float | None = None, **values: Any) -> list[PlacedCall]:
        """The first page only (``limit`` at most 1,000): the line never needs more."""
        params = {**twilio_form(**values), "PageSize": limit}
        page = self.rest.request("GET", "Calls.json", params=params, timeout=timeout)
        return [_placed(call) for call in page.get("calls", [])[:limit]]


class _MessageContext:
    def __init__(self, rest: TwilioRest, sid: str) -> None:
        self.rest, self.sid = rest, sid

    def delete(self, *, timeout: float | None = None) -> bool:
        """Delete the text's record at Twilio, and with it its body, numbers and media; False if
        it was gone already. Twilio refuses a text not in a final state yet (20009)."""
        return self.rest.delete(f"Messages/{self.sid}.json", timeout=timeout)


def _listed(payload: dict[str, Any]) -> ListedMessage:
    created, sent = payload.get("date_created"), payload.get("date_sent")
    return ListedMessage(
        sid=str(payload.get("sid", "")),
        to=str(payload.get("to") or ""),
        from_=str(payload.get("from") or ""),
        status=str(payload.get("status", "")),
        date_created=parsedate_to_datetime(created) if created else None,
        date_sent=parsedate_to_datetime(sent) if sent else None,
    )


class _Messages:
    def __init__(self, rest: TwilioRest) -> None:
        self.rest = rest

    def __call__(self, sid: str) -> _MessageContext:
        return _MessageContext(self.rest, sid)

    def pages(
        self, *, to: str, from_: str, sent_before: datetime | None = None, page_size: int = 100,
        timeout: float | None = None,
    ) -> Iterator[list[ListedMessage]]:  # fmt: skip
        """The texts ``from_`` sent ``to``, a page at a time (newest first, each page one request,
        following ``next_page_uri``); the caller tells them apart by their own dates.

        ``sent_before``: at least every text sent before it, with some after it. Twilio's
        ``DateSent<`` takes a GMT date, ``YYYY-MM-DD``, and finds the texts sent on or before it
        (the documented filter; a time of day is not documented), so it is given the day after
        ``sent_before``'s. A text Twilio never sent (``failed``: an unreachable number, a full
        queue) has no ``date_sent`` and is on no date, so the filter leaves it out, yet Twilio
        keeps it with both numbers and the body: without ``sent_before``, every text."""
        params: dict[str, str | int] = {"To": to, "From": from_, "PageSize": page_size}
        if sent_before is not None:
            params["DateSent<"] = (sent_before.astimezone(UTC) + timedelta(days=1)).date().isoformat()
        page = self.rest.request("GET", "Messages.json", params=params, timeout=timeout)
        while True:
            yield [_listed(message) for message in page.get("messages", [])]
            next_page_uri = page.get("next_page_uri")
            if not next_page_uri:
                return
            page = self.rest.next_page(str(next_page_uri), "Messages.json", timeout=timeout)

    def create(self, **values: Any) -> SentMessage:
        payload = self.rest.request("POST", "Messages.json", data=twilio_form(**values))
        return SentMessage(sid=str(payload.get("sid", "")), status=str(payload.get("status", "")))
