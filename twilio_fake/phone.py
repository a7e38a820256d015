"""A phone that calls the app the way Twilio would: signed webhooks, TwiML followed verb by verb.

It plays both Twilio's voice engine and the caller: give it what the caller does at each
``<Gather>`` (keys, words or silence) and how each ``<Dial>`` ends, and it returns the call's
transcript. A ``<Gather>`` without input falls through to the next verb, ``action`` and
``<Redirect>`` hand over to a new document, running out of verbs ends the call, and a failed
webhook goes to the Fallback URL, as on Twilio. Hanging up sends the call's final status
callback (through the Twilio stand-in, or directly when there is none).

With a line started by ``python3 dev.py run`` (which writes ``instance/line.json``):

    python -m twilio_fake.phone --press 2 --say "quiero morir"     # call the line as a caller
    python -m twilio_fake.phone answer-as +13125550102              # be that counselor's phone
    python -m twilio_fake.phone text "I need to talk to someone"    # text the line
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urljoin

import requests

from twilio_fake.local_line import DEFAULT_BASE_URL, DEFAULT_LINE_NUMBER, SECRETS_FILE, read_local_line
from twilio_fake.rest_api import DIAL_LEG_SECONDS, CallRecord, FakeTwilioError, RedirectRecord
from twilio_fake.signing import (
    CallIdentity,
    gather_digits_params,
    gather_speech_params,
    signed_headers,
    sms_params,
)

TWIML_TYPES = ("text/xml", "application/xml", "text/html")
TERMINAL_CALL_STATUSES = ("completed", "busy", "failed", "no-answer", "canceled")
REDIRECT_FETCH_WAIT_SECONDS = 16.0  # a redirect's URL is fetched within Twilio's 15 s webhook cap
MAX_REQUESTS = 60  # a flow that needs more than this is looping


@dataclass(frozen=True)
class HttpReply:
    status: int
    content_type: str
    body: str


class Transport(Protocol):
    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply: ...


class RequestsTransport:
    """Real HTTP, as Twilio does it."""

    def __init__(self, timeout: float = 15.0, *, fresh_connections: bool = False) -> None:
        self.session = requests.Session()
        self.timeout = timeout
        # One connection per webhook: no reuse of a keep-alive connection the server may be
        # closing at that very moment (many threads sharing one phone, under load).
        self.extra_headers = {"Connection": "close"} if fresh_connections else {}

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        headers = {**headers, **self.extra_headers}
        reply = self.session.post(url, data=params, headers=headers, timeout=self.timeout)
        return HttpReply(reply.status_code, reply.headers.get("Content-Type", ""), reply.text)


class WsgiTransport:
    """A Flask test client posing as the network; the app still sees a full signed request."""

    def __init__(self, client: object) -> None:
        self.client = client

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        reply = self.client.post(url, data=params, headers=headers)  # type: ignore[attr-defined]
        return HttpReply(reply.status_code, reply.headers.get("Content-Type", ""), reply.get_data(as_text=True))


class TwilioControl(Protocol):
    """What a phone needs of the Twilio stand-in: ``FakeTwilio`` in-process, or
    ``RemoteTwilio`` over HTTP (a stand-in in another process, as ``dev.py run`` starts)."""

    def record_inbound_call(
        self, call_sid: str, from_: str, to: str, *, status_callback: str | None = None
    ) -> object: ...

    def get_call(self, call_sid: str) -> CallRecord: ...

    def advance_call(self, call_sid: str, status: str) -> str | None: ...

    def dial_leg(self, parent_call_sid: str, to: str, from_: str, status: str) -> CallRecord: ...

    def join_conference(
        self,
        friendly_name: str,
        call_sid: str,
        *,
        start_on_enter: bool = True,
        end_on_exit: bool = False,
        label: str | None = None,
        status_callback: str | None = None,
        status_callback_event: str = "",
    ) -> object: ...

    def leave_conference(self, friendly_name_or_sid: str, call_sid: str, reason: str = ...) -> object: ...


class RemoteTwilio:
    """The Twilio stand-in served by ``python -m twilio_fake.server``, driven through its
    ``/_fake/`` control endpoints: the same operations as ``FakeTwilio``'s, over HTTP."""

    def __init__(self, base_url: str, timeout: float = 20.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.timeout = timeout

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        if reply.status_code >= 400:
            try:
                body = reply.json()
            except ValueError:
                body = {}
            raise FakeTwilioError(reply.status_code, int(body.get("code", reply.status_code)), body.get("message", ""))
        return reply.json() if reply.content else None

    def record_inbound_call(
        self, call_sid: str, from_: str, to: str, *, status_callback: str | None = None
    ) -> CallRecord:
        data = {"CallSid": call_sid, "From": from_, "To": to, "StatusCallback": status_callback or ""}
        return _call_record(self._request("POST", "/_fake/calls/inbound", data=data))

    def get_call(self, call_sid: str) -> CallRecord:
        return _call_record(self._request("GET", f"/_fake/calls/{call_sid}"))

    def advance_call(self, call_sid: str, status: str) -> str | None:
        twiml: str | None = self._request("POST", f"/_fake/calls/{call_sid}/advance", data={"status": status})["twiml"]
        return twiml

    def dial_leg(self, parent_call_sid: str, to: str, from_: str, status: str) -> CallRecord:
        data = {"To": to, "From": from_, "Status": status}
        return _call_record(self._request("POST", f"/_fake/calls/{parent_call_sid}/dial", data=data))

    def join_conference(
        self,
        friendly_name: str,
        call_sid: str,
        *,
        start_on_enter: bool = True,
        end_on_exit: bool = False,
        label: str | None = None,
        status_callback: str | None = None,
        status_callback_event: str = "",
    ) -> object:
        data = {
            "CallSid": call_sid,
            "StartConferenceOnEnter": str(start_on_enter).lower(),
            "EndConferenceOnExit": str(end_on_exit).lower(),
            "Label": label or "",
            "StatusCallback": status_callback or "",
            "StatusCallbackEvent": status_callback_event,
        }
        return self._request("POST", f"/_fake/conferences/{quote(friendly_name, safe='')}/join", data=data)

    def leave_conference(self, friendly_name_or_sid: str, call_sid: str, reason: str = "participant_hung_up") -> object:
        data = {"CallSid": call_sid, "reason": reason}
        return self._request("POST", f"/_fake/conferences/{quote(friendly_name_or_sid, safe='')}/leave", data=data)

    def calls(self, to: str | None = None, statuses: Iterable[str] = ()) -> list[CallRecord]:
        """Calls the stand-in knows, oldest first, optionally only ``to`` a number / in ``statuses``."""
        params: list[tuple[str, str]] = [("to", to)] if to else []
        params += [("status", status) for status in statuses]
        return [_call_record(item) for item in self._request("GET", "/_fake/calls", params=params)["calls"]]

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        """Every message the line sent ``to`` this number (or anyone), oldest first (REST JSON)."""
        params = {"to": to} if to else {}
        found: list[dict[str, Any]] = self._request("GET", "/_fake/messages", params=params)["messages"]
        return found

    def program_number(self, number: str, behaviour: str | None) -> None:
        self._request("POST", f"/_fake/numbers/{quote(number, safe='')}", data={"behaviour": behaviour or ""})

    def messaging_reply(self, sender: str, line_number: str, twiml: str) -> list[dict[str, Any]]:
        """Send the replies in the TwiML the line answered ``sender``'s text with, as Twilio does."""
        data = {"From": sender, "To": line_number, "Twiml": twiml}
        sent: list[dict[str, Any]] = self._request("POST", "/_fake/messaging-reply", data=data)["messages"]
        return sent

    def keyword(self, number: str, body: str) -> None:
        """Twilio's own handling of opt-out/opt-in words texted by ``number`` (§2.4)."""
        self._request("POST", "/_fake/keyword", data={"From": number, "Body": body})


def _call_record(data: dict[str, Any]) -> CallRecord:
    return CallRecord(
        sid=data["sid"],
        account_sid=data["account_sid"],
        to=data["to"],
        from_=data["from"],
        direction=data["direction"],
        status=data["status"],
        url=data.get("url"),
        twiml=data.get("twiml"),
        timeout=int(data.get("timeout") or 60),
        parent_call_sid=data.get("parent_call_sid"),
        conference_sid=data.get("conference_sid"),
        redirects=[RedirectRecord(**item) for item in data.get("redirects", [])],
    )


@dataclass(frozen=True)
class Keys:
    digits: str


@dataclass(frozen=True)
class Words:
    speech: str
    confidence: float = 0.9


@dataclass(frozen=True)
class Silence:
    pass


CallerAction = Keys | Words | Silence
# Asked at a <Gather> when no scripted action is left (an interactive phone: the browser phone).
Listener = Callable[["PhoneCall", ET.Element], CallerAction]


@dataclass
class Step:
    """One webhook request and the TwiML it returned."""

    url: str
    params: dict[str, str]
    status: int
    content_type: str
    twiml: ET.Element | None


@dataclass
class Heard:
    text: str
    language: str
    voice: str


# A ``dial_outcomes`` entry, not a ``DialCallStatus``: the dialled number answered and the
# conversation is still going when the test looks (the call stops there, its dial leg live).
TALKING = "talking"
# Another: the dialled number answered and hung up a few seconds later (``DialCallStatus``
# ``completed``, ``DialCallDuration`` ``HUNG_UP_SECONDS``), as a full voicemail box does.
HUNG_UP_AT_ONCE = "hung-up-at-once"
HUNG_UP_SECONDS = 4
# The final status of a ``<Dial>``'s child call for each outcome.
_DIAL_LEG_STATUS = {
    TALKING: "in-progress", "completed": "completed", "answered": "completed", "busy": "busy",
    "no-answer": "no-answer", "failed": "failed", "canceled": "canceled", HUNG_UP_AT_ONCE: "completed",
}  # fmt: skip


@dataclass
class Dialled:
    numbers: list[str]
    attributes: dict[str, str]
    outcome: str


@dataclass
class PhoneCall:
    """The transcript of one call leg: every request, every sentence heard, every dial.

    A call can pause (``ended_by`` is then ``"on-hold"`` or ``"in-conference"``) and be
    resumed with :meth:`Phone.resume`, which is how tests interleave several legs.
    """

    identity: CallIdentity
    steps: list[Step] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    dials: list[Dialled] = field(default_factory=list)
    # "hangup", "end-of-twiml", "application-error", "caller-hung-up", or a pause:
    # "on-hold", "in-conference"
    ended_by: str = ""
    next_url: str = ""
    next_params: dict[str, str] = field(default_factory=dict)
    conference: str | None = None  # the conference this leg sits in, while it does
    conference_dial: dict[str, str] = field(default_factory=dict)
    conference_url: str = ""  # the document whose <Dial><Conference> put it there
    hold_turns: int = 0
    redirects_seen: int = 0
    actions: list[CallerAction] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)

    @property
    def paused(self) -> bool:
        return self.ended_by in ("on-hold", "in-conference")

    @property
    def finished(self) -> bool:
        return bool(self.ended_by) and not self.paused

    @property
    def last_twiml(self) -> ET.Element:
        twiml = self.steps[-1].twiml
        assert twiml is not None, "the last request returned no TwiML"
        return twiml

    def heard_text(self) -> str:
        return " ".join(item.text for item in self.heard)

    def requested_paths(self) -> list[str]:
        return [step.url.split("://", 1)[-1].split("/", 1)[-1] for step in self.steps]


class Phone:
    """Places calls into the app at ``base_url`` signed with ``auth_token``."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        auth_token: str,
        account_sid: str,
        line_number: str = "+13125550100",
        fallback_path: str | None = "/voice/fallback",
        fake: TwilioControl | None = None,
        status_path: str | None = None,
        listen: Listener | None = None,
        max_requests: int = MAX_REQUESTS,
    ) -> None:
        """``fake``: the Twilio stand-in that knows this phone's calls (its REST-placed legs,
        conferences, final status callbacks). Without one, ``status_path`` (e.g.
        ``/voice/status``) gets the caller's final status callback straight from the phone.
        ``listen``: asked what the person does at a ``<Gather>`` once the scripted actions are
        used up (default: silence), so a person can answer each menu as it comes.
        ``max_requests``: more webhook requests than this on one call is taken for a loop (a
        caller who holds by the clock makes one per hold turn, so a slow machine needs more)."""
        self.fake = fake
        self.max_requests = max_requests
        self.listen = listen
        self.status_url = base_url.rstrip("/") + status_path if status_path else None
        self.transport = transport
        self.base_url = base_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid
        self.line_number = line_number
        self.fallback_url = self.base_url + fallback_path if fallback_path else None

    def identity(self, from_number: str = "+13125550123") -> CallIdentity:
        return CallIdentity(self.account_sid, from_number, self.line_number)

    def post(self, url: str, params: dict[str, str]) -> HttpReply:
        """One signed webhook POST, exactly as Twilio sends it."""
        return self.transport.post(url, params, signed_headers(self.auth_token, url, params))

    def call(
        self,
        caller: Iterable[CallerAction] = (),
        *,
        dial_outcomes: Iterable[str] | Callable[[Dialled], str] = (),
        identity: CallIdentity | None = None,
        path: str = "/voice/incoming",
        hang_up_after_requests: int | None = None,
        max_hold_turns: int | None = None,
    ) -> PhoneCall:
        """Call the line and follow its TwiML until the call ends or pauses.

        ``caller`` answers each ``<Gather>`` in turn (running out means silence);
        ``dial_outcomes`` gives each ``<Dial>``'s ``DialCallStatus`` (default ``no-answer``).
        With ``max_hold_turns`` the call pauses after that many turns of the hold loop.
        """
        identity = identity or self.identity()
        record = PhoneCall(identity, actions=list(caller))
        record.next_url, record.next_params = self.base_url + path, identity.voice_params("ringing")
        if self.fake is not None:
            self.fake.record_inbound_call(
                identity.call_sid, identity.from_number, identity.to_number,
                status_callback=self.base_url + "/voice/status",
            )  # fmt: skip
        return self._drive(record, dial_outcomes, hang_up_after_requests, max_hold_turns)

    def answer(self, call_sid: str, responder: Iterable[CallerAction] = ()) -> PhoneCall:
        """A responder picks up a leg the app placed over REST, and answers its whisper."""
        assert self.fake is not None, "answering REST-placed calls needs the fake Twilio"
        leg = self.fake.get_call(call_sid)
        self.fake.advance_call(call_sid, "ringing")
        twiml_text = self.fake.advance_call(call_sid, "in-progress")
        identity = CallIdentity(self.account_sid, leg.from_, leg.to, call_sid=call_sid, direction="outbound-api")
        record = PhoneCall(identity, actions=list(responder))
        twiml = _parse_twiml(HttpReply(200, "text/xml", twiml_text or ""))
        record.steps.append(Step(leg.url or "", {}, 200, "text/xml", twiml))
        if twiml is None:
            record.ended_by = "application-error"
            return record
        self._run(record, twiml, leg.url or "", lambda _dial: "no-answer")
        return self._drive(record, (), None, None)

    def resume(
        self,
        record: PhoneCall,
        caller: Iterable[CallerAction] = (),
        *,
        dial_outcomes: Iterable[str] | Callable[[Dialled], str] = (),
        max_hold_turns: int | None = None,
    ) -> PhoneCall:
        """Carry on a paused call: follow a REST redirect, leave an ended conference, or
        take more hold turns."""
        record.actions.extend(caller)
        if record.paused:
            record.ended_by = ""
        return self._drive(record, dial_outcomes, None, max_hold_turns)

    def hang_up(self, record: PhoneCall) -> None:
        """The person on this leg hangs up: Twilio takes the leg out of its conference
        (``participant-leave``, and ``conference-end`` if that ends the room), then sends the
        call's own final status callback, ``completed``."""
        record.conference = None
        self._send_final_status(record)
        record.ended_by = "caller-hung-up"

    def press_star(self, record: PhoneCall) -> bool:
        """``*`` on a leg held in a conference by ``<Dial hangupOnStar="true">``: Twilio takes it
        out of the room and the ``<Dial>``'s action runs next (on the next :meth:`resume`); the
        call goes on. False (nothing happens) on any other leg, as on Twilio."""
        if record.conference is None or record.conference_dial.get("hangupOnStar") != "true":
            return False
        assert self.fake is not None
        # [INF] Twilio documents no ReasonParticipantLeft for hangupOnStar; the leg did leave.
        self.fake.leave_conference(record.conference, record.identity.call_sid, "participant_hung_up")
        return True

    def _send_final_status(self, record: PhoneCall) -> None:
        sid = record.identity.call_sid
        if self.fake is not None:
            if self._known(sid):
                self.fake.advance_call(sid, "completed")
        elif self.status_url and not record.finished:
            params = record.identity.voice_params("completed", CallDuration="0", CallbackSource="call-progress-events")
            self.post(self.status_url, params)

    def _known(self, sid: str) -> bool:
        assert self.fake is not None
        try:
            self.fake.get_call(sid)
        except FakeTwilioError:
            return False
        return True

    def wait_on_hold(
        self,
        record: PhoneCall,
        *,
        seconds: float,
        turn_seconds: float = 2.0,
        dial_outcomes: Iterable[str] | Callable[[Dialled], str] = (),
    ) -> PhoneCall:
        """Stay on hold in real time (one hold turn every ``turn_seconds``) until the line moves
        the call (into a conference, or on to a ``<Dial>``) or ``seconds`` pass. A REST redirect
        is followed within a fraction of a second, as Twilio follows it at once."""
        deadline = time.monotonic() + seconds
        while record.ended_by == "on-hold" and time.monotonic() < deadline:
            next_turn = min(deadline, time.monotonic() + turn_seconds)
            seen = self._redirect_count(record)
            while time.monotonic() < next_turn and self._redirect_count(record) == seen:
                time.sleep(0.1)
            dials = len(record.dials)
            self.resume(record, max_hold_turns=1, dial_outcomes=dial_outcomes)
            if record.conference is not None or len(record.dials) > dials:
                break
        return record

    def _drive(
        self,
        record: PhoneCall,
        dial_outcomes: Iterable[str] | Callable[[Dialled], str],
        hang_up_after_requests: int | None,
        max_hold_turns: int | None,
    ) -> PhoneCall:
        if callable(dial_outcomes):
            outcome_for = dial_outcomes
        else:
            record.outcomes.extend(dial_outcomes)

            def outcome_for(_dial: Dialled) -> str:
                return record.outcomes.pop(0) if record.outcomes else "no-answer"

        hold_budget = max_hold_turns
        while not record.ended_by:
            if len(record.steps) >= self.max_requests:
                raise AssertionError(f"call looped: more than {self.max_requests} webhook requests")
            if self._follow_redirect(record, outcome_for):
                continue
            if record.conference:
                if not self._left_conference(record):
                    record.ended_by = "in-conference"
                    break
                continue
            if not record.next_url:
                self._finish(record, "end-of-twiml")
                break
            if hang_up_after_requests is not None and len(record.steps) >= hang_up_after_requests:
                record.ended_by = "caller-hung-up"
                break
            if "/voice/hold" in record.next_url and len(record.steps) > 0:
                if hold_budget is not None:
                    if hold_budget <= 0:
                        record.ended_by = "on-hold"
                        break
                    hold_budget -= 1
                record.hold_turns += 1
            url, params = record.next_url, record.next_params
            record.next_url = ""
            twiml = self._fetch(record, url, params)
            if twiml is None:
                self._finish(record, "application-error")
                break
            self._answer_inbound(record)
            if self._redirect_count(record) > record.redirects_seen:
                # A REST redirect landed while this webhook was in flight (or just before it
                # went, after the check above): Twilio runs the redirect's TwiML instead, and
                # the late response is dropped. Counted against the redirects followed, not
                # a count taken before the request, which a redirect landing in between
                # would already include (the response then ran too: a join on top of the
                # redirect's own join).
                continue
            self._run(record, twiml, url, outcome_for)
        return record

    def _answer_inbound(self, record: PhoneCall) -> None:
        """Twilio answers an inbound call when it starts running its TwiML."""
        if self.fake is None or record.identity.direction != "inbound":
            return
        leg = self.fake.get_call(record.identity.call_sid)
        if leg.status == "ringing":
            self.fake.advance_call(record.identity.call_sid, "in-progress")

    def _finish(self, record: PhoneCall, how: str) -> None:
        """Twilio ended the call (``<Hangup>``, no more verbs, an application error)."""
        self._send_final_status(record)
        record.ended_by = how

    def _redirect_count(self, record: PhoneCall) -> int:
        if self.fake is None:
            return 0
        try:
            return len(self.fake.get_call(record.identity.call_sid).redirects)
        except FakeTwilioError:
            return 0

    def _follow_redirect(self, record: PhoneCall, outcome_for: Callable[[Dialled], str]) -> bool:
        """A REST ``Calls(sid).update(url=...)`` moved this leg: run the TwiML Twilio fetched."""
        if self.fake is None or not self._known(record.identity.call_sid):
            return False
        redirects = self.fake.get_call(record.identity.call_sid).redirects
        if len(redirects) <= record.redirects_seen:
            return False
        record.redirects_seen = len(redirects)
        index = len(redirects) - 1
        latest = redirects[index]
        waited = 0.0
        while not latest.fetched and waited < REDIRECT_FETCH_WAIT_SECONDS:  # Twilio is fetching it
            time.sleep(0.01)
            waited += 0.01
            if isinstance(self.fake, RemoteTwilio):  # a copy: read it again
                latest = self.fake.get_call(record.identity.call_sid).redirects[index]
        record.conference = None
        twiml = _parse_twiml(HttpReply(latest.status_code or 200, "text/xml", latest.twiml or ""))
        record.steps.append(Step(latest.url or "", {}, latest.status_code or 200, "text/xml", twiml))
        if twiml is None:
            self._finish(record, "application-error")
            return True
        record.next_url = ""
        self._run(record, twiml, latest.url or "", outcome_for)
        return True

    def _left_conference(self, record: PhoneCall) -> bool:
        """True once this leg is out of its conference (it ended); its ``<Dial>`` then ends."""
        assert self.fake is not None and record.conference
        if self.fake.get_call(record.identity.call_sid).conference_sid is not None:
            return False
        record.conference = None
        action = record.conference_dial.get("action")
        if action:
            record.next_url = urljoin(record.conference_url, action)
            record.next_params = record.identity.voice_params("in-progress", DialCallStatus="answered")
        return True

    def _fetch(self, record: PhoneCall, url: str, params: dict[str, str]) -> ET.Element | None:
        reply = self.post(url, params)
        twiml = _parse_twiml(reply)
        record.steps.append(Step(url, params, reply.status, reply.content_type, twiml))
        if twiml is None and self.fallback_url and url != self.fallback_url:
            # Twilio requests the Fallback URL at once after a failed fetch (§6).
            fallback_params = {**params, "ErrorCode": "11200", "ErrorUrl": url}
            reply = self.post(self.fallback_url, fallback_params)
            twiml = _parse_twiml(reply)
            record.steps.append(Step(self.fallback_url, fallback_params, reply.status, reply.content_type, twiml))
        return twiml

    def _run(
        self,
        record: PhoneCall,
        twiml: ET.Element,
        current_url: str,
        outcome_for: Callable[[Dialled], str],
    ) -> None:
        """Execute one TwiML document; sets the next request, a conference, or the end."""
        identity = record.identity
        record.next_url = ""
        for verb in twiml:
            if verb.tag == "Say":
                record.heard.append(_heard(verb))
            elif verb.tag == "Gather":
                record.heard.extend(_heard(child) for child in verb if child.tag == "Say")
                if record.actions:
                    action = record.actions.pop(0)
                else:
                    action = self.listen(record, verb) if self.listen is not None else Silence()
                target = urljoin(current_url, verb.get("action") or current_url)
                if isinstance(action, Keys):
                    # As Twilio: the finishOnKey (``#`` unless set; ``""`` for none) ends the
                    # entry and is not sent; pressed first, it is no input at all.
                    finish_on = verb.get("finishOnKey", "#")
                    digits = action.digits.split(finish_on, 1)[0] if finish_on else action.digits
                    if digits:
                        record.next_url, record.next_params = target, gather_digits_params(identity, digits)
                        return
                    action = Silence()
                if isinstance(action, Words):
                    record.next_url = target
                    record.next_params = gather_speech_params(identity, action.speech, action.confidence)
                    return
                if verb.get("actionOnEmptyResult") == "true":
                    record.next_url, record.next_params = target, identity.voice_params("in-progress")
                    return
            elif verb.tag == "Redirect":
                record.next_url = urljoin(current_url, (verb.text or "").strip())
                record.next_params = identity.voice_params("in-progress")
                return
            elif verb.tag == "Dial":
                conference = verb.find("Conference")
                if conference is not None:
                    self._join(record, verb, conference, current_url)
                    return
                numbers = [(n.text or "").strip() for n in verb if n.tag == "Number"]
                if verb.text and verb.text.strip():
                    numbers.append(verb.text.strip())
                dialled = Dialled(numbers, dict(verb.attrib), "")
                dialled.outcome = outcome_for(dialled)
                record.dials.append(dialled)
                dial_sid = self._dial_legs(record, verb, dialled)
                if dialled.outcome == TALKING:
                    record.ended_by = "on-a-dial"  # answered, and they are talking still: the test stops here
                    return
                if verb.get("action"):
                    status = "completed" if dialled.outcome == HUNG_UP_AT_ONCE else dialled.outcome
                    extra = {
                        "DialCallStatus": status,
                        "DialBridged": str(status == "completed").lower(),
                        "DialCallSid": dial_sid or "CA" + "0" * 32,
                    }
                    if status == "completed":
                        talked = HUNG_UP_SECONDS if dialled.outcome == HUNG_UP_AT_ONCE else DIAL_LEG_SECONDS
                        extra["DialCallDuration"] = str(talked)
                    record.next_url = urljoin(current_url, verb.get("action", ""))
                    record.next_params = identity.voice_params("in-progress", **extra)
                    return
            elif verb.tag in ("Hangup", "Reject"):
                self._finish(record, "hangup")
                return
        self._finish(record, "end-of-twiml")

    def _dial_legs(self, record: PhoneCall, dial: ET.Element, dialled: Dialled) -> str | None:
        """Each ``<Number>`` of a ``<Dial>`` is a child call of this one in Twilio (its
        ``ParentCallSid``, listed by ``Calls.json?ParentCallSid=``), ending as the dial did: the
        first carries the outcome; the others, rung beside it, are canceled once it is answered.
        Returns the first one's sid (the action's ``DialCallSid``)."""
        if self.fake is None:
            return None
        if dialled.outcome not in _DIAL_LEG_STATUS:
            raise ValueError(f"unknown dial outcome {dialled.outcome!r}: one of {sorted(_DIAL_LEG_STATUS)}")
        final = _DIAL_LEG_STATUS[dialled.outcome]
        sids: list[str] = []
        caller_id = dial.get("callerId") or record.identity.from_number
        for number in dialled.numbers:
            answered_elsewhere = sids and final in ("in-progress", "completed")
            try:
                leg = self.fake.dial_leg(
                    record.identity.call_sid, number, caller_id, "canceled" if answered_elsewhere else final
                )
            except FakeTwilioError:
                continue  # a number Twilio could not dial: no leg
            sids.append(leg.sid)
        return sids[0] if sids else None

    def _join(self, record: PhoneCall, dial: ET.Element, conference: ET.Element, current_url: str) -> None:
        """``<Dial><Conference>``: the leg enters the room in the fake Twilio and waits there."""
        assert self.fake is not None, "conferences need the fake Twilio (Phone(fake=...))"
        name = (conference.text or "").strip()
        callback = conference.get("statusCallback")
        self.fake.join_conference(
            name,
            record.identity.call_sid,
            start_on_enter=conference.get("startConferenceOnEnter", "true") == "true",
            end_on_exit=conference.get("endConferenceOnExit", "false") == "true",
            label=conference.get("participantLabel"),
            status_callback=urljoin(current_url, callback) if callback else None,
            status_callback_event=conference.get("statusCallbackEvent", ""),
        )
        record.conference = name
        record.conference_dial = dict(dial.attrib)
        record.conference_url = current_url
        record.ended_by = ""


def _heard(say: ET.Element) -> Heard:
    return Heard((say.text or "").strip(), say.get("language", "en-US"), say.get("voice", ""))


def _parse_twiml(reply: HttpReply) -> ET.Element | None:
    """TwiML as Twilio would accept it, or None for anything Twilio treats as a failure."""
    if reply.status != 200 or reply.content_type.split(";")[0].strip() not in TWIML_TYPES:
        return None
    if len(reply.body.encode()) > 64 * 1024:
        return None
    try:
        root = ET.fromstring(reply.body)  # noqa: S314 - our own app's TwiML
    except ET.ParseError:
        return None
    return root if root.tag == "Response" else None


COMMANDS = ("call", "text", "answer-as", "inbox")
EPILOG = """commands (the first argument; "call" when left out):
  call       call the line as a caller (the options above)
  text       text the line and print its replies:  text "I need to talk" [--from NUMBER]
  answer-as  be a counselor's phone: wait for the line to ring NUMBER, hear the whisper, press 1
             answer-as +13125550102 [--say "Hi, I'm here"] [--calls 2]   (or: answer-as any)
  inbox      the texts the line sent a number (or everyone):  inbox [NUMBER]
  (each has its own --help)

The line's URL, the Twilio stand-in's URL and the line's number are read from
instance/line.json, which 'python3 dev.py run' writes; --base-url and --twilio-url override."""


@dataclass
class _Cli:
    base_url: str
    twilio: RemoteTwilio | None
    line_number: str
    account_sid: str
    auth_token: str


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", default=None, help="the line (default: from instance/line.json, else :5000)")
    parser.add_argument("--twilio-url", default=None, help="the Twilio stand-in (default: from instance/line.json)")
    parser.add_argument("--secrets", default=str(SECRETS_FILE), help="the local account sid and auth token")


def _connect(args: argparse.Namespace) -> _Cli:
    line = read_local_line()
    base_url = args.base_url or (line.base_url if line else DEFAULT_BASE_URL)
    twilio_url = args.twilio_url or (line.twilio_url if line and not args.base_url else None)
    secrets = json.loads(Path(args.secrets).read_text())
    return _Cli(
        base_url.rstrip("/"),
        RemoteTwilio(twilio_url) if twilio_url else None,
        line.line_number if line else DEFAULT_LINE_NUMBER,
        secrets["TWILIO_ACCOUNT_SID"],
        secrets["TWILIO_AUTH_TOKEN"],
    )


def _print_heard(heard: Iterable[Heard], prefix: str = "  ") -> None:
    for item in heard:
        print(f"{prefix}({item.language}) {item.text}", flush=True)


def _call_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twilio_fake.phone",
        description="Call the local line as a caller and print what the caller hears.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(parser)
    # Both append to one list, so "--press 2 --say suicide" answers the menus in that order.
    parser.add_argument("--press", dest="inputs", type=Keys, action="append", default=[], help="keys for the next menu")
    parser.add_argument("--say", dest="inputs", type=Words, action="append", default=[], help="words for the next menu")
    parser.add_argument(
        "--dial-outcome", action="append", default=[], choices=sorted(set(_DIAL_LEG_STATUS) - {TALKING}),
        help="how each <Dial> ends, in turn (default no-answer)",
    )  # fmt: skip
    parser.add_argument("--from", dest="from_number", default="+13125550123", help="the caller's number")
    parser.add_argument("--wait", type=float, default=90.0, help="seconds to hold for a human before hanging up")
    parser.add_argument("--talk", type=float, default=5.0, help="seconds to stay with the human, then hang up")
    args = parser.parse_args(argv)
    cli = _connect(args)
    phone = Phone(
        RequestsTransport(), cli.base_url, cli.auth_token, cli.account_sid, cli.line_number,
        fake=cli.twilio, status_path=None if cli.twilio else "/voice/status",
    )  # fmt: skip
    try:
        call = phone.call(
            args.inputs, identity=phone.identity(args.from_number), dial_outcomes=args.dial_outcome, max_hold_turns=0
        )
        shown = 0
        for step in call.steps:
            print(f"→ POST {step.url}  [{step.status}]", flush=True)
        _print_heard(call.heard)
        shown = len(call.heard)
        if call.ended_by == "on-hold":
            print(f"on hold: waiting up to {args.wait:.0f} s for a counselor to accept…", flush=True)
            phone.wait_on_hold(call, seconds=args.wait, dial_outcomes=args.dial_outcome)
            _print_heard(call.heard[shown:])
            shown = len(call.heard)
        if call.conference is not None:
            print(f"connected to a human (conference {call.conference}); talking for {args.talk:.0f} s", flush=True)
            deadline = time.monotonic() + args.talk
            while time.monotonic() < deadline and call.conference is not None:
                time.sleep(0.2)
                phone.resume(call, max_hold_turns=0)
            _print_heard(call.heard[shown:])
        for dial in call.dials:
            print(f"  dialled {len(dial.numbers)} number(s): {dial.outcome}")
        if not call.finished:
            phone.hang_up(call)  # Twilio then sends the call's final status callback
            print("you hung up (the line got the call's final status)")
        else:
            print(f"call ended: {call.ended_by}")
    except requests.ConnectionError:
        print(f"nothing answers at {cli.base_url}: start the line with 'python3 dev.py run'")
        return 1
    return 0


def _text_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twilio_fake.phone text",
        description="Text the local line (a texter, or a counselor from their own number) and print its replies.",
    )
    _common_options(parser)
    parser.add_argument("body", help="the text to send")
    parser.add_argument("--from", dest="from_number", default="+13125550177", help="your number")
    parser.add_argument("--wait", type=float, default=4.0, help="seconds to wait for the line's texts back")
    args = parser.parse_args(argv)
    cli = _connect(args)
    url = cli.base_url + "/sms/incoming"
    try:
        before = len(cli.twilio.messages(args.from_number)) if cli.twilio else 0
        if cli.twilio:
            cli.twilio.keyword(args.from_number, args.body)  # Twilio sees STOP/START first
        params = sms_params(cli.account_sid, args.from_number, cli.line_number, args.body)
        reply = requests.post(
            url, data=params, headers=signed_headers(cli.auth_token, url, params, voice=False), timeout=15
        )
    except requests.ConnectionError:
        print(f"nothing answers at {cli.base_url}: start the line with 'python3 dev.py run'")
        return 1
    print(f"→ you ({args.from_number}): {args.body}  [{reply.status_code}]", flush=True)
    if cli.twilio is None:
        twiml = _parse_twiml(HttpReply(reply.status_code, reply.headers.get("Content-Type", ""), reply.text))
        for message in twiml.iter("Message") if twiml is not None else ():
            body = message.findtext("Body") or message.text or ""
            print(f"← line: {body.strip()}", flush=True)
        print("(no Twilio stand-in known: texts the line sends over REST are not shown)")
        return 0
    if reply.status_code == 200:
        cli.twilio.messaging_reply(args.from_number, cli.line_number, reply.text)  # as Twilio sends them
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        sent = cli.twilio.messages(args.from_number)
        for sent_message in sent[before:]:
            print(f"← line: {sent_message['body']}", flush=True)
        before = len(sent)
        time.sleep(0.2)
    return 0


def _answer_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twilio_fake.phone answer-as",
        description="Be a counselor's (or unit's) phone: wait for the line to ring NUMBER, answer, hear the "
        "whisper, press a key (1 accepts), say something, and stay until the caller leaves.",
    )
    _common_options(parser)
    parser.add_argument(
        "number", help="the responder's phone number, as in the routing (e.g. +13125550102), or 'any' responder"
    )
    parser.add_argument("--press", default="1", help="the key to press at the whisper (1 accepts, 2 passes)")
    parser.add_argument("--say", default="Hello, I'm here with you.", help="what you say once connected")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for a ring")
    parser.add_argument("--talk", type=float, default=60.0, help="longest time to stay on a call before hanging up")
    parser.add_argument("--calls", type=int, default=1, help="how many calls to answer before exiting")
    args = parser.parse_args(argv)
    cli = _connect(args)
    if cli.twilio is None:
        print("answer-as needs the local Twilio stand-in (started by 'python3 dev.py run' with no Twilio account)")
        return 1
    phone = Phone(RequestsTransport(), cli.base_url, cli.auth_token, cli.account_sid, cli.line_number, fake=cli.twilio)
    handled: set[str] = set()
    answered = 0
    deadline = time.monotonic() + args.wait
    print(f"{args.number}: waiting for the line to ring…", flush=True)
    try:
        while answered < args.calls and time.monotonic() < deadline:
            to = None if args.number == "any" else args.number
            ringing = [leg for leg in cli.twilio.calls(to=to, statuses=("queued", "initiated", "ringing"))
                       if leg.sid not in handled and leg.direction == "outbound-api"]  # fmt: skip
            if not ringing:
                time.sleep(0.2)
                continue
            leg = ringing[0]
            handled.add(leg.sid)
            answered += 1
            print(f"ring ring: the line calls {leg.to} from {leg.from_}; you answer", flush=True)
            record = phone.answer(leg.sid, [Keys(args.press)])
            _print_heard(record.heard)
            shown = len(record.heard)
            if record.conference is None:
                print(f"(you pressed {args.press}) call ended: {record.ended_by}", flush=True)
                deadline = time.monotonic() + args.wait
                continue
            print(f"(you pressed {args.press}) connected with the caller. You say: {args.say}", flush=True)
            talk_until = time.monotonic() + args.talk
            while not record.finished and time.monotonic() < talk_until:
                time.sleep(0.2)
                phone.resume(record, max_hold_turns=0)
            _print_heard(record.heard[shown:])
            if record.finished:
                print(f"the call ended: {record.ended_by}", flush=True)
            else:
                phone.hang_up(record)
                print("you hung up", flush=True)
            deadline = time.monotonic() + args.wait
    except requests.ConnectionError:
        print(f"nothing answers at {cli.base_url}: start the line with 'python3 dev.py run'")
        return 1
    if answered < args.calls:
        print(f"nobody rang {args.number} within {args.wait:.0f} s")
        return 1
    return 0


def _inbox_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twilio_fake.phone inbox",
        description="Print the texts the line sent a number (a counselor's phone, a texter), or everyone.",
    )
    _common_options(parser)
    parser.add_argument("number", nargs="?", default=None, help="whose texts (default: everyone's)")
    args = parser.parse_args(argv)
    cli = _connect(args)
    if cli.twilio is None:
        print("inbox needs the local Twilio stand-in (started by 'python3 dev.py run' with no Twilio account)")
        return 1
    for message in cli.twilio.messages(args.number):
        print(f"→ {message['to']}: {message['body']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``call`` (the default), ``text``, ``answer-as`` or ``inbox``: see ``--help``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments.pop(0) if arguments and arguments[0] in COMMANDS else "call"
    if command == "text":
        return _text_main(arguments)
    if command == "answer-as":
        return _answer_main(arguments)
    if command == "inbox":
        return _inbox_main(arguments)
    return _call_main(arguments)


if __name__ == "__main__":
    sys.exit(main())
