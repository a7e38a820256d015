"""Run the fake Twilio REST API on a real local port, in a test or standalone.

In tests::

    with FakeTwilioServer() as server:
        client = server.client()          # twilio Client aimed at server.base_url
        client.messages.create(to="+14155550100", from_="+14155550199", body="hi")
        server.fake.messages               # what the app sent

Standalone (``dev.py run`` starts it so, when no Twilio account is set)::

    python -m twilio_fake.server --port 8089 --account-sid AC... --auth-token ... --ring-timeouts \
        --line-url http://127.0.0.1:5000 --line-number +13125550100 [--calls-per-second 1]

With ``--line-url`` it also serves the browser phone (``twilio_fake.web_phone``) at ``/phone/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from types import TracebackType
from typing import Any

from twilio.rest import Client
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from crisisline.telephony import make_rest_client
from twilio_fake.local_line import DEFAULT_LINE_NUMBER
from twilio_fake.rest_api import FakeTwilio, create_fake_twilio_app
from twilio_fake.web_phone import WebPhone, add_web_phone

log = logging.getLogger(__name__)


class _PathOnlyLogHandler(WSGIRequestHandler):
    """Access log without query strings: list filters such as ``?To=+1...`` hold phone numbers."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log("info", '"%s %s" %s', self.command, self.path.split("?", 1)[0], code)


def _make_server(host: str, port: int, fake: FakeTwilio, web_phone: WebPhone | None = None) -> BaseWSGIServer:
    app = create_fake_twilio_app(fake)
    if web_phone is not None:
        add_web_phone(app, web_phone)
    return make_server(host, port, app, threaded=True, request_handler=_PathOnlyLogHandler)


class FakeTwilioServer:
    """A ``FakeTwilio`` served over HTTP from a daemon thread; use as a context manager."""

    def __init__(
        self,
        fake: FakeTwilio | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        account_sid: str | None = None,
        auth_token: str | None = None,
        **fake_options: Any,
    ) -> None:
        """Serve ``fake``, or a new ``FakeTwilio(account_sid, auth_token, **fake_options)``.

        ``port=0`` picks a free port; read it back from ``base_url`` after ``start()``.
        """
        self.fake = fake or FakeTwilio(account_sid, auth_token, **fake_options)
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def account_sid(self) -> str:
        return self.fake.account_sid

    @property
    def auth_token(self) -> str:
        return self.fake.auth_token

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: pass it as ``api_base_url`` / ``TWILIO_API_BASE_URL``."""
        if self._server is None:
            raise RuntimeError("FakeTwilioServer is not running")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> FakeTwilioServer:
        """Bind the port and serve in a daemon thread (threaded, so webhooks the fake sends
        can be answered by an app that calls back into the API)."""
        if self._server is not None:
            return self
        self._server = _make_server(self.host, self.port, self.fake)
        # A short poll interval keeps shutdown (and so each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-twilio",
            daemon=True,
        )
        self._thread.start()
        log.info("fake Twilio API listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def client(self) -> Client:
        """A twilio ``Client`` whose requests all go to this server."""
        return make_rest_client(self.account_sid, self.auth_token, self.base_url)

    def __enter__(self) -> FakeTwilioServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve the fake API in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description="Local fake of Twilio's REST API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--account-sid", default=None, help="default: a random AC... sid")
    parser.add_argument("--auth-token", default=None, help="default: a random token")
    parser.add_argument("--auto-deliver", action="store_true", help="deliver each message right after creation")
    parser.add_argument(
        "--ring-timeouts",
        action="store_true",
        help="REST-placed calls ring by themselves and end no-answer after their Timeout, as on Twilio "
        "(default: they ring until told otherwise through /_fake/calls/<sid>/advance)",
    )
    parser.add_argument(
        "--calls-per-second",
        type=float,
        default=float(os.environ["FAKE_TWILIO_CPS"]) if os.environ.get("FAKE_TWILIO_CPS") else None,
        help="place REST-created calls at this rate, queueing the rest as Twilio does (its default is 1; "
        "default here: FAKE_TWILIO_CPS, else unlimited). Changeable at run time: POST /_fake/cps",
    )
    parser.add_argument("--line-url", default=None, help="the line's URL: serve the browser phone at /phone/ for it")
    parser.add_argument("--line-number", default=DEFAULT_LINE_NUMBER, help="the line's phone number")
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="serve with gunicorn, which keeps HTTP connections open between requests as api.twilio.com "
        "does (werkzeug's server closes each one, so every request opens a new connection); the benches use it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    fake = FakeTwilio(
        args.account_sid,
        args.auth_token,
        auto_deliver=args.auto_deliver,
        ring_timeouts=args.ring_timeouts,
        calls_per_second=args.calls_per_second,
    )
    web_phone = WebPhone(fake, args.line_url, args.line_number) if args.line_url else None
    server = None if args.keep_alive else _make_server(args.host, args.port, fake, web_phone)
    port = server.server_port if server is not None else args.port
    print(f"fake Twilio API on http://{args.host}:{port}", flush=True)
    if web_phone is not None:
        print(f"browser phone on http://{args.host}:{port}/phone/", flush=True)
    if args.auth_token is None:
        # Made up here, so printed on purpose: the app needs them. Given ones are not echoed
        # (dev.py passes the local ones and keeps this output in a log file).
        print(f"TWILIO_ACCOUNT_SID={fake.account_sid}")
        print(f"TWILIO_AUTH_TOKEN={fake.auth_token}", flush=True)
    if server is None:
        _serve_keeping_connections(args.host, args.port, fake, web_phone)
        return 0
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _serve_keeping_connections(host: str, port: int, fake: FakeTwilio, web_phone: WebPhone | None) -> None:
    """Serve through gunicorn: one worker (the fake's state lives in one process), many
    threads, connections kept open between requests. The fake is made before gunicorn forks
    its worker; it starts its threads only when first used, so they run in the worker."""
    from gunicorn.app.base import BaseApplication

    app = create_fake_twilio_app(fake)
    if web_phone is not None:
        add_web_phone(app, web_phone)

    class _FakeTwilioGunicorn(BaseApplication):
        def load_config(self) -> None:
            options = {"bind": f"{host}:{port}", "workers": 1, "worker_class": "gthread", "threads": 32,
                       "keepalive": 75, "timeout": 0, "graceful_timeout": 2, "loglevel": "warning"}  # fmt: skip
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    _FakeTwilioGunicorn().run()


if __name__ == "__main__":
    raise SystemExit(main())
