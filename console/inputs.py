"""What the console takes from a URL or a form before it reaches the database or date
arithmetic: a value it cannot use is a clear refusal (a form error, 400 or 404), never a 500.

- ``row_id``: a whole number in ASCII digits that a row's id can be (PostgreSQL's INTEGER
  refuses a bigger one with an error, not "no such row"; ``"²".isdigit()`` is true but
  ``int("²")`` fails). ``IdConverter`` is the same rule for ``<id:...>`` in a route.
- ``calendar_day``: an ISO date far enough from the ends of Python's calendar that a week,
  a period's default length or a time zone's offset around it can still be computed.
- ``unix_line_breaks``: a form filter: a text area's CR LF (and a lone CR) as one LF, before
  its length is checked. A browser counts a line break as one character toward a text
  area's ``maxlength`` but sends CR LF, so text that fit the box would fail ``Length``.
- ``has_control_characters``: NUL (which PostgreSQL refuses in text), CR/LF (a header) and
  their kin, which no name, filter or path the console uses contains.
"""

from __future__ import annotations

import unicodedata
from datetime import date

from werkzeug.routing import IntegerConverter, Map

MAX_ID = 2**31 - 1  # PostgreSQL INTEGER, the type of every id column
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(9998, 12, 31)
DAY_RANGE = f"from {FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}"


def whole_number(text: str | None, maximum: int) -> int | None:
    """``text`` as a whole number from 0 to ``maximum`` written in ASCII digits, else None."""
    text = (text or "").strip()
    if not text or len(text) > len(str(maximum)) or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= maximum else None


def row_id(text: str | None) -> int | None:
    """``text`` as a number a row's id can be (1 to ``MAX_ID``), else None."""
    value = whole_number(text, MAX_ID)
    return value if value else None


class IdConverter(IntegerConverter):
    """``<id:name>``: a row's id in a URL; a number no row can have is a 404."""

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)


def calendar_day(text: str) -> date:
    """An ISO date (``2026-11-01``) from ``FIRST_DAY`` to ``LAST_DAY``; ValueError with a
    message for the person otherwise."""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("use a date like 2026-11-01") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"use a date {DAY_RANGE}")
    return day


def has_control_characters(text: str) -> bool:
    """True if ``text`` holds a control, format or line/paragraph-separator character."""
    return any(unicodedata.category(character)[0] == "C" or character in "\u2028\u2029" for character in text)


def unix_line_breaks(value: object) -> object:
    """A text area's line breaks as the browser counted them (one character each): CR LF and
    a lone CR become LF. A WTForms filter, so ``Length`` checks what fit the box."""
    if isinstance(value, str):
        return value.replace("\r\n", "\n").replace("\r", "\n")
    return value
