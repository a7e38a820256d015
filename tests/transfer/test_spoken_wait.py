"""How the whisper says how long someone has waited: never "0 seconds" or "1 seconds"."""

from __future__ import annotations

import pytest

from transfer.twiml import spoken_wait


@pytest.mark.parametrize(
    ("seconds", "spoken"),
    [(0, "a few seconds"), (1.4, "a few seconds"), (9.9, "a few seconds"), (10, "10 seconds"), (89, "89 seconds"),
     (90, "2 minutes"), (200, "3 minutes")],
)  # fmt: skip
def test_the_whisper_says_a_wait_as_a_person_would(seconds: float, spoken: str) -> None:
    assert spoken_wait(seconds) == spoken
