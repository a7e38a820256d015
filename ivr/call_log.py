"""The call record and its event log. Every function is idempotent under duplicated webhooks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from flask import current_app
from sqlalchemy import Update, bindparam, select, update
from sqlalchemy.orm.attributes import set_committed_value

from crisisline.db import bound_set, db, insert_once_at_commit, inserted_row, new_values
from crisisline.models import BlockedNumber, Call, CallEvent
from crisisline.phone import caller_number
from crisisline.privacy import Vault
from crisisline.twilio_params import natural

PHONE_CONTEXT = "phone"
SPEECH_CONTEXT = "speech"
TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


def _vault() -> Vault:
    vault: Vault = current_app.extensions["crisisline.vault"]
    return vault


def phone_hash(number: str) -> str:
    """The keyed hash used to find a phone number without decrypting anything."""
    return _vault().lookup_hash(number, context=PHONE_CONTEXT)


def open_call(
    call_sid: str, raw_from: str | None, routing_version_id: int | None, *, line_number: str | None = None
) -> Call:
    """The call record for ``call_sid``, created on first sight; the request commits it with
    what it adds (the call's first event, its menu answer), in one transaction.

    Idempotent: a duplicated ``/voice/incoming`` finds the existing row (insert-or-ignore on
    the unique ``call_sid``; on PostgreSQL the second insert waits for the first to commit),
    so two web processes cannot create two records.
    """
    number = caller_number(raw_from)
    values: dict[str, Any] = {
        "call_sid": call_sid,
        "routing_version_id": routing_version_id,
        "status": "ringing",
        "status_sequence": -1,
        "language_attempts": 0,
        "need_attempts": 0,
        "started_at": datetime.now(UTC),
        "line_number": caller_number(line_number),
    }
    if number:
        values["caller_hash"] = phone_hash(number)
        values["sealed_caller"] = _vault().seal(number, context=PHONE_CONTEXT)
    created = inserted_row(Call, values)
    return created or db.session.scalars(_CALL_BY_SID, {"call_sid": call_sid}).one()


@dataclass(frozen=True)
class CallFacts:
    """What stays the same for the whole of a call: the line number it came in on, and whether
    the caller's number is known (so a callback can be offered). Each process remembers them by
    CallSid (unique), so a hold turn or a ring need not read the call row for them. Nothing
    personal: not the caller's number, only whether there is one."""

    call_id: int
    line_number: str | None
    has_caller_number: bool


_FACTS_KEPT = 10_000  # far more calls than a process holds at once; cleared when full


def _remembered_facts() -> dict[str, CallFacts]:
    """The app's memo (per app, so a test's new app never sees another's calls)."""
    memo: dict[str, CallFacts] = current_app.extensions.setdefault("crisisline.call_facts", {})
    return memo


def facts_of(call: Call) -> CallFacts:
    """This call's facts, remembered for the next request of the same call in this process."""
    facts = CallFacts(call.id, call.line_number, bool(call.sealed_caller))
    if call.call_sid:
        memo = _remembered_facts()
        if len(memo) >= _FACTS_KEPT:
            memo.clear()
        memo[call.call_sid] = facts
    return facts


def known_facts(call_sid: str | None) -> CallFacts | None:
    """The facts remembered for ``call_sid`` in this process, if any (see ``facts_of``)."""
    return _remembered_facts().get(call_sid) if call_sid else None


# Built once (every voice webhook runs it; ``crisisline.db``, "Statements built once").
_CALL_BY_SID = select(Call).where(Call.call_sid == bindparam("call_sid"))


def find_call(call_sid: str) -> Call | None:
    return db.session.scalars(_CALL_BY_SID, {"call_sid": call_sid}).first()


def require_call(call_sid: str, raw_from: str | None = None) -> Call:
    """The call record, re-created if a mid-call webhook arrives for a call we lost track of."""
    return find_call(call_sid) or open_call(call_sid, raw_from, None)


def record_event(
    call: Call,
    kind: str,
    dedupe_key: str,
    detail: dict[str, Any] | None = None,
    *,
    speech: str | None = None,
) -> None:
    """Append an event once: a second event with the same ``dedupe_key`` is ignored.

    ``detail`` must hold no personal data; a speech transcript is sealed separately.
    """
    values: dict[str, Any] = {
        "call_id": call.id,
        "kind": kind,
        "dedupe_key": dedupe_key,
        "detail": detail or {},
        "occurred_at": datetime.now(UTC),
    }
    # Every row of one INSERT carries the same keys.
    values["sealed_detail"] = _vault().seal(speech, context=SPEECH_CONTEXT) if speech else None
    if call.id is None:  # a call row not yet written: the event needs its id
        db.session.flush()
        values["call_id"] = call.id
    # Written when the request commits, with its other events in one INSERT, and with the
    # call's own changes in one UPDATE (a need answer records three events).
    insert_once_at_commit(CallEvent, values)


def is_blocked(raw_from: str | None) -> bool:
    number = caller_number(raw_from)
    if number is None:
        return False
    hashed = phone_hash(number)
    return db.session.scalar(select(BlockedNumber.id).where(BlockedNumber.number_hash == hashed)) is not None


def apply_status(call: Call, status: str, sequence: int | None, duration: str | None) -> bool:
    """Move the call to Twilio's ``status`` unless that would go backwards.

    Twilio's status callbacks may arrive twice or out of order. A terminal status is final,
    and a lower ``SequenceNumber`` never overwrites a higher one. Atomic (one conditional
    UPDATE), so concurrent deliveries cannot interleave. Returns True if the row changed.
    """
    sequence = -1 if sequence is None else sequence
    values: dict[str, Any] = {"status": status, "status_sequence": max(sequence, call.status_sequence)}
    if status in TERMINAL_STATUSES:
        values["ended_at"] = datetime.now(UTC)
        seconds = natural(duration)  # ASCII digits only: "²".isdigit() is True, int("²") raises
        if seconds is not None:
            values["duration_seconds"] = seconds
    statement = _status_statement(tuple(sorted(values)), ordered=sequence >= 0)
    result = db.session.execute(statement, {"call": call.id, "sequence": sequence, **new_values(values)})
    changed = bool(result.rowcount)  # type: ignore[attr-defined]
    # The session's copy follows the row: what was written when it changed, read again when
    # used when it did not (another delivery moved it on). Either way it can stay loaded.
    for key, value in values.items():
        if changed:
            set_committed_value(call, key, value)
        else:
            db.session.expire(call, [key])
    return changed


@cache
def _status_statement(columns: tuple[str, ...], *, ordered: bool) -> Update:
    """``apply_status``'s UPDATE, built once per shape (every call status callback runs it):
    ``ordered``, only over a lower ``SequenceNumber`` (bound as ``sequence``)."""
    order = Call.status_sequence <= bindparam("sequence") if ordered else Call.status_sequence >= -1
    return (
        update(Call)
        .where(Call.id == bindparam("call"), Call.status.not_in(TERMINAL_STATUSES), order)
        .values(bound_set(columns))
        .execution_options(synchronize_session=False)
    )
