"""A person waiting for a callback goes ahead of routine texts: every check-in due at night falls
due at the same instant (the quiet hours' end), and a callback asked for a moment later is
taken before that batch, not after it, by the Procfile's worker, after Redis lost its jobs, and
by the clock running the due contacts itself while no worker keeps up."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import CheckIn, ScheduledContact
from ivr.call_log import phone_hash
from sms.conversations import find_or_create_texter
from tests.conftest import LINE_NUMBER, procfile_argv
from tests.rota import around_the_clock
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from workers import clock as clock_module
from workers.clock import LineClock
from workers.contacts import schedule

pytestmark = pytest.mark.usefixtures("clean_redis")
CHECKINS = 12
CALLER = "+13125550191"
BEN = "+13125550102"


def procfile_queues() -> list[str]:
    """The queues the Procfile's worker listens to, in its order (RQ takes them in that order)."""
    words = procfile_argv("worker")[3:]
    return [word for word in words if not word.startswith("-") and word not in ("workers", "run", "crisisline")]


def checkins_due_together(app: Flask, due: datetime) -> None:
    """``CHECKINS`` consented check-ins, each a different texter's, scheduled as the line
    schedules them (row first, job second), all due at ``due``."""
    with app.app_context():
        for index in range(CHECKINS):
            number = f"+1415{2_000_000 + index:07d}"
            texter = find_or_create_texter(number, phone_hash(number))
            checkin = CheckIn(
                dedupe_key=f"text:go-first:{index}", origin="text", texter_id=texter.id, language="en",
                need="suicide", line_number=LINE_NUMBER, state="consented", consented_at=due - timedelta(hours=12),
                due_at=due,
            )  # fmt: skip
            db.session.add(checkin)
            db.session.commit()
            schedule("checkin", f"checkin:{checkin.id}:1", due, checkin_id=checkin.id, attempt=1)


def ask_for_a_callback(app: Flask, phone: Phone, publish_routing: Callable[..., int]) -> None:
    """A caller presses 9 on hold; their callback's first attempt is due now (queued off the
    request's thread, as the line does)."""

    def only_ben(document: dict[str, Any]) -> None:
        around_the_clock(document, on_call=("ben-carter",))

    publish_routing(only_ben)
    caller = phone.call([Keys("1"), Keys("2"), Keys("9")], identity=phone.identity(CALLER))
    assert "We will call you back at this number as soon as someone is free." in caller.heard_text()
    app.extensions["crisisline.background"].wait_idle(timeout=30)


def first_attempts(app: Flask) -> tuple[ScheduledContact, list[ScheduledContact]]:
    """The callback's first attempt and the check-ins' first texts."""
    with app.app_context():
        (callback,) = db.session.scalars(select(ScheduledContact).where(ScheduledContact.kind == "callback"))
        checkins = list(
            db.session.scalars(
                select(ScheduledContact).where(ScheduledContact.kind == "checkin", ScheduledContact.attempt == 1)
            )
        )
    return callback, checkins


def assert_callback_taken_before_every_checkin(app: Flask, fake: FakeTwilio) -> None:
    callback, checkins = first_attempts(app)
    assert len(checkins) == CHECKINS
    assert callback.state == "sent" and {c.state for c in checkins} == {"sent"}
    assert callback.claimed_at is not None and all(c.claimed_at is not None for c in checkins)
    taken_after = [c.id for c in checkins if c.claimed_at is not None and c.claimed_at < callback.claimed_at]
    assert taken_after == [], f"the callback waited behind {len(taken_after)} of {CHECKINS} check-in texts"
    assert len([m for m in fake.messages.values() if m.to.startswith("+1415")]) == CHECKINS
    assert [leg for leg in fake.calls.values() if leg.direction == "outbound-api" and leg.to == BEN]  # Ben is rung


def test_the_procfile_worker_takes_a_callback_before_a_batch_of_check_ins_due_a_moment_earlier(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], run_worker: Callable[..., None]
) -> None:
    checkins_due_together(app, datetime.now(UTC) - timedelta(seconds=5))  # the quiet hours just ended
    ask_for_a_callback(app, phone, publish_routing)  # five seconds later

    run_worker(*procfile_queues())

    assert_callback_taken_before_every_checkin(app, fake)


def test_after_redis_lost_its_jobs_the_rebuilt_schedule_still_puts_the_callback_first(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], run_worker: Callable[..., None],
    clean_redis: redis.Redis,
) -> None:  # fmt: skip
    checkins_due_together(app, datetime.now(UTC) - timedelta(seconds=5))
    ask_for_a_callback(app, phone, publish_routing)
    clean_redis.flushall()  # every job lost; the database still has every contact

    with app.app_context():
        from workers.upkeep import rebuild_scheduled_contacts

        counts = rebuild_scheduled_contacts()  # re-queues them in id order: the check-ins first
    run_worker(*procfile_queues())

    assert counts["requeued"] == CHECKINS + 1
    assert_callback_taken_before_every_checkin(app, fake)


def test_the_clock_running_overdue_contacts_itself_takes_a_new_callback_before_older_check_ins(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], clean_redis: redis.Redis
) -> None:
    """No worker is running (crashed, never started): the leading clock runs what is due, at
    most a hundred a minute. Check-ins overdue since the outage began must not keep a callback
    asked for now waiting."""
    checkins_due_together(app, datetime.now(UTC) - timedelta(minutes=10))
    ask_for_a_callback(app, phone, publish_routing)
    with app.app_context():
        clock = LineClock(clean_redis, inline_jobs=[clock_module.run_due_contacts])

        clock.tick()  # leads, finds no worker for the queues, runs the due contacts here
        clock.resign()

    assert_callback_taken_before_every_checkin(app, fake)


def test_the_supervisors_flag_of_a_check_in_nobody_answered_is_taken_before_a_batch_of_check_ins(
    app: Flask, publish_routing: Callable[..., int], run_worker: Callable[..., None]
) -> None:
    """Someone agreed to a check-in and answered neither text: the supervisors' flag falls due
    a moment after the night's batch of routine check-ins, and is sent before that batch."""
    publish_routing()
    due = datetime.now(UTC) - timedelta(seconds=5)
    checkins_due_together(app, due)
    with app.app_context():
        number = "+14155550177"
        texter = find_or_create_texter(number, phone_hash(number))
        silent = CheckIn(
            dedupe_key="text:go-first:silent", origin="text", texter_id=texter.id, language="en", need="suicide",
            line_number=LINE_NUMBER, state="second_sent", consented_at=due - timedelta(hours=30),
            due_at=due - timedelta(hours=6), sent_at=due - timedelta(hours=6), second_sent_at=due - timedelta(hours=4),
        )  # fmt: skip
        db.session.add(silent)
        db.session.commit()
        schedule("checkin_escalate", f"checkin:{silent.id}:escalate", due + timedelta(seconds=1),
                 checkin_id=silent.id, attempt=3)  # fmt: skip
        silent_id = silent.id

    run_worker(*procfile_queues())

    with app.app_context():
        (flag,) = db.session.scalars(select(ScheduledContact).where(ScheduledContact.kind == "checkin_escalate"))
        checkins = db.session.scalars(
            select(ScheduledContact).where(ScheduledContact.kind == "checkin", ScheduledContact.attempt == 1)
        ).all()
        flagged = db.session.get(CheckIn, silent_id)
        assert flagged is not None and flagged.state == "flagged"
        assert len(checkins) == CHECKINS and {c.state for c in checkins} == {"sent"}
        assert flag.claimed_at is not None and all(c.claimed_at is not None for c in checkins)
        before_the_flag = [c.id for c in checkins if c.claimed_at is not None and c.claimed_at < flag.claimed_at]
        assert before_the_flag == [], f"the flag waited behind {len(before_the_flag)} of {CHECKINS} check-in texts"
