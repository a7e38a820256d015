"""Writing and reading the audit log. Callers commit: an entry belongs to the change it
records, so both land or neither does."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from console.models import AuditEntry, User
from crisisline.db import db

# Who acts when no one is signed in: the command line, or the line itself.
CLI = "cli"
SYSTEM = "system"


def record(action: str, *, actor: User | str, target: str | None = None, **detail: Any) -> AuditEntry:
    """Add an entry (in the current transaction). ``detail`` must hold no personal data."""
    entry = AuditEntry(
        actor_id=actor.id if isinstance(actor, User) else None,
        actor=actor.username if isinstance(actor, User) else actor,
        action=action,
        target=target,
        detail=detail,
    )
    db.session.add(entry)
    return entry


def recent(limit: int = 200, action: str | None = None) -> list[AuditEntry]:
    """The newest entries first."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEntry.action == action)
    return list(db.session.scalars(query))
