"""``crisisline.db.ping_idle_connections``: a pooled connection is pinged before use only when
it sat idle (a request takes one from the pool once per commit; pinging each was a tenth of a
first text's round trips), and one the database dropped while idle is replaced before any
request sees it. On SQLite and PostgreSQL; the dropped connection on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text

import crisisline.db
from crisisline.db import db


@pytest.fixture
def pings(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """When the app's engine pinged a connection (monotonic seconds), while the test runs."""
    seen: list[float] = []
    with app.app_context():
        original = db.engine.dialect.do_ping

        def counting(dbapi_connection: Any) -> Any:
            seen.append(time.monotonic())
            return original(dbapi_connection)

        monkeypatch.setattr(db.engine.dialect, "do_ping", counting)
        yield seen


def one_transaction(app: Flask) -> None:
    with app.app_context():
        assert db.session.execute(select(1)).scalar() == 1
        db.session.commit()


def test_a_connection_used_moments_ago_is_not_pinged_again(app: Flask, pings: list[float]) -> None:
    for _ in range(6):
        one_transaction(app)

    # The first checkout may find a connection idle since an earlier test: one ping at most.
    assert len(pings) <= 1


def test_a_connection_idle_longer_than_the_limit_is_pinged_before_use(
    app: Flask, pings: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crisisline.db, "PING_AFTER_IDLE_SECONDS", 0.2)
    one_transaction(app)
    before = len(pings)

    time.sleep(0.3)
    one_transaction(app)

    assert len(pings) == before + 1


def test_a_connection_the_database_dropped_while_idle_is_replaced_before_use(
    app: Flask, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop a connection")
    monkeypatch.setattr(crisisline.db, "PING_AFTER_IDLE_SECONDS", 0.2)
    with app.app_context():
        dropped = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        db.session.commit()
    admin = create_engine(database_url)
    with admin.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped}).scalar()
    admin.dispose()

    time.sleep(0.3)
    with app.app_context():
        replacement = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        db.session.commit()

    assert replacement != dropped


def test_a_failed_ping_replaces_every_connection_the_pool_held_before_it(
    app: Flask, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a database restart the first failed ping tells the pool so: a connection used
    moments before the restart is not handed out unpinged (as ``pool_pre_ping`` does)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop a connection")
    with app.app_context():
        engine = db.engine
        with engine.connect() as first, engine.connect() as second:  # two pooled connections
            dropped = {
                first.execute(text("SELECT pg_backend_pid()")).scalar(),
                second.execute(text("SELECT pg_backend_pid()")).scalar(),
            }
        admin = create_engine(database_url)
        with admin.connect() as connection:
            for pid in dropped:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.dispose()
        time.sleep(0.1)

        monkeypatch.setattr(crisisline.db, "PING_AFTER_IDLE_SECONDS", 0.0)  # this checkout pings
        with engine.connect() as pinged:
            assert pinged.execute(select(1)).scalar() == 1
        monkeypatch.setattr(crisisline.db, "PING_AFTER_IDLE_SECONDS", 1000.0)  # these do not
        with engine.connect() as one, engine.connect() as other:
            now_serving = {
                one.execute(text("SELECT pg_backend_pid()")).scalar(),
                other.execute(text("SELECT pg_backend_pid()")).scalar(),
            }

    assert not now_serving & dropped
