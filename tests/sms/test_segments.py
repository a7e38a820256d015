"""GSM-7 versus UCS-2: what one character outside GSM-7 costs, and sensible splitting."""

from __future__ import annotations

import pytest

from crisisline.sms_segments import body_length, is_gsm7, segment_count, split_for_sms


@pytest.mark.parametrize(
    ("text", "gsm7", "segments"),
    [
        ("a" * 160, True, 1),
        ("a" * 161, True, 2),
        ("ñ" * 160, True, 1),  # ñ is in the GSM-7 alphabet
        ("Está bien" + "a" * 61, False, 1),  # á is not: 70 characters per segment
        ("Está bien" + "a" * 62, False, 2),
        ("help 🙏", False, 1),
        ("[" * 80, True, 1),  # extension characters count twice
        ("[" * 81, True, 2),
    ],
)
def test_encoding_and_segments(text: str, gsm7: bool, segments: int) -> None:
    assert is_gsm7(text) is gsm7
    assert segment_count(text) == segments


def test_long_texts_split_at_word_boundaries_under_twilios_limit() -> None:
    words = "I have been feeling really low for weeks and I do not know who to talk to " * 40

    parts = split_for_sms(words)

    assert len(parts) > 1
    assert all(len(part) <= 1600 for part in parts)
    assert " ".join(parts).split() == words.split()


def test_a_long_text_with_emoji_is_split_by_twilios_count_where_an_emoji_is_two() -> None:
    """Twilio holds a body to 1,600 UTF-16 code units (its error 21617: emoji count as several
    characters); split by Python's count, a relay of 1,599 characters with emoji was refused."""
    words = "I can't do this anymore 😢 nobody would notice 💔 " * 40

    parts = split_for_sms(words)

    assert all(body_length(part) <= 1600 for part in parts)
    assert max(body_length(part) for part in parts) > 1500  # split near the limit, not too soon
    assert " ".join(parts).split() == words.split()
    assert body_length("😢") == 2 and body_length("á") == 1
