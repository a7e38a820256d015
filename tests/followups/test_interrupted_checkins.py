"""A check-in whose run stops part way (a database blip in its sender, a worker killed) is
never silently dropped: run again if its text was never claimed (nothing went out), else
flagged so supervisors are told and the board lists it. Before, it stayed ``consented`` for
good and its contact went to ``needs_human``, which nothing showed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from crisisline.db import db
from crisisline.models import Message, ScheduledContact
from followups import checkins as checkins_module
from tests.conftest import TextingPhone
from tests.faults import failing_once_on_the_database
from tests.followups.conftest import checkins
from tests.followups.test_checkins import CHECKIN_EN, HOURS, SUPERVISOR, TEXTER, consent_by_text
from tests.followups.test_survey_and_retention import survey_on
from workers.contacts import RERUN_AFTER, rebuild_schedule


def test_a_checkin_whose_send_hits_a_database_blip_is_sent_a_minute_later(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    consent_by_text(app, texting)
    wednesday_evening.shift(12 * HOURS + timedelta(minutes=1))
    blip = failing_once_on_the_database(checkins_module._in_conversation)
    monkeypatch.setattr(checkins_module, "_in_conversation", blip)
    with pytest.raises(OperationalError):
        run_due()  # the job fails as RQ sees it
    assert texting.inbox(TEXTER)[-1] != CHECKIN_EN

    wednesday_evening.shift(RERUN_AFTER)
    with app.app_context():
        rebuild_schedule()  # the clock queues it again: its job failed
    assert run_due() == ["sent"]

    assert texting.inbox(TEXTER).count(CHECKIN_EN) == 1
    (checkin,) = checkins(app)
    assert checkin.state == "sent"


def test_a_checkin_whose_worker_died_after_claiming_its_text_is_flagged_to_the_supervisors(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]],
) -> None:  # fmt: skip
    consent_by_text(app, texting)
    wednesday_evening.shift(12 * HOURS + timedelta(minutes=1))
    with app.app_context():  # a worker claimed it and its text, then was killed in the request
        (contact_id,) = db.session.scalars(select(ScheduledContact.id).where(ScheduledContact.kind == "checkin"))
        db.session.execute(
            update(ScheduledContact).where(ScheduledContact.id == contact_id)
            .values(state="sending", claimed_at=datetime.now(UTC))
        )  # fmt: skip
        db.session.add(Message(direction="out", party="texter", idempotency_key=f"contact:{contact_id}",
                               status="claimed", status_rank=0, segments=1))  # fmt: skip
        db.session.commit()
    wednesday_evening.shift(timedelta(minutes=4))  # past the stuck threshold

    with app.app_context():
        counts = rebuild_schedule()
    run_due()  # the flag's notice to the supervisors

    assert counts["needs_human"] == 1
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.flag_reason) == ("flagged", "send_uncertain")
    assert any(f"C{checkin.id}" in text and "may not have gone out" in text for text in texting.inbox(SUPERVISOR))
    with app.app_context():
        board = checkins_module.flagged_checkins(checkins_module.now(), limit=10)
    assert [row.checkin_id for row in board] == [checkin.id]
    assert texting.inbox(TEXTER).count(CHECKIN_EN) == 0  # never a second send


def test_a_survey_whose_run_stops_part_way_leaves_its_check_in_to_go_out_unflagged(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Found by review: any interrupted follow-up flagged its check-in "send_uncertain", so a
    survey that failed an hour after consent stopped the check-in the person had agreed to and
    told the supervisors, falsely, that a check-in text had failed."""
    publish_routing(survey_on)
    consent_by_text(app, texting)
    wednesday_evening.shift(timedelta(minutes=61))  # the survey is due; the check-in is not
    monkeypatch.setattr(checkins_module, "_text", failing_every_time)
    with pytest.raises(OperationalError):
        run_due()
    monkeypatch.undo()

    (checkin,) = checkins(app)
    assert (checkin.state, checkin.flag_reason) == ("consented", None)
    wednesday_evening.shift(12 * HOURS)
    with app.app_context():
        rebuild_schedule()
    run_due()
    assert texting.inbox(TEXTER).count(CHECKIN_EN) == 1


def failing_every_time(*_: object, **__: object) -> bool:
    raise OperationalError("INSERT INTO messages", {}, Exception("server closed the connection"))
