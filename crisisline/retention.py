"""The retention windows, and a registry of purges for personal data kept above the core.

``workers.upkeep.purge_personal_data`` scrubs the line's own tables. Packages higher up (the
staff console's wrap-up notes and unmask reasons) keep personal data too; they register a
purge here when imported, so the one hourly purge covers them without the jobs importing
every feature (packages depend downward only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from crisisline.settings import Settings

# A call or text conversation that just ended stays on the emergency unmask page this long
# (someone at risk who hung up while a supervisor typed the reason), and the hourly purge
# keeps its number meanwhile, however short the retention window.
ENDED_CONTACT_UNMASKABLE_FOR = timedelta(minutes=15)


@dataclass(frozen=True)
class Cutoffs:
    """Data from before these moments is past its retention window, per kind."""

    now: datetime
    calls: datetime
    texts: datetime
    followups: datetime

    @classmethod
    def at(cls, now: datetime, settings: Settings) -> Cutoffs:
        return cls(
            now=now,
            calls=now - timedelta(days=settings.retention_days_calls),
            texts=now - timedelta(days=settings.retention_days_texts),
            followups=now - timedelta(days=settings.retention_days_followups),
        )

    def for_channel(self, channel: str) -> datetime:
        """The cutoff of a contact's own channel (``voice`` or ``text``)."""
        return self.calls if channel == "voice" else self.texts


# A purge takes the cutoffs, scrubs its rows in the caller's session (the caller commits)
# and returns how many rows it scrubbed. It must be idempotent, and must not wrap its writes in
# a savepoint: ``sms.unstored`` forgets what it noted when the outer transaction commits.
Purge = Callable[[Cutoffs], int]
_PURGES: dict[str, Purge] = {}


def registers_purge(name: str) -> Callable[[Purge], Purge]:
    """Decorator: run ``purge`` with every retention purge, its count reported as ``name``."""

    def register(purge: Purge) -> Purge:
        _PURGES[name] = purge
        return purge

    return register


def registered_purges() -> dict[str, Purge]:
    return dict(_PURGES)
