"""A stateful local fake of Twilio's REST API (Messages, Calls, Conferences, Participants).

The app under test talks to it over real HTTP through ``crisisline.telephony.make_rest_client``;
tests (and a TwiML-following test phone) drive call progress directly through ``FakeTwilio``.
Every webhook the fake sends is signed exactly as Twilio signs it (``twilio_fake.signing``), so
the app's signature validation runs unchanged.

Behaviour follows Twilio's documentation: call status callbacks (Call resource,
``StatusCallbackEvent``), conference events (``<Conference statusCallbackEvent>``), message
status callbacks and the REST resources' JSON shapes. The ``§`` marks in comments point to the
sections of the project's research notes on those documents (kept outside this repository);
where Twilio's behaviour is undocumented the choice is marked [INF].

State changes happen under one ``RLock``; webhooks are always sent *after* the lock is
released, because the app's webhook handler may call back into this API from another thread.

Call progress is driven by the test (``advance_call``) unless ``ring_timeouts=True``: then a
REST-placed leg dials by itself (``initiated``, ``ringing``), ends ``busy``/``failed`` if its
number is programmed so (``program_number``), and, if nobody answers within its ``Timeout``,
ends in ``no-answer``, as Twilio does. The stand-in ``dev.py run`` starts turns this on; the
test suite's fixtures leave it off, so their legs ring until the test acts.

Calls per second: Twilio places REST-created calls (``calls.create`` and conference participants)
at the account's CPS, 1 per second by default, and the rest wait in its outbound queue. With
``calls_per_second=N`` (``--calls-per-second``, or ``FAKE_TWILIO_CPS`` for the server) the fake
does the same: each such call gets the next free slot, its resource carries ``queue_time`` (the
estimated milliseconds until that slot) and it stays ``queued`` until then; a test or phone that
drives it earlier waits for the slot. A queue holding more than 24 hours of calls refuses new ones
(22005). Off by default (``None``: every call is placed at once, ``queue_time`` 0), like ring
timeouts, so tests stay instant.

What it does not model, plainly: audio (nobody hears anything; a test phone reads the TwiML),
the ~5 s Twilio adds to a ring ``Timeout`` (the fake rings exactly ``Timeout`` seconds),
answering machines (``AnsweredBy``
is whatever the test says), carrier SIP codes beyond one typical code per outcome, recordings,
and out-of-order delivery of callbacks (the fake sends them in order, one at a time). Twilio's
auto-reply to STOP/START is not sent (the block itself is). TwiML runs in the test phone
(``twilio_fake.phone``), not here: a leg's ``<Gather>``/``<Dial>`` progress only while its
phone drives it. A ``<Dial><Number>`` the phone runs is kept here as Twilio keeps it, a child
call (``ParentCallSid``) in the dial's final status (``dial_leg``), with no callbacks of its own.

Order of callbacks on a hang-up [INF: Twilio documents no cross-resource order]: the room's
events first (the leaver's ``participant-leave``, then, if that ends the room, the others'
``participant-leave`` and ``conference-end``), then each ended leg's final call status.
"""

from __future__ import annotations

import email.utils
import heapq
import itertools
import logging
import math
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode

import phonenumbers
import requests
from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from twilio_fake.signing import API_VERSION, CallIdentity, new_sid, signed_headers

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 15.0  # Twilio's hard cap on call-related webhooks (§6).
TWILIO_DEFAULT_CPS = 1.0  # an account's calls per second unless raised in the Console
MAX_QUEUE_SECONDS = 24 * 3600  # past this much queued work Twilio refuses new calls (22005)
MAX_BODY_CHARS = 1600
MAX_TWIML_CHARS = 4000

TERMINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
CALL_STATUSES = frozenset({"initiated", "ringing", "in-progress"}) | TERMINAL_CALL_STATUSES
# How long a completed ``<Dial><Number>`` leg talked (the phone's ``DialCallDuration``).
DIAL_LEG_SECONDS = 42
_CALL_RANK = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3}
# The StatusCallbackEvent subscription that covers each status (§1.6).
_CALL_EVENT_FOR_STATUS = {
    "initiated": "initiated",
    "ringing": "ringing",
    "in-progress": "answered",
    **{status: "completed" for status in TERMINAL_CALL_STATUSES},
}
CALL_EVENTS = frozenset(_CALL_EVENT_FOR_STATUS.values())
# [INF] Typical SIP codes for each terminal outcome.
_SIP_RESPONSE_CODES = {
    "completed": "200",
    "busy": "486",
    "no-answer": "487",
    "canceled": "487",
    "failed": "404",
}
CONFERENCE_EVENTS = frozenset({"start", "end", "join", "leave", "mute", "hold", "modify", "speaker", "announcement"})
MESSAGE_FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed"})
# A message still on its way cannot be deleted (20009, "Cannot delete this resource before it is
# complete": https://www.twilio.com/docs/api/errors/20009); one received, or in a final status,
# can. [INF] ``sent`` counts as done: many carriers never report delivery after it.
MESSAGE_UNFINISHED_STATUSES = frozenset({"queued", "accepted", "scheduled", "sending", "receiving"})
# [INF] The HTTP status of a 20009 refusal (Twilio's docs give only the code).
NOT_COMPLETE_STATUS, NOT_COMPLETE_CODE = 400, 20009
# How a programmed number treats a call: rings until answered or its Timeout (default),
# never answers (rings out to no-answer), is busy, or cannot be reached (failed).
NUMBER_BEHAVIOURS = frozenset({"ring", "no-answer", "busy", "failed"})
UNANSWERED_CALL_STATUSES = frozenset({"queued", "initiated", "ringing"})
# Twilio's default opt-out handling on long codes: single-word messages only (§2.4).
OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_WORDS = frozenset({"START", "YES", "UNSTOP"})
# [INF] Default error codes: 30003 unreachable handset, 30008 unknown error.
_DEFAULT_MESSAGE_ERRORS = {"undelivered": 30003, "failed": 30008}

# GSM 03.38 default alphabet; the extension table costs two septets per character.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


class FakeTwilioError(Exception):
    """A REST failure with Twilio's error code; rendered as Twilio's JSON error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        """Twilio's legacy error shape, which twilio-python turns into ``TwilioRestException``."""
        return twilio_error_body(self.status, self.code, self.message)


def twilio_error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """``{"code", "message", "more_info", "status"}`` as the real API returns it (§2.4)."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def count_segments(body: str) -> int:
    """Number of SMS segments Twilio bills for ``body``.

    GSM-7 bodies fit 160 septets in one segment, 153 per segment once concatenated; any
    character outside GSM-7 (e.g. "á", emoji) switches the whole body to UCS-2: 70 UTF-16
    code units, 67 per segment when split. Emoji outside the BMP count as two code units.
    """
    if not body:
        return 1
    if all(ch in _GSM7_BASIC or ch in _GSM7_EXTENSION for ch in body):
        units = sum(2 if ch in _GSM7_EXTENSION else 1 for ch in body)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)


# Twilio drops a TwiML answer larger than this (error 11750).
MAX_TWIML_BYTES = 64_000


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _rfc2822(value: datetime | None) -> str | None:
    """Twilio's date format, e.g. ``Tue, 31 Aug 2010 20:36:28 +0000``."""
    return email.utils.format_datetime(value) if value else None


def _parse_number(number: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(number.removeprefix("whatsapp:"), None)
    except phonenumbers.NumberParseException:
        return None


def is_valid_number(number: str) -> bool:
    """Whether ``number`` is an E.164 number Twilio would accept as ``To``."""
    parsed = _parse_number(number)
    return parsed is not None and phonenumbers.is_valid_number(parsed)


def _is_address(to: str) -> bool:
    """Non-PSTN destinations (``client:``, ``sip:``, ``app:``) skip number validation."""
    return to.split(":", 1)[0] in {"client", "sip", "app"} and ":" in to


def _normalize(number: str) -> str:
    parsed = _parse_number(number)
    if parsed is None or not phonenumbers.is_possible_number(parsed):
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _country(number: str) -> str:
    parsed = _parse_number(number)
    return (phonenumbers.region_code_for_number(parsed) or "") if parsed else ""


def _formatted(number: str) -> str:
    parsed = _parse_number(number)
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)


def _bool_param(value: str | None, default: bool) -> bool:
    """Twilio booleans: ``true``/``false``; anything else means false (§5 Update Participant)."""
    return default if value is None else value.strip().lower() == "true"


def _tf(value: bool) -> str:
    return "true" if value else "false"


def _event_set(events: str | Iterable[str] | None) -> list[str]:
    """Events given space separated (TwiML) or as a list (REST repeated keys)."""
    if events is None:
        return []
    items = events.split() if isinstance(events, str) else list(events)
    return [token for item in items for token in item.lower().split()]


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class WebhookLogEntry:
    """One outbound request the fake made to the app (status callback or TwiML fetch)."""

    # call-status | call-url | call-redirect | call-fallback | conference-status | message-status | message-action
    kind: str
    sid: str
    method: str
    url: str
    params: dict[str, str]
    status_code: int | None = None
    response_text: str | None = None
    error: str | None = None
    sent_at: float = field(default_factory=time.time)


@dataclass
class MessageRecord:
    """An outbound message created over REST, or a ``<Message>`` of a TwiML answer (``direction``
    ``outbound-reply``; ``action`` set if it had one, requested when it is delivered)."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None = None
    media_urls: list[str] = field(default_factory=list)
    status_callback: str | None = None
    status: str = "queued"
    num_segments: int = 1
    error_code: int | None = None
    error_message: str | None = None
    direction: str = "outbound-api"
    date_created: datetime = field(default_factory=_now)
    date_updated: datetime = field(default_factory=_now)
    date_sent: datetime | None = None
    action: _Outbound | None = None
    action_answered: Callable[[str], object] | None = None


@dataclass
class RedirectRecord:
    """A live call moved to new TwiML by ``POST Calls/<Sid>.json`` with ``Url`` or ``Twiml``."""

    url: str | None
    method: str
    twiml: str | None  # inline TwiML, or the body fetched from ``url``
    status_code: int | None = None
    fetched: bool = True  # False while ``url`` is being fetched: the call runs it only after


@dataclass
class ParticipantRecord:
    """A conference participant: joined (``connected``) or still being dialed over REST."""

    call_sid: str
    conference_sid: str
    account_sid: str
    label: str | None = None
    status: str = "queued"  # queued | connecting | ringing | connected | complete | failed
    muted: bool = False
    hold: bool = False
    coaching: bool = False
    call_sid_to_coach: str | None = None
    start_conference_on_enter: bool = True
    end_conference_on_exit: bool = False
    beep: str = "true"
    early_media: bool = True
    hold_url: str | None = None
    hold_method: str = "GET"
    wait_url: str | None = None
    announce_url: str | None = None
    # This participant's conference status callback; used only if it is the first to join.
    conference_status_callback: str | None = None
    conference_status_callback_method: str = "POST"
    conference_events: list[str] = field(default_factory=list)
    queue_time_ms: int = 0  # its leg's wait in the CPS queue
    date_created: datetime = field(default_factory=_now)
    date_updated: datetime = field(default_factory=_now)

    @property
    def joined(self) -> bool:
        return self.status == "connected"


@dataclass
class CallRecord:
    """One call leg: outbound over REST, a participant leg, or an inbound call (test phone)."""

    sid: str
    account_sid: str
    to: str
    from_: str
    direction: str = "outbound-api"
    status: str = "queued"
    url: str | None = None
    method: str = "POST"
    twiml: str | None = None
    application_sid: str | None = None
    fallback_url: str | None = None
    fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_callback_events: list[str] = field(default_factory=lambda: ["completed"])
    timeout: int = 60
    machine_detection: str | None = None
    caller_id: str | None = None
    parent_call_sid: str | None = None
    answered_by: str | None = None
    date_created: datetime = field(default_factory=_now)
    date_updated: datetime = field(default_factory=_now)
    start_time: datetime | None = None
    end_time: datetime | None = None
    answered_at: float | None = None
    duration: int | None = None
    callback_sequence: int = 0
    redirects: list[RedirectRecord] = field(default_factory=list)
    status_updates: list[str] = field(default_factory=list)  # each ``Status`` POSTed for it, in order
    conference_sid: str | None = None  # the conference it is in (or being dialed into)
    # Participant legs created over REST have no TwiML of their own: they hang up when they
    # leave the conference, and join it when answered.
    conference_leg: bool = False
    pending_join: tuple[str, ParticipantRecord] | None = None  # (friendly name, participant)
    last_conference_exit: str | None = None  # ReasonParticipantLeft of the last exit
    # Precise times for benches (date_created is to the second, as Twilio's): when the create
    # request reached the fake (epoch s), and when its CPS slot comes (monotonic s).
    created_at: float = field(default_factory=time.time)
    dial_at: float = field(default_factory=time.monotonic)
    queue_time_ms: int = 0  # the estimate returned to the creator: dial_at - creation


@dataclass
class ConferenceRecord:
    """A conference room; its status callback is fixed by the first participant to join."""

    sid: str
    account_sid: str
    friendly_name: str
    status: str = "init"  # init | in-progress | completed
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_callback_events: list[str] = field(default_factory=list)
    configured: bool = False  # whether a participant has joined and set the callback
    started: bool = False
    participants: dict[str, ParticipantRecord] = field(default_factory=dict)
    callback_sequence: int = 0
    reason_conference_ended: str | None = None
    call_sid_ending_conference: str | None = None
    announce_url: str | None = None
    date_created: datetime = field(default_factory=_now)
    date_updated: datetime = field(default_factory=_now)


@dataclass
class FaultRecord:
    """An injected REST failure: matching requests get ``status`` (after ``delay`` s)."""

    method: str
    path_regex: str
    status: int
    code: int
    message: str
    delay: float
    remaining: int | None  # None: forever


def _is_twiml(entry: WebhookLogEntry) -> bool:
    """Whether a fetch answered TwiML Twilio would run: a 2xx with an XML body under
    ``<Response>``. Anything else is a retrieval failure (11200), which sends a call to its
    fallback URL."""
    if entry.status_code is None or not 200 <= entry.status_code < 300 or not entry.response_text:
        return False
    try:
        return ET.fromstring(entry.response_text).tag == "Response"  # noqa: S314 - our own app's TwiML
    except ET.ParseError:
        return False


@dataclass
class _Outbound:
    """A webhook decided under the lock and sent after it is released."""

    kind: str
    sid: str
    url: str
    method: str
    params: dict[str, str]
    voice: bool = True


class _Timers:
    """One daemon thread running due callbacks in time order (ring progress and timeouts).

    ``clear()`` drops everything pending, so ``FakeTwilio.reset()`` leaves no timer behind
    to touch the next test's calls.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Callable[[], object]]] = []
        self._cond = threading.Condition()
        self._order = itertools.count()
        self._generation = 0
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, action: Callable[[], object]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), self._generation, action))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fake-twilio-timers", daemon=True)
                self._thread.start()
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()
            self._generation += 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(timeout=(self._heap[0][0] - time.monotonic()) if self._heap else None)
                _, _, generation, action = heapq.heappop(self._heap)
                if generation != self._generation:
                    continue
            try:
                action()
            except Exception:  # a timer must never kill the thread that runs all the others
                log.exception("fake Twilio timer failed")


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeTwilio:
    """In-memory Twilio account: messages, calls, conferences, opt-outs, faults, webhook log.

    The dict attributes (``messages``, ``calls``, ``conferences``) are live state for tests to
    read; change state only through the methods so callbacks fire.
    """

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        auto_deliver: bool = False,
        auto_deliver_delay: float = 0.05,
        webhook_timeout: float = WEBHOOK_TIMEOUT_SECONDS,
        http: Any = None,
        ring_timeouts: bool = False,
        dial_delay: float = 0.2,
        calls_per_second: float | None = None,
    ) -> None:
        """``http`` is anything with ``requests``' ``post``/``get`` (default: ``requests``).

        ``ring_timeouts``: REST-placed legs progress by themselves (``dial_delay`` seconds after
        creation they are ``initiated`` then ``ringing``) and end ``no-answer`` after their
        ``Timeout`` unless answered first. Off by default: tests drive every step.

        ``calls_per_second``: model Twilio's outbound queue at this rate (Twilio's default is
        ``TWILIO_DEFAULT_CPS``); ``None`` places every call at once.
        """
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.auto_deliver = auto_deliver
        self.auto_deliver_delay = auto_deliver_delay
        self.webhook_timeout = webhook_timeout
        self.ring_timeouts = ring_timeouts
        self.dial_delay = dial_delay
        self.calls_per_second = calls_per_second
        self._next_slot = 0.0  # monotonic time of the CPS queue's next free slot
        self.number_behaviours: dict[str, str] = {}
        self._timers = _Timers()
        self._http: Any = http or requests
        self._lock = threading.RLock()
        self.messages: dict[str, MessageRecord] = {}
        self.calls: dict[str, CallRecord] = {}
        self.conferences: dict[str, ConferenceRecord] = {}
        self.opted_out: set[str] = set()
        self.faults: list[FaultRecord] = []
        self.webhook_log: list[WebhookLogEntry] = []
        # Every DELETE of a call or message record the API answered: (sid, HTTP status), in order.
        self.delete_log: list[tuple[str, int]] = []
        self.generation = 0  # bumped by ``reset``: a request delayed across it does nothing
        # Called after ``advance_call`` has sent its callbacks: a test sets it to wait for the
        # work the app started off its request path (ringing the next person, say).
        self.settle: Callable[[], object] | None = None

    def reset(self) -> None:
        """Forget all state (credentials, the ``ring_timeouts`` mode and the CPS stay)."""
        self.settle = None
        self._timers.clear()
        with self._lock:
            self.generation += 1
            self._next_slot = 0.0
            self.number_behaviours.clear()
            self.messages.clear()
            self.calls.clear()
            self.conferences.clear()
            self.opted_out.clear()
            self.faults.clear()
            self.webhook_log.clear()
            self.delete_log.clear()

    # ---- webhooks -------------------------------------------------------------------------

    def webhooks(self, kind: str | None = None, sid: str | None = None) -> list[WebhookLogEntry]:
        """A copy of the webhook log, optionally only one ``kind`` and/or resource ``sid``."""
        with self._lock:
            return [
                entry
                for entry in self.webhook_log
                if (kind is None or entry.kind == kind) and (sid is None or entry.sid == sid)
            ]

    def _send(self, hook: _Outbound) -> WebhookLogEntry:
        """Send one signed webhook; failures are logged, never raised."""
        method = hook.method.upper()
        entry = WebhookLogEntry(hook.kind, hook.sid, method, hook.url, dict(hook.params))
        try:
            if method == "GET":
                # GET webhooks carry the params in the query string and sign the URL only.
                joiner = "&" if "?" in hook.url else "?"
                url = hook.url + joiner + urlencode(hook.params)
                headers = signed_headers(self.auth_token, url, {}, voice=hook.voice)
                headers.pop("Content-Type", None)
                entry.url = url
                resp = self._http.get(url, headers=headers, timeout=self.webhook_timeout)
            else:
                headers = signed_headers(self.auth_token, hook.url, hook.params, voice=hook.voice)
                resp = self._http.post(hook.url, data=hook.params, headers=headers, timeout=self.webhook_timeout)
            entry.status_code = resp.status_code
            entry.response_text = resp.text
        except requests.RequestException as exc:
            entry.error = f"{type(exc).__name__}: {exc}"
        # SIDs and outcomes only: URLs and params can carry phone numbers.
        outcome = entry.status_code or (entry.error or "").split(":", 1)[0]
        log.info("webhook %s for %s -> %s", hook.kind, hook.sid, outcome)
        with self._lock:
            self.webhook_log.append(entry)
        return entry

    def _send_all(self, hooks: Iterable[_Outbound]) -> list[WebhookLogEntry]:
        return [self._send(hook) for hook in hooks]

    # ---- faults and opt-outs --------------------------------------------------------------

    def inject_fault(
        self,
        method: str,
        path_regex: str,
        *,
        status: int = 500,
        code: int | None = None,
        message: str | None = None,
        delay: float = 0.0,
        times: int | None = 1,
    ) -> FaultRecord:
        """Make the next ``times`` REST requests matching ``method`` (or ``*``) and
        ``path_regex`` (``re.search`` on the path) fail with ``status`` after ``delay`` seconds.

        ``times=None`` applies forever. A ``status`` below 400 only adds the delay and then
        handles the request normally (a slow API).
        """
        fault = FaultRecord(
            method=method.upper(),
            path_regex=path_regex,
            status=status,
            code=code if code is not None else status,
            message=message or f"Injected fault ({status})",
            delay=delay,
            remaining=times,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self.faults.clear()

    def take_fault(self, method: str, path: str) -> FaultRecord | None:
        """The first fault matching this request, consuming one of its uses."""
        with self._lock:
            for fault in self.faults:
                if fault.method in ("*", method.upper()) and re.search(fault.path_regex, path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def opt_out(self, number: str) -> None:
        """Block sends to ``number`` as if it texted STOP: later sends get 400 / 21610."""
        with self._lock:
            self.opted_out.add(_normalize(number))

    def opt_in(self, number: str) -> None:
        """Undo ``opt_out`` (the recipient texted START)."""
        with self._lock:
            self.opted_out.discard(_normalize(number))

    def receive_keyword(self, number: str, body: str) -> str | None:
        """Twilio's own handling of a text from ``number`` before it reaches the webhook: a
        single opt-out word blocks later sends to it (21610), an opt-in word lifts that. The
        message is still delivered to the app either way. Returns ``stop``/``start`` or None.

        Twilio's own auto-reply to the keyword is not modelled (nothing is texted back).
        """
        word = body.strip().upper()
        if word in OPT_OUT_WORDS:
            self.opt_out(number)
            return "stop"
        if word in OPT_IN_WORDS:
            self.opt_in(number)
            return "start"
        return None

    # ---- messages -------------------------------------------------------------------------

    def create_message(
        self,
        to: str,
        body: str = "",
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        media_urls: Iterable[str] = (),
        status_callback: str | None = None,
    ) -> MessageRecord:
        """Validate and queue an outbound message, as ``POST Messages.json`` does.

        Raises ``FakeTwilioError`` with Twilio's codes: 21604 no To, 21603 no From/service,
        21602 no body or media, 21617 body over 1600 chars, 21211 invalid To, 21610 opted out.
        """
        media = list(media_urls)
        if not to:
            raise FakeTwilioError(400, 21604, "A 'To' phone number is required.")
        if not from_ and not messaging_service_sid:
            raise FakeTwilioError(400, 21603, "A 'From' phone number is required.")
        if not body and not media:
            raise FakeTwilioError(400, 21602, "Message body is required.")
        if sum(2 if ord(ch) > 0xFFFF else 1 for ch in body) > MAX_BODY_CHARS:  # UTF-16: an emoji is 2
            raise FakeTwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if not is_valid_number(to):
            raise FakeTwilioError(400, 21211, "Invalid 'To' Phone Number")
        with self._lock:
            if _normalize(to) in self.opted_out:
                raise FakeTwilioError(400, 21610, "Attempt to send to unsubscribed recipient")
            message = MessageRecord(
                sid=new_sid("SM" if not media else "MM"),
                account_sid=self.account_sid,
                to=to,
                from_=from_,
                body=body,
                messaging_service_sid=messaging_service_sid,
                media_urls=media,
                status_callback=status_callback,
                # With a Messaging Service the initial status is "accepted" (§2.3).
                status="accepted" if messaging_service_sid and not from_ else "queued",
                num_segments=count_segments(body),
            )
            self.messages[message.sid] = message
        log.info("message %s created", message.sid)
        if self.auto_deliver:
            threading.Thread(target=self._auto_deliver, args=(message.sid,), daemon=True, name="auto-deliver").start()
        return message

    def reply_with_twiml(self, sender: str, line_number: str, twiml: str) -> list[MessageRecord]:
        """What Twilio does with the TwiML a messaging webhook answered ``sender``'s text with
        (``line_number`` received it): each ``<Message>`` is sent, ``to`` the sender and ``from``
        the line unless it says otherwise; to an opted-out number it fails (status callback
        ``failed``, 21610) rather than being refused (§2.2).

        A reply's status callbacks go to its ``statusCallback`` only when it has an ``action``
        too (the legacy quirk of §2.2). After a ``<Message action>`` Twilio requests the action
        (``MessageSid``, ``MessageStatus``) and goes on with the TwiML it answers; the verbs after
        it are never reached.

        Raises ``FakeTwilioError`` for an answer Twilio would drop whole: 11750 over 64 kB,
        12100 not TwiML (as Twilio logs them)."""
        if len(twiml.encode()) > MAX_TWIML_BYTES:
            raise FakeTwilioError(502, 11750, "TwiML response body too large")  # nothing is sent
        try:
            root = ET.fromstring(twiml)  # noqa: S314 - the app under test's own TwiML
        except ET.ParseError as error:
            raise FakeTwilioError(502, 12100, "Document parse failure") from error
        if root.tag != "Response":
            raise FakeTwilioError(502, 12100, "Document parse failure")
        sent: list[MessageRecord] = []
        for element in root:
            if element.tag != "Message":
                continue
            body = (element.findtext("Body") or element.text or "").strip()
            to = element.get("to") or sender
            action = element.get("action")
            callback = element.get("statusCallback") if action else None
            try:
                message = self.create_message(to, body, from_=element.get("from") or line_number,
                                              status_callback=callback)  # fmt: skip
            except FakeTwilioError as error:
                if error.code != 21610:
                    raise
                message = self._failed_reply(to, body, element.get("from") or line_number, callback)
            message.direction = "outbound-reply"
            sent.append(message)
            if action:
                method = (element.get("method") or "POST").upper()
                message.action = _Outbound("message-action", message.sid, action, method, {}, voice=False)
                message.action_answered = partial(self._answered_action, sender, line_number, message.sid)
                if message.status in MESSAGE_FINAL_STATUSES:  # failed at once (21610): processed
                    self._request_action(message)
                break  # the verbs after a <Message action> are never reached
        return sent

    def _request_action(self, message: MessageRecord) -> None:
        """A ``<Message action>``'s request, once the message is processed (sent, or failed),
        then the TwiML it answered, as Twilio goes on with it. Once per message."""
        with self._lock:
            hook, answered = message.action, message.action_answered
            message.action = message.action_answered = None
            if hook is None:
                return
            failure = {"ErrorCode": str(message.error_code)} if message.error_code else {}
            hook.params = hook.params or self._message_params(message, failure)
        entry = self._send(hook)
        if entry.status_code == 200 and entry.response_text and answered is not None:
            answered(entry.response_text)

    def _answered_action(self, sender: str, line_number: str, sid: str, twiml: str) -> None:
        try:
            self.reply_with_twiml(sender, line_number, twiml)
        except FakeTwilioError as error:
            log.warning("the TwiML answered to %s's action was dropped: %s", sid, error.code)

    def _failed_reply(self, to: str, body: str, from_: str, status_callback: str | None) -> MessageRecord:
        """A TwiML reply to an opted-out number: created, then failed with 21610."""
        with self._lock:
            message = MessageRecord(
                sid=new_sid("SM"), account_sid=self.account_sid, to=to, from_=from_, body=body,
                messaging_service_sid=None, media_urls=[], status_callback=status_callback, status="queued",
                num_segments=count_segments(body),
            )  # fmt: skip
            self.messages[message.sid] = message
        self.deliver_message(message.sid, "failed", 21610)
        return message

    def _auto_deliver(self, sid: str) -> None:
        time.sleep(self.auto_deliver_delay)  # let the REST response reach the app first
        self.deliver_message(sid)

    def deliver_message(
        self, sid: str, final: str = "delivered", error_code: int | None = None
    ) -> list[WebhookLogEntry]:
        """Move a message to its final status and send its signed status callbacks.

        ``delivered``/``undelivered`` send ``sent`` then the final status; ``failed`` sends only
        ``failed`` (Twilio never reports ``sent`` for a message it could not send, §2.3). A TwiML
        reply's ``action`` is requested first, with the first of those statuses.
        Failures carry ``ErrorCode``. A message already final is left alone (returns ``[]``).
        """
        if final not in MESSAGE_FINAL_STATUSES:
            raise ValueError(f"final must be one of {sorted(MESSAGE_FINAL_STATUSES)}")
        with self._lock:
            message = self._message(sid)
            if message.status in MESSAGE_FINAL_STATUSES:
                return []
            steps = ["sent", final] if final != "failed" else ["failed"]
            hooks: list[_Outbound] = []
            for status in steps:
                message.status = status
                message.date_updated = _now()
                if status == "sent":
                    message.date_sent = message.date_updated
                extra: dict[str, str] = {}
                if status in ("undelivered", "failed"):
                    message.error_code = error_code or _DEFAULT_MESSAGE_ERRORS[status]
                    message.error_message = f"Message {status}"
                    extra["ErrorCode"] = str(message.error_code)
                if status in ("delivered", "undelivered"):
                    extra["RawDlrDoneDate"] = message.date_updated.strftime("%y%m%d%H%M")
                if message.action is not None and not message.action.params:  # as first processed
                    message.action.params = self._message_params(message, extra)
                if message.status_callback:
                    hooks.append(
                        _Outbound(
                            "message-status",
                            sid,
                            message.status_callback,
                            "POST",
                            self._message_params(message, extra),
                            voice=False,
                        )
                    )
        self._request_action(message)  # a TwiML reply's action, then its status callbacks
        return self._send_all(hooks)

    def _message_params(self, message: MessageRecord, extra: Mapping[str, str]) -> dict[str, str]:
        params = {
            "AccountSid": message.account_sid,
            "To": message.to,
            "MessageSid": message.sid,
            "MessageStatus": message.status,
            "SmsSid": message.sid,
            "SmsStatus": message.status,
            "ApiVersion": API_VERSION,
        }
        if message.from_:
            params["From"] = message.from_
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        params.update(extra)
        return params

    def record_inbound_message(self, message_sid: str, from_: str, to: str, body: str = "") -> MessageRecord:
        """Keep a text the test phone sends the line, as Twilio keeps it (direction ``inbound``,
        status ``received``), so the app can fetch or delete it over REST. Returns the existing
        record if the sid is known."""
        with self._lock:
            if message_sid in self.messages:
                return self.messages[message_sid]
            now = _now()
            # An inbound text's ``date_sent``: when Twilio requested the line's webhook with it.
            message = MessageRecord(
                sid=message_sid, account_sid=self.account_sid, to=to, from_=from_, body=body,
                status="received", num_segments=count_segments(body), direction="inbound",
                date_created=now, date_updated=now, date_sent=now,
            )  # fmt: skip
            self.messages[message_sid] = message
        return message

    def delete_message(self, sid: str) -> None:
        """``DELETE Messages/<Sid>.json``: forget a message's record, its body, numbers and
        media with it. 404/20404 for one unknown (or deleted before); 20009 for one still on its
        way (queued, sending...)."""
        with self._lock:
            try:
                message = self._message(sid)
                if message.status in MESSAGE_UNFINISHED_STATUSES:
                    raise FakeTwilioError(
                        NOT_COMPLETE_STATUS, NOT_COMPLETE_CODE, "Cannot delete this resource before it is complete"
                    )
            except FakeTwilioError as error:
                self.delete_log.append((sid, error.status))
                raise
            del self.messages[sid]
            self.delete_log.append((sid, 204))

    def _message(self, sid: str) -> MessageRecord:
        message = self.messages.get(sid)
        if message is None:
            raise FakeTwilioError(404, 20404, f"The requested resource Message {sid} was not found")
        return message

    # ---- calls ----------------------------------------------------------------------------

    def create_call(
        self,
        to: str,
        from_: str,
        *,
        url: str | None = None,
        method: str = "POST",
        twiml: str | None = None,
        application_sid: str | None = None,
        status_callback: str | None = None,
        status_callback_method: str = "POST",
        status_callback_events: str | Iterable[str] | None = None,
        timeout: int = 60,
        machine_detection: str | None = None,
        caller_id: str | None = None,
        fallback_url: str | None = None,
        direction: str = "outbound-api",
        parent_call_sid: str | None = None,
        _conference_leg: bool = False,
    ) -> CallRecord:
        """Validate and queue an outbound call, as ``POST Calls.json`` does.

        Raises ``FakeTwilioError``: 21201 no To, 21213 no From, 21205 none of
        Url/Twiml/ApplicationSid, 32018 Twiml over 4000 chars, 21211 invalid To,
        21626 unknown StatusCallbackEvent. Without events only ``completed`` is subscribed.
        """
        if not to:
            raise FakeTwilioError(400, 21201, "No 'To' number is specified")
        if not from_:
            raise FakeTwilioError(400, 21213, "No 'From' number is specified")
        if not (url or twiml or application_sid or _conference_leg):
            raise FakeTwilioError(400, 21205, "Url parameter is required.")
        if url:
            twiml = None  # Twilio ignores Twiml when Url is also given (§5)
        if twiml and len(twiml) > MAX_TWIML_CHARS:
            raise FakeTwilioError(400, 32018, "Twiml parameter exceeds 4000 characters")
        if not _is_address(to) and not is_valid_number(to):
            raise FakeTwilioError(400, 21211, "Invalid 'To' Phone Number")
        events = _event_set(status_callback_events) or ["completed"]
        if not set(events) <= CALL_EVENTS:
            raise FakeTwilioError(400, 21626, "Invalid 'StatusCallbackEvent'")
        call = CallRecord(
            sid=new_sid("CA"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            direction=direction,
            # Calls created by <Dial> start right away and are never queued (§1.6).
            status="initiated" if direction == "outbound-dial" else "queued",
            url=url,
            method=method.upper(),
            twiml=twiml,
            application_sid=application_sid,
            fallback_url=fallback_url,
            status_callback=status_callback,
            status_callback_method=status_callback_method.upper(),
            status_callback_events=events,
            timeout=timeout,
            machine_detection=machine_detection,
            caller_id=caller_id,
            parent_call_sid=parent_call_sid,
            conference_leg=_conference_leg,
        )
        with self._lock:
            if direction == "outbound-api":
                self._take_cps_slot(call)
            self.calls[call.sid] = call
            programmed = _normalize(to) in self.number_behaviours
        log.info("call %s created (%s), queue_time %s ms", call.sid, direction, call.queue_time_ms)
        if direction == "outbound-api" and (self.ring_timeouts or programmed):
            wait = call.queue_time_ms / 1000
            self._timers.schedule(wait + self.dial_delay, lambda: self._auto_dial(call.sid))
        return call

    def set_calls_per_second(self, calls_per_second: float | None) -> None:
        """Change the account's CPS (``None``: unlimited); calls already queued keep their slot."""
        if calls_per_second is not None and calls_per_second <= 0:
            raise ValueError("calls_per_second must be positive (or None for unlimited)")
        with self._lock:
            self.calls_per_second = calls_per_second

    def _take_cps_slot(self, call: CallRecord) -> None:
        """Give a REST-created call the CPS queue's next free slot (under the lock)."""
        if self.calls_per_second is None:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        if slot - now > MAX_QUEUE_SECONDS:
            # [INF] the HTTP status of 22005 is not documented; 429 says "too many".
            raise FakeTwilioError(429, 22005, "Outbound call queue is full: more than 24 hours of calls queued")
        self._next_slot = slot + 1 / self.calls_per_second
        call.dial_at = slot
        call.queue_time_ms = round((slot - now) * 1000)

    def _give_back_cps_slots(self) -> None:
        """A call left the CPS queue unplaced (canceled): the queue ends after the last call
        still waiting. [INF] Calls behind a gap keep their slots (Twilio's own re-planning is
        undocumented); a queue emptied by cancels is free again at once."""
        if self.calls_per_second is None:
            return
        now = time.monotonic()
        waiting = [c.dial_at for c in self.calls.values() if c.status == "queued" and c.dial_at > now]
        self._next_slot = min(self._next_slot, (max(waiting) if waiting else now) + 1 / self.calls_per_second)

    def seconds_until_dialled(self, call: CallRecord) -> float:
        """How long ``call`` still waits in the CPS queue (0 once Twilio is placing it)."""
        return max(0.0, call.dial_at - time.monotonic()) if call.status == "queued" else 0.0

    def program_number(self, number: str, behaviour: str | None) -> None:
        """How the phone at ``number`` treats the calls placed to it from now on.

        ``busy`` / ``failed``: each leg ends so right after ``initiated`` (it never rings);
        ``no-answer``: it rings out to ``no-answer`` after its ``Timeout`` even without
        ``ring_timeouts``; ``ring`` (or ``None``, the default) rings until answered, or until
        its ``Timeout`` with ``ring_timeouts``.
        """
        if behaviour is not None and behaviour not in NUMBER_BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {sorted(NUMBER_BEHAVIOURS)}")
        with self._lock:
            if behaviour in (None, "ring"):
                self.number_behaviours.pop(_normalize(number), None)
            else:
                self.number_behaviours[_normalize(number)] = behaviour

    def _auto_dial(self, sid: str) -> None:
        """Twilio dials a REST-placed leg: it starts, then rings, or is busy or unreachable."""
        with self._lock:
            call = self.calls.get(sid)
            if call is None or call.status != "queued":
                return  # canceled meanwhile, or a test drove it by hand
            behaviour = self.number_behaviours.get(_normalize(call.to), "ring")
            ring_seconds = max(1, min(600, call.timeout))
        if behaviour in ("busy", "failed"):
            self._advance_call(sid, behaviour, only_from=UNANSWERED_CALL_STATUSES)
            return
        self._advance_call(sid, "ringing", only_from=UNANSWERED_CALL_STATUSES)
        if self.ring_timeouts or behaviour == "no-answer":
            # Nobody picked up within Timeout: Twilio gives up with no-answer (§5 Create Call).
            self._timers.schedule(
                ring_seconds, lambda: self._advance_call(sid, "no-answer", only_from=UNANSWERED_CALL_STATUSES)
            )

    def record_inbound_call(
        self, call_sid: str, from_: str, to: str, *, status_callback: str | None = None
    ) -> CallRecord:
        """Register an inbound call the test phone is placing (status ``ringing``).

        ``status_callback`` stands for the number's own StatusCallback, which gets the final
        ``completed`` event (§1.6). Returns the existing record if the sid is known.
        """
        with self._lock:
            if call_sid in self.calls:
                return self.calls[call_sid]
            call = CallRecord(
                sid=call_sid,
                account_sid=self.account_sid,
                to=to,
                from_=from_,
                direction="inbound",
                status="ringing",
                status_callback=status_callback,
            )
            self.calls[call_sid] = call
        log.info("inbound call %s recorded", call_sid)
        return call

    def dial_leg(self, parent_call_sid: str, to: str, from_: str, status: str) -> CallRecord:
        """A ``<Dial><Number>`` of ``parent_call_sid`` (run by the test phone), as Twilio keeps
        it: a child call (``ParentCallSid``, direction ``outbound-dial``) driven to ``status``
        (``in-progress`` while they still talk). ``FakeTwilioError`` 21211 for a number Twilio
        could not dial."""
        if status not in CALL_STATUSES:
            raise FakeTwilioError(400, 21218, f"Invalid Status: {status}")
        self.get_call(parent_call_sid)  # 20404 for a call the fake does not know
        leg = self.create_call(
            to=to, from_=from_, twiml="<Response/>", direction="outbound-dial", parent_call_sid=parent_call_sid
        )
        if status == "completed":  # answered, talked, hung up
            self.advance_call(leg.sid, "in-progress")
            self.advance_call(leg.sid, "completed", duration=DIAL_LEG_SECONDS)
        else:
            self.advance_call(leg.sid, status)
        return leg

    def get_call(self, call_sid: str) -> CallRecord:
        """The call record; ``FakeTwilioError`` 404/20404 if unknown."""
        with self._lock:
            return self._call(call_sid)

    def _call(self, sid: str) -> CallRecord:
        call = self.calls.get(sid)
        if call is None:
            raise FakeTwilioError(404, 20404, f"The requested resource Call {sid} was not found")
        return call

    def _identity(self, call: CallRecord) -> CallIdentity:
        return CallIdentity(
            account_sid=call.account_sid,
            from_number=call.from_,
            to_number=call.to,
            call_sid=call.sid,
            direction=call.direction,
            parent_call_sid=call.parent_call_sid,
            from_country=_country(call.from_),
            to_country=_country(call.to),
        )

    def _voice_params(self, call: CallRecord, status: str) -> dict[str, str]:
        extra = {"AnsweredBy": call.answered_by} if call.answered_by else {}
        return self._identity(call).voice_params(status, **extra)

    def _status_hook(self, call: CallRecord, status: str) -> list[_Outbound]:
        """The status callback for ``status`` if the call subscribed to its event (§1.6)."""
        if not call.status_callback or _CALL_EVENT_FOR_STATUS[status] not in (call.status_callback_events):
            return []
        params = self._voice_params(call, status)
        params.update(
            CallbackSource="call-progress-events",
            SequenceNumber=str(call.callback_sequence),
            Timestamp=_rfc2822(_now()) or "",
        )
        call.callback_sequence += 1  # counts callbacks actually sent, from 0
        if status in TERMINAL_CALL_STATUSES:
            params["CallDuration"] = str(call.duration or 0)
            params["SipResponseCode"] = _SIP_RESPONSE_CODES[status]
            if status == "completed":
                # Billed minutes; an answered call bills at least one.
                params["Duration"] = str(max(1, math.ceil((call.duration or 0) / 60)))
        return [_Outbound("call-status", call.sid, call.status_callback, call.status_callback_method, params)]

    def _set_progress(self, call: CallRecord, status: str) -> list[_Outbound]:
        call.status = status
        call.date_updated = _now()
        if call.pending_join is not None:
            _, participant = call.pending_join
            participant.status = {"initiated": "connecting", "ringing": "ringing"}.get(status, participant.status)
        return self._status_hook(call, status)

    def advance_call(
        self,
        call_sid: str,
        status: str,
        *,
        duration: int | None = None,
        answered_by: str | None = None,
    ) -> str | None:
        """Drive a call to ``status`` and send the callbacks Twilio would.

        ``status``: ``initiated``, ``ringing``, ``in-progress`` (answered), ``completed``,
        ``busy``, ``no-answer``, ``failed`` or ``canceled``. Skipped earlier steps are filled in
        (a queued call that is answered was first initiated and rang). A queued call that is
        canceled sends nothing (§1.1). ``duration`` overrides the measured ``CallDuration``;
        ``answered_by`` sets ``AnsweredBy`` (default ``human`` if MachineDetection was asked).

        On ``in-progress`` returns the TwiML to run: the body fetched (signed) from the call's
        ``Url``, or its inline ``Twiml``. A REST participant leg joins its conference instead
        and returns None. Terminal calls and backward moves are ignored (returns None).
        """
        twiml = self._advance_call(call_sid, status, duration=duration, answered_by=answered_by)
        if self.settle is not None:
            self.settle()
        return twiml

    def _advance_call(
        self,
        call_sid: str,
        status: str,
        *,
        duration: int | None = None,
        answered_by: str | None = None,
        only_from: frozenset[str] | None = None,
    ) -> str | None:
        """``advance_call``; with ``only_from``, only if the call is in one of those statuses
        (checked under the lock: a ring timeout must never end a call answered meanwhile)."""
        if status not in CALL_STATUSES:
            raise ValueError(f"status must be one of {sorted(CALL_STATUSES)}")
        if status != "canceled":
            # A call still in the CPS queue cannot ring (or be answered) before its slot.
            with self._lock:
                queued = self.calls.get(call_sid)
                wait = self.seconds_until_dialled(queued) if queued is not None else 0.0
            if wait:
                time.sleep(wait)
        with self._lock:
            call = self.calls.get(call_sid)
            if call is None and only_from is not None:
                return None  # a timer outlived its call (deleted)
            call = self._call(call_sid)
            if call.status in TERMINAL_CALL_STATUSES or (only_from is not None and call.status not in only_from):
                return None
            hooks: list[_Outbound] = []
            fetch: _Outbound | None = None
            if status in TERMINAL_CALL_STATUSES:
                if call.status == "queued" and status != "canceled" and call.direction != "inbound":
                    hooks += self._set_progress(call, "initiated")
                if status == "no-answer" and _CALL_RANK[call.status] < _CALL_RANK["ringing"]:
                    hooks += self._set_progress(call, "ringing")
                hooks += self._end_call(call, status, duration=duration, silent=call.status == "queued")
            else:
                if _CALL_RANK[status] <= _CALL_RANK[call.status]:
                    return None
                for step in ("initiated", "ringing", "in-progress"):
                    if _CALL_RANK[call.status] < _CALL_RANK[step] <= _CALL_RANK[status]:
                        if step == "in-progress":
                            self._mark_answered(call, answered_by)
                        hooks += self._set_progress(call, step)
                if status == "in-progress":
                    if call.pending_join is not None:
                        hooks += self._join_pending(call)
                    elif call.url:
                        fetch = _Outbound(
                            "call-url",
                            call.sid,
                            call.url,
                            call.method,
                            self._voice_params(call, "in-progress"),
                        )
            inline_twiml = call.twiml if status == "in-progress" and not call.url else None
        self._send_all(hooks)
        if fetch is not None:
            entry = self._send(fetch)
            return entry.response_text
        return inline_twiml

    def _mark_answered(self, call: CallRecord, answered_by: str | None) -> None:
        call.answered_at = time.monotonic()
        call.start_time = _now()
        if answered_by or call.machine_detection:
            call.answered_by = answered_by or "human"

    def _end_call(
        self,
        call: CallRecord,
        status: str,
        *,
        duration: int | None = None,
        silent: bool = False,
        leave_reason: str = "participant_hung_up",
    ) -> list[_Outbound]:
        """Finish a call: leave/abandon its conference, then the terminal status callback."""
        hooks: list[_Outbound] = []
        still_waiting = self.seconds_until_dialled(call) > 0
        if call.answered_at is not None and duration is None:
            duration = round(time.monotonic() - call.answered_at)
        call.duration = duration or 0
        call.status = status
        call.end_time = call.date_updated = _now()
        hooks += self._detach_from_conference(call, status, leave_reason)
        hooks += self._end_dial_legs(call)
        if not silent:
            hooks += self._status_hook(call, status)
        if still_waiting:
            self._give_back_cps_slots()
        log.info("call %s ended: %s", call.sid, status)
        return hooks

    def _end_dial_legs(self, call: CallRecord) -> list[_Outbound]:
        """A call that hangs up or is redirected ends its ``<Dial>``: the child legs still live
        end with it (answered ones completed, the others canceled)."""
        hooks: list[_Outbound] = []
        for child in list(self.calls.values()):
            live = child.status not in TERMINAL_CALL_STATUSES
            if live and child.parent_call_sid == call.sid and child.direction == "outbound-dial":
                hooks += self._end_call(child, "completed" if child.status == "in-progress" else "canceled")
        return hooks

    def _detach_from_conference(self, call: CallRecord, call_status: str, reason: str) -> list[_Outbound]:
        """Take a call out of its conference because the call ended or was redirected."""
        hooks: list[_Outbound] = []
        if call.conference_sid and call.conference_sid in self.conferences:
            conference = self.conferences[call.conference_sid]
            participant = conference.participants.get(call.sid)
            if participant is not None and participant.joined:
                hooks += self._leave(conference, participant, reason, call_status=call_status)
            elif participant is not None:
                hooks += self._fail_pending(conference, participant, call_status)
        if call.pending_join is not None and call_status in TERMINAL_CALL_STATUSES:
            call.pending_join = None
        call.conference_sid = None
        return hooks

    def update_call(
        self,
        call_sid: str,
        *,
        status: str | None = None,
        url: str | None = None,
        method: str = "POST",
        twiml: str | None = None,
        status_callback: str | None = None,
        fallback_url: str | None = None,
        fallback_method: str = "POST",
    ) -> CallRecord:
        """``POST Calls/<Sid>.json``: cancel, hang up or redirect a call.

        ``canceled`` ends only queued/ringing calls (others unchanged). ``completed`` hangs up
        an answered call (leaving any conference) and cancels one not yet answered [INF].
        The answer is the call as the update left it ("canceled" for a ringing call) [INF]:
        ``transfer.dispatch.hang_up_call`` sends ``completed`` too unless it says the call ended.
        ``url``/``twiml`` on a live call takes it out of its conference and runs the new TwiML:
        a ``RedirectRecord`` holding the inline TwiML or the body fetched (signed) from ``url``
        is appended to ``call.redirects``. Before answer it only replaces the Url/Twiml.
        Raises 21220 when redirecting a finished call. When fetching ``url`` fails (no answer,
        a 4xx/5xx, not TwiML), ``fallback_url`` (or the call's own, from its create) is requested
        at once with ``ErrorCode`` 11200 and ``ErrorUrl``, and its TwiML is what the call runs
        (twilio-semantics, "Fallback URL").
        """
        if status is not None and status not in ("canceled", "completed"):
            raise FakeTwilioError(400, 21218, f"Invalid Status: {status}")
        hooks: list[_Outbound] = []
        redirect: RedirectRecord | None = None
        fetch: _Outbound | None = None
        with self._lock:
            call = self._call(call_sid)
            if status is not None:
                call.status_updates.append(status)
            if status_callback:
                call.status_callback = status_callback
            if fallback_url:
                call.fallback_url, call.fallback_method = fallback_url, fallback_method.upper()
            if (url or twiml) and status is None:
                if call.status in TERMINAL_CALL_STATUSES:
                    raise FakeTwilioError(400, 21220, "Call is not in-progress. Cannot redirect.")
                call.url, call.method, call.twiml = url, method.upper(), None if url else twiml
                if call.status == "in-progress":
                    hooks += self._detach_from_conference(call, "in-progress", "participant_updated_via_api")
                    hooks += self._end_dial_legs(call)
                    call.conference_leg = False  # it runs its own TwiML from now on
                    redirect = RedirectRecord(url, method.upper(), None if url else twiml, fetched=not url)
                    call.redirects.append(redirect)
                    if url:
                        fetch = _Outbound(
                            "call-redirect",
                            call.sid,
                            url,
                            method,
                            self._voice_params(call, "in-progress"),
                        )
            elif status is not None and call.status not in TERMINAL_CALL_STATUSES:
                answered = call.status == "in-progress"
                if status == "completed" and answered:
                    hooks += self._end_call(call, "completed", leave_reason="participant_updated_via_api")
                elif not answered:
                    hooks += self._end_call(call, "canceled", silent=call.status == "queued")
        self._send_all(hooks)
        if fetch is not None and redirect is not None:
            entry = self._send(fetch)
            if not _is_twiml(entry) and call.fallback_url:
                fallback = {**fetch.params, "ErrorCode": "11200", "ErrorUrl": fetch.url}
                entry = self._send(
                    _Outbound("call-fallback", call.sid, call.fallback_url, call.fallback_method, fallback)
                )
            with self._lock:
                redirect.twiml = entry.response_text
                redirect.status_code = entry.status_code
                redirect.fetched = True
        return call

    def delete_call(self, call_sid: str) -> None:
        """``DELETE Calls/<Sid>.json``: forget a call's record. 404/20404 for one unknown (or
        deleted before); 20009 for a call not over yet (Twilio deletes only completed calls)."""
        with self._lock:
            try:
                call = self._call(call_sid)
                if call.status not in TERMINAL_CALL_STATUSES:
                    raise FakeTwilioError(
                        NOT_COMPLETE_STATUS, NOT_COMPLETE_CODE, "Cannot delete this resource before it is complete"
                    )
            except FakeTwilioError as error:
                self.delete_log.append((call_sid, error.status))
                raise
            del self.calls[call_sid]
            self.delete_log.append((call_sid, 204))

    # ---- conferences ----------------------------------------------------------------------

    def find_conference(self, friendly_name: str) -> ConferenceRecord | None:
        """The conference with this name that has not completed, if any."""
        with self._lock:
            for conference in self.conferences.values():
                if conference.friendly_name == friendly_name and conference.status != "completed":
                    return conference
        return None

    def get_conference(self, sid_or_name: str) -> ConferenceRecord:
        """By SID (any status) or by friendly name (active only); 404/20404 if unknown."""
        with self._lock:
            conference = self.conferences.get(sid_or_name) or self.find_conference(sid_or_name)
            if conference is None:
                raise FakeTwilioError(404, 20404, f"The requested resource Conference {sid_or_name} was not found")
            return conference

    def _conference_for_join(self, friendly_name: str) -> ConferenceRecord:
        conference = self.find_conference(friendly_name)
        if conference is None:
            conference = ConferenceRecord(sid=new_sid("CF"), account_sid=self.account_sid, friendly_name=friendly_name)
            self.conferences[conference.sid] = conference
            log.info("conference %s created", conference.sid)
        return conference

    def _conference_hook(
        self,
        conference: ConferenceRecord,
        token: str,
        event: str,
        participant: ParticipantRecord | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> list[_Outbound]:
        """The conference callback for ``event`` if the conference subscribed ``token`` (§1.7)."""
        if not conference.status_callback or token not in conference.status_callback_events:
            return []
        params = {
            "ConferenceSid": conference.sid,
            "FriendlyName": conference.friendly_name,
            "AccountSid": conference.account_sid,
            "SequenceNumber": str(conference.callback_sequence),
            "Timestamp": _rfc2822(_now()) or "",
            "StatusCallbackEvent": event,
        }
        conference.callback_sequence += 1
        if participant is not None:
            params.update(
                CallSid=participant.call_sid,
                Muted=_tf(participant.muted),
                Hold=_tf(participant.hold),
                Coaching=_tf(participant.coaching),
                EndConferenceOnExit=_tf(participant.end_conference_on_exit),
                StartConferenceOnEnter=_tf(participant.start_conference_on_enter),
            )
            if participant.label:
                params["ParticipantLabel"] = participant.label
        params.update(extra or {})
        return [
            _Outbound(
                "conference-status",
                conference.sid,
                conference.status_callback,
                conference.status_callback_method,
                params,
            )
        ]

    def join_conference(
        self,
        friendly_name: str,
        call_sid: str,
        *,
        start_on_enter: bool = True,
        end_on_exit: bool = False,
        label: str | None = None,
        status_callback: str | None = None,
        status_callback_event: str | Iterable[str] = "",
        status_callback_method: str = "POST",
        muted: bool = False,
        coach: str | None = None,
    ) -> ConferenceRecord:
        """Put a call into ``<Dial><Conference>friendly_name</Conference></Dial>``.

        Creates the conference on first join. The first participant to join fixes the
        conference's ``status_callback``/events (TwiML default: no events); later values are
        ignored. Sends ``participant-join``, then ``conference-start`` once two participants are
        in and one has ``start_on_enter`` (each only if subscribed). A duplicate ``label``
        raises ``FakeTwilioError`` 16025 and the call is not added (§4.2).
        """
        with self._lock:
            call = self._call(call_sid)
            if call.conference_sid is not None:
                raise FakeTwilioError(409, 16025, f"Call {call_sid} is already in a conference")
            conference = self._conference_for_join(friendly_name)
            participant = ParticipantRecord(
                call_sid=call_sid,
                conference_sid=conference.sid,
                account_sid=self.account_sid,
                label=label,
                muted=muted,
                coaching=coach is not None,
                call_sid_to_coach=coach,
                start_conference_on_enter=start_on_enter,
                end_conference_on_exit=end_on_exit,
                conference_status_callback=status_callback,
                conference_status_callback_method=status_callback_method.upper(),
                conference_events=_event_set(status_callback_event),
            )
            self._check_label(conference, participant)
            hooks = self._join(conference, participant)
        self._send_all(hooks)
        return conference

    def _check_label(self, conference: ConferenceRecord, participant: ParticipantRecord) -> None:
        if participant.label and any(
            other.label == participant.label and other.call_sid != participant.call_sid
            for other in conference.participants.values()
        ):
            raise FakeTwilioError(400, 16025, "Participant label already in use")

    def _join(self, conference: ConferenceRecord, participant: ParticipantRecord) -> list[_Outbound]:
        if not conference.configured:
            conference.configured = True
            conference.status_callback = participant.conference_status_callback
            conference.status_callback_method = participant.conference_status_callback_method
            conference.status_callback_events = list(participant.conference_events)
        participant.status = "connected"
        participant.conference_sid = conference.sid
        participant.date_updated = conference.date_updated = _now()
        conference.participants[participant.call_sid] = participant
        call = self.calls.get(participant.call_sid)
        if call is not None:
            call.conference_sid = conference.sid
            call.pending_join = None
        log.info("call %s joined conference %s", participant.call_sid, conference.sid)
        hooks = self._conference_hook(conference, "join", "participant-join", participant)
        joined = [p for p in conference.participants.values() if p.joined]
        if not conference.started and len(joined) >= 2 and any(p.start_conference_on_enter for p in joined):
            conference.started = True
            conference.status = "in-progress"
            hooks += self._conference_hook(conference, "start", "conference-start")
        return hooks

    def _join_pending(self, call: CallRecord) -> list[_Outbound]:
        """An answered REST participant leg joins (or re-creates) its conference by name."""
        assert call.pending_join is not None
        friendly_name, participant = call.pending_join
        conference = self.conferences.get(participant.conference_sid)
        if conference is None or conference.status == "completed":
            # [INF] The room ended while this leg rang: joining by name opens a new one.
            conference = self._conference_for_join(friendly_name)
        return self._join(conference, participant)

    def leave_conference(
        self,
        friendly_name_or_sid: str,
        call_sid: str,
        reason: str = "participant_hung_up",
        reported_status: str | None = None,
    ) -> ConferenceRecord:
        """Take a joined call out of a conference (its ``<Dial>`` ends; the call goes on).

        Sends ``participant-leave`` (``ReasonParticipantLeft=reason``; ``ParticipantCallStatus``
        the call's own status, or ``reported_status``: what Twilio reports for a leg leaving
        through ``hangupOnStar`` is not documented [INF]). If the leaver had
        ``end_on_exit`` or was the last one in, the conference ends: remaining participants
        leave (REST participant legs hang up) and ``conference-end`` is sent with
        ``ReasonConferenceEnded``.
        """
        with self._lock:
            conference = self.get_conference(friendly_name_or_sid)
            participant = conference.participants.get(call_sid)
            if participant is None or not participant.joined:
                raise FakeTwilioError(404, 20404, f"Participant {call_sid} is not in conference {conference.sid}")
            call = self.calls.get(call_sid)
            call_status = reported_status or (call.status if call is not None else "completed")
            hooks = self._leave(conference, participant, reason, call_status=call_status)
        self._send_all(hooks)
        return conference

    def _leave(
        self,
        conference: ConferenceRecord,
        participant: ParticipantRecord,
        reason: str,
        *,
        call_status: str = "completed",
        kicked: bool = False,
    ) -> list[_Outbound]:
        conference.participants.pop(participant.call_sid, None)
        participant.status = "complete"
        conference.date_updated = _now()
        call = self.calls.get(participant.call_sid)
        if call is not None:
            call.conference_sid = None
            call.last_conference_exit = reason
        log.info("call %s left conference %s", participant.call_sid, conference.sid)
        hooks = self._conference_hook(
            conference,
            "leave",
            "participant-leave",
            participant,
            extra={"ParticipantCallStatus": call_status, "ReasonParticipantLeft": reason},
        )
        remaining = [p for p in conference.participants.values() if p.joined]
        if participant.end_conference_on_exit or not remaining:
            how = "kicked" if kicked else "left"
            if participant.end_conference_on_exit:
                ended = f"participant-with-end-conference-on-exit-{how}"
                text = f"Participant {participant.call_sid} with endConferenceOnExit {how}"
            else:
                ended = f"last-participant-{how}"
                text = f"Last participant {how}"
            hooks += self._end_conference(
                conference,
                ended,
                text,
                ending=participant,
                leave_reason="moderator_ended_conference",
            )
        return hooks

    def _fail_pending(
        self, conference: ConferenceRecord, participant: ParticipantRecord, call_status: str
    ) -> list[_Outbound]:
        """A REST participant leg ended before joining (busy, no-answer, canceled...)."""
        conference.participants.pop(participant.call_sid, None)
        participant.status = "failed"
        hooks = self._conference_hook(
            conference,
            "leave",
            "participant-leave",
            participant,
            extra={
                "ParticipantCallStatus": call_status,
                "ReasonParticipantLeft": "participant_add_failed",
            },
        )
        if not conference.configured and not conference.participants:
            # Nobody ever joined: the room never really existed, so no conference-end.
            conference.status = "completed"
        return hooks

    def _end_conference(
        self,
        conference: ConferenceRecord,
        reason_ended: str,
        reason_text: str,
        *,
        ending: ParticipantRecord | None = None,
        leave_reason: str,
    ) -> list[_Outbound]:
        hooks: list[_Outbound] = []
        conference.status = "completed"
        conference.reason_conference_ended = reason_ended
        conference.call_sid_ending_conference = ending.call_sid if ending else None
        conference.date_updated = _now()
        # The room's events first, then each leg it hung up reports its final status [INF].
        leg_hooks: list[_Outbound] = []
        for other in list(conference.participants.values()):
            conference.participants.pop(other.call_sid)
            call = self.calls.get(other.call_sid)
            if not other.joined:
                continue  # still ringing: it keeps its pending join [INF]
            other.status = "complete"
            hooks += self._conference_hook(
                conference,
                "leave",
                "participant-leave",
                other,
                extra={
                    "ParticipantCallStatus": call.status if call else "completed",
                    "ReasonParticipantLeft": leave_reason,
                },
            )
            if call is not None:
                call.conference_sid = None
                call.last_conference_exit = leave_reason
                if call.conference_leg and call.status not in TERMINAL_CALL_STATUSES:
                    leg_hooks += self._end_call(call, "completed")
        extra = {"ReasonConferenceEnded": reason_ended, "Reason": reason_text}
        if ending is not None:
            extra["CallSidEndingConference"] = ending.call_sid
            if ending.label:
                extra["ParticipantLabelEndingConference"] = ending.label
        hooks += self._conference_hook(conference, "end", "conference-end", extra=extra)
        log.info("conference %s ended: %s", conference.sid, reason_ended)
        return hooks + leg_hooks

    def end_conference(self, sid_or_name: str) -> ConferenceRecord:
        """``POST Conferences/<Sid>.json Status=completed``: end it for everyone."""
        with self._lock:
            conference = self.get_conference(sid_or_name)
            hooks: list[_Outbound] = []
            if conference.status != "completed":
                hooks = self._end_conference(
                    conference,
                    "conference-ended-via-api",
                    "Conference ended via API",
                    leave_reason="conference_ended_via_api",
                )
        self._send_all(hooks)
        return conference

    # ---- participants ---------------------------------------------------------------------

    def add_participant(
        self,
        conference_sid_or_name: str,
        from_: str,
        to: str,
        *,
        label: str | None = None,
        early_media: bool = True,
        beep: str = "true",
        start_conference_on_enter: bool = True,
        end_conference_on_exit: bool = False,
        muted: bool = False,
        coaching: bool = False,
        call_sid_to_coach: str | None = None,
        status_callback: str | None = None,
        status_callback_method: str = "POST",
        status_callback_events: str | Iterable[str] | None = None,
        timeout: int = 60,
        wait_url: str | None = None,
        conference_status_callback: str | None = None,
        conference_status_callback_method: str = "POST",
        conference_status_callback_events: str | Iterable[str] | None = None,
        caller_id: str | None = None,
        machine_detection: str | None = None,
    ) -> ParticipantRecord:
        """``POST Conferences/<SidOrName>/Participants.json``: dial ``to`` into a conference.

        Creates an outbound call leg (status ``queued``) whose ``StatusCallback`` gets its call
        progress. The leg joins when the test answers it with ``advance_call(sid,
        "in-progress")`` and leaves when it ends. A friendly name with no live conference
        creates one in ``init`` [INF]. ``ConferenceStatusCallbackEvent`` defaults to
        ``start end`` (§5).
        """
        events = _event_set(conference_status_callback_events) or ["start", "end"]
        if not set(events) <= CONFERENCE_EVENTS:
            raise FakeTwilioError(400, 21626, "Invalid 'ConferenceStatusCallbackEvent'")
        if not from_:
            raise FakeTwilioError(400, 21213, "No 'From' number is specified")
        with self._lock:
            conference = self.conferences.get(conference_sid_or_name) or self.find_conference(conference_sid_or_name)
            if conference is None or conference.status == "completed":
                if re.fullmatch(r"CF[0-9a-fA-F]{32}", conference_sid_or_name):
                    raise FakeTwilioError(400, 16003, "Could not recognize conference sid or friendly name")
                conference = self._conference_for_join(conference_sid_or_name)
            call = self.create_call(
                to,
                caller_id or from_,
                status_callback=status_callback,
                status_callback_method=status_callback_method,
                status_callback_events=status_callback_events,
                timeout=timeout,
                machine_detection=machine_detection,
                _conference_leg=True,
            )
            participant = ParticipantRecord(
                call_sid=call.sid,
                queue_time_ms=call.queue_time_ms,
                conference_sid=conference.sid,
                account_sid=self.account_sid,
                label=label,
                muted=muted,
                coaching=coaching,
                call_sid_to_coach=call_sid_to_coach,
                start_conference_on_enter=start_conference_on_enter,
                end_conference_on_exit=end_conference_on_exit,
                beep=beep,
                early_media=early_media,
                wait_url=wait_url,
                conference_status_callback=conference_status_callback,
                conference_status_callback_method=conference_status_callback_method.upper(),
                conference_events=events,
            )
            try:
                self._check_label(conference, participant)
            except FakeTwilioError:
                del self.calls[call.sid]
                raise
            conference.participants[call.sid] = participant
            call.conference_sid = conference.sid
            call.pending_join = (conference.friendly_name, participant)
        log.info("participant leg %s created for conference %s", call.sid, conference.sid)
        return participant

    def get_participant(self, conference_sid_or_name: str, call_sid_or_label: str) -> ParticipantRecord:
        """A current participant by call SID or label; 404/20404 if not there."""
        with self._lock:
            conference = self.get_conference(conference_sid_or_name)
            participant = conference.participants.get(call_sid_or_label)
            if participant is None:
                participant = next(
                    (p for p in conference.participants.values() if p.label == call_sid_or_label),
                    None,
                )
            if participant is None:
                raise FakeTwilioError(
                    404,
                    20404,
                    f"The requested resource Participant {call_sid_or_label} was not found",
                )
            return participant

    def update_participant(
        self,
        conference_sid_or_name: str,
        call_sid_or_label: str,
        *,
        muted: bool | None = None,
        hold: bool | None = None,
        hold_url: str | None = None,
        hold_method: str | None = None,
        end_conference_on_exit: bool | None = None,
        coaching: bool | None = None,
        call_sid_to_coach: str | None = None,
        announce_url: str | None = None,
        wait_url: str | None = None,
    ) -> ParticipantRecord:
        """Update a participant; sends ``participant-mute``/``-unmute``, ``-hold``/``-unhold``
        and ``participant-modify`` (coaching / endConferenceOnExit) when subscribed."""
        with self._lock:
            conference = self.get_conference(conference_sid_or_name)
            participant = self.get_participant(conference.sid, call_sid_or_label)
            hooks: list[_Outbound] = []
            if hold_url is not None:
                participant.hold_url = hold_url
            if hold_method is not None:
                participant.hold_method = hold_method.upper()
            if announce_url is not None:
                participant.announce_url = announce_url
            if wait_url is not None:
                participant.wait_url = wait_url
            if muted is not None and muted != participant.muted:
                participant.muted = muted
                event = "participant-mute" if muted else "participant-unmute"
                hooks += self._conference_hook(conference, "mute", event, participant)
            if hold is not None and hold != participant.hold:
                participant.hold = hold
                event = "participant-hold" if hold else "participant-unhold"
                hooks += self._conference_hook(conference, "hold", event, participant)
            modified = False
            if end_conference_on_exit is not None:
                modified |= end_conference_on_exit != participant.end_conference_on_exit
                participant.end_conference_on_exit = end_conference_on_exit
            if coaching is not None:
                modified |= coaching != participant.coaching
                participant.coaching = coaching
            if call_sid_to_coach is not None:
                modified |= call_sid_to_coach != participant.call_sid_to_coach
                participant.call_sid_to_coach = call_sid_to_coach
            if modified:
                hooks += self._conference_hook(conference, "modify", "participant-modify", participant)
            participant.date_updated = _now()
        self._send_all(hooks)
        return participant

    def kick_participant(self, conference_sid_or_name: str, call_sid_or_label: str) -> None:
        """``DELETE .../Participants/<CallSidOrLabel>.json``: remove a participant.

        A joined call leaves (``ReasonParticipantLeft=participant_updated_via_api`` [INF]); a
        REST participant leg then hangs up, and one still ringing is canceled.
        """
        with self._lock:
            conference = self.get_conference(conference_sid_or_name)
            participant = self.get_participant(conference.sid, call_sid_or_label)
            call = self.calls.get(participant.call_sid)
            hooks: list[_Outbound] = []
            if participant.joined:
                status = call.status if call else "completed"
                hooks += self._leave(
                    conference,
                    participant,
                    "participant_updated_via_api",
                    call_status=status,
                    kicked=True,
                )
                if call is not None and call.conference_leg:
                    hooks += self._end_call(call, "completed")
            elif call is not None:
                hooks += self._end_call(call, "canceled", silent=call.status == "queued")
        self._send_all(hooks)

    # ---- snapshot -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready dump of all state (``GET /_fake/state``)."""
        with self._lock:
            return {
                "account_sid": self.account_sid,
                "messages": [message_json(m) for m in self.messages.values()],
                "calls": [call_state_json(c) for c in self.calls.values()],
                "conferences": [
                    {
                        **conference_json(c),
                        "participants": [participant_json(p) for p in c.participants.values()],
                    }
                    for c in self.conferences.values()
                ],
                "opted_out": sorted(self.opted_out),
                "number_behaviours": dict(self.number_behaviours),
                "ring_timeouts": self.ring_timeouts,
                "calls_per_second": self.calls_per_second,
                "faults": [asdict(f) for f in self.faults],
                "webhooks": [asdict(w) for w in self.webhook_log],
            }


# --------------------------------------------------------------------------------------------
# JSON shapes (§5)
# --------------------------------------------------------------------------------------------


def _account_uri(account_sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}"


def message_json(m: MessageRecord) -> dict[str, Any]:
    """The Message resource as the REST API returns it."""
    uri = f"{_account_uri(m.account_sid)}/Messages/{m.sid}"
    return {
        "account_sid": m.account_sid,
        "api_version": API_VERSION,
        "body": m.body,
        "date_created": _rfc2822(m.date_created),
        "date_sent": _rfc2822(m.date_sent),
        "date_updated": _rfc2822(m.date_updated),
        "direction": m.direction,
        "error_code": m.error_code,
        "error_message": m.error_message,
        "from": m.from_,
        "messaging_service_sid": m.messaging_service_sid,
        "num_media": str(len(m.media_urls)),
        "num_segments": str(m.num_segments),
        "price": None,
        "price_unit": "USD",
        "sid": m.sid,
        "status": m.status,
        "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
        "to": m.to,
        "uri": f"{uri}.json",
    }


def call_json(c: CallRecord) -> dict[str, Any]:
    """The Call resource as the REST API returns it."""
    uri = f"{_account_uri(c.account_sid)}/Calls/{c.sid}"
    return {
        "sid": c.sid,
        "date_created": _rfc2822(c.date_created),
        "date_updated": _rfc2822(c.date_updated),
        "parent_call_sid": c.parent_call_sid,
        "account_sid": c.account_sid,
        "to": c.to,
        "to_formatted": _formatted(c.to),
        "from": c.from_,
        "from_formatted": _formatted(c.from_),
        "phone_number_sid": None,
        "status": c.status,
        "start_time": _rfc2822(c.start_time),
        "end_time": _rfc2822(c.end_time),
        "duration": str(c.duration) if c.duration is not None else None,
        "price": None,
        "price_unit": "USD",
        "direction": c.direction,
        "answered_by": c.answered_by,
        "api_version": API_VERSION,
        "forwarded_from": None,
        "group_sid": None,
        "caller_name": None,
        "queue_time": str(c.queue_time_ms),
        "trunk_sid": None,
        "uri": f"{uri}.json",
        "subresource_uris": {
            "notifications": f"{uri}/Notifications.json",
            "recordings": f"{uri}/Recordings.json",
            "payments": f"{uri}/Payments.json",
            "events": f"{uri}/Events.json",
        },
    }


def call_state_json(c: CallRecord) -> dict[str, Any]:
    """The Call resource plus the fake's own state of it (for ``/_fake/`` and remote phones)."""
    return {
        **call_json(c),
        "url": c.url,
        "twiml": c.twiml,
        "timeout": c.timeout,
        "status_callback": c.status_callback,
        "status_callback_events": c.status_callback_events,
        "conference_sid": c.conference_sid,
        "redirects": [asdict(r) for r in c.redirects],
        # Epoch seconds, precise (benches): the create request's arrival and the CPS slot.
        "created_at": c.created_at,
        "dialled_at": c.created_at + c.queue_time_ms / 1000,
    }


def conference_json(c: ConferenceRecord) -> dict[str, Any]:
    """The Conference resource as the REST API returns it."""
    uri = f"{_account_uri(c.account_sid)}/Conferences/{c.sid}"
    return {
        "account_sid": c.account_sid,
        "api_version": API_VERSION,
        "call_sid_ending_conference": c.call_sid_ending_conference,
        "date_created": _rfc2822(c.date_created),
        "date_updated": _rfc2822(c.date_updated),
        "friendly_name": c.friendly_name,
        "reason_conference_ended": c.reason_conference_ended,
        "region": "us1",
        "sid": c.sid,
        "status": c.status,
        "subresource_uris": {
            "participants": f"{uri}/Participants.json",
            "recordings": f"{uri}/Recordings.json",
        },
        "uri": f"{uri}.json",
    }


def participant_json(p: ParticipantRecord) -> dict[str, Any]:
    """The Participant resource as the REST API returns it."""
    return {
        "account_sid": p.account_sid,
        "call_sid": p.call_sid,
        "call_sid_to_coach": p.call_sid_to_coach,
        "coaching": p.coaching,
        "conference_sid": p.conference_sid,
        "date_created": _rfc2822(p.date_created),
        "date_updated": _rfc2822(p.date_updated),
        "end_conference_on_exit": p.end_conference_on_exit,
        "hold": p.hold,
        "label": p.label,
        "muted": p.muted,
        "queue_time": str(p.queue_time_ms),
        "start_conference_on_enter": p.start_conference_on_enter,
        "status": p.status,
        "uri": (f"{_account_uri(p.account_sid)}/Conferences/{p.conference_sid}/Participants/{p.call_sid}.json"),
    }


# --------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------


def _error(status: int, code: int, message: str) -> Response:
    response = jsonify(twilio_error_body(status, code, message))
    response.status_code = status
    return response


def _page(key: str, items: list[Any], base_uri: str) -> dict[str, Any]:
    """A list page with twilio-python's paging meta; ``next_page_uri`` is followed by the client."""
    try:
        page_size = max(1, min(1000, int(request.args.get("PageSize", 50))))
        page = max(0, int(request.args.get("Page", 0)))
    except ValueError:
        raise FakeTwilioError(400, 20001, "Invalid paging parameter") from None
    filters = {k: v for k, v in request.args.items() if k not in ("PageSize", "Page", "PageToken")}

    def uri(number: int) -> str:
        return f"{base_uri}?{urlencode({**filters, 'PageSize': page_size, 'Page': number})}"

    start = page * page_size
    chunk = items[start : start + page_size]
    return {
        key: chunk,
        "page": page,
        "page_size": page_size,
        "uri": uri(page),
        "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1) if start + page_size < len(items) else None,
        "previous_page_uri": uri(page - 1) if page > 0 else None,
        "start": start,
        "end": start + max(len(chunk) - 1, 0),
    }


def _int_param(name: str, default: int) -> int:
    value = request.form.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise FakeTwilioError(400, 21216, f"Invalid '{name}' parameter") from None


def _sent_date_filter(args: Mapping[str, str]) -> Callable[[MessageRecord], bool]:
    """The Message list's ``DateSent`` filters: a GMT date (``YYYY-MM-DD``) the text was sent on;
    ``DateSent<`` on or before it, ``DateSent>`` on or after it (Twilio's docs: "to find Messages
    with sent_dates on and before a specific date"). [INF] twilio-python sends a timestamp
    (``YYYY-MM-DDTHH:MM:SSZ``): only its date counts, as only dates are documented. A text with
    no ``date_sent`` (never sent) is on no date, so any of them leaves it out [INF]."""
    bounds: list[tuple[str, date]] = []
    for name, relation in (("DateSent", "on"), ("DateSent<", "by"), ("DateSent>", "from")):
        value = args.get(name)
        if value is None:
            continue
        try:
            bounds.append((relation, date.fromisoformat(value[:10])))
        except ValueError:
            raise FakeTwilioError(400, 20001, "Invalid date value.") from None

    def matches(message: MessageRecord) -> bool:
        if not bounds:
            return True
        if message.date_sent is None:
            return False
        day = message.date_sent.astimezone(UTC).date()
        return all(
            {"on": day == bound, "by": day <= bound, "from": day >= bound}[relation] for relation, bound in bounds
        )

    return matches


def _newest_first(records: Iterable[Any]) -> list[Any]:
    # Insertion order is creation order; Twilio lists newest first.
    return list(reversed(list(records)))


# The control endpoints and the browser phone (``twilio_fake.web_phone``): local tools, no auth.
UNAUTHENTICATED_PREFIXES = ("/_fake/", "/phone")


def create_fake_twilio_app(fake: FakeTwilio) -> Flask:
    """The Flask app serving ``fake`` as ``/2010-04-01/Accounts/<AccountSid>/...`` plus the
    unauthenticated ``/_fake/`` control endpoints."""
    app = Flask(__name__)
    app.config["FAKE_TWILIO"] = fake
    base = f"/{API_VERSION}/Accounts/<account_sid>"

    @app.before_request
    def _faults_then_auth() -> ResponseReturnValue | None:
        if request.path.startswith(UNAUTHENTICATED_PREFIXES):
            return None
        fault = fake.take_fault(request.method, request.path)
        if fault is not None:
            if fault.delay:
                generation = fake.generation
                time.sleep(fault.delay)
                if fake.generation != generation:
                    # Reset while this slow request slept (the next test began): it must not
                    # create a call in a world it was never sent to.
                    return _error(503, 20503, "The fake Twilio was reset during this request")
            if fault.status >= 400:
                log.info("injected fault %s on %s", fault.status, request.method)
                return _error(fault.status, fault.code, fault.message)
        auth = request.authorization
        path_account = (request.view_args or {}).get("account_sid")
        if (
            auth is None
            or auth.username != fake.account_sid
            or auth.password != fake.auth_token
            or (path_account is not None and path_account != fake.account_sid)
        ):
            response = _error(401, 20003, "Authenticate")
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        return None

    @app.errorhandler(FakeTwilioError)
    def _twilio_error(exc: FakeTwilioError) -> ResponseReturnValue:
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        status = exc.code or 500
        code = {404: 20404, 405: 20004}.get(status, status)
        return _error(status, code, exc.description or exc.name)

    # ---- messages ----

    @app.post(f"{base}/Messages.json")
    def create_message(account_sid: str) -> ResponseReturnValue:
        form = request.form
        message = fake.create_message(
            form.get("To", ""),
            form.get("Body", ""),
            from_=form.get("From") or None,
            messaging_service_sid=form.get("MessagingServiceSid") or None,
            media_urls=form.getlist("MediaUrl"),
            status_callback=form.get("StatusCallback") or None,
        )
        return jsonify(message_json(message)), 201

    @app.get(f"{base}/Messages/<sid>.json")
    def fetch_message(account_sid: str, sid: str) -> ResponseReturnValue:
        with fake._lock:
            return jsonify(message_json(fake._message(sid)))

    @app.delete(f"{base}/Messages/<sid>.json")
    def delete_message(account_sid: str, sid: str) -> ResponseReturnValue:
        fake.delete_message(sid)
        return "", 204

    @app.get(f"{base}/Messages.json")
    def list_messages(account_sid: str) -> ResponseReturnValue:
        to, from_ = request.args.get("To"), request.args.get("From")
        sent = _sent_date_filter(request.args)
        with fake._lock:
            items = [
                message_json(m)
                for m in _newest_first(fake.messages.values())
                if (to is None or m.to == to) and (from_ is None or m.from_ == from_) and sent(m)
            ]
        return jsonify(_page("messages", items, f"{_account_uri(account_sid)}/Messages.json"))

    # ---- calls ----

    @app.post(f"{base}/Calls.json")
    def create_call(account_sid: str) -> ResponseReturnValue:
        form = request.form
        call = fake.create_call(
            form.get("To", ""),
            form.get("From", ""),
            url=form.get("Url") or None,
            method=form.get("Method") or "POST",
            twiml=form.get("Twiml") or None,
            application_sid=form.get("ApplicationSid") or None,
            status_callback=form.get("StatusCallback") or None,
            status_callback_method=form.get("StatusCallbackMethod") or "POST",
            status_callback_events=form.getlist("StatusCallbackEvent"),
            timeout=_int_param("Timeout", 60),
            machine_detection=form.get("MachineDetection") or None,
            caller_id=form.get("CallerId") or None,
            fallback_url=form.get("FallbackUrl") or None,
        )
        return jsonify(call_json(call)), 201

    @app.get(f"{base}/Calls.json")
    def list_calls(account_sid: str) -> ResponseReturnValue:
        args = request.args
        with fake._lock:
            items = [
                call_json(c)
                for c in _newest_first(fake.calls.values())
                if all(
                    args.get(name) in (None, value)
                    for name, value in (
                        ("To", c.to),
                        ("From", c.from_),
                        ("Status", c.status),
                        ("ParentCallSid", c.parent_call_sid),
                    )
                )
            ]
        return jsonify(_page("calls", items, f"{_account_uri(account_sid)}/Calls.json"))

    @app.get(f"{base}/Calls/<sid>.json")
    def fetch_call(account_sid: str, sid: str) -> ResponseReturnValue:
        return jsonify(call_json(fake.get_call(sid)))

    @app.post(f"{base}/Calls/<sid>.json")
    def update_call(account_sid: str, sid: str) -> ResponseReturnValue:
        form = request.form
        call = fake.update_call(
            sid,
            status=form.get("Status") or None,
            url=form.get("Url") or None,
            method=form.get("Method") or "POST",
            twiml=form.get("Twiml") or None,
            status_callback=form.get("StatusCallback") or None,
            fallback_url=form.get("FallbackUrl") or None,
            fallback_method=form.get("FallbackMethod") or "POST",
        )
        return jsonify(call_json(call))

    @app.delete(f"{base}/Calls/<sid>.json")
    def delete_call(account_sid: str, sid: str) -> ResponseReturnValue:
        fake.delete_call(sid)
        return "", 204

    # ---- conferences ----

    @app.get(f"{base}/Conferences.json")
    def list_conferences(account_sid: str) -> ResponseReturnValue:
        name, status = request.args.get("FriendlyName"), request.args.get("Status")
        with fake._lock:
            items = [
                conference_json(c)
                for c in _newest_first(fake.conferences.values())
                if (name is None or c.friendly_name == name) and (status is None or c.status == status)
            ]
        return jsonify(_page("conferences", items, f"{_account_uri(account_sid)}/Conferences.json"))

    @app.get(f"{base}/Conferences/<sid>.json")
    def fetch_conference(account_sid: str, sid: str) -> ResponseReturnValue:
        return jsonify(conference_json(fake.get_conference(sid)))

    @app.post(f"{base}/Conferences/<sid>.json")
    def update_conference(account_sid: str, sid: str) -> ResponseReturnValue:
        status = request.form.get("Status")
        if status not in (None, "", "completed"):
            raise FakeTwilioError(400, 21218, f"Invalid Status: {status}")
        conference = fake.get_conference(sid)
        if request.form.get("AnnounceUrl"):
            with fake._lock:
                conference.announce_url = request.form["AnnounceUrl"]
        if status == "completed":
            conference = fake.end_conference(sid)
        return jsonify(conference_json(conference))

    @app.post(f"{base}/Conferences/<sid>/Participants.json")
    def create_participant(account_sid: str, sid: str) -> ResponseReturnValue:
        form = request.form
        participant = fake.add_participant(
            sid,
            form.get("From", ""),
            form.get("To", ""),
            label=form.get("Label") or None,
            early_media=_bool_param(form.get("EarlyMedia"), True),
            beep=form.get("Beep") or "true",
            start_conference_on_enter=_bool_param(form.get("StartConferenceOnEnter"), True),
            end_conference_on_exit=_bool_param(form.get("EndConferenceOnExit"), False),
            muted=_bool_param(form.get("Muted"), False),
            coaching=_bool_param(form.get("Coaching"), False),
            call_sid_to_coach=form.get("CallSidToCoach") or None,
            status_callback=form.get("StatusCallback") or None,
            status_callback_method=form.get("StatusCallbackMethod") or "POST",
            status_callback_events=form.getlist("StatusCallbackEvent"),
            timeout=_int_param("Timeout", 60),
            wait_url=form.get("WaitUrl") or None,
            conference_status_callback=form.get("ConferenceStatusCallback") or None,
            conference_status_callback_method=form.get("ConferenceStatusCallbackMethod") or "POST",
            conference_status_callback_events=form.getlist("ConferenceStatusCallbackEvent"),
            caller_id=form.get("CallerId") or None,
            machine_detection=form.get("MachineDetection") or None,
        )
        return jsonify(participant_json(participant)), 201

    @app.get(f"{base}/Conferences/<sid>/Participants.json")
    def list_participants(account_sid: str, sid: str) -> ResponseReturnValue:
        with fake._lock:
            conference = fake.get_conference(sid)
            items = [participant_json(p) for p in conference.participants.values()]
            uri = f"{_account_uri(account_sid)}/Conferences/{conference.sid}/Participants.json"
        return jsonify(_page("participants", items, uri))

    @app.get(f"{base}/Conferences/<sid>/Participants/<call_sid>.json")
    def fetch_participant(account_sid: str, sid: str, call_sid: str) -> ResponseReturnValue:
        return jsonify(participant_json(fake.get_participant(sid, call_sid)))

    @app.post(f"{base}/Conferences/<sid>/Participants/<call_sid>.json")
    def update_participant(account_sid: str, sid: str, call_sid: str) -> ResponseReturnValue:
        form = request.form

        def flag(name: str) -> bool | None:
            return _bool_param(form[name], False) if name in form else None

        participant = fake.update_participant(
            sid,
            call_sid,
            muted=flag("Muted"),
            hold=flag("Hold"),
            hold_url=form.get("HoldUrl"),
            hold_method=form.get("HoldMethod"),
            end_conference_on_exit=flag("EndConferenceOnExit"),
            coaching=flag("Coaching"),
            call_sid_to_coach=form.get("CallSidToCoach"),
            announce_url=form.get("AnnounceUrl"),
            wait_url=form.get("WaitUrl"),
        )
        return jsonify(participant_json(participant))

    @app.delete(f"{base}/Conferences/<sid>/Participants/<call_sid>.json")
    def kick_participant(account_sid: str, sid: str, call_sid: str) -> ResponseReturnValue:
        fake.kick_participant(sid, call_sid)
        return "", 204

    # ---- control endpoints (no auth; for tests and the browser sandbox) ----

    @app.get("/_fake/state")
    def state() -> ResponseReturnValue:
        return jsonify(fake.snapshot())

    @app.post("/_fake/reset")
    def reset() -> ResponseReturnValue:
        fake.reset()
        return "", 204

    @app.post("/_fake/calls/<sid>/advance")
    def advance(sid: str) -> ResponseReturnValue:
        status = request.form.get("status", "")
        if status not in CALL_STATUSES:
            raise FakeTwilioError(400, 21218, f"Invalid status: {status}")
        twiml = fake.advance_call(sid, status)
        return jsonify({"call": call_json(fake.get_call(sid)), "twiml": twiml})

    @app.get("/_fake/calls")
    def calls_state() -> ResponseReturnValue:
        """Calls in creation order, optionally only ``to`` a number and/or in ``status``es."""
        to, statuses = request.args.get("to"), request.args.getlist("status")
        with fake._lock:
            items = [
                call_state_json(c)
                for c in fake.calls.values()
                if (to is None or _normalize(c.to) == _normalize(to)) and (not statuses or c.status in statuses)
            ]
        return jsonify({"calls": items})

    @app.get("/_fake/calls/<sid>")
    def call_state(sid: str) -> ResponseReturnValue:
        with fake._lock:
            return jsonify(call_state_json(fake._call(sid)))

    @app.post("/_fake/calls/inbound")
    def inbound_call() -> ResponseReturnValue:
        """A phone is calling the line: Twilio's record of it, whose final status goes to
        ``StatusCallback`` (the number's own status callback)."""
        form = request.form
        call = fake.record_inbound_call(
            form["CallSid"], form["From"], form["To"], status_callback=form.get("StatusCallback") or None
        )
        with fake._lock:
            return jsonify(call_state_json(call)), 201

    @app.post("/_fake/calls/<sid>/dial")
    def dial_leg(sid: str) -> ResponseReturnValue:
        """The phone of call ``sid`` ran a ``<Dial><Number>``: its child call, as Twilio keeps it."""
        form = request.form
        leg = fake.dial_leg(sid, form["To"], form["From"], form["Status"])
        with fake._lock:
            return jsonify(call_state_json(leg)), 201

    @app.post("/_fake/conferences/<name>/join")
    def conference_join(name: str) -> ResponseReturnValue:
        """A call's ``<Dial><Conference>`` (run by the phone that plays the call's TwiML)."""
        form = request.form
        conference = fake.join_conference(
            name,
            form["CallSid"],
            start_on_enter=_bool_param(form.get("StartConferenceOnEnter"), True),
            end_on_exit=_bool_param(form.get("EndConferenceOnExit"), False),
            label=form.get("Label") or None,
            status_callback=form.get("StatusCallback") or None,
            status_callback_event=form.get("StatusCallbackEvent", ""),
            status_callback_method=form.get("StatusCallbackMethod") or "POST",
        )
        return jsonify(conference_json(conference))

    @app.post("/_fake/conferences/<name>/leave")
    def conference_leave(name: str) -> ResponseReturnValue:
        reason = request.form.get("reason", "participant_hung_up")
        conference = fake.leave_conference(name, request.form["CallSid"], reason)
        return jsonify(conference_json(conference))

    @app.post("/_fake/cps")
    def calls_per_second() -> ResponseReturnValue:
        """Set the account's calls per second (``calls_per_second``; empty: unlimited)."""
        raw = request.form.get("calls_per_second", "").strip()
        try:
            fake.set_calls_per_second(float(raw) if raw else None)
        except ValueError:
            raise FakeTwilioError(400, 21218, "Invalid calls_per_second") from None
        return jsonify({"calls_per_second": fake.calls_per_second})

    @app.post("/_fake/faults")
    def inject_fault() -> ResponseReturnValue:
        """Inject a REST fault from another process (``FakeTwilio.inject_fault``): ``method``,
        ``path_regex``, ``status`` (below 400: only slow), ``delay`` seconds, ``times`` (empty:
        forever). How a bench makes the API slow for the line it runs."""
        form = request.form
        try:
            path_regex, times = form.get("path_regex", ""), form.get("times", "1").strip()
            re.compile(path_regex)
            status, delay, count = int(form.get("status", "500")), float(form.get("delay", "0")), int(times or 0)
            if not 0 <= delay <= 60 or not 100 <= status <= 599 or (times and count < 1):
                raise ValueError("fault")
        except (ValueError, re.error):
            raise FakeTwilioError(400, 21218, "Invalid fault") from None
        fault = fake.inject_fault(
            form.get("method", "*"), path_regex, status=status, delay=delay, times=count if times else None
        )
        return jsonify({"method": fault.method, "path_regex": fault.path_regex, "status": fault.status,
                        "delay": fault.delay, "times": fault.remaining})  # fmt: skip

    @app.post("/_fake/faults/clear")
    def clear_faults() -> ResponseReturnValue:
        fake.clear_faults()
        return "", 204

    @app.post("/_fake/numbers/<path:number>")
    def number_behaviour(number: str) -> ResponseReturnValue:
        behaviour = request.form.get("behaviour") or None
        if behaviour is not None and behaviour not in NUMBER_BEHAVIOURS:
            raise FakeTwilioError(400, 21218, f"Invalid behaviour: {behaviour}")
        fake.program_number(number, behaviour)
        return "", 204

    @app.post("/_fake/keyword")
    def keyword() -> ResponseReturnValue:
        """A phone texted the line: apply Twilio's opt-out words before the webhook goes."""
        return jsonify({"keyword": fake.receive_keyword(request.form["From"], request.form.get("Body", ""))})

    @app.post("/_fake/messaging-reply")
    def messaging_reply() -> ResponseReturnValue:
        """The line answered a text from ``From`` to ``To`` with TwiML ``Twiml``: send its replies."""
        sent = fake.reply_with_twiml(request.form["From"], request.form["To"], request.form.get("Twiml", ""))
        return jsonify({"messages": [message_json(message) for message in sent]})

    @app.get("/_fake/messages")
    def messages_state() -> ResponseReturnValue:
        """Messages sent, in creation order, optionally only ``to`` a number."""
        to = request.args.get("to")
        with fake._lock:
            items = [
                message_json(m) for m in fake.messages.values() if to is None or _normalize(m.to) == _normalize(to)
            ]
        return jsonify({"messages": items})

    @app.post("/_fake/messages/inbound")
    def inbound_message() -> ResponseReturnValue:
        """A phone texted the line: Twilio's record of that text (``inbound``, ``received``)."""
        form = request.form
        message = fake.record_inbound_message(form["MessageSid"], form["From"], form["To"], form.get("Body", ""))
        with fake._lock:
            return jsonify(message_json(message)), 201

    @app.post("/_fake/messages/<sid>/deliver")
    def deliver(sid: str) -> ResponseReturnValue:
        final = request.form.get("final", "delivered")
        if final not in MESSAGE_FINAL_STATUSES:
            raise FakeTwilioError(400, 21218, f"Invalid final status: {final}")
        error_code = request.form.get("error_code")
        fake.deliver_message(sid, final, int(error_code) if error_code else None)
        with fake._lock:
            return jsonify(message_json(fake._message(sid)))

    return app
