"""Phone numbers: parsed with ``phonenumbers``, E.164 inside, never in logs."""

from __future__ import annotations

import logging
import re

import phonenumbers

# Twilio sends these instead of a number when caller ID is withheld.
WITHHELD_CALLER_IDS = frozenset({"anonymous", "unknown", "private", "restricted", "unavailable"})


class InvalidPhoneNumber(ValueError):
    """Text that is not a valid, dialable phone number."""


def to_e164(raw: str, default_region: str = "US") -> str:
    """Normalise ``raw`` to E.164 (``+14155550100``) or raise :class:`InvalidPhoneNumber`."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as error:
        raise InvalidPhoneNumber("not a phone number") from error
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def caller_number(raw_from: str | None) -> str | None:
    """The caller's E.164 number from Twilio's ``From``, or None when withheld or not a number."""
    if not raw_from or raw_from.strip().lower() in WITHHELD_CALLER_IDS:
        return None
    if raw_from.startswith(("client:", "sip:")):
        return None
    try:
        return to_e164(raw_from)
    except InvalidPhoneNumber:
        return None


_PHONE_LIKE = re.compile(r"\+?\d[\d\s().-]{7,}\d")


class RedactPhoneNumbers(logging.Filter):
    """Defence in depth: masks anything shaped like a phone number in every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _PHONE_LIKE.sub("[redacted-number]", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
