"""``crisisline.db.keep_prepared_statements``: on PostgreSQL a rolled-back transaction (how
every read-only request ends) keeps the statements psycopg prepared on the connection, where
psycopg's own rollback forgets them all (``DEALLOCATE ALL``) and PostgreSQL plans each statement
again. A rollback still discards what the transaction wrote, ends a failed transaction, and a
connection the database dropped still fails as SQLAlchemy expects (it is replaced)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from crisisline.db import db
from crisisline.models import BlockedNumber

# psycopg prepares a statement on a connection after it has run this many times there.
PREPARE_THRESHOLD = 5


@pytest.fixture
def postgres_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("prepared statements are PostgreSQL's")


def prepared_here(connection) -> set[str]:  # type: ignore[no-untyped-def]
    rows = connection.execute(text("SELECT statement FROM pg_prepared_statements")).scalars()
    return set(rows)


@pytest.mark.usefixtures("postgres_only")
def test_a_rolled_back_read_keeps_the_connections_prepared_statements(app: Flask) -> None:
    with app.app_context(), db.engine.connect() as connection:
        for _ in range(PREPARE_THRESHOLD + 1):
            connection.execute(select(BlockedNumber.id).where(BlockedNumber.id == 1)).all()
        assert any("blocked_numbers" in statement for statement in prepared_here(connection))

        connection.rollback()  # as a read-only request's end does

        assert any("blocked_numbers" in statement for statement in prepared_here(connection))


@pytest.mark.usefixtures("postgres_only")
def test_a_session_removed_after_reads_leaves_them_prepared_for_the_next_request(app: Flask) -> None:
    with app.app_context():
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        for _ in range(PREPARE_THRESHOLD + 1):
            db.session.execute(select(BlockedNumber.id).where(BlockedNumber.id == 1)).all()
        db.session.remove()  # Flask-SQLAlchemy's teardown: the transaction is rolled back
    with app.app_context():
        assert db.session.execute(text("SELECT pg_backend_pid()")).scalar() == pid  # the same pooled connection
        kept = set(db.session.execute(text("SELECT statement FROM pg_prepared_statements")).scalars())
        db.session.remove()
    assert any("blocked_numbers" in statement for statement in kept)


def test_a_rollback_still_discards_what_the_transaction_wrote(app: Flask) -> None:
    with app.app_context():
        db.session.add(BlockedNumber(number_hash="h" * 64, added_by="tests"))
        db.session.flush()
        assert db.session.scalar(select(BlockedNumber.id)) is not None
        db.session.rollback()
        assert db.session.scalar(select(BlockedNumber.id)) is None
        db.session.remove()


def test_a_failed_transaction_is_ended_and_the_connection_used_again(app: Flask) -> None:
    with app.app_context(), db.engine.connect() as connection:
        with pytest.raises(DBAPIError):
            connection.execute(text("SELECT no_such_column FROM blocked_numbers"))
        connection.rollback()
        assert connection.execute(select(1)).scalar() == 1


@pytest.mark.usefixtures("postgres_only")
def test_a_connection_the_database_dropped_mid_transaction_is_replaced(app: Flask, database_url: str) -> None:
    with app.app_context():
        dropped = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        admin = create_engine(database_url)
        with admin.connect() as other:
            assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped}).scalar()
        admin.dispose()
        with pytest.raises(DBAPIError):  # its rollback finds it gone, as psycopg's own does
            db.session.remove()
        replacement = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        db.session.remove()
    assert replacement != dropped


@pytest.mark.usefixtures("postgres_only")
def test_a_statement_a_migration_made_stale_fails_once_and_the_next_requests_heal(
    app: Flask, database_url: str
) -> None:
    """Another process's migration widens a column a prepared statement reads: its next run
    fails ("cached plan must not change result type"); the failed transaction's rollback
    forgets the connection's prepared statements, so later requests on it run (found by review:
    a first version kept them through that rollback too, and every later request failed)."""
    stale = text("SELECT id, label FROM kept_prepared_stale WHERE id = :id")
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as other:
        other.execute(text("DROP TABLE IF EXISTS kept_prepared_stale"))
        other.execute(text("CREATE TABLE kept_prepared_stale (id int primary key, label varchar(20))"))
        other.execute(text("INSERT INTO kept_prepared_stale VALUES (1, 'x')"))
    try:
        with app.app_context():
            for _ in range(PREPARE_THRESHOLD + 1):  # prepared on this pooled connection
                db.session.execute(stale, {"id": 1}).all()
                db.session.remove()
            with admin.connect() as other:  # a deploy's release step, from another machine
                other.execute(text("ALTER TABLE kept_prepared_stale ALTER COLUMN label TYPE varchar(40)"))
            first_failure = ""
            try:  # fails if it ran on the connection that prepared it
                db.session.execute(stale, {"id": 1}).all()
            except DBAPIError as error:
                first_failure = str(error)
            db.session.remove()
            later = []
            for _ in range(5):
                later.append(db.session.execute(stale, {"id": 1}).all())
                db.session.remove()
        assert first_failure == "" or "cached plan must not change result type" in first_failure
        assert later == [[(1, "x")]] * 5
    finally:
        with admin.connect() as other:
            other.execute(text("DROP TABLE IF EXISTS kept_prepared_stale"))
        admin.dispose()
