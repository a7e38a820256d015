"""Callbacks end to end: the hold key and the texter's CALL, the Procfile's real worker
starting each attempt, the counselor rung and briefed first, and only then the person
dialled into the counselor's conference; retries, the "we tried" text, and queue order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select, update

from crisisline.db import db
from crisisline.models import Call, Callback, Conversation, ScheduledContact, Texter, Transfer
from crisisline.settings import Settings
from tests.conftest import TextingPhone, settings_for
from transfer import flow
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import CallRecord, FakeTwilio

pytestmark = pytest.mark.usefixtures("clean_redis")
CALLER = "+13125550123"  # the phone fixture's default caller
BEN, DIEGO = "+13125550102", "+13125550104"
COUNSELORS = {"+13125550101", BEN, "+13125550103", DIEGO, "+13125550105"}  # everyone on the example rota
TRIED_TEXT = (
    "Riverside County Crisis Line: we tried to call you back. Call or text us any time. If you are in danger, call 911."
)


def responder_legs(fake: FakeTwilio) -> list[CallRecord]:
    return [leg for leg in fake.calls.values() if leg.direction == "outbound-api" and leg.to in COUNSELORS]


def person_legs(fake: FakeTwilio, number: str = CALLER) -> list[CallRecord]:
    return [leg for leg in fake.calls.values() if leg.direction == "outbound-api" and leg.to == number]


def ringing_responder(fake: FakeTwilio) -> CallRecord:
    ringing = [leg for leg in responder_legs(fake) if leg.status in ("queued", "initiated", "ringing")]
    assert len(ringing) == 1, f"expected one responder ringing, found {len(ringing)}"
    return ringing[0]


def callbacks(app: Flask) -> list[Callback]:
    with app.app_context():
        return list(db.session.scalars(select(Callback).order_by(Callback.id)))


def contacts(app: Flask, kind: str) -> list[ScheduledContact]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(ScheduledContact).where(ScheduledContact.kind == kind).order_by(ScheduledContact.id)
            )
        )


def run_contact(app: Flask, contact: ScheduledContact) -> str:
    """What RQ's scheduler does at the due time, in-process (so time travel applies)."""
    from workers.contacts import run_scheduled_contact

    with app.app_context():
        return run_scheduled_contact(contact.id)


def ask_for_callback(phone: Phone, number: str = CALLER) -> PhoneCall:
    """English, thoughts of suicide, then the callback key at the first hold turn."""
    return phone.call([Keys("1"), Keys("2"), Keys("9")], identity=phone.identity(number))


@pytest.mark.usefixtures("rota")
def test_callback_rings_the_counselor_first_and_bridges_the_person_only_after_they_accept(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    caller = ask_for_callback(phone)
    assert "If you would rather we call you back when someone is free, press 9." in caller.heard_text()
    assert "We will call you back at this number as soon as someone is free." in caller.heard_text()
    assert caller.ended_by == "hangup"
    assert all(leg.status == "canceled" for leg in responder_legs(fake))  # live ringing stopped

    run_worker()
    counselor_leg = ringing_responder(fake)
    assert person_legs(fake) == []  # nobody calls the person before a counselor is on the line

    counselor = phone.answer(counselor_leg.sid, [Keys("1")])
    assert counselor.heard[0].text.startswith("Crisis line callback: English-speaking person, thoughts of suicide")
    assert "We are calling them now." in counselor.heard_text()
    (person_leg,) = person_legs(fake)
    assert person_leg.from_ == phone.line_number
    person = phone.answer(person_leg.sid)

    assert "calling you back" in person.heard_text()
    assert person.conference is not None and person.conference == counselor.conference
    room = fake.get_conference(person.conference)
    assert set(room.participants) == {person_leg.sid, counselor_leg.sid}
    (callback,) = callbacks(app)
    assert (callback.origin, callback.state, callback.attempts) == ("call", "connected", 1)
    (contact,) = contacts(app, "callback")
    assert (contact.state, contact.outcome) == ("sent", "sent")


@pytest.mark.usefixtures("rota")
def test_a_person_who_does_not_answer_is_retried_on_schedule_then_texted_once(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    ask_for_callback(phone)
    run_worker()
    with time_machine.travel(fake_now(), tick=True) as clock:
        for attempt in (1, 2, 3):
            counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
            fake.advance_call(person_legs(fake)[-1].sid, "no-answer")
            phone.resume(counselor)  # the counselor is told, and their leg ends
            if attempt < 3:
                assert "They did not answer. We will try again later." in counselor.heard_text()
            else:  # never promised a try that will not come
                assert "They did not answer, and that was our last try." in counselor.heard_text()
            assert counselor.finished
            if attempt < 3:
                pending = contacts(app, "callback")[-1]
                assert (pending.attempt, pending.state) == (attempt + 1, "pending")
                waited = (pending.due_at - pending.created_at).total_seconds()
                assert waited == pytest.approx((5 if attempt == 1 else 15) * 60, abs=2)
                clock.shift(timedelta(seconds=waited + 1))
                assert run_contact(app, pending) == "sent"

    assert len(person_legs(fake)) == 3  # the first try and the two configured retries
    (tried,) = contacts(app, "callback_missed")
    assert run_contact(app, tried) == "sent"
    assert run_contact(app, tried) == "not pending"  # a duplicated job sends nothing
    assert [m.body for m in fake.messages.values() if m.to == CALLER] == [TRIED_TEXT]
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome, callback.attempts) == ("gave_up", "no_answer", 3)


def fake_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


@pytest.mark.usefixtures("rota")
def test_a_counselor_who_passes_on_a_callback_hands_it_to_the_next_counselor(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    ask_for_callback(phone)
    run_worker()
    first = ringing_responder(fake)

    phone.answer(first.sid, [Keys("2")])
    second = ringing_responder(fake)
    assert second.to != first.to
    assert person_legs(fake) == []
    counselor = phone.answer(second.sid, [Keys("1")])
    person = phone.answer(person_legs(fake)[0].sid)

    assert person.conference == counselor.conference
    assert callbacks(app)[0].state == "connected"


def test_a_texter_who_replies_call_is_called_back_counselor_first(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, rota: Callable[..., None],
    run_worker: Callable[..., None],
) -> None:  # fmt: skip
    texter = "+13125550177"
    texting.send(texter, "I need to talk to someone")
    replies = texting.send(texter, "CALL")

    assert replies == [
        "We will call you at this number as soon as a counselor is free. If you are in danger, call 911."
    ]
    with app.app_context():
        (conversation,) = db.session.scalars(select(Conversation)).all()
        assert (conversation.state, conversation.close_reason) == ("closed", "callback")
    run_worker()
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    (person_leg,) = person_legs(fake, texter)
    person = phone.answer(person_leg.sid)

    assert person.conference == counselor.conference
    (callback,) = callbacks(app)
    assert (callback.origin, callback.state) == ("text", "connected")


def test_a_texters_number_on_their_callbacks_call_record_goes_by_the_texts_window_when_shorter(
    app: Flask, phone: Phone, texting: TextingPhone, settings: Settings, make_app: Callable[[Settings], Flask],
) -> None:  # fmt: skip
    from tests.workers.test_upkeep import place_call_at
    from workers.upkeep import UNLINKED_CONVERSATION_PREFIX, purge_personal_data

    texter = "+13125550177"
    texting.send(texter, "I need to talk to someone")
    texting.send(texter, "CALL")  # the callback hangs on a call record holding the texter's number
    caller = place_call_at(phone, datetime.now(UTC))  # an ordinary call, as old
    with app.app_context():  # the callback is made (an open one keeps the number it is to call)
        db.session.execute(update(Callback).values(state="connected", outcome="connected"))
        db.session.commit()
    # Texts kept a week, calls 90 days: 8 days on, the number that came by text is gone.
    short = make_app(settings_for(settings.database_url, settings.redis_url,
                                  RETENTION_DAYS_TEXTS="7", RETENTION_DAYS_CALLS="90"))  # fmt: skip
    with short.app_context():
        counts = purge_personal_data((datetime.now(UTC) + timedelta(days=8)).isoformat())
        again = purge_personal_data((datetime.now(UTC) + timedelta(days=8)).isoformat())
        calls = {call.call_sid: call for call in db.session.scalars(select(Call))}
        person = ~Texter.number_hash.startswith(UNLINKED_CONVERSATION_PREFIX)  # not their old conversation's
        texter_row = db.session.scalars(select(Texter).where(person)).one()

    assert (counts["texters"], counts["calls"], again["calls"]) == (1, 1, 0)
    assert texter_row.sealed_number is None
    (from_text,) = (call for sid, call in calls.items() if sid.startswith("text-callback-"))
    assert (from_text.sealed_caller, from_text.caller_hash) == (None, None)
    assert from_text.personal_data_purged_at is not None
    assert calls[caller].sealed_caller is not None  # a caller's own number keeps the calls' window


@pytest.mark.usefixtures("rota")
def test_a_repeated_callback_key_press_asks_for_one_callback(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    caller = ask_for_callback(phone)
    key_press = next(step for step in caller.steps if "/voice/callback/request" in step.url)

    again = phone.post(key_press.url, key_press.params)  # Twilio delivering the request twice

    assert "We will call you back" in again.body
    assert len(callbacks(app)) == 1
    assert len(contacts(app, "callback")) == 1


@pytest.mark.usefixtures("rota")
def test_a_key_other_than_the_callback_key_keeps_the_caller_holding(app: Flask, phone: Phone) -> None:
    caller = phone.call([Keys("1"), Keys("2"), Keys("5")], max_hold_turns=1)

    assert caller.ended_by == "on-hold"
    assert callbacks(app) == []


def test_with_nobody_on_call_the_caller_may_choose_a_callback_or_gets_the_backup_line(
    app: Flask, phone: Phone, rota: Callable[..., None]
) -> None:
    rota(on_call=())

    waits = phone.call([Keys("1"), Keys("2")], dial_outcomes=["completed"], identity=phone.identity("+13125550181"))
    chooses = ask_for_callback(phone, "+13125550182")

    assert "press 9" in waits.heard_text()
    assert waits.dials[0].numbers == ["+18002738255"]  # silence: the backup line, never dropped
    assert chooses.dials == []
    assert "We will call you back" in chooses.heard_text()
    assert [c.state for c in callbacks(app)] == ["waiting"]


def test_a_callback_nobody_takes_in_time_gives_up_with_a_text(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    rota(on_call=())
    ask_for_callback(phone)
    run_worker()  # the attempt starts, finds nobody, and waits in the queue

    with time_machine.travel(fake_now() + timedelta(minutes=121)), app.app_context():
        from workers.upkeep import tend_callbacks

        first, second = tend_callbacks(), tend_callbacks()
    run_worker()

    assert (first["gave_up"], second["gave_up"]) == (1, 0)
    assert [m.body for m in fake.messages.values() if m.to == CALLER] == [TRIED_TEXT]
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("gave_up", "nobody_free")


def test_a_waiting_callback_keeps_its_place_ahead_of_a_later_caller(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    rota(on_call=("ben-carter",))
    busy = phone.call([Keys("1"), Keys("2")], identity=phone.identity("+13125550191"), max_hold_turns=0)
    with_first = phone.answer(ringing_responder(fake).sid, [Keys("1")])  # Ben is with the first caller
    phone.resume(busy, max_hold_turns=0)
    ask_for_callback(phone)  # Ben busy: the second caller asks for a callback
    run_worker()
    assert [leg for leg in responder_legs(fake) if leg.status == "ringing"] == []

    phone.hang_up(busy)  # their call ends, Ben's leg too: he is free again, and a third caller arrives
    phone.resume(with_first)
    later = phone.call([Keys("1"), Keys("2")], identity=phone.identity("+13125550193"), max_hold_turns=2)

    ben = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    assert ben.heard[0].text.startswith("Crisis line callback:")  # the callback, asked first, goes first
    assert later.ended_by == "on-hold"  # Ben is on shift: the later caller waits for him in line
    assert later.dials == []
    assert "You are number 2 in line." in later.heard_text()
    with app.app_context():
        modes = db.session.scalars(select(Transfer.mode).where(Transfer.state == "connecting")).all()
        assert modes == ["callback"]


@pytest.mark.usefixtures("rota")
def test_an_answering_machine_is_hung_up_on_without_a_message_and_retried(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    ask_for_callback(phone)
    run_worker()
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    (person_leg,) = person_legs(fake)
    assert person_leg.machine_detection == "Enable"

    fake.advance_call(person_leg.sid, "ringing")
    twiml = fake.advance_call(person_leg.sid, "in-progress", answered_by="machine_start")
    fake.advance_call(person_leg.sid, "completed")
    phone.resume(counselor)

    assert twiml is not None and "<Hangup" in twiml and "<Say" not in twiml  # nothing said to a machine
    assert "They did not answer." in counselor.heard_text()
    retry = contacts(app, "callback")[-1]
    assert (retry.attempt, retry.state) == (2, "pending")
    assert callbacks(app)[0].state == "retry_wait"


@pytest.mark.usefixtures("rota")
@pytest.mark.parametrize("killed", ["before_ringing", "after_ringing"])
def test_a_callback_attempt_left_by_a_killed_worker_is_run_again_and_rings_once(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], killed: str
) -> None:
    from sqlalchemy import update

    from workers.upkeep import rebuild_scheduled_contacts

    ask_for_callback(phone)
    if killed == "after_ringing":
        run_worker()  # the search started and a phone rings; then the worker "died" before marking it
    with app.app_context():
        db.session.execute(update(ScheduledContact).values(state="sending", claimed_at=fake_now()))  # as a claim is
        db.session.commit()

    with time_machine.travel(fake_now() + timedelta(minutes=4)), app.app_context():
        first = rebuild_scheduled_contacts()
        second = rebuild_scheduled_contacts()
    run_worker()
    run_worker()

    assert (first["retried"], second["retried"], first["needs_human"]) == (1, 0, 0)
    assert len(responder_legs(fake)) == 2  # the live caller's first ring (canceled), then exactly one
    ringing_responder(fake)
    (contact,) = contacts(app, "callback")
    assert contact.state in ("sent", "canceled")


@pytest.mark.usefixtures("rota")
def test_flushall_while_a_retry_is_pending_loses_no_callback(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], clean_redis: Any
) -> None:
    from workers.upkeep import rebuild_scheduled_contacts

    ask_for_callback(phone)
    run_worker()
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    fake.advance_call(person_legs(fake)[-1].sid, "no-answer")
    phone.resume(counselor)
    retry = contacts(app, "callback")[-1]
    assert retry.state == "pending"

    clean_redis.flushall()
    with app.app_context():
        restored = rebuild_scheduled_contacts()
    with time_machine.travel(retry.due_at + timedelta(seconds=1)):
        assert run_contact(app, retry) == "sent"
        assert run_contact(app, retry) == "not pending"

    assert restored["requeued"] == 1
    ringing_responder(fake)  # the second attempt rings a counselor, once


@pytest.mark.usefixtures("rota")
def test_a_person_who_calls_in_again_before_the_callback_is_not_called_twice(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    ask_for_callback(phone)
    again = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # same number, holding live now
    legs_before = len(responder_legs(fake))
    phone.answer(responder_legs(fake)[-1].sid, [Keys("1")])  # a counselor takes their live call

    run_worker()

    assert again.ended_by == "on-hold"
    assert len(responder_legs(fake)) == legs_before  # nobody rung for the stale callback
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("canceled", "called_in")


@pytest.mark.usefixtures("rota")
def test_a_callback_waits_while_its_person_holds_live_and_is_cancelled_once_a_counselor_has_them(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    ask_for_callback(phone)
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # holding live, nobody has them yet
    legs_before = len(responder_legs(fake))

    run_worker()

    assert len(responder_legs(fake)) == legs_before  # nobody rung to call a phone busy on our line
    (callback,) = callbacks(app)
    assert callback.state == "waiting"
    later = contacts(app, "callback")[-1]
    assert later.state == "pending"

    phone.answer(responder_legs(fake)[-1].sid, [Keys("1")])  # then a counselor takes the live call
    with time_machine.travel(later.due_at + timedelta(seconds=1)):
        assert run_contact(app, later) == "not_needed"
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("canceled", "called_in")


@pytest.mark.usefixtures("rota")
def test_a_person_who_hangs_up_holding_on_a_second_call_still_gets_their_callback(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    """Before, the second call cancelled the callback as "called in" the moment it held, and
    its hang-up left them with neither a counselor nor the callback they were promised."""
    ask_for_callback(phone)
    again = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    run_worker()
    later = contacts(app, "callback")[-1]
    phone.hang_up(again)  # gives up holding before anyone answers
    legs_before = len(responder_legs(fake))

    with time_machine.travel(later.due_at + timedelta(seconds=1)):
        assert run_contact(app, later) == "sent"

    (callback,) = callbacks(app)
    assert callback.state == "waiting"
    assert len(responder_legs(fake)) > legs_before  # a counselor is rung for their callback


def test_a_check_in_reply_2_on_a_talk_by_call_line_rings_a_counselor_then_calls_them(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, publish_routing: Callable[..., int],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    from tests.followups.test_checkins import TEXTER, checkin_sent
    from workers.contacts import now, run_scheduled_contact

    def talk_by_call(document: dict[str, Any]) -> None:
        document["followups"]["talk_by"] = "call"

    publish_routing(talk_by_call)

    def run_due() -> list[str]:
        with app.app_context():
            due = db.session.scalars(
                select(ScheduledContact.id).where(ScheduledContact.state == "pending", ScheduledContact.due_at <= now())
            ).all()
            return [run_scheduled_contact(contact_id) for contact_id in due]

    checkin_sent(app, texting, wednesday_evening, run_due)
    texting.send(TEXTER, "2")
    assert run_due() == ["sent"]  # the callback's first attempt

    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    person = phone.answer(person_legs(fake, TEXTER)[0].sid)

    assert counselor.heard[0].text.startswith("Crisis line callback: English-speaking person, thoughts of suicide")
    assert person.conference == counselor.conference
    (callback,) = callbacks(app)
    assert (callback.origin, callback.state) == ("checkin", "connected")


@pytest.mark.usefixtures("rota")
def test_a_called_back_person_whose_counselor_hangs_up_is_asked_about_a_check_in(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    from crisisline.models import CheckIn

    ask_for_callback(phone)
    run_worker()
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    person = phone.answer(person_legs(fake)[0].sid)

    phone.hang_up(counselor)
    phone.resume(person, [Keys("1")], max_hold_turns=0)

    assert "If you would like a text from us to check how you are doing, press 1." in person.heard_text()
    assert person.ended_by == "hangup"
    with app.app_context():
        (checkin,) = db.session.scalars(select(CheckIn)).all()
        assert (checkin.origin, checkin.state, checkin.need) == ("call", "consented", "suicide")


@pytest.mark.usefixtures("rota")
def test_a_person_answering_after_their_counselor_hung_up_is_not_left_in_an_empty_room(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    ask_for_callback(phone)
    run_worker()
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
    phone.hang_up(counselor)  # gone while the person's phone rings

    person_leg = person_legs(fake)[0]
    fake.advance_call(person_leg.sid, "ringing")
    twiml = fake.advance_call(person_leg.sid, "in-progress")  # the person picks up

    assert twiml is not None and "<Conference" not in twiml
    assert "/voice/hold" in twiml  # searching again, with them live on the line
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("connected", "answered_late")


def test_a_person_asking_again_on_another_call_or_by_text_keeps_one_callback_and_one_counselor_dials_them(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, rota: Callable[..., None],
    run_worker: Callable[..., None],
) -> None:  # fmt: skip
    """Before, each request made its own callback: two counselors were rung at once, both
    pressed 1, and the same phone was dialled twice."""
    first = ask_for_callback(phone)
    second = ask_for_callback(phone)  # called again a minute later, and asked again
    texting.send(CALLER, "I need to talk to someone")
    by_text = texting.send(CALLER, "CALL")

    promised = "We will call you back at this number as soon as someone is free."
    assert promised in first.heard_text() and promised in second.heard_text()
    assert by_text == [
        "We will call you at this number as soon as a counselor is free. If you are in danger, call 911."
    ]
    assert len(callbacks(app)) == 1

    run_worker()
    counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])  # one counselor rung, once

    (person_leg,) = person_legs(fake)
    person = phone.answer(person_leg.sid)
    assert person.conference == counselor.conference


def callback_search_ringing(phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]) -> CallRecord:
    """Asked for a callback; its first attempt rings a counselor (returned, not yet answered)."""
    ask_for_callback(phone)
    run_worker()
    return ringing_responder(fake)


def test_a_person_calling_the_line_while_their_callback_rings_the_only_free_counselor_gets_that_counselor_live(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], run_worker: Callable[..., None]
) -> None:
    """Before, the callback's search went on ringing (20 s, then the whisper) the only free
    counselor while the same person held live for them; a ring left to time out counted
    toward that counselor's automatic pause."""
    rota(on_call=("ben-carter",))
    callback_counselor = callback_search_ringing(phone, fake, run_worker)
    assert callback_counselor.to == BEN

    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # called again meanwhile: holding live

    assert callback_counselor.status == "canceled"  # the callback's ring stopped
    live_leg = ringing_responder(fake)  # Ben, rung for them live
    assert (live_leg.to, live_leg.sid != callback_counselor.sid) == (BEN, True)
    assert person_legs(fake) == []  # never dialled
    with app.app_context():
        search = db.session.scalars(select(Transfer).where(Transfer.mode == "callback")).one()
        assert (search.state, search.end_reason) == ("ended", "person_called_in")
    (callback,) = callbacks(app)
    assert (callback.state, callback.attempts) == ("waiting", 1)
    recheck = contacts(app, "callback")[-1]
    assert (recheck.attempt, recheck.state) == (1, "pending")  # the same attempt again: nobody tried their phone
    assert (recheck.due_at - recheck.created_at).total_seconds() == pytest.approx(60, abs=2)

    phone.answer(live_leg.sid, [Keys("1")])  # Ben takes their live call
    with time_machine.travel(recheck.due_at + timedelta(seconds=1)):
        assert run_contact(app, recheck) == "not_needed"
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("canceled", "called_in")


@pytest.mark.usefixtures("rota")
def test_a_counselor_accepting_a_callback_while_its_person_holds_live_is_told_and_nobody_dials_them(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accept checks again: the live search's stop of the callback's ringing can lose (its
    receiver failed, or the 1 came first). Before, the counselor's 1 dialled the person's phone
    while it was busy holding on our own line."""
    callback_counselor = callback_search_ringing(phone, fake, run_worker)
    monkeypatch.setattr(flow.live_search_started, "send", lambda *args, **kwargs: [])
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # called again meanwhile: holding live

    counselor = phone.answer(callback_counselor.sid, [Keys("1")])

    assert "They have just called the line again and are holding" in counselor.heard_text()
    assert counselor.finished
    assert person_legs(fake) == []  # never dialled
    (callback,) = callbacks(app)
    assert (callback.state, callback.attempts) == ("waiting", 1)
    recheck = contacts(app, "callback")[-1]
    assert (recheck.attempt, recheck.state) == (1, "pending")
    assert (recheck.due_at - recheck.created_at).total_seconds() == pytest.approx(60, abs=2)


@pytest.mark.usefixtures("rota")
def test_a_callback_whose_person_hangs_up_on_their_second_call_is_tried_after_the_one_minute_wait(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    callback_search_ringing(phone, fake, run_worker)
    again = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # their callback's ringing stops
    phone.hang_up(again)  # gave up holding before anyone answered
    recheck = contacts(app, "callback")[-1]
    legs_before = len(responder_legs(fake))

    with time_machine.travel(recheck.due_at + timedelta(seconds=1)):
        assert run_contact(app, recheck) == "sent"

    assert len(responder_legs(fake)) > legs_before  # their callback searches again
    (callback,) = callbacks(app)
    assert (callback.state, callback.attempts) == ("waiting", 1)


@pytest.mark.usefixtures("rota")
def test_an_attempt_ended_because_its_person_held_live_costs_them_none_of_their_tries(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    """Found by a bug hunt: an attempt ended for a person holding live on another call moved
    the callback on to its next attempt, as a no-answer does, so that person was dialled one
    time fewer than the routing promises (2 retries: 3 tries)."""
    callback_search_ringing(phone, fake, run_worker)
    again = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # nobody dials them
    phone.hang_up(again)
    recheck = contacts(app, "callback")[-1]
    assert recheck.attempt == 1  # the same attempt, a minute later

    with time_machine.travel(recheck.due_at + timedelta(seconds=1), tick=True) as clock:
        assert run_contact(app, recheck) == "sent"
        assert run_contact(app, recheck) == "not pending"  # a duplicated job starts nothing
        for attempt in (1, 2, 3):
            counselor = phone.answer(ringing_responder(fake).sid, [Keys("1")])
            fake.advance_call(person_legs(fake)[-1].sid, "no-answer")
            phone.resume(counselor)
            if attempt < 3:
                assert "We will try again later." in counselor.heard_text()
                pending = contacts(app, "callback")[-1]
                assert pending.attempt == attempt + 1
                clock.shift(pending.due_at - fake_now() + timedelta(seconds=1))
                assert run_contact(app, pending) == "sent"
            else:
                assert "that was our last try" in counselor.heard_text()

    assert len(person_legs(fake)) == 3
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome, callback.attempts) == ("gave_up", "no_answer", 3)


@pytest.mark.usefixtures("rota")
def test_a_counselor_accepting_a_callback_for_someone_a_counselor_has_reached_since_is_told_it_is_done(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    callback_counselor = callback_search_ringing(phone, fake, run_worker)
    monkeypatch.setattr(flow.live_search_started, "send", lambda *args, **kwargs: [])  # the accept's own check
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    live_leg = [leg for leg in responder_legs(fake) if leg.status in ("queued", "initiated", "ringing")][-1]
    assert live_leg.sid != callback_counselor.sid
    phone.answer(live_leg.sid, [Keys("1")])  # someone has them live now

    counselor = phone.answer(callback_counselor.sid, [Keys("1")])

    assert "They have reached us again since they asked, so we will not call them." in counselor.heard_text()
    assert person_legs(fake) == []
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("canceled", "called_in")
    assert [c for c in contacts(app, "callback") if c.state == "pending"] == []


REST_TIMEOUT = 3.0  # transfer.dispatch.INLINE_REST_TIMEOUT_SECONDS


def _wait_for_person_leg(fake: FakeTwilio, seconds: float = REST_TIMEOUT + 5) -> CallRecord:
    import time

    deadline = time.monotonic() + seconds
    while not person_legs(fake) and time.monotonic() < deadline:
        time.sleep(0.05)
    (leg,) = person_legs(fake)
    return leg


@pytest.mark.usefixtures("rota")
def test_a_person_dialled_by_a_request_whose_answer_timed_out_still_joins_their_counselor(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    """Before, a read timeout told the counselor "They did not answer" and ended the attempt,
    while Twilio placed the call all the same: the person answered into a new search."""
    callback_counselor = callback_search_ringing(phone, fake, run_worker)
    fake.inject_fault("POST", r"/Calls\.json$", status=200, delay=REST_TIMEOUT + 1, times=1)

    counselor = phone.answer(callback_counselor.sid, [Keys("1")])
    assert "We are calling them now." in counselor.heard_text()
    assert "did not answer" not in counselor.heard_text()
    person_leg = _wait_for_person_leg(fake)
    person = phone.answer(person_leg.sid)

    assert person.conference is not None and person.conference == counselor.conference
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("connected", "connected")
    with app.app_context():
        attempt = db.session.scalars(select(Transfer).where(Transfer.callback_id == callback.id)).one()
        assert (attempt.state, attempt.caller_call_sid) == ("connected", person_leg.sid)


@pytest.mark.usefixtures("rota")
def test_a_person_call_that_timed_out_and_was_never_placed_ends_the_attempt_soon_after_the_ring_timeout(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None]
) -> None:
    from workers.upkeep import tend_callbacks

    callback_counselor = callback_search_ringing(phone, fake, run_worker)
    fake.inject_fault("POST", r"/Calls\.json$", status=503, delay=REST_TIMEOUT + 1, times=1)
    counselor = phone.answer(callback_counselor.sid, [Keys("1")])
    assert "We are calling them now." in counselor.heard_text()

    ring_timeout = 25  # the example's callbacks.ring_timeout_seconds
    with time_machine.travel(fake_now() + timedelta(seconds=ring_timeout + 20)), app.app_context():
        early = tend_callbacks()
    with time_machine.travel(fake_now() + timedelta(seconds=ring_timeout + 40)), app.app_context():
        settled = tend_callbacks()
    phone.resume(counselor)

    assert (early["settled"], settled["settled"]) == (0, 1)
    assert person_legs(fake) == []
    assert "They did not answer. We will try again later." in counselor.heard_text()
    (callback,) = callbacks(app)
    assert (callback.state, callback.attempts) == ("retry_wait", 1)
    assert contacts(app, "callback")[-1].attempt == 2


@pytest.mark.usefixtures("rota")
def test_two_requests_from_one_person_at_the_same_instant_make_one_callback(
    app: Flask, phone: Phone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the person's open callback was looked for and then inserted with nothing
    between: two requests in the same instant (two calls pressing the key together) both found
    none and made two, and two counselors dialled one phone."""
    import contextlib
    import threading

    from callbacks import requests as callback_requests
    from routing.store import active_routing

    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # the same number, on a second line
    with app.app_context():
        transfer_ids = list(db.session.scalars(select(Transfer.id).order_by(Transfer.id)))
    assert len(transfer_ids) == 2

    # Each request, once past its look for an open callback, waits for the other to get there
    # too (or 1.5 s, if the other cannot: it is waiting for this one's lock).
    both_looked = threading.Barrier(2)
    real_insert = callback_requests.insert_ignoring_duplicates

    def insert_after_both_looked(*args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):
            both_looked.wait(timeout=1.5)
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(callback_requests, "insert_ignoring_duplicates", insert_after_both_looked)
    outcomes: list[str] = []

    def press_the_key(transfer_id: int) -> None:
        with app.app_context():
            active = active_routing()
            assert active is not None
            transfer = db.session.get(Transfer, transfer_id)
            assert transfer is not None
            outcomes.append(callback_requests.request_from_hold(transfer, active.document))

    pressing = [threading.Thread(target=press_the_key, args=(transfer_id,)) for transfer_id in transfer_ids]
    for thread in pressing:
        thread.start()
    for thread in pressing:
        thread.join(timeout=30)

    assert outcomes == ["requested", "requested"]
    assert [(c.state, c.origin) for c in callbacks(app)] == [("waiting", "call")]


@pytest.mark.usefixtures("rota")
def test_the_callback_key_pressed_again_after_an_acceptance_was_withdrawn_makes_a_callback_that_will_be_made(
    app: Flask, phone: Phone
) -> None:
    """Before, the second press found the first press's callback (cancelled when a counselor
    accepted in that moment) and promised it: "We will call you back", and nobody would."""
    from callbacks.requests import request_from_hold
    from routing.store import active_routing

    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    with app.app_context():
        active = active_routing()
        assert active is not None
        transfer = db.session.scalars(select(Transfer)).one()
        transfer.state = "connecting"  # a counselor's 1, a moment before the caller's 9
        db.session.commit()
        assert request_from_hold(transfer, active.document) == "join"
        transfer.state = "waiting"  # the acceptance was withdrawn: the caller holds on
        db.session.commit()

        assert request_from_hold(transfer, active.document) == "requested"
        assert request_from_hold(transfer, active.document) == "requested"  # a duplicated press: the same

    assert [(c.state, c.outcome) for c in callbacks(app)] == [("canceled", "answered_live"), ("waiting", None)]
    (first_attempt,) = contacts(app, "callback")
    assert first_attempt.callback_id == callbacks(app)[1].id


def test_a_callback_asked_for_after_a_counselor_left_keeps_the_callers_first_place_in_line(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None], wednesday_evening: time_machine.Coordinates
) -> None:
    """Before, it queued from the new search's start, behind everyone who called meanwhile."""
    from tests.rota import BEN as BEN_PHONE
    from tests.rota import leg_to

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = phone.answer(leg_to(fake, BEN_PHONE).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference == ben.conference is not None
    wednesday_evening.shift(timedelta(minutes=5))
    phone.hang_up(ben)  # Ben leaves: a new search for the caller, who keeps their place
    phone.resume(caller, [Keys("2"), Keys("9")], max_hold_turns=2)

    with app.app_context():
        first = db.session.scalars(select(Transfer).order_by(Transfer.id)).first()
        assert first is not None
        (callback,) = db.session.scalars(select(Callback)).all()
        assert callback.queue_since == first.queued_since


@pytest.mark.usefixtures("rota")
def test_a_person_who_left_before_joining_a_counselor_on_a_second_call_is_still_called_back(
    app: Flask, phone: Phone, fake: FakeTwilio, run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepted is not reached: before, a round of their second call that ended before they
    joined anyone (the counselor who accepted left first, or they hung up while being brought
    in) counted as "reached", and their callback was cancelled unkept."""
    callback_counselor = callback_search_ringing(phone, fake, run_worker)
    monkeypatch.setattr(flow.live_search_started, "send", lambda *args, **kwargs: [])  # the accept's own check
    again = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    with app.app_context():  # that round ended before they joined anyone
        live = db.session.scalars(select(Transfer).where(Transfer.mode == "live", Transfer.state == "waiting")).one()
        live.state, live.end_reason = "ended", "staff_left"
        db.session.commit()
    phone.hang_up(again)

    phone.answer(callback_counselor.sid, [Keys("1")])

    assert len(person_legs(fake)) == 1  # the callback goes ahead
    (callback,) = callbacks(app)
    assert callback.state == "calling"


@pytest.mark.parametrize("key", ["#", "*"])
def test_a_callback_key_of_hash_or_star_requests_the_callback_on_hold_and_at_the_hold_limit(
    app: Flask, phone: Phone, rota: Callable[..., None], key: str
) -> None:
    """``#`` is a Gather's finish key unless told otherwise: pressed first it is no input, so a
    line whose callback key was ``#`` never heard it (found by a bug hunt)."""
    rota(digit=key)
    holding = phone.call([Keys("1"), Keys("2"), Keys(key)], identity=phone.identity("+13125550181"))
    rota(on_call=(), digit=key)
    at_the_limit = phone.call([Keys("1"), Keys("2"), Keys(key)], identity=phone.identity("+13125550182"))

    assert "We will call you back" in holding.heard_text()
    assert "We will call you back" in at_the_limit.heard_text()
    assert [callback.state for callback in callbacks(app)] == ["waiting", "waiting"]


def test_a_menu_answered_with_the_finish_key_alone_is_no_input_as_on_twilio(phone: Phone) -> None:
    call = phone.call([Keys("#"), Keys("1")], max_hold_turns=0)

    assert call.steps[1].params.get("Digits") is None  # "#" first: Twilio sends nothing
    assert next(step.params.get("Digits") for step in call.steps if "Digits" in step.params) == "1"


def test_a_callback_whose_first_attempt_could_only_start_late_searches_a_while_before_giving_up(
    app: Flask, phone: Phone, fake: FakeTwilio, rota: Callable[..., None]
) -> None:
    """Found in review: with no worker (or Redis down) for longer than the give-up time, the
    first attempt's search started, and the next minute's tend gave it up at once, texting the
    person "we tried to call you back" although nobody had been asked."""
    from workers.upkeep import tend_callbacks

    rota(on_call=())
    ask_for_callback(phone)
    (attempt,) = contacts(app, "callback")
    start = fake_now()

    with time_machine.travel(start + timedelta(minutes=130)):
        assert run_contact(app, attempt) == "sent"  # the search starts at last, two hours late
    with time_machine.travel(start + timedelta(minutes=131)), app.app_context():
        soon_after = tend_callbacks()
    with time_machine.travel(start + timedelta(minutes=141)), app.app_context():
        after_searching = tend_callbacks()

    assert (soon_after["gave_up"], after_searching["gave_up"]) == (0, 1)
    (callback,) = callbacks(app)
    assert (callback.state, callback.outcome) == ("gave_up", "nobody_free")
