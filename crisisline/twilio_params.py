"""Reading Twilio's webhook parameters safely: each value checked against its known shape.

A signed request is genuine, but its values still reach the database and the menus, so they
are checked here, at the edge: SIDs are two capitals and 32 hex digits, statuses come from
the documented sets, keypad digits are ``[0-9*#]``, numbers are ASCII digits of bounded
size ("²" passes ``str.isdigit()`` but ``int("²")`` raises), and free text is bounded and
free of NUL bytes (PostgreSQL refuses those). A value outside its shape is treated as absent.
Problems are logged by parameter name and kind, never with the value: it could be a phone
number or someone's words.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping

from flask import request

log = logging.getLogger(__name__)

SID = re.compile(r"[A-Z]{2}[0-9a-f]{32}")
ASCII_NUMBER = re.compile(r"[0-9]{1,10}")
DTMF = re.compile(r"[0-9*#]+")
# C0/C1 control characters except tab and newlines: never part of a real value.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

DB_INT_MAX = 2**31 - 1  # INTEGER columns on PostgreSQL
MAX_DIGITS = 32  # keypad input: our menus take one key; <Gather> never sends pages of them
MAX_SPEECH = 1000  # a spoken menu answer is a sentence or two
MAX_MEDIA = 10  # Twilio's limit of media per message

# https://www.twilio.com/docs/voice/twiml#callstatus-values
CALL_STATUSES = frozenset(
    {"queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled"}
)
# https://www.twilio.com/docs/voice/twiml/dial#dialcallstatus ("answered" after a conference)
DIAL_CALL_STATUSES = frozenset({"completed", "answered", "busy", "no-answer", "failed", "canceled"})
# https://www.twilio.com/docs/voice/twiml/conference#attributes-status-callback-event
CONFERENCE_EVENTS = frozenset(
    {
        "conference-start", "conference-end", "participant-join", "participant-leave", "participant-mute",
        "participant-unmute", "participant-hold", "participant-unhold", "participant-modify",
        "participant-speech-start", "participant-speech-stop", "announcement-end", "announcement-fail",
    }
)  # fmt: skip


def flaw(raw: str, *, limit: int = 64) -> str:
    """What is wrong with ``raw`` in words safe to log (never the value itself)."""
    if not raw:
        return "empty"
    if len(raw) > limit:
        return "too long"
    if "\x00" in raw:
        return "NUL byte"
    if CONTROL.search(raw):
        return "control characters"
    if not raw.isascii():
        return "non-ASCII"
    return "malformed"


def _ignored(name: str, raw: str, *, limit: int = 64) -> None:
    log.warning("ignored Twilio parameter %s: %s", name, flaw(raw, limit=limit))


def sid(form: Mapping[str, str], name: str, prefix: str | None = None) -> str | None:
    """A Twilio SID (``CA`` + 32 hex digits), or None when absent or malformed."""
    raw = form.get(name)
    if raw is None:
        return None
    if SID.fullmatch(raw) and (prefix is None or raw.startswith(prefix)):
        return raw
    _ignored(name, raw)
    return None


def call_sid(form: Mapping[str, str]) -> str | None:
    return sid(form, "CallSid", "CA")


def choice(form: Mapping[str, str], name: str, allowed: frozenset[str]) -> str | None:
    """The value if it is one of ``allowed``; None when absent or anything else."""
    raw = form.get(name)
    if raw is None:
        return None
    if raw in allowed:
        return raw
    _ignored(name, raw)
    return None


def call_status(form: Mapping[str, str], name: str = "CallStatus") -> str | None:
    return choice(form, name, CALL_STATUSES)


def natural(raw: str | None, *, highest: int = DB_INT_MAX) -> int | None:
    """A non-negative whole number in ASCII digits, at most ``highest``; else None."""
    if raw is None:
        return None
    raw = raw.strip()
    if not ASCII_NUMBER.fullmatch(raw):
        return None
    value = int(raw)
    return value if value <= highest else None


def number(form: Mapping[str, str], name: str, *, highest: int = DB_INT_MAX) -> int | None:
    """A form field such as ``SequenceNumber`` or ``CallDuration`` as an int, or None."""
    raw = form.get(name)
    value = natural(raw, highest=highest)
    if value is None and raw:
        _ignored(name, raw)
    return value


def count(form: Mapping[str, str], name: str, *, highest: int) -> int:
    """A count such as ``NumMedia``: 0 when absent or malformed, at most ``highest``."""
    raw = form.get(name)
    if raw is None or raw == "":
        return 0
    value = natural(raw, highest=10**9)
    if value is None:
        _ignored(name, raw)
        return 0
    return min(value, highest)


def digits(form: Mapping[str, str], name: str = "Digits") -> str:
    """Keypad input: ``[0-9*#]`` only, at most ``MAX_DIGITS``; "" when absent or malformed
    (a menu then asks again rather than guessing what a key was meant to be)."""
    raw = form.get(name)
    if raw is None:
        return ""
    value = raw.strip()
    if value and not DTMF.fullmatch(value):
        _ignored(name, raw, limit=MAX_DIGITS)
        return ""
    return value[:MAX_DIGITS]


def text(form: Mapping[str, str], name: str, *, limit: int) -> str:
    """Free text Twilio passes on (a speech transcript, a label): control characters
    removed, whitespace trimmed, at most ``limit`` characters."""
    raw = form.get(name)
    if raw is None:
        return ""
    return CONTROL.sub("", raw).strip()[:limit]


def query_id(name: str) -> int | None:
    """A row id from our own URL's query string (``?transfer=12``), or None."""
    value = natural(request.args.get(name))
    return value if value else None


def query_number(name: str, default: int, *, lowest: int = 1, highest: int = DB_INT_MAX) -> int:
    """A small counter from our own URL (``?attempt=2``), clamped to ``[lowest, highest]``."""
    value = natural(request.args.get(name))
    return default if value is None else min(max(value, lowest), highest)


def message_key(raw_sid: str) -> str:
    """The key an inbound text is stored (and deduplicated) under: its ``MessageSid``, or for
    a malformed one a digest of it, so the text is still kept and a repeat still matches."""
    if SID.fullmatch(raw_sid):
        return raw_sid
    log.warning("Twilio parameter MessageSid: %s; the text is kept under its digest", flaw(raw_sid))
    return "malformed:" + hashlib.sha256(raw_sid.encode("utf-8", "surrogatepass")).hexdigest()[:48]
