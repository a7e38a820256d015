"""Twilio blocks every text to someone who texted STOP, so what they write next cannot be
answered by text. A person must see to it: the supervisors are told (the case only, once per
person per hour) and the emergency unmask page lists the sender, so a supervisor can call
someone who may be at risk. START, and they are the line's to answer again."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

import sms.texting
import sms.views
from crisisline.db import db
from crisisline.models import Conversation, Message
from sms import conversations as convo
from tests.conftest import TextingPhone
from tests.reliability.test_texts_kept_through_outage import keep_directly
from tests.rota import BEN
from tests.sms.stuck import HandlingFails
from twilio_fake.rest_api import FakeTwilio

TEXTER = "+13125550177"
SUPERVISOR = "+13125550190"  # Sam Okafor in the example routing
WORDS = "I want to kill myself"
ALERT = re.compile(r"Crisis line: text (T\d+) is from someone who had texted STOP: the line cannot text them back\.")


def last_inbound_id(app: Flask) -> int:
    with app.app_context():
        newest = select(Message.id).where(Message.direction == "in").order_by(Message.id.desc()).limit(1)
        return db.session.scalars(newest).one()


def alerts(texting: TextingPhone) -> list[str]:
    return [text for text in texting.inbox(SUPERVISOR) if ALERT.match(text)]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_text_written_after_stop_reaches_the_supervisors_once_naming_only_its_case(
    app: Flask, texting: TextingPhone, clock_tick: Callable[[], Any]
) -> None:
    texting.send(TEXTER, "STOP")
    replies = texting.send(TEXTER, WORDS)
    message_id = last_inbound_id(app)

    first = clock_tick()["texts"]["after_stop"]
    again = clock_tick()["texts"]["after_stop"]

    assert replies == [] and texting.inbox(TEXTER) == []  # Twilio would refuse anything
    assert (first, again) == (1, 0)
    (alert,) = alerts(texting)
    assert ALERT.match(alert).group(1) == f"T{message_id}"  # type: ignore[union-attr]
    assert "5550177" not in alert and "kill" not in alert


@pytest.mark.usefixtures("wednesday_evening")
def test_more_texts_in_the_same_hour_do_not_alert_again_but_a_later_hour_does(
    texting: TextingPhone, clock_tick: Callable[[], Any], wednesday_evening: time_machine.Coordinates
) -> None:
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, "hello?")
    clock_tick()
    texting.send(TEXTER, "is anyone there")
    clock_tick()
    assert len(alerts(texting)) == 1

    wednesday_evening.shift(timedelta(hours=1))
    texting.send(TEXTER, "please")
    clock_tick()
    assert len(alerts(texting)) == 2


@pytest.mark.usefixtures("wednesday_evening")
def test_a_second_stop_is_no_text_a_person_must_see_to(texting: TextingPhone, clock_tick: Callable[[], Any]) -> None:
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, "STOP")

    assert clock_tick()["texts"]["after_stop"] == 0
    assert alerts(texting) == []


@pytest.mark.usefixtures("wednesday_evening")
def test_a_texter_blocked_with_their_carrier_whom_no_counselor_read_is_seen_to(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, clock_tick: Callable[[], Any]
) -> None:
    """They never texted STOP to the line: Twilio's 21610 on the welcome is how the line learns."""
    fake.opt_out(TEXTER)
    texting.send(TEXTER, WORDS)
    message_id = last_inbound_id(app)

    counts = clock_tick()["texts"]

    assert (counts["stopped"], counts["after_stop"]) == (1, 1)
    (alert,) = alerts(texting)
    assert ALERT.match(alert).group(1) == f"T{message_id}"  # type: ignore[union-attr]


def test_a_stuck_text_handled_later_then_a_stop_is_no_text_after_stop(
    texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """The stuck-text alerts and these are two things: a text written before STOP was answerable."""
    failing = HandlingFails(monkeypatch)
    texting.send(TEXTER, WORDS)
    wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))
    assert clock_tick()["texts"]["escalated"] == 1
    failing.heal()
    clock_tick()  # a retry handles it

    texting.send(TEXTER, "STOP")

    assert clock_tick()["texts"]["after_stop"] == 0
    assert alerts(texting) == []


def test_a_text_written_before_stop_and_handled_after_it_is_no_text_after_stop(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch,
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    failing = HandlingFails(monkeypatch)
    texting.send(TEXTER, WORDS)  # its handling fails: the clock retries it
    failing.heal()
    monkeypatch.setattr(sms.views, "handle_texter_message", sms.texting.handle_texter_message)  # the STOP is handled
    wednesday_evening.shift(timedelta(seconds=5))
    texting.send(TEXTER, "STOP")
    wednesday_evening.shift(convo.RETRY_AFTER)

    counts = clock_tick()["texts"]

    assert counts["retried"] == 1 and counts["after_stop"] == 0
    assert alerts(texting) == []


@pytest.mark.usefixtures("wednesday_evening")
def test_a_carrier_block_the_line_learns_late_still_reaches_the_supervisors(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, clock_tick: Callable[[], Any],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    """The texter waits in the queue; their number is blocked meanwhile, and the line learns it
    only when the sweep's text to them (the backup option, 15 minutes on) is refused. Ben, the
    one counselor not off, is busy with as many texters as he may take: the texter waits for
    him (with nobody on shift who could take them, the backup option comes at once)."""
    with app.app_context():
        from line_queue.responders import set_paused
        from routing.store import active_routing

        active = active_routing()
        assert active is not None
        for responder in active.document.responders:
            set_paused(responder.id, responder.id != "ben-carter", "self")
        db.session.commit()
    for number in range(3):
        texting.send(f"+1312555026{number}", WORDS)
        with app.app_context():
            tag = db.session.scalars(select(Conversation.id).order_by(Conversation.id.desc())).first()
        texting.send(BEN, f"YES {tag}")
    texting.send(TEXTER, WORDS)
    texting.send(TEXTER, "1")
    message_id = last_inbound_id(app)
    fake.opt_out(TEXTER)
    wednesday_evening.shift(timedelta(minutes=16))

    first = clock_tick()["texts"]  # the backup option is refused (21610)
    second = clock_tick()["texts"]  # the thread is closed and a person is asked for

    assert first["backup"] == 1
    assert second["stopped"] + first["stopped"] == 1
    assert first["after_stop"] + second["after_stop"] == 1
    (alert,) = alerts(texting)
    assert ALERT.match(alert).group(1) == f"T{message_id}"  # type: ignore[union-attr]


def test_an_alert_about_someone_after_stop_that_no_supervisor_got_is_sent_again_until_one_does(
    texting: TextingPhone, fake: FakeTwilio, clock_tick: Callable[[], Any],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, WORDS)
    fake.inject_fault("POST", r"/Messages\.json$", status=503, code=20503, message="Service Unavailable")
    assert clock_tick()["texts"]["after_stop"] == 0  # tried: Twilio refused it
    assert alerts(texting) == []

    wednesday_evening.shift(timedelta(minutes=1))
    assert clock_tick()["texts"]["after_stop_realerted"] == 0  # not before the next round is due
    wednesday_evening.shift(convo.REALERT_EVERY)
    assert clock_tick()["texts"]["after_stop_realerted"] == 1
    wednesday_evening.shift(convo.REALERT_EVERY + timedelta(seconds=1))
    assert clock_tick()["texts"]["after_stop_realerted"] == 0  # Sam has it now: no more rounds

    (alert,) = alerts(texting)
    assert "kill" not in alert and "5550177" not in alert


def test_alerts_about_someone_after_stop_that_twilio_keeps_refusing_stop_after_six_rounds(
    texting: TextingPhone, fake: FakeTwilio, clock_tick: Callable[[], Any],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, WORDS)
    fake.inject_fault("POST", r"/Messages\.json$", status=503, code=20503, message="Service Unavailable", times=None)
    clock_tick()

    realerts = 0
    for _minute in range(60):  # the clock's every-minute sweep, for an hour
        wednesday_evening.shift(timedelta(seconds=61))
        realerts += clock_tick()["texts"]["after_stop_realerted"]

    assert realerts == convo.MAX_ALERT_ROUNDS - 1  # the first alert and five more rounds
    assert alerts(texting) == []


def test_someone_who_texts_start_is_not_alerted_about_again(
    texting: TextingPhone, fake: FakeTwilio, clock_tick: Callable[[], Any],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, WORDS)
    fake.inject_fault("POST", r"/Messages\.json$", status=503, code=20503, message="Service Unavailable")
    clock_tick()
    texting.send(TEXTER, "START")

    wednesday_evening.shift(convo.REALERT_EVERY + timedelta(seconds=1))

    assert clock_tick()["texts"]["after_stop_realerted"] == 0
    assert alerts(texting) == []


def test_someone_who_wrote_either_side_of_the_hour_gets_one_series_of_alerts_not_two(
    texting: TextingPhone, fake: FakeTwilio, clock_tick: Callable[[], Any],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    wednesday_evening.shift(timedelta(minutes=57))  # 17:57
    texting.send(TEXTER, "STOP")
    fake.inject_fault("POST", r"/Messages\.json$", status=503, code=20503, message="Service Unavailable", times=None)
    texting.send(TEXTER, WORDS)
    clock_tick()
    wednesday_evening.shift(timedelta(minutes=4))  # 18:01: a new hour, a new first alert
    texting.send(TEXTER, "please")
    clock_tick()

    realerts = 0
    for _minute in range(45):
        wednesday_evening.shift(timedelta(seconds=61))
        realerts += clock_tick()["texts"]["after_stop_realerted"]

    assert realerts == convo.MAX_ALERT_ROUNDS - 1


def test_a_text_from_before_a_start_is_not_alerted_about_again_when_they_text_stop_once_more(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, clock_tick: Callable[[], Any],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    """STOP is how texters end a conversation: someone helped since must not be alerted about,
    listed on the board or offered for unmasking, for what they wrote under the earlier STOP."""
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, WORDS)
    fake.inject_fault("POST", r"/Messages\.json$", status=503, code=20503, message="Service Unavailable")
    clock_tick()  # the alert is refused
    texting.send(TEXTER, "START")
    texting.send(TEXTER, "STOP")  # they talked, and ended it

    wednesday_evening.shift(convo.REALERT_EVERY + timedelta(seconds=1))

    assert clock_tick()["texts"]["after_stop_realerted"] == 0
    assert alerts(texting) == []
    with app.app_context():
        assert convo.latest_texts_after_stop(convo.now()) == []


@pytest.mark.usefixtures("wednesday_evening")
def test_someone_who_writes_many_times_after_stop_does_not_hide_anyone_else_from_the_lists(
    app: Flask, texting: TextingPhone
) -> None:
    other = "+13125550178"
    texting.send(other, "STOP")
    texting.send(other, WORDS)
    texting.send(TEXTER, "STOP")
    for attempt in range(12):
        texting.send(TEXTER, f"is anyone there {attempt}")
    newest = last_inbound_id(app)

    with app.app_context():
        listed = convo.latest_texts_after_stop(convo.now(), limit=2)

        assert listed[0].id == newest  # the newest person first, their latest text
        assert len(listed) == 2 and len({message.texter_id for message in listed}) == 2


@pytest.mark.usefixtures("wednesday_evening", "clean_redis")
@pytest.mark.parametrize(("written", "alerted"), [("before", 0), ("after", 1)])
def test_a_text_kept_through_an_outage_is_a_text_after_stop_only_if_written_after_the_stop(
    app: Flask, texting: TextingPhone, clock_tick: Callable[[], Any], written: str, alerted: int
) -> None:
    """Found by review: a kept text's store time (the clock's, after the outage) was compared with
    their STOP, not when they wrote it: words written before STOP were sent to the supervisors as
    written after it."""
    texting.send(TEXTER, "I need to talk")
    now = datetime.now(UTC)
    if written == "before":
        keep_directly(app, TEXTER, WORDS, now - timedelta(minutes=2))  # before the STOP below
        texting.send(TEXTER, "STOP")
    else:
        texting.send(TEXTER, "STOP")
        keep_directly(app, TEXTER, WORDS, datetime.now(UTC) + timedelta(seconds=1))

    clock_tick()  # stores and handles the kept text
    clock_tick()  # tells the supervisors of texts after STOP

    assert len(alerts(texting)) == alerted
