"""Twilio's own records of a purged contact, deleted through its REST API.

The retention purge (``workers.upkeep.purge_personal_data``) scrubs the line's tables, but
Twilio keeps a record of every call (both numbers, times) and every text (numbers, body,
media): anyone with the line's credentials could fetch a purged contact's number from it for
as long as Twilio keeps it. So the purge notes, in its own transaction, the SIDs of the
contact's records (``note_purged``): the caller's call, its callback legs and responders'
legs, and every text in or out whose body it scrubbed. ``delete_twilio_records`` (the clock,
every minute, on the upkeep queue: never on a webhook's path) then deletes them, a batch at a
time within ``RUN_SECONDS``:

- each record is claimed by one run with a conditional UPDATE (two workers or two clocks
  delete it once); a claim a killed worker left lapses after ``CLAIM``;
- 204 or 404 (20404: deleted before) is done: the row goes, SID and all;
- a refusal (20009: a call not over yet, a text not final; any other 4xx) is tried again
  later, backing off from ``REFUSED_RETRY`` to a day; a 5xx, 429 or timeout at the next run;
- a call's own ``<Dial>`` legs (the backup line, dialled with the caller's number as caller
  ID) are found by ``ParentCallSid`` and deleted before it.

``TWILIO_RECORDS_AFTER_PURGE=keep`` leaves Twilio's records alone for a line whose policy needs
them (billing disputes): the purge still notes them, so switching back to ``delete`` deletes
every record of every contact purged meanwhile.
Logs carry row ids and error codes only: never a SID (Twilio's record of it holds a number).
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from flask import current_app
from sqlalchemy import ColumnElement, delete, literal, or_, select, true, union, update
from sqlalchemy.dialects import postgresql, sqlite
from twilio.base.exceptions import TwilioRestException, TwilioServiceException

from crisisline.db import UTCDateTime, db
from crisisline.models import Call, Message, Offer, Transfer, TwilioRecord
from crisisline.settings import Settings
from crisisline.telephony import TwilioRest
from crisisline.twilio_params import SID
from transfer.dispatch import rest_client

log = logging.getLogger(__name__)

# Deleting takes the worker this long at most per run (plus one request's timeout), so a
# callback or a text due meanwhile waits no longer than that behind it (the worker takes its
# queues in order, upkeep last, one job at a time). At Twilio's usual 0.1 to 0.2 s a request,
# 25 to 50 records a minute: far more than a busy line's contacts leave.
RUN_SECONDS = 5.0
BATCH = 20
REQUEST_TIMEOUT_SECONDS = 5.0
# Past this a run's claim lapses (the run was killed): well beyond a run's longest.
CLAIM = timedelta(minutes=5)
# A 5xx, 429 or timeout: the next run (the clock's next minute), never this one again.
FAILED_RETRY = timedelta(seconds=30)
# A refusal (a call still in progress, a text not final): Twilio says wait several minutes,
# rarely up to 14 days. Doubled each time, up to a day.
REFUSED_RETRY, LONGEST_RETRY = timedelta(minutes=15), timedelta(days=1)
# The SIDs of each kind (text-born callbacks' call records have made-up ones: never sent).
CALL_PREFIXES, MESSAGE_PREFIXES = ("CA",), ("SM", "MM")
CHILD_LEGS_LISTED = 50

DONE, GONE, REFUSED, FAILED = "deleted", "gone", "refused", "failed"


def note_purged(calls: ColumnElement[bool], texts: ColumnElement[bool], now: datetime) -> int:
    """Note the Twilio records of the calls and texts the purge is about to scrub (``calls`` and
    ``texts``: its own conditions), in its transaction: one statement, whatever the backlog.
    A record noted before stays as it is. Returns how many were noted (or already were)."""
    purged_calls = select(Call.id).where(calls)
    their_transfers = select(Transfer.id).where(Transfer.call_id.in_(purged_calls))
    sids = union(
        select(literal("call").label("kind"), Call.call_sid.label("sid")).where(
            calls, _starts(Call.call_sid, CALL_PREFIXES)
        ),
        select(literal("call"), Transfer.caller_call_sid).where(
            Transfer.call_id.in_(purged_calls), _starts(Transfer.caller_call_sid, CALL_PREFIXES)
        ),
        select(literal("call"), Offer.call_sid).where(
            Offer.transfer_id.in_(their_transfers), _starts(Offer.call_sid, CALL_PREFIXES)
        ),
        select(literal("message"), Message.message_sid).where(texts, _starts(Message.message_sid, MESSAGE_PREFIXES)),
    ).subquery()
    at = literal(now, UTCDateTime())
    # The WHERE is for SQLite: an INSERT ... SELECT with ON CONFLICT needs one to parse.
    rows = select(sids.c.kind, sids.c.sid, literal("pending"), at, literal(0), at).where(true())
    columns = ["kind", "sid", "state", "due_at", "attempts", "queued_at"]
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    noted = db.session.execute(
        dialect.insert(TwilioRecord).from_select(columns, rows).on_conflict_do_nothing(),
        execution_options={"synchronize_session": False},
    )
    return int(noted.rowcount)  # type: ignore[attr-defined]


def _starts(column: Any, prefixes: tuple[str, ...]) -> ColumnElement[bool]:
    return or_(*(column.startswith(prefix, autoescape=True) for prefix in prefixes))


def delete_twilio_records(now_iso: str | None = None, *, budget_seconds: float = RUN_SECONDS) -> dict[str, int]:
    """Delete at Twilio the records the purge noted, as many as ``budget_seconds`` allows
    (the rest next run). Idempotent and safe to run twice at once: each record is claimed by
    one run. Counts: deleted (204), gone (404: deleted before), refused (tried later),
    failed (tried next run). With ``TWILIO_RECORDS_AFTER_PURGE=keep``, nothing is sent."""
    counts = dict.fromkeys((DONE, GONE, REFUSED, FAILED), 0)
    settings: Settings = current_app.extensions["crisisline.settings"]
    if settings.twilio_records_after_purge != "delete":
        return counts
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    deadline = time.monotonic() + budget_seconds
    rest = rest_client()
    errors: set[str] = set()
    while time.monotonic() < deadline:
        token, claimed = _claim(now)
        if claimed is None:
            break  # nothing due
        for position, (record_id, kind, sid, attempts) in enumerate(claimed):
            if time.monotonic() >= deadline:
                _release([row[0] for row in claimed[position:]], token, now)
                break
            outcome, error = _delete(rest, kind, sid)
            _settle(record_id, token, outcome, error, now, attempts)
            counts[outcome] += 1
            if error:
                errors.add(error)
    if errors:
        log.warning(
            "twilio records: %s; not deleted for now (%s), tried again later", counts, ", ".join(sorted(errors))
        )
    return counts


def _claim(now: datetime) -> tuple[str, list[tuple[int, str, str, int]] | None]:
    """Take up to ``BATCH`` records due by ``now`` for this run: one conditional UPDATE, so of
    two runs reading the same rows only one takes each (the other's UPDATE finds them not due,
    and it reads again). None when nothing is due."""
    token = secrets.token_hex(16)
    due = db.session.scalars(
        select(TwilioRecord.id)
        .where(TwilioRecord.due_at <= now)
        .order_by(TwilioRecord.due_at, TwilioRecord.id)
        .limit(BATCH)
    ).all()
    if not due:
        db.session.rollback()
        return token, None
    db.session.execute(
        update(TwilioRecord)
        .where(TwilioRecord.id.in_(due), TwilioRecord.due_at <= now)
        .values(state="deleting", claim=token, due_at=now + CLAIM, attempts=TwilioRecord.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    rows = db.session.execute(
        select(TwilioRecord.id, TwilioRecord.kind, TwilioRecord.sid, TwilioRecord.attempts)
        .where(TwilioRecord.claim == token)
        .order_by(TwilioRecord.id)
    ).all()
    db.session.rollback()
    return token, [(row.id, row.kind, row.sid, row.attempts) for row in rows]


def _delete(rest: TwilioRest, kind: str, sid: str) -> tuple[str, str | None]:
    """Delete one record at Twilio (a call's dial legs first): the outcome and, for a failure,
    Twilio's error code or the exception's class."""
    prefixes = CALL_PREFIXES if kind == "call" else MESSAGE_PREFIXES
    if not (SID.fullmatch(sid) and sid.startswith(prefixes)):
        return GONE, None  # no such record at Twilio: never put in a URL
    try:
        if kind == "call":
            for leg in rest.calls.list(parent_call_sid=sid, limit=CHILD_LEGS_LISTED, timeout=REQUEST_TIMEOUT_SECONDS):
                if SID.fullmatch(leg.sid) and leg.sid != sid:
                    rest.calls(leg.sid).delete(timeout=REQUEST_TIMEOUT_SECONDS)
            existed = rest.calls(sid).delete(timeout=REQUEST_TIMEOUT_SECONDS)
        else:
            existed = rest.messages(sid).delete(timeout=REQUEST_TIMEOUT_SECONDS)
    except (TwilioRestException, TwilioServiceException) as error:
        code = str(error.code or error.status)
        if error.status == 429 or error.status >= 500:
            return FAILED, code
        return REFUSED, code
    except (requests.RequestException, OSError) as error:
        return FAILED, type(error).__name__
    return (DONE if existed else GONE), None


def _settle(record_id: int, token: str, outcome: str, error: str | None, now: datetime, attempts: int) -> None:
    """Write one record's outcome, if this run still holds its claim: gone from Twilio, the
    row goes (and the SID with it); otherwise it is due again later."""
    mine = (TwilioRecord.id == record_id, TwilioRecord.claim == token)
    if outcome in (DONE, GONE):
        db.session.execute(delete(TwilioRecord).where(*mine).execution_options(synchronize_session=False))
    else:
        wait = FAILED_RETRY if outcome == FAILED else min(REFUSED_RETRY * 2 ** min(attempts - 1, 10), LONGEST_RETRY)
        db.session.execute(
            update(TwilioRecord)
            .where(*mine)
            .values(state="pending", claim=None, due_at=now + wait, last_error=error)
            .execution_options(synchronize_session=False)
        )
    db.session.commit()


def _release(record_ids: list[int], token: str, now: datetime) -> None:
    """Hand back the records this run claimed and had no time for: due at once, for the next run."""
    db.session.execute(
        update(TwilioRecord)
        .where(TwilioRecord.id.in_(record_ids), TwilioRecord.claim == token)
        .values(state="pending", claim=None, due_at=now, attempts=TwilioRecord.attempts - 1)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
