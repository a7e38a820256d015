"""Fixtures shared by the core tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from crisisline.db import db


@pytest.fixture
def statements(app: Flask) -> Iterator[list[str]]:
    """Every statement the app's engine sends while the test runs (whitespace collapsed), in an
    app context."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()))

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            yield sent
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
            db.session.rollback()
