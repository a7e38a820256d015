"""A hard deadline on every voice webhook: whatever hangs, Twilio gets TwiML in time.

Connect and statement timeouts do not stop a request stuck on a database or Redis that stopped
answering mid-query, nor a slow Twilio REST call; gunicorn's ``timeout`` does not stop a slow
request in a threaded worker. So voice webhooks run in a small thread pool, and the request
thread waits at most ``VOICE_DEADLINE_SECONDS``. Past it, the request answers with what its
route answers on any failure (``crisisline.failsafe``: the backup line for a caller, a polite
message for a responder), or, for a caller already safely in the hold loop, one more hold turn
(twice at most, then the backup line: the hold route's own fail-safe decides). The late
handler finishes on its own thread; its answer is dropped, and its changes are the
idempotent, conditional ones every handler makes.

The signature is still checked first: a forged request gets 403 even while everything hangs.
Status callbacks are under it too, on a pool of their own (``STATUS_LANE``): Twilio needs no
TwiML from them, but one stuck on a hung database would hold a web thread for good, and a
few of them would leave the next caller's webhook no thread at all. Past the deadline they
are acknowledged (``crisisline.failsafe.status_deadline``); the clock's repairs ask Twilio
for what a lost one would have said. An inbound text
is: a database that hangs must not keep the text from being kept (``sms.views``, which notes
in ``PROGRESS`` whether the text was stored when its deadline passed).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import Flask, Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from crisisline.background import ARRIVED_AT, publish_noted
from crisisline.failsafe import STATUS_LANE, DeadlineExceeded, run_after_failsafe_hooks
from crisisline.twilio_auth import request_is_from_twilio

log = logging.getLogger(__name__)
# A dict in the environ, shared by the handler's thread and the late answer's: what the
# handler got done before its deadline passed (e.g. ``{"stored": True}`` for a text).
PROGRESS = "crisisline.deadline.progress"
# In ``PROGRESS``: the TwiML a handler asked the deadline to answer with (``answer_if_late``),
# and, once the deadline has answered, which answer it gave (``PROMISED`` or ``FAILSAFE``).
LATE_TWIML, ANSWERED = "late_twiml", "answered"
PROMISED, FAILSAFE = "promised", "failsafe"
# Guards those two keys only (never held across I/O): a handler and its deadline agree on
# which answer went out.
_ANSWER_LOCK = threading.Lock()
Captured = tuple[str, list[tuple[str, str]], bytes]
# Status callbacks a process keeps waiting for a thread past their deadline (a few KB each):
# beyond this, during a long database outage, a late one is dropped, and the clock's repairs
# ask Twilio for what it would have said.
STATUS_BACKLOG = 2000
# Threads a process runs deadline-bound webhooks on: voice and texts, and status callbacks.
VOICE_WORKERS, STATUS_WORKERS = 16, 8


class VoiceDeadline:
    """WSGI middleware running deadline-bound routes (views marked ``on_deadline`` by the
    fail-safe decorators) on a bounded pool, answering in time whatever they do."""

    def __init__(
        self, app: Flask, seconds: float, workers: int = VOICE_WORKERS, status_workers: int = STATUS_WORKERS
    ) -> None:
        self.app = app
        self.inner: Callable[..., Iterable[bytes]] = app.wsgi_app
        self.seconds = seconds
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voice-deadline")
        self.status_pool = ThreadPoolExecutor(max_workers=status_workers, thread_name_prefix="status-deadline")
        self._status_lock = threading.Lock()
        self._status_pending = 0  # status callbacks submitted and not yet run

    def _count_status(self, future: Future[Captured]) -> None:
        """Count a status callback in the status pool until it has run (or was cancelled)."""
        with self._status_lock:
            self._status_pending += 1

        def done(_future: Future[Captured]) -> None:
            with self._status_lock:
                self._status_pending -= 1

        future.add_done_callback(done)

    def _status_backlog_full(self) -> bool:
        with self._status_lock:
            return self._status_pending > STATUS_BACKLOG

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop both pools (tests: ``wait`` lets late handlers finish first)."""
        self.pool.shutdown(wait=wait)
        self.status_pool.shutdown(wait=wait)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        arrived_at = time.monotonic()
        endpoint, on_deadline, lane = self._route(environ)
        if on_deadline is None or environ.get("REQUEST_METHOD") != "POST":
            return self.inner(environ, start_response)
        environ[ARRIVED_AT] = arrived_at
        environ[PROGRESS] = {}  # shared with the worker's copy below: the late answer may read it
        body = _read_body(environ, self.app.config.get("MAX_CONTENT_LENGTH") or 256 * 1024)
        worker_environ = dict(environ, **{"wsgi.input": io.BytesIO(body)})
        pool = self.status_pool if lane == STATUS_LANE else self.pool
        future: Future[Captured] = pool.submit(self._run, worker_environ)
        if lane == STATUS_LANE:
            self._count_status(future)
        try:
            # Counted from arrival: reading the body came out of the caller's silence too.
            status, headers, payload = future.result(timeout=max(0.0, arrived_at + self.seconds - time.monotonic()))
        except FutureTimeout:
            if lane != STATUS_LANE or self._status_backlog_full():
                future.cancel()  # not started yet (the pool is full of stuck handlers): never start it
            # A status callback still waiting for a thread runs when one frees (Twilio sends it
            # once; its handler is idempotent), unless the backlog is already at its bound.
            environ["wsgi.input"] = io.BytesIO(body)
            return self._late(environ, endpoint, on_deadline, start_response)
        start_response(status, headers)
        return [payload]

    def _route(self, environ: dict[str, Any]) -> tuple[str, Callable[[BaseException], Response] | None, str]:
        """The route's endpoint, its fail-safe (None: not deadline-bound) and its pool's lane."""
        try:
            endpoint, _ = self.app.url_map.bind_to_environ(environ).match(method="POST")
        except HTTPException:
            return "", None, ""
        view = self.app.view_functions.get(str(endpoint))
        return str(endpoint), getattr(view, "on_deadline", None), getattr(view, "deadline_lane", "")

    def _run(self, environ: dict[str, Any]) -> Captured:
        """The whole request on this pool thread, with its own app context and session."""
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        result = self.inner(environ, start_response)
        try:
            payload = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()  # teardown, after-request events: on this thread, not the caller's
        return captured["status"], captured["headers"], payload

    def _late(
        self, environ: dict[str, Any], endpoint: str, on_deadline: Callable[[BaseException], Response],
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:  # fmt: skip
        with self.app.request_context(environ):
            if not request_is_from_twilio():
                log.warning("refused unsigned or forged request to %s", request.path)
                response: Response = Response("Forbidden", status=403)
            else:
                progress = environ[PROGRESS]
                with _ANSWER_LOCK:
                    promised = progress.get(LATE_TWIML)
                    progress[ANSWERED] = FAILSAFE if promised is None else PROMISED
                if promised is not None:
                    # The handler did the irreversible part (a counselor's acceptance) and told
                    # us what that means for this leg; what is still slow runs on without it.
                    log.warning("deadline passed at %s: answering with the handler's promised answer", endpoint)
                    response = Response(promised, status=200, mimetype="text/xml")
                else:
                    # The route's own fail-safe decides (a hold turn: one more turn, twice at most).
                    log.error("deadline passed at %s: answering with its fail-safe", endpoint)
                    late = DeadlineExceeded()
                    response = on_deadline(late)
                    if late.dialled_backup:
                        self._after_failsafe(request.form.get("CallSid", ""))
            return response(environ, start_response)

    def _after_failsafe(self, call_sid: str) -> None:
        """Stop the search for a caller now on the backup line, off this thread (best effort:
        the database may be what hangs)."""
        if not call_sid:
            return

        def run() -> None:
            with self.app.app_context():
                try:
                    run_after_failsafe_hooks(call_sid)
                finally:
                    publish_noted()  # the counselors its stopped rings freed: offered the next caller now

        self.pool.submit(run)


def answer_if_late(twiml: str) -> bool:
    """From now on, should this request's deadline pass, answer with ``twiml`` instead of the
    route's fail-safe: for a handler past a step it cannot take back (a counselor's press of 1,
    accepted), whose slow rest (the caller's REST redirect) must not turn the counselor's answer
    into an error while the caller is brought to them. A later call replaces it (the handler
    decided otherwise). False if the deadline has already answered; True outside a deadline
    (nothing else will answer)."""
    progress = request.environ.get(PROGRESS) if has_request_context() else None
    if progress is None:
        return True
    with _ANSWER_LOCK:
        if ANSWERED in progress:
            return False
        progress[LATE_TWIML] = twiml
        return True


def promised_answer() -> str | None:
    """The TwiML this request's handler asked its deadline to answer with (``answer_if_late``),
    if any: what its own failure should answer too."""
    return _read_progress(LATE_TWIML)


def answered_by_deadline() -> str | None:
    """Whether this request's deadline has already answered for it: ``PROMISED`` (with the
    handler's ``answer_if_late`` TwiML), ``FAILSAFE`` (the route's fail-safe), or None."""
    return _read_progress(ANSWERED)


def _read_progress(key: str) -> str | None:
    """One of the keys the handler and its deadline share, read under their lock (None outside
    a deadline-bound request)."""
    progress = request.environ.get(PROGRESS) if has_request_context() else None
    if progress is None:
        return None
    with _ANSWER_LOCK:
        value: str | None = progress.get(key)
        return value


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    length_raw = environ.get("CONTENT_LENGTH") or "0"
    length = int(length_raw) if length_raw.isdecimal() else 0
    stream = environ.get("wsgi.input")
    if stream is None or length <= 0:
        return b""
    return bytes(stream.read(min(length, limit + 1)))
