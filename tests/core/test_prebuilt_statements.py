"""Statements built once at import (the hot paths' reads and writes, issue 14) stay correct.

A prebuilt ORM UPDATE takes its values as bound parameters at execution. SQLAlchemy's default
session synchronisation ("evaluate") would read those parameters' build-time value (None) and
write it into the session's copies of the rows: every module-level UPDATE must say
``synchronize_session=False`` (and refresh what it needs through RETURNING).
"""

from __future__ import annotations

import importlib
import pkgutil
from datetime import UTC, datetime

import pytest
from sqlalchemy import BindParameter, Update, bindparam, create_engine, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import visitors

import ivr.call_log
import sms.conversations
import transfer.state
from crisisline.db import Base
from crisisline.models import ResponderState, Transfer

LINE_PACKAGES = ("crisisline", "routing", "line_queue", "transfer", "sms", "ivr", "callbacks", "followups", "workers")


def module_level_updates() -> list[tuple[str, Update]]:
    found: list[tuple[str, Update]] = []
    for package_name in LINE_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if isinstance(value, Update):
                    found.append((f"{info.name}.{name}", value))
    # UPDATEs built once per shape by a cached builder, in the shapes the line uses.
    found += [
        ("ivr.call_log._status_statement", ivr.call_log._status_statement(("status", "status_sequence"), ordered=True)),
        ("transfer.state._move_statement", transfer.state._move_statement(("ended_at", "end_reason", "state"))),
        ("sms.conversations._queue_statement", sms.conversations._queue_statement(with_need=True, with_language=True)),
    ]
    return found


def test_the_hot_paths_have_prebuilt_updates_to_check() -> None:
    names = {name for name, _statement in module_level_updates()}
    assert {"line_queue.responders._CLAIM", "transfer.state._FINISH_OFFER", "sms.outbox._SENT"} <= names


@pytest.mark.parametrize(("name", "statement"), module_level_updates(), ids=lambda value: str(value))
def test_every_prebuilt_update_leaves_session_synchronisation_off(name: str, statement: Update) -> None:
    assert statement.get_execution_options().get("synchronize_session") is False, name


def where_keys_named_like_columns(statement: Update) -> set[str]:
    """Keys bound in the WHERE clause that are also column names of the updated table.

    SQLAlchemy adds an execution key named like a column to the SET clause: a WHERE value bound
    as "transfer" would silently overwrite a column "transfer" added one day."""
    where_keys = {
        element.key
        for criterion in statement._where_criteria
        for element in visitors.iterate(criterion)
        if isinstance(element, BindParameter)
    }
    return where_keys & set(statement.table.c.keys())


@pytest.mark.parametrize(("name", "statement"), module_level_updates(), ids=lambda value: str(value))
def test_no_prebuilt_update_binds_a_where_value_under_a_column_name(name: str, statement: Update) -> None:
    assert where_keys_named_like_columns(statement) == set(), name


def test_a_where_value_bound_under_a_column_name_is_caught() -> None:
    assert where_keys_named_like_columns(update(Transfer).where(Transfer.id == bindparam("need"))) == {"need"}


def test_an_update_left_to_evaluate_bound_values_writes_none_into_the_session() -> None:
    # Why the rule exists, shown on the tempting statement: the row gets 3, the session's copy None.
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine, tables=[ResponderState.__table__])
    with Session(engine) as session:
        session.add(ResponderState(responder_id="r1", paused=False, missed_in_a_row=0, updated_at=datetime.now(UTC)))
        session.commit()
        held = session.get(ResponderState, "r1")
        assert held is not None
        tempting = update(ResponderState).where(ResponderState.responder_id == "r1")
        session.execute(tempting.values(missed_in_a_row=bindparam("missed")), {"missed": 3})
        in_database = session.scalar(select(ResponderState.missed_in_a_row).where(ResponderState.responder_id == "r1"))
        assert (in_database, held.missed_in_a_row) == (3, None)
