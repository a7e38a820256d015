"""Personal values are sealed with authenticated encryption and found by keyed hash."""

from __future__ import annotations

import base64
import logging

import pytest

from crisisline.phone import RedactPhoneNumbers, caller_number, to_e164
from crisisline.privacy import DecryptionError, Vault

KEY = base64.urlsafe_b64decode(base64.urlsafe_b64encode(b"k" * 32))


def test_sealed_value_opens_only_with_the_same_key_and_context() -> None:
    vault = Vault(KEY)
    sealed = vault.seal("+13125550123", context="phone")

    assert "5550123" not in sealed
    assert vault.open(sealed, context="phone") == "+13125550123"
    with pytest.raises(DecryptionError):
        vault.open(sealed, context="speech")
    with pytest.raises(DecryptionError):
        Vault(b"j" * 32).open(sealed, context="phone")


def test_sealing_twice_gives_different_ciphertexts_but_the_same_lookup_hash() -> None:
    vault = Vault(KEY)

    assert vault.seal("+13125550123", context="phone") != vault.seal("+13125550123", context="phone")
    assert vault.lookup_hash("+13125550123", context="phone") == vault.lookup_hash("+13125550123", context="phone")
    assert vault.lookup_hash("+13125550123", context="phone") != Vault(b"j" * 32).lookup_hash(
        "+13125550123", context="phone"
    )


def test_tampered_ciphertext_is_rejected() -> None:
    vault = Vault(KEY)
    sealed = vault.seal("hello", context="sms")
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")

    with pytest.raises(DecryptionError):
        vault.open(tampered, context="sms")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+13125550123", "+13125550123"),
        ("anonymous", None),
        ("Restricted", None),
        ("client:alice", None),
        ("", None),
        ("+1", None),
    ],
)
def test_caller_number_from_twilio_from_field(raw: str, expected: str | None) -> None:
    assert caller_number(raw) == expected


def test_numbers_are_normalised_to_e164() -> None:
    assert to_e164("(312) 555-0101") == "+13125550101"
    assert to_e164("0612345678", "NL") == "+31612345678"


def test_log_filter_masks_phone_numbers() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "call from %s failed", ("+1 312 555 0123",), None)

    RedactPhoneNumbers().filter(record)

    assert "555" not in record.getMessage()
    assert "[redacted-number]" in record.getMessage()


@pytest.mark.parametrize("number", ["+13125550123", "(312) 555-0123", "312.555.0123", "+44 20 7946 0958"])
def test_log_filter_masks_every_phone_number_shape(number: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"from {number} now", None, None)

    RedactPhoneNumbers().filter(record)

    assert record.getMessage() == "from [redacted-number] now"


def test_log_filter_leaves_ip_addresses_and_short_numbers_alone() -> None:
    message = '127.0.0.1 "POST /voice/incoming?attempt=2 HTTP/1.1" 200 731 0.041647s'
    record = logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None)

    RedactPhoneNumbers().filter(record)

    assert record.getMessage() == message
