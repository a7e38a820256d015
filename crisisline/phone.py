"""Phone numbers: parsed with ``phonenumbers``, E.164 inside, never in logs."""

from __future__ import annotations

import logging
import re

import phonenumbers

# Twilio sends these instead of a number when caller ID is withheld.
WITHHELD_CALLER_IDS = frozenset({"anonymous", "unknown", "private", "restricted", "unavailable"})
# ...or these, the same words spelled on a keypad (ANONYMOUS, RESTRICTED, UNAVAILABLE,
# UNKNOWN, BLOCKED): shaped like numbers, but nobody can be called back on them.
WITHHELD_KEYPAD_IDS = frozenset({"+266696687", "+7378742833", "+86282452253", "+8656696", "+2562533"})
# E.164: "+", a country code that does not start with 0, at most 15 digits in all. Below 8
# digits nothing Twilio delivers is a real subscriber number.
PLAUSIBLE_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
MAX_RAW_LENGTH = 64  # longer is not a caller ID; phonenumbers is not asked to read it


class InvalidPhoneNumber(ValueError):
    """Text that is not a valid, dialable phone number."""


def to_e164(raw: str, default_region: str = "US") -> str:
    """Normalise ``raw`` to E.164 (``+14155550100``) or raise :class:`InvalidPhoneNumber`.
    An extension ("x 42", "ext. 42") is dropped: E.164 has none (see ``extension_of``)."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as error:
        raise InvalidPhoneNumber("not a phone number") from error
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def extension_of(raw: str, default_region: str = "US") -> str:
    """The extension ``raw`` names ("" if none), which the line cannot dial: dialled, the main
    number would ring."""
    try:
        return phonenumbers.parse(raw, default_region).extension or ""
    except phonenumbers.NumberParseException:
        return ""


def caller_number(raw_from: str | None) -> str | None:
    """The caller's or texter's E.164 number from Twilio's ``From``, or None when withheld
    or not a number.

    Lenient on purpose: a number Twilio delivered from can be replied to and called back even
    when libphonenumber does not know it (a new area code, some international ranges), so a
    plausible E.164 number is accepted as it is. Staff numbers use the strict :func:`to_e164`.
    """
    if not raw_from or len(raw_from) > MAX_RAW_LENGTH:
        return None
    raw = raw_from.strip()
    if raw.lower() in WITHHELD_CALLER_IDS or raw in WITHHELD_KEYPAD_IDS:
        return None
    if not raw.isascii() or not raw.isprintable() or raw.startswith(("client:", "sip:")):
        return None
    try:
        number = to_e164(raw)
    except InvalidPhoneNumber:
        return raw if PLAUSIBLE_E164.fullmatch(raw) else None
    return None if number in WITHHELD_KEYPAD_IDS else number


# The region national numbers in a log line are read in when no line's region is given: the
# app passes its own (``DEFAULT_REGION``), as callers there write their numbers the local way.
LOG_REGION = "US"
# After the country code: digits in groups split by one space, hyphen or "%20", an area code
# perhaps in brackets, or the "(0)" many countries write for the trunk prefix dropped when
# dialling from abroad ("+44 (0)7700 900123", "+61 (0) 412 345 678").
_GROUPS = r"(?:(?:[ \-]|%20)?\(0\)(?:[ \-]|%20)?[0-9]+|(?:[ \-]|%20)\(?[0-9]+\)?|\([0-9]+\))*"
# A "+" (or "%2B", as it is in a URL's query string: urllib3 logs ``Calls.json?To=%2B1...``),
# a digit 1-9, then the groups: "+13125550142", "%2B13125550142", "+44 7700 900123",
# "+1 (312) 555-0142". Masked from 8 digits on, valid or not (caller_number accepts numbers
# libphonenumber does not know). Timestamps' offsets ("+00:00", "+10:00"), durations and ids
# have no such shape.
NUMBER_IN_TEXT = re.compile(r"(?:\+|%2[Bb])[1-9][0-9]*" + _GROUPS)
MIN_LOGGED_NUMBER_DIGITS = 8
# An international number dialled from abroad with the "00" most of the world uses for "+",
# in groups as above ("0044 7700 900123", "00 44 (0)7700 900123"): whatever the line's region,
# libphonenumber's matcher reads "00" so only in regions that dial it. Masked when, read with a
# "+", it has a country code and a length a number there can have.
DIALLED_FROM_ABROAD = re.compile(r"(?<![\w.%+:])00(?:[ \-]|%20)?([1-9][0-9]*" + _GROUPS + ")")
# An international number written without its "+": bare ("447700900123"), after the "00" most
# of the world dials abroad with ("00447700900123"), or after a space or "%20" standing for a
# "+" a form or query string decoded as one. Masked when, read with a "+", it has a country
# code and a length a number there can have (libphonenumber's "possible", not "valid": the
# line takes numbers it does not know). Ids, epoch times and counts rarely fit both.
BARE_INTERNATIONAL = re.compile(r"(?:(?<=%20)|(?<![\w.%]))(?:00)?([1-9][0-9]{9,14})(?!\w|\.\d)")


class RedactPhoneNumbers(logging.Filter):
    """Defence in depth: masks anything shaped like a phone number in every log record,
    national numbers read as written in ``region`` (the line's ``DEFAULT_REGION``)."""

    def __init__(self, region: str = LOG_REGION) -> None:
        super().__init__()
        self.region = region

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_numbers(message, self.region)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # A traceback's exception text can carry a number too (e.g. Twilio's 21211 message):
            # format it once here, masked; handlers then print ``exc_text`` as it is.
            record.exc_text = redact_numbers(_TRACEBACKS.formatException(record.exc_info), self.region)
        elif record.exc_text:
            record.exc_text = redact_numbers(record.exc_text, self.region)
        return True


_TRACEBACKS = logging.Formatter()


def redact_numbers(text: str, region: str = LOG_REGION) -> str:
    """``text`` with anything shaped like a phone number replaced by ``[redacted-number]``,
    national numbers read as written in ``region``."""
    # First anything written as an international number, URL-encoded or not, known to
    # libphonenumber or not (the line accepts numbers it does not know: caller_number).
    redacted = NUMBER_IN_TEXT.sub(_mask_international, text)
    redacted = DIALLED_FROM_ABROAD.sub(_mask_dialled_from_abroad, redacted)
    redacted = BARE_INTERNATIONAL.sub(_mask_bare_international, redacted)
    # ...then libphonenumber's own matcher: finds "(312) 555-0123" and national numbers but
    # not IP addresses, timings or status codes.
    for match in phonenumbers.PhoneNumberMatcher(redacted, region, leniency=phonenumbers.Leniency.VALID):
        redacted = redacted.replace(match.raw_string, "[redacted-number]")
    return redacted


def _digits(written: str) -> str:
    """The digits of a number as written, without a "(0)" trunk prefix."""
    return "".join(character for character in written.replace("(0)", "") if character.isdigit())


def _mask_international(match: re.Match[str]) -> str:
    found = match.group()
    plain = found.replace("%20", " ")[3:] if found[0] == "%" else found[1:]
    return "[redacted-number]" if len(_digits(plain)) >= MIN_LOGGED_NUMBER_DIGITS else found


def _mask_dialled_from_abroad(match: re.Match[str]) -> str:
    digits = _digits(match.group(1).replace("%20", " "))
    if len(digits) < MIN_LOGGED_NUMBER_DIGITS:
        return match.group()
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return match.group()
    return "[redacted-number]" if phonenumbers.is_possible_number(number) else match.group()


def _mask_bare_international(match: re.Match[str]) -> str:
    try:
        number = phonenumbers.parse("+" + match.group(1))
    except phonenumbers.NumberParseException:
        return match.group()
    return "[redacted-number]" if phonenumbers.is_possible_number(number) else match.group()
