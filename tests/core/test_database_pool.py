"""Every thread that serves a webhook, or the work a webhook starts, gets a PostgreSQL connection
without waiting behind another: with SQLAlchemy's default pool (5 + 10) a surge on a slow
database made callers wait out their deadline for one and hear the backup line
(``bench.slow_database``)."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest
from sqlalchemy import exc, text

from crisisline import background, create_app
from crisisline.app import DATABASE_OVERFLOW, database_pool
from crisisline.db import CONNECT_TIMEOUT_SECONDS, db
from crisisline.deadline import STATUS_WORKERS, VOICE_WORKERS
from crisisline.settings import Settings
from tests.conftest import settings_for

WEBHOOK_THREADS = VOICE_WORKERS + STATUS_WORKERS + background.WORKERS


def test_the_pool_holds_a_connection_for_every_webhook_thread_and_the_overflow_for_the_rest(
    settings: Settings,
) -> None:
    assert database_pool(settings) == (WEBHOOK_THREADS, DATABASE_OVERFLOW)


def test_an_operator_can_size_the_pool_to_fit_the_databases_connection_limit(database_url: str, redis_url: str) -> None:
    sized = settings_for(database_url, redis_url, DATABASE_POOL_SIZE="10", DATABASE_MAX_OVERFLOW="0")

    assert database_pool(sized) == (10, 0)


def test_every_webhook_thread_and_the_overflow_hold_connections_at_once_and_one_more_waits(
    settings: Settings,
) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("the pool is sized for PostgreSQL; SQLite takes one writer at a time")
    app = create_app(settings)
    with app.app_context(), ExitStack() as held:
        for _ in range(WEBHOOK_THREADS + DATABASE_OVERFLOW):
            connection = held.enter_context(db.engine.connect())
            assert connection.execute(text("SELECT 1")).scalar() == 1
        started = time.monotonic()
        with pytest.raises(exc.TimeoutError):
            db.engine.connect()
        assert time.monotonic() - started == pytest.approx(CONNECT_TIMEOUT_SECONDS, abs=0.5)
    with app.app_context():
        db.engine.dispose()
