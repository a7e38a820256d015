"""The example rota at known moments, and helpers over the fake Twilio's responder legs."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from twilio_fake.rest_api import CallRecord, FakeTwilio

CHICAGO = ZoneInfo("America/Chicago")
# Wednesday 17:00: for "thoughts of suicide", Ben then Diego are on call (and the unit).
WEDNESDAY_EVENING = datetime(2026, 12, 2, 17, 0, tzinfo=CHICAGO)
# Wednesday 10:00: only Ana for most needs; the co-responder unit is on call too.
WEDNESDAY_MORNING = datetime(2026, 12, 2, 10, 0, tzinfo=CHICAGO)
ANA, BEN, DIEGO, UNIT = "+13125550101", "+13125550102", "+13125550104", "+13125550150"


def legs(fake: FakeTwilio) -> list[CallRecord]:
    """Calls the line placed to responders, in the order it placed them."""
    return [leg for leg in fake.calls.values() if leg.direction == "outbound-api"]


def leg_to(fake: FakeTwilio, number: str) -> CallRecord:
    matching = [leg for leg in legs(fake) if leg.to == number]
    assert len(matching) == 1, f"expected one leg to that number, found {len(matching)}"
    return matching[0]


def around_the_clock(document: dict[str, Any], *, on_call: tuple[str, ...] = ("ben-carter", "diego-morales")) -> None:
    """Only ``on_call`` counselors, on call at every hour (a worker process runs on the real
    clock, not the test's travelled one)."""
    for counselor in document["counselors"]:
        counselor.pop("overrides", None)
        whole_day = [
            {"days": "daily", "start": start, "end": end} for start, end in (("00:00", "12:00"), ("12:00", "24:00"))
        ]
        counselor["shifts"] = whole_day if counselor["id"] in on_call else []
    document["callbacks"]["offer_after_seconds"] = 0  # the key is offered from the first hold turn


def diego_listed_first(document: dict[str, Any]) -> None:
    """Ben (English) and Diego (Spanish and English) on call, Diego first in the rotation."""
    around_the_clock(document)
    document["counselors"].sort(key=lambda counselor: counselor["id"] != "diego-morales")
