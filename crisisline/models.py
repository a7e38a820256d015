"""Typed SQLAlchemy 2 models. Personal values are stored sealed (see ``privacy``), never plain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crisisline.db import Model, UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class RoutingVersion(Model):
    """One published routing document. The highest id is the active one; nothing is edited.

    The source text is sealed because it names counselors and their phone numbers.
    """

    __tablename__ = "routing_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    sealed_source: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_by: Mapped[str] = mapped_column(String(120))
    note: Mapped[str | None] = mapped_column(String(500))


class Call(Model):
    """One inbound call and its path through the menus. ``call_sid`` makes webhooks idempotent."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    caller_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    sealed_caller: Mapped[str | None] = mapped_column(Text)
    routing_version_id: Mapped[int | None] = mapped_column(ForeignKey("routing_versions.id"))
    language: Mapped[str | None] = mapped_column(String(16))
    need: Mapped[str | None] = mapped_column(String(64))
    language_attempts: Mapped[int] = mapped_column(Integer, default=0)
    need_attempts: Mapped[int] = mapped_column(Integer, default=0)
    route: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20), default="ringing")
    status_sequence: Mapped[int] = mapped_column(Integer, default=-1)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    menu_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    personal_data_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    events: Mapped[list[CallEvent]] = relationship(
        back_populates="call", order_by="CallEvent.id", cascade="all, delete-orphan"
    )


class CallEvent(Model):
    """An append-only record of what happened on a call; metrics are computed from these.

    ``dedupe_key`` is unique per call, so a duplicated Twilio request records nothing twice.
    ``detail`` never holds personal data; a speech transcript goes to ``sealed_detail``.
    """

    __tablename__ = "call_events"
    __table_args__ = (UniqueConstraint("call_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    dedupe_key: Mapped[str] = mapped_column(String(160))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sealed_detail: Mapped[str | None] = mapped_column(Text)

    call: Mapped[Call] = relationship(back_populates="events")


class BlockedNumber(Model):
    """A number that gets a polite message and the backup line, found by keyed hash only."""

    __tablename__ = "blocked_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    number_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str | None] = mapped_column(String(200))
    added_by: Mapped[str] = mapped_column(String(120))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
