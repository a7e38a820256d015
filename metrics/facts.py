"""The plain facts metrics are computed from: one value per contact, callback, check-in or
rating, with no personal data (no number, no words, no row id that leads to a person).

``metrics.load`` derives them from the event log and rows; tests and benchmarks may build them
by hand. Every time here is aware (UTC); the line's local time is applied by ``compute``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

CHANNELS = ("voice", "sms")
BREAKDOWNS = ("language", "need", "hour", "weekday")

# Outcomes of a contact that reached the line's queue (``docs/metrics.md``, "Outcome").
ANSWERED, ABANDONED, BACKUP, CALLBACK, WAITING, OTHER = (
    "answered",
    "abandoned",
    "backup",
    "callback",
    "waiting",
    "other",
)


@dataclass(frozen=True)
class Period:
    """Local calendar dates in the line's time zone: ``start`` included, ``end`` excluded."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("the period must end after it starts")

    def utc_bounds(self, timezone: ZoneInfo) -> tuple[datetime, datetime]:
        """The period's first and last instants in UTC (local midnights, DST included)."""
        start = datetime.combine(self.start, time.min, timezone).astimezone(UTC)
        end = datetime.combine(self.end, time.min, timezone).astimezone(UTC)
        return start, end

    def days(self) -> list[date]:
        return [self.start + timedelta(days=offset) for offset in range((self.end - self.start).days)]


@dataclass(frozen=True)
class Contact:
    """One call or text conversation that came to the line.

    ``offered``: it left the menus with a decision (voice) or reached the queue (texts).
    ``outcome`` is the first of answered / callback / backup / abandoned to happen, else
    waiting (still open) or other. Seconds are from when it joined the queue.
    """

    channel: str
    started_at: datetime
    language: str | None
    need: str | None
    offered: bool
    outcome: str
    answered_by: str | None = None  # "counselor" | "co_responder" when answered
    speed_to_answer_seconds: float | None = None
    waited_seconds: float | None = None  # until abandoned, sent to backup or a callback was chosen
    rollovers: int = 0  # responders offered it who missed or passed before its outcome
    co_responder_involved: bool = False
    first_response_seconds: float | None = None  # texts: the first counselor text the texter got


@dataclass(frozen=True)
class CallbackRequest:
    """A request to be called back (``callback.requested``) and how it ended."""

    channel: str  # the channel it was asked from: voice (hold key, check-in) or sms (CALL)
    requested_at: datetime
    language: str | None
    need: str | None
    outcome: str  # connected | gave_up | canceled | pending
    seconds_to_callback: float | None = None  # requested → the person joined their counselor


@dataclass(frozen=True)
class FollowUp:
    """A check-in the person agreed to."""

    channel: str  # where consent was given: voice or sms
    due_at: datetime
    language: str | None
    need: str | None
    sent: bool
    reached: bool  # they replied
    escalated: bool  # no reply: flagged for a supervisor


@dataclass(frozen=True)
class SurveyAnswer:
    channel: str
    answered_at: datetime
    language: str | None
    need: str | None
    rating: int


@dataclass(frozen=True)
class Facts:
    contacts: tuple[Contact, ...] = ()
    callbacks: tuple[CallbackRequest, ...] = ()
    followups: tuple[FollowUp, ...] = ()
    surveys: tuple[SurveyAnswer, ...] = ()
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
