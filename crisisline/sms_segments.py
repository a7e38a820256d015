"""SMS encoding: GSM-7 or UCS-2, and how many segments a text costs.

One accented letter outside GSM-7 (á, í, ó, ú, ¿) or an emoji switches a whole message to
UCS-2, shrinking a segment from 160 to 70 characters. The shipped Spanish prompts avoid those
letters on purpose; counselors' and texters' own words are sent as written.
"""

from __future__ import annotations

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ ÆæßÉ!\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")
MAX_BODY = 1600  # Twilio's limit for one (concatenated) message


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


def segment_count(text: str) -> int:
    """Segments Twilio will bill for ``text`` (153/67 characters per part when concatenated)."""
    if is_gsm7(text):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        single, multi = 160, 153
    else:
        units = body_length(text)
        single, multi = 70, 67
    if units <= single:
        return 1
    return -(-units // multi)


def body_length(text: str) -> int:
    """``text``'s length as Twilio holds it to ``MAX_BODY``: in UTF-16 code units, so an emoji
    counts twice (its error 21617: emoji "will be counted as multiple characters")."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def split_for_sms(text: str, limit: int = MAX_BODY) -> list[str]:
    """Split a long text at word boundaries into parts Twilio accepts (≤ ``limit`` UTF-16
    code units each; never inside a character)."""
    text = text.strip()
    parts: list[str] = []
    while body_length(text) > limit:
        fits, units = 0, 0  # the most characters from the start that fit
        for ch in text:
            units += 2 if ord(ch) > 0xFFFF else 1
            if units > limit:
                break
            fits += 1
        cut = text.rfind(" ", 0, fits)
        cut = cut if cut > fits // 2 else fits
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts
