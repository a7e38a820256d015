"""Fixtures for the fake Twilio REST API tests: the fake on a real port, and a real HTTP
receiver standing in for the app's webhook endpoints."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from twilio_fake.server import FakeTwilioServer


@dataclass
class Received:
    """One request the receiver got, as the app would see it."""

    method: str
    url: str
    path: str
    form: dict[str, str]
    args: dict[str, str]
    headers: dict[str, str]

    def signature_valid(self, auth_token: str) -> bool:
        """Validate ``X-Twilio-Signature`` exactly as the app will (full URL + form)."""
        params = self.form if self.method == "POST" else {}
        signature = self.headers.get("X-Twilio-Signature", "")
        return bool(RequestValidator(auth_token).validate(self.url, params, signature))


class WebhookReceiver:
    """A tiny threaded HTTP server that records every request and answers per path."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.replies: dict[str, tuple[int, str, str]] = {}
        # Side effects run inside the request, like an app handler calling the REST API.
        self.handlers: dict[str, Callable[[Received], None]] = {}
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _app(self, environ: dict, start_response):  # type: ignore[no-untyped-def]
        req = Request(environ)
        # The URL exactly as sent: werkzeug's ``req.url`` re-decodes the query string
        # (``%2C`` -> ``,``), which would break signatures of GET webhooks.
        raw_url = req.host_url.rstrip("/") + environ.get("RAW_URI", req.full_path)
        received = Received(req.method, raw_url, req.path, dict(req.form), dict(req.args), dict(req.headers))
        with self._lock:
            self.requests.append(received)
            status, body, content_type = self.replies.get(req.path, (204, "", "text/plain"))
            handler = self.handlers.get(req.path)
        if handler is not None:
            handler(received)
        return Response(body, status=status, content_type=content_type)(environ, start_response)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def reply(self, path: str, body: str, status: int = 200, content_type: str = "text/xml") -> None:
        self.replies[path] = (status, body, content_type)

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def server() -> Iterator[FakeTwilioServer]:
    with FakeTwilioServer() as running:
        yield running


@pytest.fixture
def client(server: FakeTwilioServer) -> Client:
    return server.client()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hooks = WebhookReceiver()
    hooks.start()
    yield hooks
    hooks.stop()
