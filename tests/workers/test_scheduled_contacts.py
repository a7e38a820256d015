"""Scheduled contacts, database first and Redis second, run by the Procfile's real worker:
a caller who hung up after waiting gets one text; Redis losing everything loses nothing; a
worker dying mid-send leaves the contact for a human, never a second text."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import redis
import time_machine
from flask import Flask
from sqlalchemy import select, update

from crisisline.db import db
from crisisline.models import Message, ScheduledContact
from crisisline.settings import Settings
from tests.conftest import ROOT, TextingPhone, deployment_environment
from tests.workers.jobs import PROCFILE_WORKER
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.server import FakeTwilioServer

MISSED_ES = (
    "Linea de Crisis de Riverside: perdon por no atenderle. Llamenos o escribanos cuando quiera. "
    "Si esta en peligro, llame al 911. Responda STOP para parar."
)


def wait_then_hang_up(phone: Phone, clock: time_machine.Coordinates, number: str, *, spanish: bool = False) -> None:
    caller = phone.call([Keys("2" if spanish else "1"), Keys("2")], identity=phone.identity(number), max_hold_turns=0)
    for _ in range(2):  # about a minute on hold, turn by turn
        clock.shift(timedelta(seconds=35))
        phone.resume(caller, max_hold_turns=1)
    phone.hang_up(caller)


def contacts(app: Flask) -> list[ScheduledContact]:
    with app.app_context():
        return list(db.session.scalars(select(ScheduledContact).order_by(ScheduledContact.id)))


@pytest.mark.usefixtures("clean_redis")
def test_a_caller_who_hung_up_after_waiting_gets_one_text_inviting_them_back(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: object, wednesday_evening: time_machine.Coordinates
) -> None:
    wait_then_hang_up(phone, wednesday_evening, "+13125550161", spanish=True)
    (hung_up,) = [w for w in fake.webhooks("call-status") if w.params.get("CallStatus") == "completed"
                  and w.params.get("From") == "+13125550161"]  # fmt: skip
    phone.post(hung_up.url, hung_up.params)  # Twilio repeats the final callback

    run_worker()  # type: ignore[operator]
    run_worker()  # type: ignore[operator]

    texts = [m.body for m in fake.messages.values() if m.to == "+13125550161"]
    assert texts == [MISSED_ES]
    (contact,) = contacts(app)
    assert (contact.kind, contact.state, contact.outcome) == ("missed_contact", "sent", "sent")


@pytest.mark.usefixtures("clean_redis")
def test_a_short_wait_gets_no_text(app: Flask, phone: Phone, wednesday_evening: time_machine.Coordinates) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    phone.hang_up(caller)

    assert contacts(app) == []


def test_flushall_with_contacts_pending_loses_none_and_sends_none_twice(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: object, clean_redis: redis.Redis,
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    numbers = ["+13125550162", "+13125550163", "+13125550164"]
    for number in numbers:
        wait_then_hang_up(phone, wednesday_evening, number)
    assert [c.state for c in contacts(app)] == ["pending"] * 3

    clean_redis.flushall()
    with app.app_context():
        from workers.upkeep import rebuild_scheduled_contacts

        first = rebuild_scheduled_contacts()
        second = rebuild_scheduled_contacts()
    run_worker()  # type: ignore[operator]
    with app.app_context():
        third = rebuild_scheduled_contacts()
    run_worker()  # type: ignore[operator]

    assert (first["requeued"], second["requeued"], third["requeued"]) == (3, 0, 0)
    for number in numbers:
        assert len([m for m in fake.messages.values() if m.to == number]) == 1
    assert [c.state for c in contacts(app)] == ["sent"] * 3


@pytest.mark.usefixtures("clean_redis")
def test_a_number_that_texted_stop_gets_no_missed_contact_text(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, run_worker: object,
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    texting.send("+13125550165", "STOP")
    wait_then_hang_up(phone, wednesday_evening, "+13125550165")

    run_worker()  # type: ignore[operator]

    assert [m for m in fake.messages.values() if m.to == "+13125550165"] == []
    (contact,) = contacts(app)
    assert (contact.state, contact.outcome) == ("canceled", "opted_out")


@pytest.mark.usefixtures("clean_redis")
def test_a_contact_whose_dead_worker_never_claimed_its_text_is_run_again_and_sent_once(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: object, wednesday_evening: time_machine.Coordinates
) -> None:
    """Nothing can have gone out: before, it went to ``needs_human`` and nobody was texted."""
    wait_then_hang_up(phone, wednesday_evening, "+13125550166")
    with app.app_context():  # a worker claimed the contact, then was SIGKILLed before the text
        db.session.execute(update(ScheduledContact).values(state="sending", claimed_at=datetime.now(UTC)))
        db.session.commit()
    wednesday_evening.shift(timedelta(minutes=4))

    with app.app_context():
        from workers.upkeep import rebuild_scheduled_contacts

        counts = rebuild_scheduled_contacts()
        again = rebuild_scheduled_contacts()
    run_worker()  # type: ignore[operator]

    assert (counts["retried"], counts["needs_human"], again["retried"]) == (1, 0, 0)
    assert len([m for m in fake.messages.values() if m.to == "+13125550166"]) == 1
    (contact,) = contacts(app)
    assert (contact.state, contact.outcome) == ("sent", "sent")


@pytest.mark.usefixtures("clean_redis")
def test_a_send_left_half_done_by_a_dead_worker_goes_to_a_human_not_out_again(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: object, wednesday_evening: time_machine.Coordinates
) -> None:
    wait_then_hang_up(phone, wednesday_evening, "+13125550166")
    with app.app_context():  # a worker claimed it and its text, then was SIGKILLed in the request
        # On the test's clock: the database's now() is the real one, hours from the traveled one.
        db.session.execute(update(ScheduledContact).values(state="sending", claimed_at=datetime.now(UTC)))
        (contact_id,) = db.session.scalars(select(ScheduledContact.id)).all()
        db.session.add(Message(direction="out", party="texter", idempotency_key=f"contact:{contact_id}",
                               status="claimed", status_rank=0, segments=1))  # fmt: skip
        db.session.commit()
    wednesday_evening.shift(timedelta(minutes=4))

    with app.app_context():
        from workers.upkeep import rebuild_scheduled_contacts

        counts = rebuild_scheduled_contacts()
    run_worker()  # type: ignore[operator]

    assert counts["needs_human"] == 1
    assert [m for m in fake.messages.values() if m.to == "+13125550166"] == []
    (contact,) = contacts(app)
    assert (contact.state, contact.outcome) == ("needs_human", "worker_died_mid_send")


def test_sigkill_at_random_points_never_doubles_or_silently_loses_a_text(
    app: Flask, phone: Phone, fake: FakeTwilio, settings: Settings, fake_twilio_server: FakeTwilioServer,
    clean_redis: redis.Redis, run_worker: object, wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    """20 workers killed with SIGKILL at random moments around the Twilio request."""
    import random
    import signal
    import time

    rounds = 20
    numbers = [f"+1312555{index:04d}" for index in range(2000, 2000 + rounds)]
    for number in numbers:
        wait_then_hang_up(phone, wednesday_evening, number)
    fake.inject_fault("POST", r"/Messages\.json$", status=200, delay=1.5, times=None)  # a slow Twilio
    env = {
        **os.environ,
        **deployment_environment(
            settings.database_url, settings.redis_url,
            TWILIO_API_BASE_URL=fake_twilio_server.base_url, PUBLIC_BASE_URL=settings.public_base_url or "",
        ),
    }  # fmt: skip
    chance = random.Random(20261126)  # reproducible kill points
    for _ in range(rounds):
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*PROCFILE_WORKER, "--burst", "--max-jobs", "1", "followups"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        if chance.random() < 0.5:
            time.sleep(chance.uniform(0.2, 3.5))  # anywhere in the worker's life
        else:
            _wait_for_a_claim(app, timeout=5.0)  # inside the send: claimed, request in flight
            time.sleep(chance.uniform(0.0, 1.4))
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

    interrupted = [c.state for c in contacts(app)]
    assert "sending" in interrupted, "no kill landed mid-send: the test did not test anything"
    with app.app_context():  # the workers claimed on the real clock; the test's is traveled
        db.session.execute(
            update(ScheduledContact).where(ScheduledContact.state == "sending").values(claimed_at=datetime.now(UTC))
        )
        db.session.commit()
    wednesday_evening.shift(timedelta(minutes=4))  # past the 3-minute stuck threshold
    with app.app_context():
        from workers.upkeep import rebuild_scheduled_contacts

        rebuild_scheduled_contacts()
    fake.clear_faults()
    run_worker()  # type: ignore[operator]
    with app.app_context():
        rebuild_scheduled_contacts()
    run_worker()  # type: ignore[operator]

    for number in numbers:
        assert len([m for m in fake.messages.values() if m.to == number]) <= 1, "a text went out twice"
    final = {c.state for c in contacts(app)}
    assert final <= {"sent", "needs_human"}, final  # nothing pending or silently lost
    sent = [c for c in contacts(app) if c.state == "sent"]
    for contact in sent:
        assert contact.outcome == "sent"


def _claimed(app: Flask) -> int:
    with app.app_context():
        return len(
            db.session.scalars(select(ScheduledContact.id).where(ScheduledContact.claimed_at.is_not(None))).all()
        )


def _wait_for_a_claim(app: Flask, timeout: float) -> None:
    """Until the worker just started claims a contact (one more claimed than before)."""
    import time

    before = _claimed(app)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _claimed(app) == before:
        time.sleep(0.02)
