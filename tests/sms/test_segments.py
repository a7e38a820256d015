"""GSM-7 versus UCS-2: what one character outside GSM-7 costs, and sensible splitting."""

from __future__ import annotations

import pytest

from crisisline.sms_segments import is_gsm7, segment_count, split_for_sms


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
