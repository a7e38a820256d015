"""Logs: JSON lines when asked, phone numbers masked either way, twilio's request lines off."""

from __future__ import annotations

import json
import logging

from crisisline.app import JsonLines, _configure_logging
from crisisline.phone import RedactPhoneNumbers


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
