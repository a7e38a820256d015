"""Phone numbers: parsed with ``phonenumbers``, E.164 inside, never in logs."""

from __future__ import annotations

import logging

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


LOG_REGION = "US"


class RedactPhoneNumbers(logging.Filter):
    """Defence in depth: masks anything shaped like a phone number in every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        # libphonenumber's own matcher: finds "(312) 555-0123" and "+44 20 7946 0958" but
        # not IP addresses, timings or status codes.
        for match in phonenumbers.PhoneNumberMatcher(message, LOG_REGION, leniency=phonenumbers.Leniency.VALID):
            redacted = redacted.replace(match.raw_string, "[redacted-number]")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
