"""The *Add account* form sent twice at once (a double click, two administrators): one account
is made, and the other request is refused in words, never a 500 from the unique index. For
every role, not only counselors (whose link to a responder took the accounts' lock already)."""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask
from sqlalchemy import func, select

from console.accounts import users
from console.audit.log import CLI
from console.models import ADMIN, COUNSELOR, SUPERVISOR, User
from crisisline.db import db
from tests.console.conftest import COUNSELOR_RESPONDER, PASSWORD


@pytest.mark.parametrize("role", [SUPERVISOR, ADMIN, COUNSELOR])
def test_the_same_account_added_twice_at_once_is_made_once_and_the_second_is_told_it_exists(
    app: Flask, role: str
) -> None:
    responder_id = COUNSELOR_RESPONDER if role == COUNSELOR else None
    first_added = threading.Event()
    outcome: dict[str, str] = {}

    def add(who: str) -> None:
        with app.app_context():
            try:
                users.create_user("sue", PASSWORD, role=role, actor=CLI, responder_id=responder_id)
            except users.AccountError as refused:
                db.session.rollback()
                outcome[who] = str(refused)
                return
            except Exception as error:  # what the page would have turned into a 500
                db.session.rollback()
                outcome[who] = type(error).__name__
                return
            if who == "first":
                first_added.set()
                time.sleep(0.5)  # slow to commit: meanwhile the form comes again
            db.session.commit()
            outcome[who] = "made"

    def second() -> None:
        first_added.wait(timeout=10)
        add("second")

    threads = [threading.Thread(target=add, args=("first",)), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert outcome == {"first": "made", "second": "There is already an account named 'sue'."}
    with app.app_context():
        assert db.session.scalar(select(func.count(User.id)).where(User.username == "sue")) == 1
