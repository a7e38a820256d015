"""The SQLAlchemy handle and the engine options that keep webhooks fast when the DB is sick."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from psycopg import pq
from sqlalchemy import BindParameter, DateTime, Insert, MetaData, Table, bindparam, event, exc, literal, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, ORMExecuteState, Session, SessionTransaction
from sqlalchemy.sql.util import find_tables
from sqlalchemy.types import TypeDecorator

# Stable constraint names so Alembic migrations are reproducible on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
M = TypeVar("M", bound=Base)

# Models subclass ``Model``: Flask-SQLAlchemy's ``db.Model`` at run time, typed as ``Base``.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model


def init_migrations(app: Flask, directory: Path) -> None:
    """Flask-Migrate (``flask db``), except in a gunicorn web worker: it never migrates (the
    Procfile's release step does), and Alembic would cost every worker 12 MiB of memory."""
    if "gunicorn" in sys.modules:
        return
    from flask_migrate import Migrate

    Migrate(app, db, directory=str(directory), render_as_batch=True)


# A voice webhook must answer Twilio within 15 s; a database that hangs must fail fast so the
# fail-safe can still dial the backup line.
CONNECT_TIMEOUT_SECONDS = 2
STATEMENT_TIMEOUT_MS = 4000
# A background job's bulk statements (the hourly purge over a backlog) are on no caller's
# path: for their transaction only, they may take this long (``allow_bulk_statements``).
BULK_STATEMENT_TIMEOUT_MS = 120_000


# A connection back in the pool for longer than this is pinged before its next use; one used
# more recently is taken as alive. (A request takes a connection from the pool once per commit,
# ten times for a first text: ``pool_pre_ping`` made each a round trip to the database.)
PING_AFTER_IDLE_SECONDS = 1.0
_RETURNED_AT = "crisisline.returned_at"


def engine_options(database_url: str, pool: tuple[int, int] | None = None) -> dict[str, Any]:
    """Engine options per backend: short timeouts, no parameters in error text (pings:
    ``ping_idle_connections``); ``pool``: PostgreSQL's pool size and overflow (connections
    are opened as threads need them; the size is how many stay open)."""
    options: dict[str, Any] = {"hide_parameters": True}
    if database_url.startswith("postgresql"):
        options["connect_args"] = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        }
        options["pool_timeout"] = CONNECT_TIMEOUT_SECONDS
        if pool is not None:
            options["pool_size"], options["max_overflow"] = pool
    elif database_url.startswith("sqlite"):
        options["connect_args"] = {"timeout": 5}
    return options


def ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection before use when it sat idle over ``PING_AFTER_IDLE_SECONDS``.

    One that fails its ping is replaced before the request uses it, and with it every pooled
    connection older than that moment (the pool retries the checkout on ``InvalidatePoolError``),
    as ``pool_pre_ping`` does, so a database restart or a dropped idle connection costs no
    caller anything. A connection that died less than a second after its last successful use
    fails its statement instead: the request answers through its fail-safe, and SQLAlchemy
    drops every pooled connection that old.
    """

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
            return
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if not dialect.is_disconnect(error, dbapi_connection, None):
                raise  # not a lost connection: the request fails as it would have (pre-ping did the same)
            # The database went away (a restart, a failover): as pre-ping does, every connection
            # opened before now is replaced, not only this one; the checkout retries on a new one.
            raise exc.InvalidatePoolError("an idle connection failed its ping") from error


def keep_prepared_statements(engine: Engine) -> None:
    """On PostgreSQL, end a transaction that is rolled back without forgetting the connection's
    prepared statements (``_KeepPreparedConnection``). No-op on other databases."""
    if engine.dialect.driver != "psycopg":
        return

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        return _KeepPreparedConnection.connect(*cargs, **cparams)


class _KeepPreparedConnection(psycopg.Connection[Any]):
    """psycopg prepares a statement on a connection once it has run 5 times there, and forgets
    all of them (``DEALLOCATE ALL``) on every ROLLBACK, in case the transaction dropped or altered
    what they use. Every read-only request ends its transaction with a ROLLBACK (a hold turn,
    the most frequent webhook, among them), so statements were almost never prepared and
    PostgreSQL parsed and planned each one again: 30 to 50% of its CPU per webhook
    (``bench.cpu --database-cpu``, docs/performance.md). So the rollback of a transaction in good
    standing keeps them. Anything else goes through psycopg's own rollback, which forgets them
    and raises as SQLAlchemy expects: a failed transaction (a statement a migration in another
    process made stale fails once, and the next request runs it afresh), a lost connection."""

    def rollback(self) -> None:
        connection = self.pgconn
        status = connection.transaction_status
        if connection.status == pq.ConnStatus.OK and status == pq.TransactionStatus.IDLE:
            return  # nothing to end (psycopg's own rollback does the same)
        # Only a transaction in good standing: one that failed may have failed on a prepared
        # statement another process's migration made stale ("cached plan must not change result
        # type"), and psycopg's own rollback forgets them all, so the next request heals.
        if connection.status == pq.ConnStatus.OK and status == pq.TransactionStatus.INTRANS:
            result = connection.exec_(b"ROLLBACK")  # libpq's own, which lets other threads run while it waits
            if result.status == pq.ExecStatus.COMMAND_OK:
                return
        super().rollback()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the web and worker processes share the default SQLite file."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def hold_lock(name: str) -> None:
    """Serialise this transaction with every other that asks for ``name``, in any process,
    until it commits or rolls back. PostgreSQL: a transaction-level advisory lock on the name's
    hash (no row is written; a name may carry a keyed hash, never personal data). SQLite: a
    write of no rows, which takes its one database-wide write lock now (any table will do)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(_ADVISORY_LOCK, {"name": name})
    else:
        db.session.execute(_SQLITE_WRITE_LOCK)


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))")
_SQLITE_WRITE_LOCK = text("UPDATE calls SET id = id WHERE 0 = 1")


def constant(value: str) -> BindParameter[str]:
    """``value`` written into the statement's SQL rather than sent beside it. SQLite uses a
    partial index only when the query implies the index's condition, and it cannot tell that
    ``status IN (?, ?)`` does: it reads the whole table (34.8 ms on 200,000 texts against 0.03
    with the list written in; ``tests/console/test_delivery_in_the_thread.py`` checks the plan)."""
    return literal(value, literal_execute=True)


def commit_keeping_loaded() -> None:
    """Commit without expiring the rows this session has loaded.

    For a commit of rows nobody here reads back (a text's claim, a new transfer just read
    through RETURNING): without it every row the request holds is read again on its next
    use, a SELECT each (measured: a fifth of an inbound text's time). What the session holds
    stays as it was read, so a value read before a Twilio request is as old as that request:
    code that decides on state another process may change (a conversation's state, a
    transfer's) refreshes it first (``db.session.refresh``), and state changes that race are
    conditional UPDATEs, which never rely on a value held here.
    """
    session = db.session()
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True


def insert_once(model: Any, values: dict[str, Any]) -> bool:
    """Insert the row unless a unique constraint says it exists already; True if inserted."""
    return inserted_id(model, values) is not None


# Statements built once. On the webhooks' paths, building a statement (SQLAlchemy's coercions
# and cache key) costs about as much CPU as running it (bench.cpu, docs/performance.md), so the
# hot paths build theirs at import, or once per shape (``functools.cache``), and bind their
# values at execution. A prebuilt ORM UPDATE says ``synchronize_session=False`` (the default
# "evaluate" would write a bound value's build-time None into the session's copies) and binds
# WHERE values under names that are no column's (tests/core/test_prebuilt_statements.py).


def bound_set(columns: tuple[str, ...]) -> dict[str, Any]:
    """The SET clause of an UPDATE built once per set of ``columns``: each bound as
    ``new_<column>`` (SQLAlchemy reserves a column's own name). Pair with ``new_values``."""
    return {column: bindparam(f"new_{column}") for column in columns}


def new_values(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` keyed as ``bound_set`` binds them."""
    return {f"new_{column}": value for column, value in values.items()}


def inserted_id(model: Any, values: dict[str, Any]) -> Any | None:
    """``insert_once``, returning the new row's primary key (None if the row existed).

    ``values`` are plain values (no SQL expressions), bound to a statement built once per table.
    Uses RETURNING, which saves reading the new row's id back; the table's column names are its
    attributes' names throughout ``crisisline.models``.
    """
    statement = _insert_once_returning_key(db.session.get_bind().dialect.name, model.__table__)
    row = db.session.execute(statement, values).first()
    return row[0] if row is not None else None


def _insert(dialect: str, target: Any) -> Insert:
    """An INSERT that can say ON CONFLICT DO NOTHING, on PostgreSQL or SQLite."""
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(target).on_conflict_do_nothing()


@cache
def _insert_once_returning_key(dialect: str, table: Table) -> Insert:
    return _insert(dialect, table).returning(*table.primary_key.columns)


def inserted_row(model: type[M], values: dict[str, Any]) -> M | None:
    """``insert_once``, returning the new row, loaded (None if the row existed): one statement
    where an insert and a read would be two. ``values`` are plain values, as for ``inserted_id``."""
    statement = _insert_once_returning_row(db.session.get_bind().dialect.name, model)
    row: M | None = db.session.scalars(statement, values).first()
    return row


@cache
def _insert_once_returning_row(dialect: str, model: type[Any]) -> Insert:
    # "orm", not the "bulk" mode a params dict would pick: a None is written as NULL (bulk
    # mode leaves it out, so a column default would fill in) and an unknown key raises.
    return _insert(dialect, model).returning(model).execution_options(dml_strategy="orm")


# Rows written at commit, per table: see ``insert_once_at_commit``.
_AT_COMMIT = "crisisline.insert_at_commit"


def insert_once_at_commit(model: Any, values: dict[str, Any]) -> None:
    """``insert_once``, written when the session commits, in one statement with the other rows
    of its table that this transaction added the same way (a need answer records three call
    events: one INSERT, not three). For append-only rows nobody reads back in the request.

    Nothing is lost or seen late: any statement of this session that involves the table writes
    the rows first (``_write_before_reading``), and a rollback or close drops them with the rest
    of the transaction. ``values`` must carry the same keys for every row of a table. A read
    that reaches the table only through a relationship (``joinedload``, ``join(Call.events)``)
    is not seen as involving it: read such rows with a statement that names their table."""
    session = db.session()
    if not session.in_transaction():
        # Held rows belong to a transaction: with none begun yet, a rollback would have none
        # to end and would leave them for the next commit.
        session.begin()
    pending: dict[Table, list[dict[str, Any]]] = session.info.setdefault(_AT_COMMIT, {})
    pending.setdefault(model.__table__, []).append(values)


def _write_pending(session: Session, tables: Any = None) -> None:
    """Write the rows ``insert_once_at_commit`` holds (of ``tables`` only, if given)."""
    pending: dict[Table, list[dict[str, Any]]] | None = session.info.get(_AT_COMMIT)
    if not pending:
        return
    dialect = session.get_bind().dialect.name
    for table in [table for table in pending if tables is None or table in tables]:
        rows = pending.pop(table)  # popped first: the INSERT below passes through the hook too
        session.execute(_insert_many_once(dialect, table), rows)


@cache
def _insert_many_once(dialect: str, table: Table) -> Insert:
    return _insert(dialect, table)


@event.listens_for(Session, "before_commit")
def _write_at_commit(session: Session) -> None:
    _write_pending(session)


@event.listens_for(Session, "do_orm_execute")
def _write_before_reading(state: ORMExecuteState) -> None:
    """Rows held for the commit are written before a statement that involves their table (or
    one whose tables are unknown, as raw SQL's are): a read in the same transaction sees them."""
    if state.session.info.get(_AT_COMMIT):
        statement: Any = state.statement
        tables = find_tables(statement, check_columns=True, include_crud=True)
        _write_pending(state.session, set(tables) if tables else None)


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    """A rollback or close drops what the transaction would have written at its commit."""
    if transaction.parent is None:
        session.info.pop(_AT_COMMIT, None)


def insert_ignoring_duplicates(model: Any, values: dict[str, Any]) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` on either backend: the basis of idempotent webhooks.

    Check-then-insert races between processes; a unique constraint plus this does not.
    """
    return insert_ignoring_conflicts(model).values(**values)


def insert_ignoring_conflicts(model: Any) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` on this session's backend, to give its rows
    (``.values``, ``.from_select``)."""
    return _insert(db.session.get_bind().dialect.name, model)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def allow_bulk_statements() -> None:
    """Until this transaction ends, statements may take ``BULK_STATEMENT_TIMEOUT_MS`` rather
    than a webhook's ``STATEMENT_TIMEOUT_MS`` (PostgreSQL's ``SET LOCAL``; SQLite has no
    timeout). For background jobs' bulk work, never a webhook: one slow moment of the server
    must not fail the hourly purge of a large backlog whole, hour after hour."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text(f"SET LOCAL statement_timeout = {BULK_STATEMENT_TIMEOUT_MS}"))
