"""The metrics rollup: one narrow row per fact in ``metric_facts``, kept current incrementally,
so a page aggregates a year of a busy line in SQL instead of replaying its event log.

Each fact is derived by the same functions as ``metrics.load`` (one call's events, one
conversation's rows…), then written over its previous version (``source``, ``source_id``).
:func:`refresh` looks only at what may have changed since the last refresh:

- calls: those with an event newer than a checkpoint (every change to a call records an event,
  a status included); their callbacks ride along;
- text conversations (no event log): new ones, open ones, and those whose fact is not yet
  ``settled`` (closed less than ``SETTLE`` ago);
- check-ins and survey questions: new ones, and those asked in the last ``FOLLOWUP_WINDOW``.

An id committed late (a transaction that took its id before a neighbour committed) is not
lost: a pass starts from the checkpoint taken at least ``SETTLE`` before the previous pass
began, so every transaction shorter than ``SETTLE`` is seen by a later pass.

One refresh at a time: a runner first claims a lease on the one ``metric_rollup_state`` row
with a conditional UPDATE (the loser returns at once); progress is saved after every chunk, so
a killed run loses one chunk, and the next one resumes. A ``budget`` caps the sources one run
looks at (the page's refresh is short; the clock's catches up). If the line's time zone
changes, everything is rebuilt (local day, hour and weekday are stored).

Nothing personal is written: no number, words or hash; aggregates only (``docs/metrics.md``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from crisisline.db import db
from crisisline.models import (
    Call,
    Callback,
    CallEvent,
    CheckIn,
    Conversation,
    MetricFact,
    MetricRollupState,
    SurveyResponse,
)
from metrics.facts import CallbackRequest, Contact, FollowUp, SurveyAnswer
from metrics.load import (
    DbSession,
    callback_requests,
    followups,
    responder_kinds,
    survey_answers,
    text_contacts,
    voice_contacts,
)
from routing.document import RoutingDocument
from routing.store import active_routing

SETTLE = timedelta(minutes=2)  # a transaction that records an event commits within this
LEASE = timedelta(minutes=2)  # renewed after every chunk
# A check-in or a survey question changes no more after this: the longest check-in
# (``followups.checkins.LONGEST_CHECKIN``, 24 days: due after 14, its second text, the flag, a
# day for a reply and the quiet hours) and a day to spare.
FOLLOWUP_WINDOW = timedelta(days=25)
CHUNK = 2000  # sources per statement (SQLite allows 32,766 bound values)
STATE_ID = 1
JOB_BUDGET = 200_000  # sources per clock run: well inside the job's 300 s timeout
ANALYZE_EVERY = 50_000  # PostgreSQL: fresh statistics for metric_facts as a full pass fills it
VALUE_COLUMNS = (
    "channel", "at", "local_day", "local_hour", "local_weekday", "language", "need", "offered", "outcome",
    "answered_by", "speed_to_answer_seconds", "waited_seconds", "rollovers", "co_responder_involved",
    "first_response_seconds", "seconds_to_callback", "sent", "reached", "escalated", "rating", "settled",
)  # fmt: skip
DEFAULTS: dict[str, Any] = {
    "offered": False, "outcome": "", "answered_by": None, "speed_to_answer_seconds": None, "waited_seconds": None,
    "rollovers": 0, "co_responder_involved": False, "first_response_seconds": None, "seconds_to_callback": None,
    "sent": False, "reached": False, "escalated": False, "rating": None, "settled": True,
}  # fmt: skip
Row = dict[str, Any]


@dataclass(frozen=True)
class Refreshed:
    claimed: bool  # False: another runner holds the lease, this one did nothing
    caught_up: bool  # every source was looked at up to now (False: the budget ran out)
    looked_at: int  # sources (calls, conversations, check-ins, survey questions) recomputed
    written: int  # facts inserted or changed


@dataclass(frozen=True)
class Source:
    """How one kind of row becomes facts: its change log's top id, every id in order (a full
    pass), the ids that may have changed since a checkpoint, and the facts of a chunk."""

    name: str
    top: Callable[[DbSession], int]
    every: Callable[[DbSession, int, int], list[int]]  # ids after ``after``, at most ``limit``
    changed: Callable[[DbSession, int, datetime], list[int]]  # since a checkpoint's top, at ``now``
    facts: Callable[[DbSession, list[int], ZoneInfo, Mapping[str, str], datetime], list[Row]]


def refresh(
    session: DbSession, document: RoutingDocument, now: datetime | None = None, budget: int | None = None
) -> Refreshed:
    """Bring ``metric_facts`` up to ``now`` (default: the clock), looking at no more than
    ``budget`` sources. Idempotent; of two concurrent runs, one does the work."""
    now = now or datetime.now(UTC)
    token = secrets.token_hex(8)
    if not _claim(session, token, now):
        return Refreshed(claimed=False, caught_up=False, looked_at=0, written=0)
    try:
        timezone, marks = session.execute(
            select(MetricRollupState.timezone, MetricRollupState.marks).where(MetricRollupState.id == STATE_ID)
        ).one()
        zone = document.timezone
        if timezone != zone.key:
            marks = {}  # local day, hour and weekday were computed elsewhere: rebuild them all
        marks = {name: dict(mark) for name, mark in (marks or {}).items()}
        kinds = responder_kinds(document)
        left = budget
        looked_at = written = 0
        unanalyzed = 0
        caught_up = True
        for source in SOURCES:
            mark = marks.setdefault(source.name, {})
            while True:
                chunk = _next_chunk(session, source, mark, now, left)
                if chunk is None:
                    break  # this source's pass is complete
                if not chunk:
                    caught_up = False  # the budget ran out; the pass resumes next time
                    break
                written += _write(session, source.name, chunk, source.facts(session, chunk, zone, kinds, now))
                mark["pass"]["after"] = chunk[-1]
                looked_at += len(chunk)
                unanalyzed += len(chunk)
                left = None if left is None else left - len(chunk)
                if not _save(session, token, now, zone.key, marks):
                    session.rollback()  # the lease was lost (a run longer than LEASE): stop
                    return Refreshed(True, False, looked_at, written)
                if unanalyzed >= ANALYZE_EVERY:
                    _analyze(session)
                    unanalyzed = 0
            if not caught_up:
                break
        _save(session, token, now, zone.key, marks, release=True)
    except BaseException:
        session.rollback()
        _release(session, token)
        raise
    return Refreshed(claimed=True, caught_up=caught_up, looked_at=looked_at, written=written)


def _next_chunk(
    session: DbSession, source: Source, mark: dict[str, Any], now: datetime, left: int | None
) -> list[int] | None:
    """The next ids of this source's pass (starting one if none is in progress); None when the
    pass is complete (then its checkpoint is recorded), [] when the budget is spent."""
    running = mark.get("pass")
    if running is None:
        running = {"since": _safe_since(mark), "top": source.top(session), "after": 0, "started": now.isoformat()}
        mark["pass"] = running
    limit = CHUNK if left is None else min(CHUNK, left)
    if limit <= 0:
        return []
    if running["since"] is None:  # a full pass, in id order
        chunk = source.every(session, running["after"], limit)
    else:
        chunk = [i for i in source.changed(session, running["since"], now) if i > running["after"]][:limit]
    if chunk:
        return chunk
    started = datetime.fromisoformat(running["started"])
    checkpoints = [*mark.get("checkpoints", []), [running["started"], running["top"]]]
    mark["checkpoints"] = _trim(checkpoints, started)
    mark["last_pass"] = running["started"]
    mark["pass"] = None
    return None


def _safe_since(mark: dict[str, Any]) -> int | None:
    """The top of the newest checkpoint taken ``SETTLE`` before the previous pass began: an id
    committed late was in flight then, so it is above that top. None: a full pass."""
    checkpoints = mark.get("checkpoints") or []
    if not checkpoints:
        return None
    previous = datetime.fromisoformat(mark["last_pass"])
    old = [top for taken, top in checkpoints if datetime.fromisoformat(taken) <= previous - SETTLE]
    return int(old[-1] if old else checkpoints[0][1])


def _trim(checkpoints: list[list[Any]], last_pass: datetime) -> list[list[Any]]:
    """Keep the checkpoints the next pass may start from: the newest one old enough, and newer."""
    old = [c for c in checkpoints if datetime.fromisoformat(c[0]) <= last_pass - SETTLE]
    return old[-1:] + [c for c in checkpoints if datetime.fromisoformat(c[0]) > last_pass - SETTLE]


def refresh_metrics_rollup() -> dict[str, int]:
    """The clock's job (every 5 minutes): the rollup up to now, at most ``JOB_BUDGET`` sources a
    run, so a first build over a long history resumes over several runs."""
    active = active_routing()
    if active is None:
        return {}
    done = refresh(db.session, active.document, budget=JOB_BUDGET)
    return {"claimed": int(done.claimed), "caught_up": int(done.caught_up), "looked_at": done.looked_at,
            "written": done.written}  # fmt: skip


# The lease ---------------------------------------------------------------------------------


def _claim(session: DbSession, token: str, now: datetime) -> bool:
    """One runner at a time: a conditional UPDATE of the state row (created if missing)."""
    created = _insert(session)(MetricRollupState).values(id=STATE_ID, marks={})
    session.execute(created.on_conflict_do_nothing(index_elements=["id"]))
    won = session.execute(
        update(MetricRollupState)
        .where(
            MetricRollupState.id == STATE_ID,
            or_(MetricRollupState.lease_until.is_(None), MetricRollupState.lease_until < now),
        )
        .values(lease_owner=token, lease_until=now + LEASE)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    session.commit()
    return bool(won)


def _save(
    session: DbSession, token: str, now: datetime, timezone: str, marks: dict[str, Any], release: bool = False
) -> bool:
    """Commit the facts written and the progress with them, renewing (or ending) the lease."""
    values: dict[str, Any] = {"marks": marks, "timezone": timezone, "refreshed_at": now}
    values.update(lease_owner=None, lease_until=None) if release else values.update(lease_until=now + LEASE)
    kept = session.execute(
        update(MetricRollupState)
        .where(MetricRollupState.id == STATE_ID, MetricRollupState.lease_owner == token)
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if kept:
        session.commit()
    return bool(kept)


def _analyze(session: DbSession) -> None:
    """A first build grows ``metric_facts`` from nothing to millions of rows between two of
    autovacuum's ANALYZEs (or with none, autovacuum off): planned from the empty table's
    statistics, ``_write``'s lookup of 2,000 facts by ``source_id`` read every fact of the
    source instead of the unique index, and a 1,000,000-contact build slowed quadratically."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE metric_facts"))
        session.commit()


def _release(session: DbSession, token: str) -> None:
    session.execute(
        update(MetricRollupState)
        .where(MetricRollupState.id == STATE_ID, MetricRollupState.lease_owner == token)
        .values(lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def _insert(session: DbSession) -> Any:
    """The dialect's INSERT, which has ON CONFLICT on both SQLite and PostgreSQL."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _write(session: DbSession, source: str, ids: list[int], rows: list[Row]) -> int:
    """Upsert the facts that changed; a source that no longer gives one (gone) is settled."""
    existing = {
        row[0]: dict(zip(VALUE_COLUMNS, row[1:], strict=True))
        for row in session.execute(
            select(MetricFact.source_id, *(getattr(MetricFact, c) for c in VALUE_COLUMNS)).where(
                MetricFact.source == source, MetricFact.source_id.in_(ids)
            )
        )
    }
    changed = [row for row in rows if existing.get(row["source_id"]) != {c: row[c] for c in VALUE_COLUMNS}]
    if changed:
        # Core executemany of one cached statement: batched into multi-row INSERTs by the driver
        # layer ("insertmanyvalues"); the ORM's bulk path would send a row at a time.
        insert = _insert(session)(MetricFact.__table__)
        upsert = insert.on_conflict_do_update(
            index_elements=["source", "source_id"], set_={c: insert.excluded[c] for c in VALUE_COLUMNS}
        )
        session.connection().execute(upsert, changed)
    gone = set(existing) - {row["source_id"] for row in rows}
    if gone:
        session.execute(
            update(MetricFact)
            .where(MetricFact.source == source, MetricFact.source_id.in_(gone))
            .values(settled=True)
            .execution_options(synchronize_session=False)
        )
    return len(changed)


# From sources to facts -------------------------------------------------------------------------


def _fact(source: str, source_id: int, channel: str, at: datetime, zone: ZoneInfo, **values: Any) -> Row:
    local = at.astimezone(zone)
    return {
        **DEFAULTS,
        "source": source,
        "source_id": source_id,
        "channel": channel,
        "at": at,
        "local_day": local.date().isoformat(),
        "local_hour": local.hour,
        "local_weekday": local.weekday(),
        **values,
    }


def contact_fact(source: str, source_id: int, contact: Contact, zone: ZoneInfo, settled: bool = True) -> Row:
    return _fact(
        source, source_id, contact.channel, contact.started_at, zone, language=contact.language,
        need=contact.need, offered=contact.offered, outcome=contact.outcome, answered_by=contact.answered_by,
        speed_to_answer_seconds=contact.speed_to_answer_seconds, waited_seconds=contact.waited_seconds,
        rollovers=contact.rollovers, co_responder_involved=contact.co_responder_involved,
        first_response_seconds=contact.first_response_seconds, settled=settled,
    )  # fmt: skip


def callback_fact(callback_id: int, request: CallbackRequest, zone: ZoneInfo) -> Row:
    return _fact(
        "callback", callback_id, request.channel, request.requested_at, zone, language=request.language,
        need=request.need, outcome=request.outcome, seconds_to_callback=request.seconds_to_callback,
    )  # fmt: skip


def followup_fact(checkin_id: int, followup: FollowUp, zone: ZoneInfo) -> Row:
    return _fact(
        "checkin", checkin_id, followup.channel, followup.due_at, zone, language=followup.language,
        need=followup.need, outcome="due", sent=followup.sent, reached=followup.reached,
        escalated=followup.escalated,
    )  # fmt: skip


def survey_fact(survey_id: int, answer: SurveyAnswer, zone: ZoneInfo) -> Row:
    return _fact(
        "survey", survey_id, answer.channel, answer.answered_at, zone, language=answer.language,
        need=answer.need, outcome="rated", rating=answer.rating,
    )  # fmt: skip


def _call_facts(
    session: DbSession, ids: list[int], zone: ZoneInfo, kinds: Mapping[str, str], _now: datetime
) -> list[Row]:
    rows = [contact_fact("call", i, c, zone) for i, c in voice_contacts(session, ids, kinds).items()]
    # A call's callbacks change with its events (``callback.*``): written with it, as their own source.
    asked = select(Callback.id).where(Callback.call_id.in_(ids))
    callbacks = [callback_fact(i, r, zone) for i, r in callback_requests(session, asked).items()]
    if callbacks:
        _write(session, "callback", [row["source_id"] for row in callbacks], callbacks)
    return rows


def _conversation_facts(
    session: DbSession, ids: list[int], zone: ZoneInfo, _kinds: Mapping[str, str], now: datetime
) -> list[Row]:
    closed = {
        i: at
        for i, state, at in session.execute(
            select(Conversation.id, Conversation.state, Conversation.closed_at).where(Conversation.id.in_(ids))
        )
        if state == "closed" and at is not None
    }
    # Open, or closed so recently that a late offer or relay may still commit: looked at again.
    return [
        contact_fact("conversation", i, c, zone, settled=i in closed and closed[i] <= now - SETTLE)
        for i, c in text_contacts(session, ids).items()
    ]


def _checkin_facts(
    session: DbSession, ids: list[int], zone: ZoneInfo, _kinds: Mapping[str, str], _now: datetime
) -> list[Row]:
    return [followup_fact(i, f, zone) for i, f in followups(session, ids).items()]


def _survey_facts(
    session: DbSession, ids: list[int], zone: ZoneInfo, _kinds: Mapping[str, str], _now: datetime
) -> list[Row]:
    return [survey_fact(i, a, zone) for i, a in survey_answers(session, ids).items()]


def _top(column: Any) -> Callable[[DbSession], int]:
    return lambda session: int(session.scalar(select(func.max(column))) or 0)


def _every(column: Any) -> Callable[[DbSession, int, int], list[int]]:
    return lambda session, after, limit: list(
        session.scalars(select(column).where(column > after).order_by(column).limit(limit))
    )


def _ids(session: DbSession, queries: Iterable[Select[Any]]) -> list[int]:
    found: set[int] = set()
    for query in queries:
        found.update(session.scalars(query))
    return sorted(found)


def _changed_calls(session: DbSession, since: int, _now: datetime) -> list[int]:
    return _ids(session, [select(CallEvent.call_id).where(CallEvent.id > since).distinct()])


def _changed_conversations(session: DbSession, since: int, _now: datetime) -> list[int]:
    return _ids(session, [
        select(Conversation.id).where(Conversation.id > since),
        select(Conversation.id).where(Conversation.state != "closed"),
        select(MetricFact.source_id).where(MetricFact.source == "conversation", MetricFact.settled.is_(False)),
    ])  # fmt: skip


def _changed_checkins(session: DbSession, since: int, now: datetime) -> list[int]:
    return _ids(session, [select(CheckIn.id).where(or_(CheckIn.id > since, CheckIn.asked_at >= now - FOLLOWUP_WINDOW))])


def _changed_surveys(session: DbSession, since: int, now: datetime) -> list[int]:
    recent = now - FOLLOWUP_WINDOW
    return _ids(session, [
        select(SurveyResponse.id).where(
            or_(SurveyResponse.id > since, SurveyResponse.asked_at >= recent, SurveyResponse.answered_at >= recent)
        )
    ])  # fmt: skip


SOURCES = (
    Source("call", _top(CallEvent.id), _every(Call.id), _changed_calls, _call_facts),
    Source("conversation", _top(Conversation.id), _every(Conversation.id), _changed_conversations, _conversation_facts),
    Source("checkin", _top(CheckIn.id), _every(CheckIn.id), _changed_checkins, _checkin_facts),
    Source("survey", _top(SurveyResponse.id), _every(SurveyResponse.id), _changed_surveys, _survey_facts),
)
