"""A called-back person whose answer the line cannot handle (a bug, a deadline passed) is put
through to the backup line by the fail-safe, like a live caller. Found by a bug hunt: the
fail-safe's hook looked the leg up among inbound calls only, found nothing, and left the
counselor waiting in the room (engaged, unavailable to anyone else) for the length of the
backup call; the backup line was shown the line's number, not the person's."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

import callbacks.attempts
import crisisline.failsafe
import transfer.views as transfer_views
from crisisline.db import db
from crisisline.failsafe import caller_id_for_backup, run_after_failsafe_hooks
from crisisline.models import Callback, CallEvent, Offer, ResponderState, ScheduledContact, Transfer
from tests.callbacks.test_callbacks import (
    CALLER,
    ask_for_callback,
    fake_now,
    person_legs,
    responder_legs,
    ringing_responder,
)
from tests.conftest import TEST_BACKUP_NUMBER
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio
from workers.upkeep import tend_callbacks

pytestmark = pytest.mark.usefixtures("clean_redis")
ON_BACKUP = "The caller has been passed to our backup line."


def crash(*_args: object, **_kwargs: object) -> bool:
    raise RuntimeError("simulated bug")


def counselor_waiting_for_the_person(phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]) -> PhoneCall:
    """A callback's counselor pressed 1 and waits in the room while the person's phone rings."""
    ask_for_callback(phone)
    run_worker()
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    assert "We are calling them now." in counselor.heard_text()
    assert counselor.ended_by == "in-conference"
    return counselor


def person_picks_up(fake: FakeTwilio) -> str:
    """The person answers; their leg stays up (talking with whoever the TwiML put them through to)."""
    (leg,) = person_legs(fake)
    fake.advance_call(leg.sid, "ringing")
    twiml = fake.advance_call(leg.sid, "in-progress")
    assert twiml is not None
    return twiml


def the_attempt(app: Flask) -> tuple[Transfer, Callback, list[Offer], dict[str, Any]]:
    with app.app_context():
        (callback,) = db.session.scalars(select(Callback)).all()
        transfer = db.session.scalars(select(Transfer).where(Transfer.callback_id == callback.id)).one()
        offers = list(db.session.scalars(select(Offer).where(Offer.transfer_id == transfer.id, Offer.state != "ended")))
        engaged = {row.responder_id: row.engaged_offer_id for row in db.session.scalars(select(ResponderState))}
        return transfer, callback, offers, engaged


def pending_attempts(app: Flask) -> list[ScheduledContact]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(ScheduledContact).where(ScheduledContact.kind == "callback", ScheduledContact.state == "pending")
            )
        )


def assert_handed_to_the_backup_line(app: Flask, phone: Phone, counselor: PhoneCall) -> None:
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    phone.resume(counselor)  # Twilio runs what the line told their leg
    assert ON_BACKUP in counselor.heard_text()
    assert counselor.finished  # their leg ended: free for the next caller
    transfer, callback, accepted, engaged = the_attempt(app)
    assert (transfer.state, transfer.end_reason) == ("to_backup", "failsafe")
    assert accepted == []
    assert all(offer is None for offer in engaged.values()), engaged
    assert (callback.state, callback.outcome) == ("canceled", "to_backup")
    assert pending_attempts(app) == []  # they are being helped: nobody rings them again


@pytest.mark.usefixtures("rota")
def test_a_called_back_persons_failed_answer_sends_them_to_the_backup_line_and_frees_their_counselor(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    counselor = counselor_waiting_for_the_person(phone, fake, run_worker)
    monkeypatch.setattr(callbacks.attempts, "person_answered", crash)

    twiml = person_picks_up(fake)

    assert f">{TEST_BACKUP_NUMBER}</Dial>" in twiml  # the fail-safe's answer
    assert_handed_to_the_backup_line(app, phone, counselor)


@pytest.mark.usefixtures("rota")
def test_a_called_back_persons_answer_past_its_deadline_sends_them_to_the_backup_line_and_rings_nobody_else(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The late handler carries on after the deadline answered: it must neither join the person
    (they are on the backup line) nor start a new search that rings another counselor for them."""
    counselor = counselor_waiting_for_the_person(phone, fake, run_worker)
    monkeypatch.setattr(app.extensions["crisisline.deadline"], "seconds", 1.0)
    answered = callbacks.attempts.person_answered

    def slow_database(transfer: Transfer, promise_join: Callable[[], bool] = lambda: True) -> bool:
        time.sleep(1.6)
        return answered(transfer, promise_join)

    monkeypatch.setattr(callbacks.attempts, "person_answered", slow_database)
    rung_before = {leg.sid for leg in responder_legs(fake)}

    twiml = person_picks_up(fake)
    app.extensions["crisisline.deadline"].shutdown(wait=True)  # the late handler finishes

    assert f">{TEST_BACKUP_NUMBER}</Dial>" in twiml  # the deadline's answer
    assert_handed_to_the_backup_line(app, phone, counselor)
    assert [leg.to for leg in responder_legs(fake) if leg.sid not in rung_before] == []


@pytest.mark.usefixtures("rota")
def test_the_fail_safe_hand_off_of_a_called_back_person_is_recorded_once_whatever_twilio_repeats(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    counselor = counselor_waiting_for_the_person(phone, fake, run_worker)
    monkeypatch.setattr(callbacks.attempts, "person_answered", crash)
    person_picks_up(fake)
    (leg,) = person_legs(fake)
    with app.app_context():
        run_after_failsafe_hooks(leg.sid)  # the same failure handled again (another request of the leg)
    fake.advance_call(leg.sid, "completed")  # their talk with the backup line ends
    fake.advance_call(leg.sid, "completed")  # and Twilio says so twice

    assert_handed_to_the_backup_line(app, phone, counselor)
    with app.app_context():
        outcomes = db.session.scalars(select(CallEvent.kind).where(CallEvent.dedupe_key.like("callback:%:outcome")))
        assert list(outcomes) == ["callback.canceled"]
        kinds = list(db.session.scalars(select(CallEvent.kind)))
    assert "callback.no_answer" not in kinds  # the person answered: not a failed attempt
    assert "transfer.to_backup" not in kinds  # a live search's outcome; a callback has its own


@pytest.mark.usefixtures("rota")
def test_the_backup_line_is_shown_the_called_back_persons_number_so_it_can_call_them_back(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio lets a ``<Dial>`` show the called number of the leg (its error 13214: "the calling
    number, called number, or a validated outgoing number"): on the leg the line placed to the
    person, that is the person's own number, as an inbound caller's own number passes through."""
    counselor_waiting_for_the_person(phone, fake, run_worker)
    monkeypatch.setattr(callbacks.attempts, "person_answered", crash)

    twiml = person_picks_up(fake)

    assert twiml.count(f'callerId="{CALLER}"') == 2  # both dials of the backup line
    assert phone.line_number not in twiml


@pytest.mark.usefixtures("rota")
def test_a_hand_off_the_fail_safe_could_not_record_is_found_by_the_minutes_tending_and_frees_the_counselor(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failed the person's answer and the hook after it (or Twilio's Fallback URL
    answered): their leg is up but never joined the room. Before, the counselor waited for the
    whole backup call, then heard "They did not answer" and a try was used up."""
    counselor = counselor_waiting_for_the_person(phone, fake, run_worker)
    with monkeypatch.context() as outage:
        outage.setattr(callbacks.attempts, "person_answered", crash)
        outage.setattr(crisisline.failsafe, "AFTER_FAILSAFE", [])  # it could not record where they went
        person_picks_up(fake)

    ring_timeout = 25  # the example's callbacks.ring_timeout_seconds
    with time_machine.travel(fake_now() + timedelta(seconds=ring_timeout + 60)), app.app_context():
        early = tend_callbacks()
    with time_machine.travel(fake_now() + timedelta(seconds=ring_timeout + 130)), app.app_context():
        found = tend_callbacks()
        again = tend_callbacks()

    assert (early["on_backup"], found["on_backup"], again["on_backup"]) == (0, 1, 0)
    assert_handed_to_the_backup_line(app, phone, counselor)
    assert "did not answer" not in counselor.heard_text()


@pytest.mark.usefixtures("rota")
def test_a_person_who_answered_moments_ago_is_not_handed_to_the_backup_line_however_long_ago_the_counselor_accepted(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio's calls-per-second queue held the dial: the person answers minutes after their
    counselor pressed 1, and their answer (machine detection first) is still on its way when
    the minute's tending looks. Their leg is up and not in the room yet: not a lost hand-off."""
    counselor = counselor_waiting_for_the_person(phone, fake, run_worker)
    ring_timeout = 25  # the example's callbacks.ring_timeout_seconds
    answered_late = fake_now() + timedelta(seconds=ring_timeout + 150)
    with monkeypatch.context() as not_yet, time_machine.travel(answered_late):
        not_yet.setattr(callbacks.attempts, "person_answered", crash)  # stands for an answer not yet handled
        not_yet.setattr(crisisline.failsafe, "AFTER_FAILSAFE", [])
        person_picks_up(fake)
    with time_machine.travel(answered_late + timedelta(seconds=20)), app.app_context():
        moments_later = tend_callbacks()
    with time_machine.travel(answered_late + timedelta(seconds=100)), app.app_context():
        long_after = tend_callbacks()

    assert (moments_later["on_backup"], long_after["on_backup"]) == (0, 1)
    assert_handed_to_the_backup_line(app, phone, counselor)


@pytest.mark.parametrize(
    ("direction", "from_", "to", "shown"),
    [
        ("outbound-api", "+13125550100", CALLER, CALLER),  # the leg the line placed to a person: theirs
        ("inbound", CALLER, "+13125550100", None),  # an inbound caller's own number passes through
        ("inbound", "anonymous", "+13125550100", "+13125550100"),  # withheld: the line's (error 13214)
    ],
)
def test_every_backup_dial_shows_the_person_on_the_line_their_own_number_where_it_can(
    app: Flask, direction: str, from_: str, to: str, shown: str | None
) -> None:
    """Also the backup line a called-back person reaches from their hold loop (``ivr.backup``)."""
    form = {"CallSid": "CA" + "1" * 32, "Direction": direction, "From": from_, "To": to}
    with app.test_request_context("/voice/hold", method="POST", data=form):
        assert caller_id_for_backup() == shown


def backup_call_ends(fake: FakeTwilio) -> None:
    """The person's talk with the backup line (a ``<Dial>`` child of their leg) ends, then their leg."""
    (leg,) = person_legs(fake)
    fake.dial_leg(leg.sid, TEST_BACKUP_NUMBER, CALLER, "completed")
    fake.advance_call(leg.sid, "completed")


def assert_not_counted_a_no_answer(app: Flask, phone: Phone, counselor: PhoneCall) -> None:
    phone.resume(counselor)
    transfer, callback, _, _ = the_attempt(app)
    with app.app_context():
        kinds = list(db.session.scalars(select(CallEvent.kind)))
    assert "did not answer" not in counselor.heard_text()
    assert "callback.no_answer" not in kinds, (transfer.state, transfer.end_reason, callback.state)
    assert pending_attempts(app) == []  # no try used up, nobody rings them again
    assert (transfer.state, transfer.end_reason) == ("to_backup", "failsafe")
    assert (callback.state, callback.outcome) == ("canceled", "to_backup")


@pytest.mark.usefixtures("rota")
def test_an_unrecorded_hand_off_whose_backup_call_ends_before_the_tend_looks_is_not_a_no_answer(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook could not record the hand-off, and the person's backup call ended before the
    minute's tending looked: their leg's ``completed`` (an answered call) is not a no-answer."""
    counselor = counselor_waiting_for_the_person(phone, fake, run_worker)
    with monkeypatch.context() as outage:
        outage.setattr(callbacks.attempts, "person_answered", crash)
        outage.setattr(crisisline.failsafe, "AFTER_FAILSAFE", [])  # the hook could not record it
        person_picks_up(fake)
    backup_call_ends(fake)  # a 90-second talk with the backup line ends
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    with time_machine.travel(fake_now() + timedelta(seconds=25 + 130)), app.app_context():
        tend_callbacks()

    assert_not_counted_a_no_answer(app, phone, counselor)


@pytest.mark.usefixtures("rota")
def test_an_unrecorded_hand_off_whose_end_was_not_heard_is_found_by_the_tend_and_not_counted_a_no_answer(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, and the leg's final status callback failed too: the minute's tending sees a
    completed leg that dialled the backup line."""
    counselor = counselor_waiting_for_the_person(phone, fake, run_worker)
    with monkeypatch.context() as outage:
        outage.setattr(callbacks.attempts, "person_answered", crash)
        outage.setattr(crisisline.failsafe, "AFTER_FAILSAFE", [])
        person_picks_up(fake)
        outage.setattr(callbacks.attempts, "person_leg_ended", crash)
        backup_call_ends(fake)
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    with time_machine.travel(fake_now() + timedelta(seconds=25 + 130)), app.app_context():
        found = tend_callbacks()
        again = tend_callbacks()

    assert (found["on_backup"], found["settled"], again["on_backup"]) == (1, 0, 0)
    assert_not_counted_a_no_answer(app, phone, counselor)


@pytest.mark.usefixtures("rota")
def test_an_answer_whose_deadline_passes_after_the_join_was_stored_is_not_counted_connected(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join is stored, then the handler is slow before it promised the deadline the room:
    the deadline answers with the backup line, and the records say so."""
    counselor_waiting_for_the_person(phone, fake, run_worker)
    monkeypatch.setattr(app.extensions["crisisline.deadline"], "seconds", 1.0)
    join = transfer_views.caller_join_twiml

    def slow_after_the_join(transfer: Transfer) -> Any:
        time.sleep(1.6)  # e.g. a slow read after the join's commit
        return join(transfer)

    monkeypatch.setattr(transfer_views, "caller_join_twiml", slow_after_the_join)
    twiml = person_picks_up(fake)
    app.extensions["crisisline.deadline"].shutdown(wait=True)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert f">{TEST_BACKUP_NUMBER}</Dial>" in twiml  # the person is on the backup line
    transfer, callback, _, _ = the_attempt(app)
    assert transfer.state == "to_backup"
    assert (callback.state, callback.outcome) == ("canceled", "to_backup")


@pytest.mark.usefixtures("rota")
def test_an_answer_whose_deadline_passes_after_the_join_was_promised_puts_the_person_in_the_room(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the join is stored and their counselor is known to be in the room, the deadline
    answers with the room (as for a counselor's press of 1): the person really joins."""
    counselor_waiting_for_the_person(phone, fake, run_worker)
    monkeypatch.setattr(app.extensions["crisisline.deadline"], "seconds", 1.0)
    record = callbacks.attempts.record_outcome

    def slow_record(*args: Any, **kwargs: Any) -> None:
        time.sleep(1.6)  # e.g. a slow write after the join
        record(*args, **kwargs)

    monkeypatch.setattr(callbacks.attempts, "record_outcome", slow_record)
    twiml = person_picks_up(fake)
    app.extensions["crisisline.deadline"].shutdown(wait=True)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert TEST_BACKUP_NUMBER not in twiml
    assert "<Conference" in twiml  # the room their counselor waits in
    transfer, callback, accepted, _ = the_attempt(app)
    assert transfer.state == "connected"
    assert (callback.state, callback.outcome) == ("connected", "connected")
    assert len(accepted) == 1
