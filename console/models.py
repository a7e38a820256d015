"""The console's own tables: staff accounts, the audit log, sign-in attempts, and wrap-ups.

Nothing here holds a caller's or texter's number; a wrap-up's note and an unmask's reason are
sealed with the Vault. Passwords are stored as argon2id hashes
only. Sign-in attempts are kept by keyed hash (the typed name could be a mistyped password;
an IP address is personal data), and only long enough to rate-limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crisisline.db import Model, UTCDateTime
from crisisline.models import utcnow

ADMIN, SUPERVISOR, COUNSELOR = "admin", "supervisor", "counselor"
ROLES = (ADMIN, SUPERVISOR, COUNSELOR)
# Vault contexts of the console's sealed values (each binds a value to its column).
NOTE_CONTEXT = "console-wrap-up-note"
UNMASK_REASON_CONTEXT = "console-unmask-reason"
# A wrap-up's outcome: key -> what the form says.
OUTCOMES = {
    "de_escalated": "De-escalated",
    "referred": "Referred to a service",
    "co_responder_dispatched": "Co-responder unit dispatched",
    "emergency_services": "Emergency services contacted",
    "other": "Other",
}


class User(Model):
    """A person who signs in to the console. A counselor is linked to one responder of the
    routing config (``responder_id``), whose availability and contacts they see.

    ``session_token`` is what the session cookie names (Flask-Login's alternative id): a new
    one on sign-out, password change, role change or deactivation, so every copy of an old
    cookie stops working at once.
    """

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(16))
    responder_id: Mapped[str | None] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    session_token: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Flask-Login's user protocol, spelled out (no mixin: ``is_active`` is a column here).
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return self.session_token


class AuditEntry(Model):
    """Who did what, to what, when. Append-only. ``actor`` keeps the name even if the account
    is later removed; ``detail`` never holds personal data of callers or texters."""

    __tablename__ = "console_audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("console_users.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(48), index=True)
    target: Mapped[str | None] = mapped_column(String(160))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What must be kept but is personal (an emergency unmask's reason): sealed, never in ``detail``.
    sealed_detail: Mapped[str | None] = mapped_column(Text)


class SignInAttempt(Model):
    """One try at signing in, by keyed hash of the name typed and of the client's address."""

    __tablename__ = "console_sign_in_attempts"
    __table_args__ = (
        Index("ix_console_sign_in_attempts_account", "account_key", "attempted_at"),
        Index("ix_console_sign_in_attempts_address", "address_key", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_key: Mapped[str] = mapped_column(String(64))
    address_key: Mapped[str] = mapped_column(String(64))
    succeeded: Mapped[bool] = mapped_column(default=False)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WrapUp(Model):
    """What a counselor records after a contact they handled: a call (by its transfer, one
    round of one call) or a text conversation. One per contact (``contact_key``).

    The note is sealed (``NOTE_CONTEXT``); outcome, consent and need are plain, for metrics.
    """

    __tablename__ = "console_wrap_ups"

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_key: Mapped[str] = mapped_column(String(40), unique=True)  # call:<transfer id> | text:<conversation id>
    channel: Mapped[str] = mapped_column(String(8))  # voice | text
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    transfer_id: Mapped[int | None] = mapped_column(ForeignKey("transfers.id", ondelete="SET NULL"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    responder_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("console_users.id", ondelete="SET NULL"))
    language: Mapped[str | None] = mapped_column(String(16))
    need: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    followup_consent: Mapped[bool] = mapped_column(default=False)
    followup: Mapped[str | None] = mapped_column(String(24))  # scheduled | no_number | opted_out | checkins_off
    sealed_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
