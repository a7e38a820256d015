"""The example rota at known moments, and helpers over the fake Twilio's responder legs."""

from __future__ import annotations

from datetime import datetime
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
