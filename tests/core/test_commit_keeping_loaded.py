"""``crisisline.db.commit_keeping_loaded``: a commit after which the rows a request holds are
not read again (a SELECT each, a fifth of an inbound text's time before it), while a plain
commit still expires them, and the session's setting is back whatever the commit did. On
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from crisisline.db import commit_keeping_loaded, db
from crisisline.models import Call, Texter, utcnow


@pytest.fixture
def make_texter(statements: list[str]) -> Callable[[str], Texter]:
    def make(number_hash: str) -> Texter:
        texter = Texter(number_hash=number_hash, sealed_number="sealed", opted_out=False, created_at=utcnow())
        db.session.add(texter)
        db.session.commit()
        return db.session.scalars(select(Texter).where(Texter.number_hash == number_hash)).one()

    return make


def test_a_row_read_before_the_commit_is_used_after_it_without_a_select(
    statements: list[str], make_texter: Callable[[str], Texter]
) -> None:
    texter = make_texter("hash-kept")
    texter.opted_out = True
    commit_keeping_loaded()
    statements.clear()

    assert (texter.id, texter.opted_out, texter.number_hash) == (texter.id, True, "hash-kept")
    assert statements == []
    assert db.session.scalar(select(Texter.opted_out).where(Texter.id == texter.id)) is True  # it was committed


def test_a_plain_commit_still_expires_what_was_loaded(
    statements: list[str], make_texter: Callable[[str], Texter]
) -> None:
    texter = make_texter("hash-expired")
    db.session.commit()
    statements.clear()

    assert texter.number_hash == "hash-expired"
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")


def test_a_change_written_by_a_statement_is_seen_after_an_explicit_refresh(
    statements: list[str], make_texter: Callable[[str], Texter]
) -> None:
    """What the docstring promises: code that must see a change not made through the object
    refreshes it (the kept copy is otherwise the one read before the commit)."""
    texter = make_texter("hash-refreshed")
    # As the line's conditional UPDATEs are sent: the session does not apply them to its copies.
    changed = update(Texter).where(Texter.id == texter.id).values(opted_out=True)
    db.session.execute(changed.execution_options(synchronize_session=False))
    commit_keeping_loaded()

    assert texter.opted_out is False
    db.session.refresh(texter)
    assert texter.opted_out is True


def test_the_session_expires_on_commit_again_after_a_failed_commit(
    statements: list[str], make_texter: Callable[[str], Texter]
) -> None:
    make_texter("hash-taken")
    db.session.add(Texter(number_hash="hash-taken", sealed_number="x", opted_out=False, created_at=utcnow()))

    with pytest.raises(IntegrityError):
        commit_keeping_loaded()

    db.session.rollback()
    assert db.session().expire_on_commit is True


def test_a_call_status_written_by_its_conditional_update_is_what_the_kept_copy_holds(
    statements: list[str],
) -> None:
    from ivr import call_log

    call = call_log.open_call("CA" + "7" * 32, "+13125550142", None)
    commit_keeping_loaded()

    assert call_log.apply_status(call, "in-progress", 2, None)
    commit_keeping_loaded()
    statements.clear()
    assert (call.status, call.status_sequence) == ("in-progress", 2)
    assert statements == []  # the copy followed the row: nothing read again

    # An older callback arriving late changes nothing; the copy reads the row again when used.
    other = update(Call).where(Call.id == call.id).values(status_sequence=5)
    db.session.execute(other.execution_options(synchronize_session=False))
    assert not call_log.apply_status(call, "ringing", 1, None)
    commit_keeping_loaded()
    assert (call.status, call.status_sequence) == ("in-progress", 5)
