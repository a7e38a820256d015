"""A background job's bulk statements get a longer statement timeout for their transaction only
(the hourly purge of a large backlog failed whole on a slow moment of PostgreSQL: CI, a 70,000
call backlog, "canceling statement due to statement timeout" at the webhooks' 4 s)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import text

from crisisline.db import BULK_STATEMENT_TIMEOUT_MS, STATEMENT_TIMEOUT_MS, allow_bulk_statements, db


def _timeout_ms() -> int:
    shown = str(db.session.scalar(text("SHOW statement_timeout")))
    units = {"ms": 1, "s": 1000, "min": 60_000}
    number = shown.rstrip("amins")
    return int(number) * units[shown[len(number) :]]


def test_bulk_statements_may_take_longer_until_their_transaction_ends(app: Flask) -> None:
    with app.app_context():
        if db.session.get_bind().dialect.name != "postgresql":
            pytest.skip("SQLite has no statement timeout to raise")
        assert _timeout_ms() == STATEMENT_TIMEOUT_MS
        allow_bulk_statements()
        assert _timeout_ms() == BULK_STATEMENT_TIMEOUT_MS
        db.session.commit()
        assert _timeout_ms() == STATEMENT_TIMEOUT_MS  # the next transaction, a webhook's perhaps
