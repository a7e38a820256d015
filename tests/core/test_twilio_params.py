"""Twilio's values are checked at the edge, and people's numbers are read leniently."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from crisisline import twilio_params
from crisisline.phone import RedactPhoneNumbers, caller_number

CALL_SID = "CA" + "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (CALL_SID, CALL_SID),
        ("CA" + "0" * 5000, None),
        (CALL_SID + "\x00", None),
        ("CA\x00" + "0" * 31, None),
        (CALL_SID.upper(), None),  # hex is lowercase
        ("SM" + CALL_SID[2:], None),  # a message SID is not a call
        (CALL_SID + "\n", None),
        ("", None),
    ],
)
def test_call_sid_must_have_twilios_shape(raw: str, expected: str | None) -> None:
    assert twilio_params.call_sid({"CallSid": raw}) == expected


def test_a_malformed_value_is_logged_by_kind_never_by_value(caplog: pytest.LogCaptureFixture) -> None:
    secret = "CA" + "5" * 40 + "\x00+13125550123"

    with caplog.at_level(logging.WARNING):
        assert twilio_params.call_sid({"CallSid": secret}) is None

    assert "CallSid" in caplog.text
    assert "5555" not in caplog.text and "0123" not in caplog.text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("completed", "completed"), ("no-answer", "no-answer"), ("x" * 500, None), ("completed\x00", None), ("", None)],
)
def test_call_status_comes_from_the_documented_set(raw: str, expected: str | None) -> None:
    assert twilio_params.call_status({"CallStatus": raw}) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0", 0), ("7", 7), (" 12 ", 12), ("²", None), ("١٢", None), ("-1", None), ("1e3", None), ("9" * 11, None)],
)
def test_numbers_are_ascii_digits_only_and_fit_an_integer_column(raw: str, expected: int | None) -> None:
    assert "²".isdigit()  # why str.isdigit() is not enough: int("²") raises
    assert twilio_params.natural(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("0", 0), ("3", 3), ("²", 0), ("", 0), ("99999", twilio_params.MAX_MEDIA), ("x", 0)]
)
def test_num_media_is_clamped(raw: str, expected: int) -> None:
    assert twilio_params.count({"NumMedia": raw}, "NumMedia", highest=twilio_params.MAX_MEDIA) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", "1"), (" 2 ", "2"), ("12#", "12#"), ("*", "*"), ("1x", ""), ("²", ""), ("1\x00", ""), ("9" * 500, "9" * 32)],
)
def test_digits_are_keypad_keys_only(raw: str, expected: str) -> None:
    assert twilio_params.digits({"Digits": raw}) == expected


def test_free_text_loses_control_characters_and_is_bounded() -> None:
    assert twilio_params.text({"SpeechResult": " I need\x00 help\x07 "}, "SpeechResult", limit=100) == "I need help"
    assert len(twilio_params.text({"SpeechResult": "a" * 5000}, "SpeechResult", limit=100)) == 100


@pytest.mark.parametrize(
    ("query", "expected"),
    [("1", 1), ("0", None), ("%C2%B2", None), ("99999999999", None), ("2147483648", None), ("", None), ("-1", None)],
)
def test_query_ids_are_positive_and_fit_an_integer_column(query: str, expected: int | None) -> None:
    with Flask(__name__).test_request_context(f"/voice/hold?transfer={query}"):
        assert twilio_params.query_id("transfer") == expected


def test_a_malformed_message_sid_still_gives_a_stable_key_that_fits_its_column() -> None:
    good = "SM" + "a" * 32
    assert twilio_params.message_key(good) == good
    odd = "SM\x00" + "x" * 5000
    assert twilio_params.message_key(odd) == twilio_params.message_key(odd)
    assert twilio_params.message_key(odd) != twilio_params.message_key(odd + "y")
    assert len(twilio_params.message_key(odd)) <= 64
    assert "\x00" not in twilio_params.message_key(odd)


@pytest.mark.parametrize(
    "raw",
    [
        "+16725550123",  # a new area code (672, British Columbia)
        "+8821234567890",  # International Networks: libphonenumber says not valid
        "+15555550123",  # the 555 area code libphonenumber rejects
    ],
)
def test_any_plausible_number_twilio_delivers_from_can_be_answered(raw: str) -> None:
    assert caller_number(raw) == raw


@pytest.mark.parametrize(
    "raw",
    [
        "anonymous", "Anonymous", " unknown ", "restricted", "private", "unavailable", "", None,
        "+266696687", "+7378742833", "+86282452253", "+8656696", "+2562533",  # keypad spellings of the above
        "client:alice", "sip:alice@example.org", "+1", "+0123456789", "+1234567890123456", "12345",
        "+1312555\x000123", "+" + "1" * 500, "²",
    ],
)  # fmt: skip
def test_withheld_and_impossible_caller_ids_are_never_called_back(raw: str | None) -> None:
    assert caller_number(raw) is None


def test_valid_numbers_are_still_normalised() -> None:
    assert caller_number("+1 312 555 0123") == "+13125550123"
    assert caller_number("(312) 555-0123") == "+13125550123"


def test_log_filter_masks_numbers_libphonenumber_does_not_know() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "text from %s", ("+8821234567890",), None)

    RedactPhoneNumbers().filter(record)

    assert "1234567890" not in record.getMessage()
