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
