"""A phone that calls the app the way Twilio would: signed webhooks, TwiML followed verb by verb.

It plays both Twilio's voice engine and the caller: give it what the caller does at each
``<Gather>`` (keys, words or silence) and how each ``<Dial>`` ends, and it returns the call's
transcript. It follows ``shared/reference/twilio-semantics.md`` §4: a ``<Gather>`` without
input falls through to the next verb, ``action``/``<Redirect>`` hand over to a new document,
running out of verbs ends the call, and a failed webhook goes to the Fallback URL.

    python -m twilio_fake.phone --base-url http://127.0.0.1:5000 --press 2 --press 3
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
from typing import Protocol
from urllib.parse import urljoin

import requests

from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity, gather_digits_params, gather_speech_params, signed_headers

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
        fake: FakeTwilio | None = None,
    ) -> None:
        self.fake = fake
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
        """The person on this leg hangs up (conference left, final status sent by the fake)."""
        if self.fake is not None:
            if record.conference:
                # The room may be gone already (a REST redirect took this leg out of it).
                if self.fake.get_call(record.identity.call_sid).conference_sid is not None:
                    self.fake.leave_conference(record.conference, record.identity.call_sid)
                record.conference = None
            self.fake.advance_call(record.identity.call_sid, "completed")
        record.ended_by = "caller-hung-up"

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
            if len(record.steps) >= MAX_REQUESTS:
                raise AssertionError(f"call looped: more than {MAX_REQUESTS} webhook requests")
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
            redirects_before = self._redirect_count(record)
            twiml = self._fetch(record, url, params)
            if twiml is None:
                self._finish(record, "application-error")
                break
            self._answer_inbound(record)
            if self._redirect_count(record) > redirects_before:
                # A REST redirect landed while this webhook was in flight: Twilio runs the
                # redirect's TwiML instead, and the late response is dropped.
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
        record.ended_by = how
        sid = record.identity.call_sid
        if (
            self.fake is not None
            and sid in self.fake.calls
            and self.fake.get_call(sid).status not in TERMINAL_CALL_STATUSES
        ):
            self.fake.advance_call(sid, "completed")

    def _redirect_count(self, record: PhoneCall) -> int:
        if self.fake is None or record.identity.call_sid not in self.fake.calls:
            return 0
        return len(self.fake.get_call(record.identity.call_sid).redirects)

    def _follow_redirect(self, record: PhoneCall, outcome_for: Callable[[Dialled], str]) -> bool:
        """A REST ``Calls(sid).update(url=...)`` moved this leg: run the TwiML Twilio fetched."""
        if self.fake is None or record.identity.call_sid not in self.fake.calls:
            return False
        redirects = self.fake.get_call(record.identity.call_sid).redirects
        if len(redirects) <= record.redirects_seen:
            return False
        record.redirects_seen = len(redirects)
        latest = redirects[-1]
        waited = 0.0
        while not latest.fetched and waited < REDIRECT_FETCH_WAIT_SECONDS:  # Twilio is fetching it
            time.sleep(0.01)
            waited += 0.01
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
                action = record.actions.pop(0) if record.actions else Silence()
                target = urljoin(current_url, verb.get("action") or current_url)
                if isinstance(action, Keys):
                    record.next_url, record.next_params = (
                        target,
                        gather_digits_params(identity, action.digits),
                    )
                    return
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
                if verb.get("action"):
                    extra = {
                        "DialCallStatus": dialled.outcome,
                        "DialBridged": str(dialled.outcome == "completed").lower(),
                        "DialCallSid": "CA" + "0" * 32,
                    }
                    if dialled.outcome == "completed":
                        extra["DialCallDuration"] = "42"
                    record.next_url = urljoin(current_url, verb.get("action", ""))
                    record.next_params = identity.voice_params("in-progress", **extra)
                    return
            elif verb.tag in ("Hangup", "Reject"):
                self._finish(record, "hangup")
                return
        self._finish(record, "end-of-twiml")

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


def main(argv: list[str] | None = None) -> int:
    """Place one local test call against a running line and print what the caller hears."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:5000")
    # Both append to one list, so "--press 2 --say suicide" answers the menus in that order.
    parser.add_argument("--press", dest="inputs", type=Keys, action="append", default=[], help="keys for the next menu")
    parser.add_argument("--say", dest="inputs", type=Words, action="append", default=[], help="words for the next menu")
    parser.add_argument("--dial-outcome", action="append", default=[], help="completed, no-answer, busy…")
    parser.add_argument("--secrets", default=str(Path("instance") / "development-secrets.json"))
    parser.add_argument("--hold-turns", type=int, default=2, help="hold turns to stay for before hanging up")
    args = parser.parse_args(argv)
    secrets = json.loads(Path(args.secrets).read_text())
    actions: list[CallerAction] = args.inputs
    phone = Phone(RequestsTransport(), args.base_url, secrets["TWILIO_AUTH_TOKEN"], secrets["TWILIO_ACCOUNT_SID"])
    try:
        call = phone.call(actions, dial_outcomes=args.dial_outcome, max_hold_turns=args.hold_turns)
    except requests.ConnectionError:
        print(f"nothing answers at {args.base_url}: start the line with 'python3 dev.py run'")
        return 1
    for step in call.steps:
        print(f"→ POST {step.url}  [{step.status}]")
    for heard in call.heard:
        print(f"  ({heard.language}) {heard.text}")
    for dial in call.dials:
        print(f"  dialled {len(dial.numbers)} number(s): {dial.outcome}")
    if call.ended_by == "on-hold":
        print("still on hold after the turns asked for; responders' phones ring in the local Twilio")
        print("stand-in (see its /_fake/state); answer one there with POST /_fake/calls/<sid>/advance")
    else:
        print(f"call ended: {call.ended_by}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
