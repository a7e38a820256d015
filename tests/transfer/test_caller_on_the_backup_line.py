"""A caller the fail-safe sent to the backup line after a counselor accepted them (their join
failed) stays there: the counselor is told where they went, and neither the counselor leaving
nor the minute's repair pulls the caller back mid-conversation. Found by a review; both tests
failed before (the caller was redirected to "your counselor has left" and searched for again)."""

from __future__ import annotations

import time

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import followups.views
import transfer.flow
import transfer.views
from crisisline.db import db
from crisisline.models import Transfer
from tests.conftest import TEST_BACKUP_NUMBER
from tests.rota import BEN, leg_to, legs
from twilio_fake.phone import TALKING, Keys, Phone
from twilio_fake.rest_api import FakeTwilio


def database_fails(*_args: object, **_kwargs: object) -> object:
    raise OperationalError("UPDATE", {}, Exception("server closed the connection unexpectedly"))


def transfer_states(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Transfer.state).order_by(Transfer.id)))


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_whose_join_failed_stays_on_the_backup_line_and_their_counselor_is_told(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    with monkeypatch.context() as outage:
        outage.setattr(transfer.flow, "caller_joined", database_fails)
        ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
        phone.resume(caller, dial_outcomes=[TALKING], max_hold_turns=0)
    assert caller.dials and caller.dials[-1].numbers == [TEST_BACKUP_NUMBER]
    assert caller.ended_by == "on-a-dial"  # talking with the backup line
    # Twilio is asked where the caller is a few seconds after the fail-safe answered (this
    # test's phone dials only after that work is done), and by the minute's repair after.
    with app.app_context():
        from workers.upkeep import reconcile_transfers

        assert reconcile_transfers()["callers_moved"] >= 1

    phone.resume(ben)

    assert "The caller has been passed to our backup line." in ben.heard_text()
    assert transfer_states(app) == ["to_backup"]
    redirects = [redirect.url or "" for redirect in fake.get_call(caller.identity.call_sid).redirects]
    assert not any("staff-left" in url for url in redirects), redirects


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_on_the_backup_line_after_a_failed_staff_left_turn_is_left_there_by_the_minutes_repair(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.upkeep import reconcile_transfers

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference == ben.conference is not None
    with monkeypatch.context() as outage:
        outage.setattr(transfer.views, "requested_transfer", database_fails)  # the staff-left turn fails
        phone.hang_up(ben)
        app.extensions["crisisline.background"].wait_idle(timeout=30)
        phone.resume(caller, dial_outcomes=[TALKING], max_hold_turns=0)
    assert caller.dials and caller.dials[-1].numbers == [TEST_BACKUP_NUMBER]
    before = len(fake.get_call(caller.identity.call_sid).redirects)

    with app.app_context():
        reconcile_transfers()
        reconcile_transfers()

    assert len(fake.get_call(caller.identity.call_sid).redirects) == before
    assert transfer_states(app) == ["to_backup"]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_staff_left_turn_answered_by_the_fail_safe_rings_nobody_for_the_caller_on_the_backup_line(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a bug hunt: the late handler of a staff-left turn went on to search again for a
    caller the deadline had sent to the backup line, and rang Diego, who pressed 1 for nobody."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference == ben.conference is not None
    monkeypatch.setattr(app.extensions["crisisline.deadline"], "seconds", 1.0)

    def slow_database(*_args: object, **_kwargs: object) -> None:
        time.sleep(1.6)
        return None  # no check-in question (check-ins off, or they sent STOP): search again

    monkeypatch.setattr(followups.views, "checkin_offer", slow_database)
    phone.hang_up(ben)
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    phone.resume(caller, dial_outcomes=[TALKING], max_hold_turns=0)
    assert caller.dials and caller.dials[-1].numbers == [TEST_BACKUP_NUMBER]  # the deadline's answer
    rung_before = {leg.sid for leg in legs(fake)}
    app.extensions["crisisline.deadline"].shutdown(wait=True)  # the late handler finishes
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert [leg.to for leg in legs(fake) if leg.sid not in rung_before] == []
    assert transfer_states(app) in (["ended", "to_backup"], ["to_backup", "to_backup"])
