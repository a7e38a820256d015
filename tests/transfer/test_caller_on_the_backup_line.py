"""A caller the fail-safe sent to the backup line after a counselor accepted them (their join
failed) stays there: the counselor is told where they went, and neither the counselor leaving
nor the minute's repair pulls the caller back mid-conversation. Found by a review; both tests
failed before (the caller was redirected to "your counselor has left" and searched for again)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import transfer.flow
import transfer.views
from crisisline.db import db
from crisisline.models import Transfer
from tests.conftest import TEST_BACKUP_NUMBER
from tests.rota import BEN, leg_to
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
