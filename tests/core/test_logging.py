"""Logs: JSON lines when asked, phone numbers masked either way, twilio's and urllib3's request
lines off."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
import requests
from flask import Flask

from crisisline.app import JsonLines, _configure_logging
from crisisline.phone import RedactPhoneNumbers
from crisisline.settings import Settings
from tests.conftest import settings_for
from twilio_fake.server import FakeTwilioServer


def test_json_lines_carry_the_message_with_numbers_masked_and_exceptions_by_class_only() -> None:
    record = logging.LogRecord("sms.views", logging.ERROR, __file__, 1, "reply to %s failed", ("+13125550177",), None)
    assert RedactPhoneNumbers().filter(record)
    try:
        raise ValueError("body: I want to die")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()

    line = json.loads(JsonLines().format(record))

    assert line["level"] == "ERROR" and line["logger"] == "sms.views"
    assert "5550177" not in line["message"]
    assert line["exception"] == "ValueError"
    assert "want to die" not in json.dumps(line)


def test_twilios_per_request_info_lines_are_turned_down() -> None:
    _configure_logging("INFO")

    assert not logging.getLogger("twilio.http_client").isEnabledFor(logging.INFO)


def test_a_traceback_whose_exception_text_carries_a_number_is_masked_in_plain_logs() -> None:
    try:
        raise RuntimeError("Unable to create record: The 'To' number +13125550177 is not a valid phone number.")
    except RuntimeError:
        import sys

        record = logging.LogRecord("transfer.dispatch", logging.ERROR, __file__, 1, "ring failed", (), sys.exc_info())

    assert RedactPhoneNumbers().filter(record)
    text = logging.Formatter("%(message)s").format(record)

    assert "RuntimeError" in text and "Traceback" in text
    assert "5550177" not in text


def test_urllib3s_request_lines_are_turned_down_even_at_debug() -> None:
    _configure_logging("DEBUG")

    assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.WARNING)


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_url_encoded_number_in_urllib3s_own_request_line_is_masked(fake_twilio_server: FakeTwilioServer) -> None:
    """What urllib3 logs for ``calls.list(to=..., from_=...)`` should its level be lowered."""
    kept, urllib3_log = Kept(), logging.getLogger("urllib3")
    level = urllib3_log.level
    kept.addFilter(RedactPhoneNumbers())
    urllib3_log.addHandler(kept)
    urllib3_log.setLevel(logging.DEBUG)
    try:
        requests.get(
            f"{fake_twilio_server.base_url}/2010-04-01/Accounts/AC00/Calls.json",
            params={"To": "+13125550142", "From": "+13125550100", "PageSize": "20"},
            timeout=10,
        )
    finally:
        urllib3_log.removeHandler(kept)
        urllib3_log.setLevel(level)
    lines = [record.getMessage() for record in kept.records]

    assert any("Calls.json?To=[redacted-number]&From=[redacted-number]&PageSize=20" in line for line in lines), lines
    assert not any("5550142" in line or "5550100" in line for line in lines), lines


@pytest.mark.parametrize(
    "number",
    ["+44 7700 900123", "+44 7700 900 123", "+1 (312) 555-0142", "%2B13125550142", "%2B44%207700%20900123"],
)
def test_numbers_libphonenumber_does_not_find_are_masked_when_shaped_like_international_ones(number: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"from {number} now", None, None)

    RedactPhoneNumbers().filter(record)

    assert record.getMessage() == "from [redacted-number] now"


@pytest.mark.parametrize(
    "number", ["447700900123", "00447700900123", "004915123456789", " 33612345678", "%20447700900123", "447700900123."]
)
def test_international_numbers_written_without_their_plus_are_masked(number: str) -> None:
    """Defence in depth: no log call is known to write one, but a number copied from a form
    (where a "+" decodes as a space) or typed as dialled abroad ("00") must not slip through."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"from {number} now", None, None)

    RedactPhoneNumbers().filter(record)

    assert "[redacted-number]" in record.getMessage()
    assert number.strip(" .").removeprefix("%20")[-9:] not in record.getMessage()


def test_long_runs_of_digits_that_are_not_valid_numbers_are_left_alone() -> None:
    message = "epoch 1733371234567 job 1234567890 size 99999999999 order 0099999999999"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None)

    RedactPhoneNumbers().filter(record)

    assert record.getMessage() == message


def test_timestamps_offsets_durations_and_ids_are_left_alone() -> None:
    message = (
        "2027-03-01T12:00:00.123456+00:00 2027-03-01 12:00:00+10:00 contact-12345678 took 1.234567s "
        "retry +12 s CA" + "1" * 32 + " 10.0.0.1:5000 pid <+12345>"
    )
    record = logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None)

    RedactPhoneNumbers().filter(record)

    assert record.getMessage() == message


@pytest.mark.parametrize(
    "number",
    ["+44 (0)7700 900123", "+61 (0) 412 345 678", "0044 7700 900123", "00 44 7700 900123", "0033 6 12 34 56 78",
     "0049 30 901820", "%2B44%20(0)7700%20900123"],
)  # fmt: skip
@pytest.mark.parametrize("region", ["US", "GB", "FR"])
def test_international_numbers_with_a_trunk_zero_or_dialled_with_00_are_masked_whatever_the_region(
    number: str, region: str
) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"from {number} now", None, None)

    RedactPhoneNumbers(region).filter(record)

    assert record.getMessage() == "from [redacted-number] now"


@pytest.mark.parametrize(
    ("region", "number"),
    [("GB", "07911 123456"), ("GB", "020 7946 0958"), ("FR", "06 12 34 56 78"), ("AU", "0412 345 678")],
)
def test_national_numbers_are_masked_as_written_in_the_lines_region(region: str, number: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"from {number} now", None, None)

    RedactPhoneNumbers(region).filter(record)

    assert record.getMessage() == "from [redacted-number] now"


def test_digits_after_a_time_or_a_decimal_point_are_not_taken_for_a_number_dialled_with_00() -> None:
    message = "at 12:00 1234 5678 paid 1.00 1234 5678 order 0099999999999 took 00 12 ms"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None)

    RedactPhoneNumbers("GB").filter(record)

    assert record.getMessage() == message


def test_the_app_masks_national_numbers_in_its_configured_region(
    database_url: str, redis_url: str, make_app: Callable[[Settings], Flask]
) -> None:
    kept = Kept()
    root = logging.getLogger()
    root.addHandler(kept)
    try:
        make_app(settings_for(database_url, redis_url, DEFAULT_REGION="GB"))
        logging.getLogger("sms.views").warning("reply to %s failed", "07911 123456")
    finally:
        root.removeHandler(kept)
        _configure_logging("WARNING")  # the other tests' handlers back to the default region

    assert [record.getMessage() for record in kept.records] == ["reply to [redacted-number] failed"]
