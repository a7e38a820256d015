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

The replies a text's webhook answers with in TwiML have no SID the line learns (only the
last ``<Message>`` may carry an ``action``, and Twilio reports a SID only to that), nor has the
fail-safe text. So for each texter whose texts the purge scrubs, it also notes, in the same
statement's way, "the texts between this line number and this texter's number sent before the
cutoff" (kind ``texts``: the number copied sealed from the texter's row, as numbers are kept at
rest). The job lists those texts at Twilio in both directions (``To``/``From``, every page: the
texter's with ``DateSent<``, the line's with no date filter, which would leave out a text Twilio
never sent), checks each one's numbers and dates itself, deletes each old enough, then the row
and the number with it. Never a text the texter sent after the cutoff: they may have texted again
within retention. The line's own texts go up to ``REPLY_WINDOW`` past it (a reply reaches
Twilio a few seconds after the text it answers, which may be just before the cutoff), but
never past the texter's first text after the cutoff, nor past the cutoff of the job's own
moment. A row whose number the vault can no longer open is dropped (logged by id). A text
kept through an outage (``sms.unstored``) and purged from Redis unstored gets such a row too,
from its own purge: Twilio holds it, and the fail-safe reply, as it holds any other.

``TWILIO_RECORDS_AFTER_PURGE=keep`` leaves Twilio's records alone for a line whose policy needs
them (billing disputes): the purge still notes them, so switching back to ``delete`` deletes
every record of every contact purged meanwhile, by SID. The texts noted by number are dropped,
unsent, at the next run: their rows would keep a purged texter's number in the line's database.
Logs carry row ids and error codes only: never a SID (Twilio's record of it holds a number).
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import requests
from flask import current_app
from sqlalchemy import ColumnElement, String, cast, delete, literal, or_, select, true, union, update
from sqlalchemy.dialects import postgresql, sqlite
from twilio.base.exceptions import TwilioRestException, TwilioServiceException

from crisisline.db import UTCDateTime, db
from crisisline.models import Call, Message, Offer, Texter, Transfer, TwilioRecord
from crisisline.privacy import DecryptionError, Vault
from crisisline.retention import Cutoffs
from crisisline.settings import Settings
from crisisline.telephony import ListedMessage, TwilioRest
from crisisline.texts_at_twilio import REPLY_WINDOW, TEXTS, cutoff_stamp
from crisisline.twilio_params import SID
from ivr.call_log import PHONE_CONTEXT
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
# A row of kind texts keeps a purged texter's number (sealed) only to find their texts at Twilio.
# Past this since the purge noted it (refused or failing all along: a token Twilio no longer
# takes, a listing too long for a run), it goes, number and all: retention outranks Twilio's
# copies, which the log says are left. Twilio's own refusals last up to 14 days.
TEXTS_NOTED_FOR_AT_MOST = timedelta(days=15)
# The SIDs of each kind (text-born callbacks' call records have made-up ones: never sent).
CALL_PREFIXES, MESSAGE_PREFIXES = ("CA",), ("SM", "MM")
CHILD_LEGS_LISTED = 50
# Texts found by number: a page of Twilio's list at a time, each one request, of the most a
# page holds. The line's texts to a texter are listed with no date filter (it would miss those
# never sent), so those sent within retention are listed again at every run: at 1,000 a page,
# a few thousand are a few requests. A listing the run's time cannot finish starts again at
# the next run (nothing resumes a listing part-way).
TEXTS_PAGE_SIZE = 1000

DONE, GONE, REFUSED, FAILED = "deleted", "gone", "refused", "failed"
# Texts deleted through the rows of kind texts (each such row counts once as deleted or gone).
BY_NUMBER = "texts_by_number"
UNFINISHED = "unfinished"  # the run's time ran out in a row's texts: the next run goes on


def note_purged(calls: ColumnElement[bool], texts: ColumnElement[bool], now: datetime, texts_cutoff: datetime) -> int:
    """Note the Twilio records of the calls and texts the purge is about to scrub (``calls`` and
    ``texts``: its own conditions), in its transaction: one statement for the SIDs and one for
    the texts found by number (``texts_cutoff``: the purge's), whatever the backlog. A record
    noted before stays as it is. Returns how many SIDs were noted (or already were)."""
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
    noted = db.session.execute(
        _dialect().insert(TwilioRecord).from_select(columns, rows).on_conflict_do_nothing(),
        execution_options={"synchronize_session": False},
    )
    _note_texts_by_number(texts, now, texts_cutoff)
    return int(noted.rowcount)  # type: ignore[attr-defined]


def _note_texts_by_number(texts: ColumnElement[bool], now: datetime, cutoff: datetime) -> None:
    """Per texter and line number with a text of theirs scrubbed now (every TwiML reply and
    fail-safe answers one, from the number it was sent to): the texts between them before
    ``cutoff``, with the texter's number as sealed in their row (before the purge scrubs it).
    The key names the cutoff, so a purge run again notes nothing twice."""
    pairs = (
        select(Message.texter_id, Message.line_number)
        .where(texts, Message.direction == "in", Message.texter_id.is_not(None), Message.line_number.is_not(None))
        .distinct()
        .subquery()
    )
    key = (
        literal("texts:") + cast(pairs.c.texter_id, String) + literal(":") + pairs.c.line_number
        + literal(":" + cutoff_stamp(cutoff))
    )  # fmt: skip
    at, due = literal(now, UTCDateTime()), literal(now + REPLY_WINDOW, UTCDateTime())
    rows = (
        select(
            literal(TEXTS),
            key,
            literal("pending"),
            due,
            literal(0),
            at,
            Texter.sealed_number,
            pairs.c.line_number,
            literal(cutoff, UTCDateTime()),
        )
        .join_from(pairs, Texter, Texter.id == pairs.c.texter_id)
        .where(Texter.sealed_number.is_not(None))
    )
    columns = ["kind", "sid", "state", "due_at", "attempts", "queued_at", "sealed_number", "line_number", "sent_before"]
    db.session.execute(
        _dialect().insert(TwilioRecord).from_select(columns, rows).on_conflict_do_nothing(),
        execution_options={"synchronize_session": False},
    )


def _dialect() -> Any:
    return postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite


def _starts(column: Any, prefixes: tuple[str, ...]) -> ColumnElement[bool]:
    return or_(*(column.startswith(prefix, autoescape=True) for prefix in prefixes))


class Claimed(NamedTuple):
    id: int
    kind: str
    sid: str
    attempts: int
    sealed_number: str | None
    line_number: str | None
    sent_before: datetime | None


def delete_twilio_records(now_iso: str | None = None, *, budget_seconds: float = RUN_SECONDS) -> dict[str, int]:
    """Delete at Twilio the records the purge noted, as many as ``budget_seconds`` allows
    (the rest next run). Idempotent and safe to run twice at once: each record is claimed by
    one run. Counts: deleted (204), gone (404: deleted before), refused (tried later),
    failed (tried next run), and the texts found by number and deleted. With
    ``TWILIO_RECORDS_AFTER_PURGE=keep``, nothing is sent (and the texts noted by number are dropped)."""
    counts = dict.fromkeys((DONE, GONE, REFUSED, FAILED, BY_NUMBER), 0)
    settings: Settings = current_app.extensions["crisisline.settings"]
    if settings.twilio_records_after_purge != "delete":
        _drop_texts_by_number()
        return counts
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    _give_up_on_old_texts(now)
    deadline = time.monotonic() + budget_seconds
    rest = rest_client()
    errors: set[str] = set()
    while time.monotonic() < deadline:
        token, claimed = _claim(now)
        if claimed is None:
            break  # nothing due
        for position, record in enumerate(claimed):
            if time.monotonic() >= deadline:
                _release([row.id for row in claimed[position:]], token, now)
                break
            if record.kind == TEXTS:
                outcome, error, deleted = _delete_texts(rest, record, settings, now, deadline)
                counts[BY_NUMBER] += deleted
            else:
                outcome, error = _delete(rest, record.kind, record.sid)
            if outcome == UNFINISHED:
                _release([row.id for row in claimed[position:]], token, now)
                break
            _settle(record.id, token, outcome, error, now, record.attempts)
            counts[outcome] += 1
            if error:
                errors.add(error)
    if errors:
        log.warning(
            "twilio records: %s; not deleted for now (%s), tried again later", counts, ", ".join(sorted(errors))
        )
    return counts


def _give_up_on_old_texts(now: datetime) -> None:
    """Rows of kind texts noted longer ago than ``TEXTS_NOTED_FOR_AT_MOST`` go, and the texters'
    numbers with them; logged by row id and last error, never a number. Not one claimed by a
    run under way (it settles its own)."""
    old = (
        TwilioRecord.kind == TEXTS,
        TwilioRecord.queued_at < now - TEXTS_NOTED_FOR_AT_MOST,
        or_(TwilioRecord.claim.is_(None), TwilioRecord.due_at <= now),
    )
    # One statement: of two runs at once, each logs only the rows it deleted itself.
    given_up = db.session.execute(
        delete(TwilioRecord)
        .where(*old)
        .returning(TwilioRecord.id, TwilioRecord.last_error)
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    if not given_up:
        return
    log.warning(
        "twilio records: texts of %d purged texters not deleted at Twilio within %d days (rows %s, last errors %s): "
        "given up, and the numbers kept to find them dropped; Twilio may still hold those texts",
        len(given_up), TEXTS_NOTED_FOR_AT_MOST.days, ", ".join(str(row.id) for row in given_up),
        ", ".join(sorted({row.last_error or "none" for row in given_up})),
    )  # fmt: skip


def _drop_texts_by_number() -> None:
    """Kept at Twilio: the rows of kind texts go, and the texters' numbers with them."""
    db.session.execute(
        delete(TwilioRecord).where(TwilioRecord.kind == TEXTS).execution_options(synchronize_session=False)
    )
    db.session.commit()


def _claim(now: datetime) -> tuple[str, list[Claimed] | None]:
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
        select(
            TwilioRecord.id, TwilioRecord.kind, TwilioRecord.sid, TwilioRecord.attempts, TwilioRecord.sealed_number,
            TwilioRecord.line_number, TwilioRecord.sent_before,
        )
        .where(TwilioRecord.claim == token)
        .order_by(TwilioRecord.kind == TEXTS, TwilioRecord.id)  # by SID first: a listing then finds fewer
    ).all()  # fmt: skip
    db.session.rollback()
    return token, [Claimed(*row) for row in rows]


def _delete_texts(
    rest: TwilioRest, record: Claimed, settings: Settings, now: datetime, deadline: float
) -> tuple[str, str | None, int]:
    """Delete the texts a row of kind texts names (``TwilioRecord``): list both directions
    first (every page), then delete each text old enough. The outcome, the error, and how many
    Twilio deleted. A run out of time leaves the row ``UNFINISHED`` (listed again next run:
    what it deleted is no longer there)."""
    if record.sealed_number is None or record.line_number is None or record.sent_before is None:
        return GONE, None, 0  # nothing to find it by
    vault: Vault = current_app.extensions["crisisline.vault"]
    try:
        texter = vault.open(record.sealed_number, context=PHONE_CONTEXT)
    except DecryptionError:
        log.warning("twilio records: row %s: its number cannot be opened (DecryptionError); dropped", record.id)
        return GONE, None, 0
    # The texter's own texts up to the purge's cutoff; the line's up to ``REPLY_WINDOW`` past it
    # (replies to texts from just before it), but not past the texter's first text after it:
    # from then on they answer a text the line keeps. Never past the cutoff of this moment.
    now_cutoff = Cutoffs.at(now, settings).texts
    theirs_before = min(record.sent_before, now_cutoff)
    window_end = min(record.sent_before + REPLY_WINDOW, now_cutoff)
    try:
        # A text the texter sent has a DateSent (when Twilio passed it on): theirs are listed up to
        # the window's day. One of the line's may have none (never sent): ours are listed whole.
        theirs = _listed(rest, to=record.line_number, from_=texter, before=window_end, deadline=deadline)
        ours = _listed(rest, to=texter, from_=record.line_number, before=None, deadline=deadline)
    except (TwilioRestException, TwilioServiceException) as error:
        return _failure(error), str(error.code or error.status), 0
    except (requests.RequestException, OSError, ValueError) as error:  # ValueError: not JSON, a foreign next page
        return FAILED, type(error).__name__, 0
    if theirs is None or ours is None:
        return UNFINISHED, None, 0
    ours_before = min([window_end, *(_earliest(text) for text in theirs if _earliest(text) >= theirs_before)])
    old = [text.sid for text in theirs if _before(text, theirs_before)]
    old += [text.sid for text in ours if _before(text, ours_before)]
    deleted, refusal = 0, None
    for sid in old:
        if time.monotonic() >= deadline:
            return UNFINISHED, None, deleted
        try:
            deleted += rest.messages(sid).delete(timeout=REQUEST_TIMEOUT_SECONDS)
        except (TwilioRestException, TwilioServiceException) as error:
            if _failure(error) == FAILED:
                return FAILED, str(error.code or error.status), deleted
            refusal = str(error.code or error.status)  # the others still go; this row is tried later
        except (requests.RequestException, OSError) as error:
            return FAILED, type(error).__name__, deleted
    if refusal is not None:
        return REFUSED, refusal, deleted
    return (DONE if deleted else GONE), None, deleted


def _listed(
    rest: TwilioRest, *, to: str, from_: str, before: datetime | None, deadline: float
) -> list[ListedMessage] | None:
    """Every text ``from_`` sent ``to`` that Twilio lists as sent by ``before``'s day, or every
    one, sent or not, with ``before`` None (whose SID is a message's), checked to be between
    those very numbers: the caller keeps those old enough by their own dates. None if the
    run's time ran out."""
    if time.monotonic() >= deadline:
        return None
    found = []
    for page in rest.messages.pages(to=to, from_=from_, sent_before=before, page_size=TEXTS_PAGE_SIZE,
                                    timeout=REQUEST_TIMEOUT_SECONDS):  # fmt: skip
        found += [text for text in page if (text.to, text.from_) == (to, from_) and _a_message(text.sid)]
        if time.monotonic() >= deadline:
            return None
    return found


def _a_message(sid: str) -> bool:
    return bool(SID.fullmatch(sid)) and sid.startswith(MESSAGE_PREFIXES)


def _before(text: ListedMessage, moment: datetime) -> bool:
    """Whether Twilio created and sent ``text`` before ``moment`` (by both of its dates; a text
    never sent has only its creation's)."""
    dates = [known for known in (text.date_created, text.date_sent) if known is not None]
    return bool(dates) and max(dates) < moment


def _earliest(text: ListedMessage) -> datetime:
    dates = [known for known in (text.date_created, text.date_sent) if known is not None]
    return min(dates) if dates else datetime.max.replace(tzinfo=UTC)


def _failure(error: TwilioRestException | TwilioServiceException) -> str:
    """A 5xx or 429 is Twilio failing (the next run); any other refusal is for now (later)."""
    return FAILED if error.status == 429 or error.status >= 500 else REFUSED


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
