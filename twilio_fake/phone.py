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
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin

import requests

from twilio_fake.signing import CallIdentity, gather_digits_params, gather_speech_params, signed_headers

TWIML_TYPES = ("text/xml", "application/xml", "text/html")
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

    def __init__(self, timeout: float = 15.0) -> None:
        self.session = requests.Session()
        self.timeout = timeout

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        reply = self.session.post(url, data=params, headers=headers, timeout=self.timeout)
        return HttpReply(reply.status_code, reply.headers.get("Content-Type", ""), reply.text)


class WsgiTransport:
    """A Flask test client posing as the network; the app still sees a full signed request."""

    def __init__(self, client: object) -> None:
        self.client = client

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> HttpReply:
        reply = self.client.post(url, data=params, headers=headers)  # type: ignore[attr-defined]
        return HttpReply(
            reply.status_code, reply.headers.get("Content-Type", ""), reply.get_data(as_text=True)
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
    """The transcript of one call: every request, every sentence heard, every dial."""

    identity: CallIdentity
    steps: list[Step] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    dials: list[Dialled] = field(default_factory=list)
    ended_by: str = ""  # "hangup", "end-of-twiml", "application-error", "caller-hung-up"

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
    ) -> None:
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
    ) -> PhoneCall:
        """Call the line and follow its TwiML until the call ends.

        ``caller`` answers each ``<Gather>`` in turn (running out means silence);
        ``dial_outcomes`` gives each ``<Dial>``'s ``DialCallStatus`` (default ``no-answer``).
        """
        identity = identity or self.identity()
        record = PhoneCall(identity)
        actions = list(caller)
        if callable(dial_outcomes):
            outcome_for = dial_outcomes
        else:
            outcomes = list(dial_outcomes)

            def outcome_for(_dial: Dialled) -> str:
                return outcomes.pop(0) if outcomes else "no-answer"

        url, params = self.base_url + path, identity.voice_params("ringing")
        while url:
            if len(record.steps) >= MAX_REQUESTS:
                raise AssertionError(f"call looped: more than {MAX_REQUESTS} webhook requests")
            if hang_up_after_requests is not None and len(record.steps) >= hang_up_after_requests:
                record.ended_by = "caller-hung-up"
                break
            twiml = self._fetch(record, url, params)
            if twiml is None:
                record.ended_by = "application-error"
                break
            url, params = self._run(record, twiml, url, actions, outcome_for)
        return record

    def _fetch(self, record: PhoneCall, url: str, params: dict[str, str]) -> ET.Element | None:
        reply = self.post(url, params)
        twiml = _parse_twiml(reply)
        record.steps.append(Step(url, params, reply.status, reply.content_type, twiml))
        if twiml is None and self.fallback_url and url != self.fallback_url:
            # Twilio requests the Fallback URL at once after a failed fetch (§6).
            fallback_params = {**params, "ErrorCode": "11200", "ErrorUrl": url}
            reply = self.post(self.fallback_url, fallback_params)
            twiml = _parse_twiml(reply)
            record.steps.append(
                Step(self.fallback_url, fallback_params, reply.status, reply.content_type, twiml)
            )
        return twiml

    def _run(
        self,
        record: PhoneCall,
        twiml: ET.Element,
        current_url: str,
        actions: list[CallerAction],
        outcome_for: Callable[[Dialled], str],
    ) -> tuple[str, dict[str, str]]:
        identity = record.identity
        for verb in twiml:
            if verb.tag == "Say":
                record.heard.append(_heard(verb))
            elif verb.tag == "Gather":
                record.heard.extend(_heard(child) for child in verb if child.tag == "Say")
                action = actions.pop(0) if actions else Silence()
                target = urljoin(current_url, verb.get("action") or current_url)
                if isinstance(action, Keys):
                    return target, gather_digits_params(identity, action.digits)
                if isinstance(action, Words):
                    return target, gather_speech_params(identity, action.speech, action.confidence)
                if verb.get("actionOnEmptyResult") == "true":
                    return target, identity.voice_params("in-progress")
            elif verb.tag == "Redirect":
                return urljoin(current_url, (verb.text or "").strip()), identity.voice_params("in-progress")
            elif verb.tag == "Dial":
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
                    }
                    extra["DialCallSid"] = "CA" + "0" * 32
                    if dialled.outcome == "completed":
                        extra["DialCallDuration"] = "42"
                    return urljoin(current_url, verb.get("action", "")), identity.voice_params(
                        "in-progress", **extra
                    )
            elif verb.tag in ("Hangup", "Reject"):
                record.ended_by = "hangup"
                return "", {}
        record.ended_by = "end-of-twiml"
        return "", {}


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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:5000")
    # Both append to one list, so "--press 2 --say suicide" answers the menus in that order.
    parser.add_argument(
        "--press", dest="inputs", type=Keys, action="append", default=[], help="keys for the next menu"
    )
    parser.add_argument(
        "--say", dest="inputs", type=Words, action="append", default=[], help="words for the next menu"
    )
    parser.add_argument("--dial-outcome", action="append", default=[], help="completed, no-answer, busy…")
    parser.add_argument("--secrets", default=str(Path("instance") / "development-secrets.json"))
    args = parser.parse_args(argv)
    secrets = json.loads(Path(args.secrets).read_text())
    actions: list[CallerAction] = args.inputs
    phone = Phone(
        RequestsTransport(), args.base_url, secrets["TWILIO_AUTH_TOKEN"], secrets["TWILIO_ACCOUNT_SID"]
    )
    try:
        call = phone.call(actions, dial_outcomes=args.dial_outcome)
    except requests.ConnectionError:
        print(f"nothing answers at {args.base_url}: start the line with 'python3 dev.py run'")
        return 1
    for step in call.steps:
        print(f"→ POST {step.url}  [{step.status}]")
    for heard in call.heard:
        print(f"  ({heard.language}) {heard.text}")
    for dial in call.dials:
        print(f"  dialled {len(dial.numbers)} number(s): {dial.outcome}")
    print(f"call ended: {call.ended_by}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
