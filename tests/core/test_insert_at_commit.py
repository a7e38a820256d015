"""``crisisline.db.insert_once_at_commit``: append-only rows (call events) written when the
transaction commits, a table's rows in one statement; seen by any read of their table before
that; gone with a rollback; a duplicate still recorded once. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import exists, func, select, text

from crisisline.db import db, insert_once_at_commit
from crisisline.models import Call, CallEvent


@pytest.fixture
def call(statements: list[str]) -> Call:
    row = Call(call_sid=f"CA{datetime.now(UTC).timestamp():.6f}".replace(".", ""), status="ringing")
    db.session.add(row)
    db.session.commit()
    statements.clear()
    return row


def event_values(call: Call, key: str, kind: str = "menu.need.chosen") -> dict[str, Any]:
    return {"call_id": call.id, "kind": kind, "dedupe_key": key, "detail": {"need": "x"},
            "occurred_at": datetime.now(UTC), "sealed_detail": None}  # fmt: skip


def inserts_into_events(statements: list[str]) -> list[str]:
    return [s for s in statements if s.upper().startswith("INSERT INTO CALL_EVENTS")]


def keys_in_database(app: Flask, call_id: int) -> list[str]:
    """What another connection sees: committed rows only."""
    with db.engine.connect() as other:
        rows = other.execute(select(CallEvent.dedupe_key).where(CallEvent.call_id == call_id).order_by(CallEvent.id))
        return [row[0] for row in rows]


def test_three_events_are_written_by_one_statement_when_the_transaction_commits(
    app: Flask, statements: list[str], call: Call
) -> None:
    call_id = call.id
    for key in ("a", "b", "c"):
        insert_once_at_commit(CallEvent, event_values(call, key))
    assert inserts_into_events(statements) == []  # nothing sent before the commit

    db.session.commit()

    assert len(inserts_into_events(statements)) == 1
    assert keys_in_database(app, call_id) == ["a", "b", "c"]


def test_a_read_of_the_events_table_in_the_same_transaction_sees_the_held_rows(
    statements: list[str], call: Call
) -> None:
    insert_once_at_commit(CallEvent, event_values(call, "redirect_failed"))

    seen = db.session.scalar(select(CallEvent.id).where(CallEvent.dedupe_key == "redirect_failed"))

    assert seen is not None
    assert len(inserts_into_events(statements)) == 1


def test_a_subquery_on_the_events_table_and_raw_sql_see_the_held_rows(statements: list[str], call: Call) -> None:
    insert_once_at_commit(CallEvent, event_values(call, "in-a-subquery"))
    key = "in-a-subquery"
    has_event = exists(select(CallEvent.id).where(CallEvent.call_id == Call.id, CallEvent.dedupe_key == key))
    assert db.session.scalar(select(func.count(Call.id)).where(Call.id == call.id, has_event)) == 1

    insert_once_at_commit(CallEvent, event_values(call, "by-raw-sql"))
    raw = text("SELECT count(*) FROM call_events WHERE dedupe_key = :key")
    assert db.session.scalar(raw, {"key": "by-raw-sql"}) == 1


def test_reads_of_other_tables_leave_the_rows_held_for_the_commit(statements: list[str], call: Call) -> None:
    insert_once_at_commit(CallEvent, event_values(call, "held"))

    db.session.scalar(select(Call.status).where(Call.id == call.id))

    assert inserts_into_events(statements) == []
    db.session.commit()
    assert len(inserts_into_events(statements)) == 1


def test_a_rollback_drops_the_held_rows_and_the_next_transaction_does_not_write_them(
    app: Flask, statements: list[str], call: Call
) -> None:
    call_id = call.id
    insert_once_at_commit(CallEvent, event_values(call, "rolled-back"))
    db.session.rollback()

    insert_once_at_commit(CallEvent, event_values(call, "kept"))
    db.session.commit()

    assert keys_in_database(app, call_id) == ["kept"]


def test_a_closed_session_drops_the_held_rows(app: Flask, statements: list[str], call: Call) -> None:
    call_id = call.id
    insert_once_at_commit(CallEvent, event_values(call, "closed"))
    db.session.remove()  # the end of a request that never committed

    db.session.commit()

    assert keys_in_database(app, call_id) == []


def test_a_duplicate_key_is_recorded_once_within_one_commit_and_across_commits(
    app: Flask, statements: list[str], call: Call
) -> None:
    call_id = call.id
    insert_once_at_commit(CallEvent, event_values(call, "twice", kind="first"))
    insert_once_at_commit(CallEvent, event_values(call, "twice", kind="second"))
    db.session.commit()
    insert_once_at_commit(CallEvent, event_values(call, "twice", kind="third"))
    db.session.commit()

    with db.engine.connect() as other:
        kinds = other.execute(select(CallEvent.kind).where(CallEvent.call_id == call_id)).scalars().all()
    assert kinds == ["first"]


def test_rows_held_before_any_statement_of_the_transaction_are_dropped_by_its_rollback(
    app: Flask, statements: list[str], call: Call
) -> None:
    call_id, values = call.id, event_values(call, "first-act")
    db.session.commit()  # nothing begun: holding the row is the next transaction's first act
    insert_once_at_commit(CallEvent, values)
    db.session.rollback()

    db.session.commit()

    assert keys_in_database(app, call_id) == []
