"""A browser phone served by the Twilio stand-in: call, text and answer the line from a web page.

``dev.py run`` (no Twilio account) serves it at ``<stand-in>/phone/``. Each pane of the page is
one phone with its own number: a caller's, a texter's, or a counselor's or co-responder unit's
from the published routing. A phone can call the line, rings when the line calls its number,
and texts and receives texts. The page only shows state and sends what the person does (keys,
words, answer, hang up); the TwiML is followed here, server-side, by :class:`twilio_fake.phone.Phone`
(the same phone the tests and the CLI use) inside the stand-in's own process, so every webhook is
signed and every leg, conference and text is the stand-in's own.

Timing follows a phone: a ``<Gather>`` listens while its sentences are spoken (about 2.5 words a
second), its ``<Pause>`` lengths, then its ``timeout``; with "more time at menus" three times as
long. Keys pressed when nothing listens are lost, as on a phone. Hold turns are paced by their
``<Pause>``; conversation in a conference is typed, and shown to everyone in the room.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import phonenumbers
import requests
import yaml
from flask import Blueprint, Flask, abort, jsonify, render_template, request
from flask.typing import ResponseReturnValue

from twilio_fake.phone import (
    CallerAction,
    Dialled,
    Keys,
    Phone,
    PhoneCall,
    RequestsTransport,
    Silence,
    Words,
)
from twilio_fake.rest_api import (
    TERMINAL_CALL_STATUSES,
    UNANSWERED_CALL_STATUSES,
    CallRecord,
    FakeTwilio,
    FakeTwilioError,
    _normalize,
)
from twilio_fake.signing import signed_headers, sms_params

log = logging.getLogger(__name__)

WORDS_PER_SECOND = 2.5  # a text-to-speech voice says about 150 words a minute
PATIENT_FACTOR = 3.0  # "more time at menus"
DEFAULT_GATHER_TIMEOUT = 5.0  # Twilio's default <Gather timeout>
PLAY_SECONDS = 20.0  # a <Play> of hold music: the clip length the routing asks for
IDLE_SECONDS = 600.0  # a phone its page stopped asking about is put away (and hangs up)
TICK = 0.1
ROLES = ("caller", "texter", "staff")
FIRST_NUMBER = {"caller": 201, "texter": 301, "staff": 401}  # +1 312 555 02xx, 03xx, 04xx


@dataclass(frozen=True)
class StaffMember:
    """A phone the line may ring or text: a counselor, a co-responder unit or a supervisor."""

    name: str
    number: str  # E.164
    kind: str  # counselor | unit | supervisor
    languages: tuple[str, ...] = ()


def staff_in(document: dict[str, Any]) -> list[StaffMember]:
    """The people of a routing document (its YAML as loaded), with E.164 numbers."""
    region = str((document.get("line") or {}).get("region") or "US")
    found: list[StaffMember] = []
    for key, kind in (("counselors", "counselor"), ("co_responder_units", "unit"), ("supervisors", "supervisor")):
        for person in document.get(key) or []:
            try:
                parsed = phonenumbers.parse(str(person.get("phone", "")), region)
            except phonenumbers.NumberParseException:
                continue
            number = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            languages = tuple(str(code) for code in person.get("languages") or ())
            found.append(StaffMember(str(person.get("name") or person.get("id")), number, kind, languages))
    return found


def published_staff() -> list[StaffMember]:
    """The staff of the line's published routing, read from its database the way the line reads
    it (same settings from the environment); the example routing file when nothing is published.

    The line's modules are imported here only: the stand-in runs without them otherwise.
    """
    from sqlalchemy import create_engine, make_url, select
    from sqlalchemy.exc import SQLAlchemyError

    from crisisline.models import RoutingVersion
    from crisisline.privacy import Vault
    from crisisline.settings import DEFAULT_ROUTING_FILE, Settings
    from routing.store import SEAL_CONTEXT

    settings = Settings.from_env()
    url = make_url(settings.database_url)
    sealed = None
    # Opening a SQLite file that is not there would create it: the line has not run yet.
    if not (url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists()):
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                newest = select(RoutingVersion.sealed_source).order_by(RoutingVersion.id.desc()).limit(1)
                sealed = connection.execute(newest).scalar()
        except SQLAlchemyError as error:  # not migrated yet: the routing it will publish first
            log.warning("web phone: no published routing to read (%s)", type(error).__name__)
        finally:
            engine.dispose()
    source = (
        Vault(settings.data_encryption_key).open(sealed, context=SEAL_CONTEXT)
        if sealed
        else DEFAULT_ROUTING_FILE.read_text()
    )
    return staff_in(yaml.safe_load(source) or {})


def _seconds(value: str | None, default: float) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default


def speaking_seconds(element: ET.Element) -> float:
    """How long the verbs inside ``element`` take to play: its ``<Say>``s and ``<Pause>``s."""
    total = 0.0
    for child in element:
        if child.tag == "Say":
            total += 0.3 + len((child.text or "").split()) / WORDS_PER_SECOND
        elif child.tag == "Pause":
            total += _seconds(child.get("length"), 1.0)
        elif child.tag == "Play":
            total += PLAY_SECONDS
    return total


def pause_after(twiml: ET.Element | None) -> float:
    """The quiet a hold turn ends with (its top-level ``<Pause>``/``<Play>``): the hold pace."""
    if twiml is None:
        return 1.0
    seconds = sum(
        _seconds(verb.get("length"), 1.0) if verb.tag == "Pause" else PLAY_SECONDS
        for verb in twiml
        if verb.tag in ("Pause", "Play")
    )
    return max(1.0, seconds)


def _in_hold_loop(record: PhoneCall) -> bool:
    """Whether the document being played is a turn of the line's hold loop (it is fetched from,
    or redirects to, ``/voice/hold``: the path the phone counts hold turns by)."""
    if not record.steps:
        return False
    step = record.steps[-1]
    redirects = [verb.text or "" for verb in step.twiml.iter("Redirect")] if step.twiml is not None else []
    return any("/voice/hold" in url for url in [step.url, *redirects])


class _HungUp(Exception):
    """The person pressed "hang up" while the phone was following TwiML."""


class _Gone(Exception):
    """The leg ended under the phone (the line hung it up, or the stand-in was reset)."""


class PhoneSession:
    """One phone of the page, with a thread that follows its calls (one at a time)."""

    def __init__(self, owner: WebPhone, role: str, number: str, name: str) -> None:
        self.owner = owner
        self.id = secrets.token_hex(6)
        self.role = role
        self.number = number
        self.name = name
        self.patient = False
        self.state = "idle"  # idle | calling | ringing | listening | holding | connected
        self.transcript: list[dict[str, Any]] = []
        self.texts: list[dict[str, Any]] = []
        self.listening: dict[str, Any] | None = None
        self.ringing_sid: str | None = None
        self.record: PhoneCall | None = None
        self.last_seen = time.monotonic()
        self._cond = threading.Condition(threading.RLock())
        self._commands: list[str] = []
        self._digits = ""
        self._last_key = 0.0
        self._words: list[str] = []
        self._stars = 0
        self._hangup = False
        self._closed = False
        self._heard_shown = 0
        self._steps_shown = 0
        self._handled_legs: set[str] = set()
        self._seen_messages: set[str] = set()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"web-phone-{self.id}")

    def start(self) -> PhoneSession:
        self._thread.start()
        return self

    # ---- what the page asks ---------------------------------------------------------------

    def note(self, kind: str, text: str, **extra: str) -> None:
        with self._cond:
            self.transcript.append({"kind": kind, "text": text, **extra})

    def command(self, name: str) -> dict[str, Any]:
        """``call``, ``answer``, ``decline`` or ``hangup``; refused when it makes no sense now."""
        with self._cond:
            if name == "hangup":
                if self.state == "ringing":
                    self._commands.append("decline")
                elif self.state != "idle":
                    self._hangup = True
                else:
                    return {"ok": False, "message": "There is no call to hang up."}
            elif name == "call" and (self.state != "idle" or "call" in self._commands):
                return {"ok": False, "message": "This phone is already on a call."}
            elif name in ("answer", "decline") and self.state != "ringing":
                return {"ok": False, "message": "This phone is not ringing."}
            else:
                self._commands.append(name)
            self._cond.notify_all()
        return {"ok": True}

    def keys(self, keys: str) -> dict[str, Any]:
        """Keypad presses: heard by a listening ``<Gather>``; ``*`` leaves a conference held by
        ``hangupOnStar`` (the counselor menu); otherwise lost, as on a phone."""
        keys = "".join(key for key in keys if key in "0123456789*#")
        if not keys:
            return {"ok": False, "message": "Keys are 0-9, * and #."}
        with self._cond:
            self.note("you", f"pressed {keys}")
            listening = self.listening
            if listening is not None and "dtmf" in listening["input"]:
                self._digits += keys
                self._last_key = time.monotonic()
                self._cond.notify_all()
                return {"ok": True}
            if self.state == "connected" and "*" in keys:
                self._stars += 1
                self._cond.notify_all()
                return {"ok": True}
        self.note("system", "(nobody was listening for keys just then)")
        return {"ok": False, "message": "Nobody is listening for keys now."}

    def words(self, text: str) -> dict[str, Any]:
        """Spoken words: a ``SpeechResult`` for a menu that listens for speech, or talk to the
        people in the conference."""
        text = " ".join(text.split())[:500]
        if not text:
            return {"ok": False, "message": "Say something first."}
        with self._cond:
            listening = self.listening
            if listening is not None and "speech" in listening["input"]:
                self.note("you", f'said "{text}"')
                self._words.append(text)
                self._cond.notify_all()
                return {"ok": True}
            conference = self._conference_sid() if self.state == "connected" else None
        if conference is not None:
            self.owner.say_in_room(self, conference, text)
            return {"ok": True}
        if listening is not None:
            self.note("you", f'said "{text}"')
            self.note("system", "(this menu listens for keys only)")
            return {"ok": False, "message": "This menu listens for keys only."}
        self.note("you", f'said "{text}"')
        self.note("system", "(nobody was listening just then)")
        return {"ok": False, "message": "Nobody is listening now."}

    def send_text(self, body: str) -> dict[str, Any]:
        """Text the line from this phone's number, signed as Twilio delivers it (after Twilio's
        own handling of STOP/START); the line's TwiML reply is shown like any text back."""
        body = body.strip()[:1600]
        if not body:
            return {"ok": False, "message": "Write something first."}
        owner = self.owner
        self.sync_texts()
        with self._cond:
            self.texts.append({"mine": True, "body": body, "status": "sent"})
        owner.fake.receive_keyword(self.number, body)
        url = owner.line_url + "/sms/incoming"
        params = sms_params(owner.fake.account_sid, self.number, owner.line_number, body)
        headers = signed_headers(owner.fake.auth_token, url, params, voice=False)
        try:
            reply = requests.post(url, data=params, headers=headers, timeout=15)
        except requests.RequestException as error:
            self.note("system", f"the line did not answer at {owner.line_url} ({type(error).__name__})")
            return {"ok": False, "message": "The line did not answer."}
        if reply.status_code == 200:
            try:  # Twilio sends the replies the line's TwiML holds; they show below like any text
                owner.fake.reply_with_twiml(self.number, owner.line_number, reply.text)
            except FakeTwilioError:
                self.note("system", "the line answered with something that is not TwiML")
        self.sync_texts()
        return {"ok": True}

    def sync_texts(self) -> None:
        """Add the texts the line sent this number over REST since the last look."""
        fake = self.owner.fake
        with fake._lock:
            sent = [m for m in fake.messages.values() if _normalize(m.to) == self.number]
            fresh = [(m.sid, m.body, m.status) for m in sent if m.sid not in self._seen_messages]
        with self._cond:
            for sid, body, status in fresh:
                self._seen_messages.add(sid)
                self.texts.append({"mine": False, "body": body, "status": status})

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._hangup = self.state not in ("idle", "ringing")
            self._cond.notify_all()

    def as_json(self) -> dict[str, Any]:
        self.last_seen = time.monotonic()
        self.sync_texts()
        with_whom = self.owner.connected_with(self) if self.state == "connected" else []
        with self._cond:
            listening = dict(self.listening) if self.listening else None
            if listening is not None:
                listening["seconds_left"] = round(max(0.0, listening.pop("deadline") - time.monotonic()), 1)
                listening["digits"] = self._digits
            return {
                "id": self.id,
                "role": self.role,
                "number": self.number,
                "name": self.name,
                "patient": self.patient,
                "state": self.state,
                "call_sid": self.record.identity.call_sid if self.record is not None else None,
                "listening": listening,
                "with": with_whom,
                "transcript": list(self.transcript),
                "texts": list(self.texts),
            }

    # ---- the phone's thread ---------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        with self._cond:
            self.state = state

    def _take_command(self) -> str | None:
        with self._cond:
            if not self._commands:
                self._cond.wait(0.2)
            return self._commands.pop(0) if self._commands else None

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed or time.monotonic() - self.last_seen > IDLE_SECONDS:
                    break
            try:
                command = self._take_command()
                if self.ringing_sid is not None:
                    self._while_ringing(command)
                elif command == "call":
                    self._call_the_line()
                else:
                    self._look_for_ring()
            except Exception as error:  # one phone's trouble must not end its thread
                log.exception("web phone %s failed", self.id)
                self.note("system", f"this phone ran into a problem: {type(error).__name__}")
                self._drop_leg()
                self._end_call()
        self.owner.forget(self)

    def _phone(self) -> Phone:
        owner = self.owner
        return Phone(
            RequestsTransport(timeout=20), owner.line_url, owner.fake.auth_token, owner.fake.account_sid,
            owner.line_number, fake=owner.fake, listen=self._listen,
        )  # fmt: skip

    def _look_for_ring(self) -> None:
        fake = self.owner.fake
        with fake._lock:
            legs = [
                leg
                for leg in fake.calls.values()
                if leg.direction == "outbound-api"
                and leg.status in UNANSWERED_CALL_STATUSES
                and leg.sid not in self._handled_legs
                and _normalize(leg.to) == self.number
                and not fake.seconds_until_dialled(leg)  # still in Twilio's CPS queue: not ringing yet
            ]
        if not legs:
            return
        leg = legs[0]
        self._handled_legs.add(leg.sid)
        with self._cond:
            self.ringing_sid = leg.sid
            self.state = "ringing"
            self._hangup = False
        self.note("ring", "ring ring: the line is calling" + (f" from {leg.from_}" if leg.from_ else ""))

    def _while_ringing(self, command: str | None) -> None:
        sid = self.ringing_sid
        assert sid is not None
        status = self._status(sid)
        if command == "answer" and status in UNANSWERED_CALL_STATUSES:
            self._answer(sid)
        elif command == "decline" and status in UNANSWERED_CALL_STATUSES:
            self.owner.fake.advance_call(sid, "busy")  # a declined mobile reports busy
            self.note("system", "you declined the call")
            self._end_call()
        elif status not in UNANSWERED_CALL_STATUSES:
            self.note("system", f"missed call ({status or 'gone'})")
            self._end_call()

    def _status(self, sid: str) -> str | None:
        try:
            return self.owner.fake.get_call(sid).status
        except FakeTwilioError:
            return None

    def _call_the_line(self) -> None:
        phone = self._phone()
        identity = phone.identity(self.number)
        self.record = PhoneCall(identity)
        with self._cond:
            self.state = "calling"
            self._hangup = False
        self.note("system", f"calling the line ({self.owner.line_number})")
        try:
            record = phone.call((), identity=identity, max_hold_turns=0, dial_outcomes=self._dial_outcome)
            self._follow(phone, record)
        except _HungUp:
            phone.hang_up(self.record)
            self.note("system", "you hung up")
        except _Gone:
            self.note("system", "the call ended")
        except requests.RequestException as error:
            self.note("system", f"the line did not answer at {self.owner.line_url} ({type(error).__name__})")
            phone.hang_up(self.record)
        self._end_call()

    def _answer(self, sid: str) -> None:
        phone = self._phone()
        self._set_state("calling")
        self.note("system", "you answered")
        try:
            record = phone.answer(sid)
            self.record = record
            self._follow(phone, record)
        except _HungUp:
            if self.record is not None:
                phone.hang_up(self.record)
            else:
                self.owner.fake.advance_call(sid, "completed")
            self.note("system", "you hung up")
        except _Gone:
            self.note("system", "the call ended")
        except requests.RequestException as error:
            self.note("system", f"the line did not answer at {self.owner.line_url} ({type(error).__name__})")
            self.owner.fake.advance_call(sid, "completed")
        self._end_call()

    def _dial_outcome(self, dialled: Dialled) -> str:
        # The stand-in does not ring numbers a <Dial><Number> calls (the backup line): it answers.
        self.note("system", f"the call is put through to {', '.join(dialled.numbers)} (it answers)")
        return "completed"

    def _drop_leg(self) -> None:
        """End this phone's leg at the stand-in, so nothing is left ringing or talking."""
        sid = self.record.identity.call_sid if self.record is not None else self.ringing_sid
        if sid is not None and self._status(sid) not in (*TERMINAL_CALL_STATUSES, None):
            with contextlib.suppress(FakeTwilioError):  # forgotten meanwhile (a reset)
                self.owner.fake.advance_call(sid, "completed")

    def _end_call(self) -> None:
        with self._cond:
            if self.record is not None:
                self._show(self.record)
            self.state = "idle"
            self.listening = None
            self.ringing_sid = None
            self.record = None
            self._hangup = False
            self._digits = ""
            self._words.clear()
            self._stars = 0
            self._heard_shown = self._steps_shown = 0
        self.note("end", "call ended")

    def _follow(self, phone: Phone, record: PhoneCall) -> None:
        """Stay with a call until it ends: hold turns at the line's pace, then the conference."""
        self.record = record
        while True:
            self._show(record)
            if record.finished:
                return
            self._check(record)
            if record.ended_by == "on-hold":
                self._set_state("holding")
                if record.hold_turns > 0:
                    self._wait(pause_after(record.last_twiml), record)
                phone.resume(record, max_hold_turns=1, dial_outcomes=self._dial_outcome)
            elif record.ended_by == "in-conference":
                self._set_state("connected")
                with self._cond:
                    stars, self._stars = self._stars, 0
                    if not stars:
                        self._cond.wait(0.25)
                if stars and phone.press_star(record):
                    self.note("system", "you left the room with * (the caller stays)")
                phone.resume(record, max_hold_turns=0, dial_outcomes=self._dial_outcome)
            else:
                return

    def _wait(self, seconds: float, record: PhoneCall) -> None:
        """Quiet on the line (a hold pause): until it is over or the line moves the call."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and not self._moved(record):
            self._check(record)
            with self._cond:
                self._cond.wait(TICK)

    def _check(self, record: PhoneCall) -> None:
        with self._cond:
            if self._hangup:
                raise _HungUp
        if self._status(record.identity.call_sid) in (*TERMINAL_CALL_STATUSES, None):
            raise _Gone

    def _moved(self, record: PhoneCall) -> bool:
        try:
            return len(self.owner.fake.get_call(record.identity.call_sid).redirects) > record.redirects_seen
        except FakeTwilioError:
            return True

    def _listen(self, record: PhoneCall, gather: ET.Element) -> CallerAction:
        """A ``<Gather>`` listens: for keys and/or words from the page, until its time is up."""
        self.record = record
        inputs = (gather.get("input") or "dtmf").split()
        num_digits = int(_seconds(gather.get("numDigits"), 0))
        finish_on = gather.get("finishOnKey", "#")
        timeout = _seconds(gather.get("timeout"), DEFAULT_GATHER_TIMEOUT)
        window = (speaking_seconds(gather) + timeout) * (PATIENT_FACTOR if self.patient else 1.0)
        deadline = time.monotonic() + window
        with self._cond:  # the prompts appear together with "listening": a key pressed on seeing them counts
            self._show(record)
            self._digits, self._words = "", []
            # A hold turn listens too (for the callback key), under its music: still "holding".
            self.state = "holding" if _in_hold_loop(record) else "listening"
            self.listening = {"input": inputs, "num_digits": num_digits, "deadline": deadline}
        try:
            while True:
                with self._cond:
                    if self._hangup:
                        raise _HungUp
                    if self._words:
                        return Words(self._words.pop(0))
                    digits, now = self._digits, time.monotonic()
                    if digits:
                        if finish_on and finish_on in digits:
                            return Keys(digits.split(finish_on, 1)[0])
                        if (num_digits and len(digits) >= num_digits) or now - self._last_key > timeout:
                            return Keys(digits[:num_digits] if num_digits else digits)
                    elif now > deadline:
                        return Silence()
                    self._cond.wait(TICK)
                if self._moved(record):
                    return Silence()  # a REST redirect took the call elsewhere: Twilio runs that
                self._check(record)
        finally:
            with self._cond:
                self.listening = None
                self.state = "calling"

    def _show(self, record: PhoneCall) -> None:
        """Copy what the phone heard, requested and dialled into the page's transcript."""
        with self._cond:
            for step in record.steps[self._steps_shown :]:
                path = "/" + step.url.split("://", 1)[-1].split("/", 1)[-1] if step.url else "(inline TwiML)"
                self.transcript.append({"kind": "request", "text": f"POST {path.split('?', 1)[0]} → {step.status}"})
            self._steps_shown = len(record.steps)
            for heard in record.heard[self._heard_shown :]:
                self.transcript.append(
                    {"kind": "say", "text": heard.text, "language": heard.language, "voice": heard.voice}
                )
            self._heard_shown = len(record.heard)

    def _conference_sid(self) -> str | None:
        record = self.record
        if record is None:
            return None
        try:
            return self.owner.fake.get_call(record.identity.call_sid).conference_sid
        except FakeTwilioError:
            return None


class WebPhone:
    """The browser phone's phones and the JSON endpoints the page uses (``blueprint()``)."""

    def __init__(
        self,
        fake: FakeTwilio,
        line_url: str,
        line_number: str,
        *,
        directory: Callable[[], list[StaffMember]] = published_staff,
        directory_cache_seconds: float = 3.0,
    ) -> None:
        self.fake = fake
        self.line_url = line_url.rstrip("/")
        self.line_number = _normalize(line_number)
        self._directory = directory
        self._directory_cache_seconds = directory_cache_seconds
        self._directory_read: tuple[float, list[StaffMember], str | None] | None = None
        self._lock = threading.Lock()
        self.phones: dict[str, PhoneSession] = {}

    # ---- phones ---------------------------------------------------------------------------

    def directory(self) -> tuple[list[StaffMember], str | None]:
        """The published staff (re-read every few seconds), and why it could not be read."""
        with self._lock:
            cached = self._directory_read
        if cached is not None and time.monotonic() - cached[0] < self._directory_cache_seconds:
            return cached[1], cached[2]
        problem = None
        try:
            staff = self._directory()
        except Exception as error:  # the page still works with a typed number
            log.warning("web phone: the published routing could not be read: %s", type(error).__name__)
            staff, problem = [], f"the published routing could not be read ({type(error).__name__})"
        with self._lock:
            self._directory_read = (time.monotonic(), staff, problem)
        return staff, problem

    def add_phone(self, role: str, number: str | None = None, name: str | None = None) -> PhoneSession:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if number:
            parsed = _normalize(number.strip())
            if not parsed.startswith("+") or parsed == self.line_number:
                raise ValueError("a phone number in E.164 form, like +13125550104 (not the line's own)")
            number = parsed
        else:
            number = self._free_number(role)
        staff = {member.number: member for member in self.directory()[0]}
        if not name:
            member = staff.get(number)
            name = member.name if member else {"caller": "Caller", "texter": "Texter", "staff": number}[role]
        session = PhoneSession(self, role, number, name)
        with self._lock:
            self.phones[session.id] = session
        log.info("web phone %s added (%s)", session.id, role)
        return session.start()

    def _free_number(self, role: str) -> str:
        with self._lock:
            taken = {session.number for session in self.phones.values()}
        for last in range(FIRST_NUMBER[role], FIRST_NUMBER[role] + 99):
            number = f"+1312555{last:04d}"
            if number not in taken:
                return number
        raise ValueError("too many phones")

    def forget(self, session: PhoneSession) -> None:
        with self._lock:
            self.phones.pop(session.id, None)

    def phone(self, phone_id: str) -> PhoneSession:
        with self._lock:
            session = self.phones.get(phone_id)
        if session is None:
            abort(404, "no such phone (put away after 10 idle minutes, or the stand-in restarted)")
        return session

    # ---- who is connected to whom ---------------------------------------------------------

    def who(self, leg: CallRecord | None, *, for_staff: bool = False) -> str:
        """A leg as a person: the caller (their phone's name), or the staff member rung."""
        if leg is None:
            return "someone"
        if leg.direction == "inbound":
            number = _normalize(leg.from_)
            if for_staff:
                return "the caller"
        else:
            number = _normalize(leg.to)
        names = {member.number: member.name for member in self.directory()[0]}
        with self._lock:
            names.update({s.number: s.name for s in self.phones.values() if s.role != "staff"})
        name = names.get(number)
        return f"{name} ({number})" if name else number

    def connected_with(self, session: PhoneSession) -> list[str]:
        sid = session.record.identity.call_sid if session.record is not None else None
        conference_sid = session._conference_sid()
        if sid is None or conference_sid is None:
            return []
        with self.fake._lock:
            conference = self.fake.conferences.get(conference_sid)
            others = [
                self.fake.calls.get(p.call_sid)
                for p in (conference.participants.values() if conference else ())
                if p.joined and p.call_sid != sid
            ]
        return [self.who(leg, for_staff=session.role == "staff") for leg in others]

    def say_in_room(self, speaker: PhoneSession, conference_sid: str, text: str) -> None:
        """Talk in a conference (typed): everyone in the room reads it."""
        with self._lock:
            sessions = list(self.phones.values())
        for session in sessions:
            if session is speaker:
                session.note("you", f'said "{text}"')
            elif session.state == "connected" and session._conference_sid() == conference_sid:
                session.note("talk", text, who=speaker.name)

    def board(self) -> dict[str, Any]:
        """Rooms in use and phones ringing, for the page's "who is connected" panel."""
        with self.fake._lock:
            rooms = [
                (conference.friendly_name, conference.status,
                 [self.fake.calls.get(p.call_sid) for p in conference.participants.values() if p.joined])
                for conference in self.fake.conferences.values()
                if conference.status != "completed" and any(p.joined for p in conference.participants.values())
            ]  # fmt: skip
            ringing = [
                leg
                for leg in self.fake.calls.values()
                if leg.direction == "outbound-api" and leg.status in UNANSWERED_CALL_STATUSES
            ]
            with_the_line = [
                leg
                for leg in self.fake.calls.values()
                if leg.direction == "inbound" and leg.status == "in-progress" and leg.conference_sid is None
            ]
        return {
            "rooms": [
                {"name": name, "status": status, "people": [self.who(leg) for leg in legs]}
                for name, status, legs in rooms
            ],
            "ringing": [self.who(leg) for leg in ringing],
            "with_the_line": [self.who(leg) for leg in with_the_line],
        }

    # ---- HTTP ------------------------------------------------------------------------------

    def blueprint(self) -> Blueprint:
        """The page at ``/phone/`` and its JSON endpoints under ``/phone/api/``."""
        bp = Blueprint("web_phone", __name__, template_folder="templates", static_folder="static",
                       static_url_path="/static", url_prefix="/phone")  # fmt: skip

        def form() -> dict[str, Any]:
            data = request.get_json(silent=True)
            return data if isinstance(data, dict) else request.form.to_dict()

        @bp.get("/")
        def page() -> ResponseReturnValue:
            return render_template("web_phone.html", line_number=self.line_number, line_url=self.line_url)

        @bp.get("/api/directory")
        def directory() -> ResponseReturnValue:
            staff, problem = self.directory()
            return jsonify(
                {
                    "line_number": self.line_number,
                    "line_url": self.line_url,
                    "staff": [asdict(member) for member in staff],
                    "problem": problem,
                }
            )

        @bp.post("/api/phones")
        def add() -> ResponseReturnValue:
            data = form()
            try:
                session = self.add_phone(str(data.get("role", "caller")), data.get("number") or None,
                                         data.get("name") or None)  # fmt: skip
            except ValueError as error:
                return jsonify({"ok": False, "message": str(error)}), 400
            session.patient = bool(data.get("patient"))
            return jsonify(session.as_json()), 201

        @bp.get("/api/state")
        def state() -> ResponseReturnValue:
            phones = []
            for phone_id in request.args.getlist("phone"):
                with self._lock:
                    session = self.phones.get(phone_id)
                phones.append(session.as_json() if session else {"id": phone_id, "state": "gone"})
            return jsonify({"phones": phones, "board": self.board()})

        @bp.get("/api/phones/<phone_id>")
        def one(phone_id: str) -> ResponseReturnValue:
            return jsonify(self.phone(phone_id).as_json())

        @bp.delete("/api/phones/<phone_id>")
        def remove(phone_id: str) -> ResponseReturnValue:
            self.phone(phone_id).close()
            return "", 204

        @bp.post("/api/phones/<phone_id>/<action>")
        def act(phone_id: str, action: str) -> ResponseReturnValue:
            session = self.phone(phone_id)
            data = form()
            if action in ("call", "answer", "decline", "hangup"):
                result = session.command(action)
            elif action == "keys":
                result = session.keys(str(data.get("keys", "")))
            elif action == "words":
                result = session.words(str(data.get("words", "")))
            elif action == "text":
                result = session.send_text(str(data.get("body", "")))
            elif action == "settings":
                session.patient = str(data.get("patient", "")).lower() in ("1", "true", "on", "yes")
                result = {"ok": True}
            else:
                abort(404)
            return jsonify({**result, "phone": session.as_json()}), 200 if result.get("ok") else 409

        return bp


def add_web_phone(app: Flask, web_phone: WebPhone) -> None:
    """Serve ``web_phone`` from the stand-in's app at ``/phone/``."""
    app.register_blueprint(web_phone.blueprint())
    app.config["WEB_PHONE"] = web_phone
