"""Earlier contacts by the same person: found by the keyed hash their number is stored under
(a caller's ``calls.caller_hash`` and a texter's ``texters.number_hash`` are the same hash),
never by the number itself. Only dates, channels and needs: nothing they said.

Only contacts started within their channel's retention window (``crisisline.retention``'s
cutoffs, the ones the hourly purge uses) are linked to the person. The purge unlinks an old
call (its hash goes) and an old conversation (moved to a texter row of its own); until it runs,
the windows are applied here too, for one who writes every few weeks, or who once sent STOP
(their hash is kept for as long as the line exists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app
from sqlalchemy import func, select

from crisisline.db import db
from crisisline.models import Call, Conversation, Texter, Transfer
from crisisline.retention import Cutoffs

SHOWN = 5


@dataclass(frozen=True)
class Earlier:
    channel: str  # voice | text
    at: datetime
    need: str | None


@dataclass(frozen=True)
class History:
    count: int = 0
    recent: list[Earlier] = field(default_factory=list)  # the newest ``SHOWN``


def person_hash_of_transfer(transfer: Transfer) -> tuple[str | None, int | None]:
    call = db.session.get(Call, transfer.call_id)
    return (call.caller_hash, call.id) if call else (None, None)


def person_hash_of_conversation(conversation: Conversation) -> str | None:
    texter = db.session.get(Texter, conversation.texter_id)
    return texter.number_hash if texter else None


def earlier_contacts(
    person_hash: str | None,
    before: datetime,
    *,
    now: datetime,
    call_id: int | None = None,
    conversation_id: int | None = None,
) -> History:
    """Calls and text conversations from ``person_hash`` that started before ``before`` and,
    at ``now``, within their channel's retention window (the current one, ``call_id`` or
    ``conversation_id``, left out)."""
    if not person_hash:
        return History()
    cutoffs = Cutoffs.at(now, current_app.extensions["crisisline.settings"])
    calls = [Call.caller_hash == person_hash, Call.started_at < before, Call.started_at >= cutoffs.calls]
    if call_id is not None:
        calls.append(Call.id != call_id)
    texts = [
        Texter.number_hash == person_hash,
        Conversation.started_at < before,
        Conversation.started_at >= cutoffs.texts,
    ]
    if conversation_id is not None:
        texts.append(Conversation.id != conversation_id)
    count = (db.session.scalar(select(func.count(Call.id)).where(*calls)) or 0) + (
        db.session.scalar(
            select(func.count(Conversation.id)).join(Texter, Texter.id == Conversation.texter_id).where(*texts)
        )
        or 0
    )
    recent = [
        Earlier("voice", started, need)
        for started, need in db.session.execute(
            select(Call.started_at, Call.need).where(*calls).order_by(Call.started_at.desc()).limit(SHOWN)
        )
    ] + [
        Earlier("text", started, need)
        for started, need in db.session.execute(
            select(Conversation.started_at, Conversation.need)
            .join(Texter, Texter.id == Conversation.texter_id)
            .where(*texts)
            .order_by(Conversation.started_at.desc())
            .limit(SHOWN)
        )
    ]
    recent.sort(key=lambda earlier: earlier.at, reverse=True)
    return History(count, recent[:SHOWN])
