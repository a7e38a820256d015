"""A text the line cannot handle, retry after retry, is not left to the retries alone: after
three minutes the supervisors are told once, by a text that names the case and nothing else,
and a person takes it from there. A text a retry handles in time troubles nobody."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Message
from sms import conversations as convo
from sms.views import FAILSAFE_TEXT
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TextingPhone
from tests.sms.stuck import HandlingFails
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import sms_params

TEXTER = "+13125550177"
SUPERVISOR = "+13125550190"  # Sam Okafor in the example routing
WORDS = "I want to kill myself"


def inbound_id(app: Flask) -> int:
    with app.app_context():
        ids = db.session.scalars(select(Message.id).where(Message.direction == "in")).all()
    assert len(ids) == 1
    return ids[0]


@pytest.fixture
def escalate_while_twilio_refuses(
    texting: TextingPhone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch,
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> Callable[..., None]:  # fmt: skip
    """Factory: a text no handling can handle, escalated while Twilio refuses texts
    (``refusal``: ``FakeTwilio.inject_fault``'s keywords)."""

    def escalate(**refusal: Any) -> None:
        HandlingFails(monkeypatch)
        texting.send(TEXTER, WORDS)
        wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))
        fake.inject_fault("POST", r"/Messages\.json$", **refusal)
        assert clock_tick()["texts"]["escalated"] == 1
        assert texting.inbox(SUPERVISOR) == []

    return escalate


def two_sweeps_at_once(app: Flask, count: str) -> list[int]:
    """Two text sweeps run side by side, as two clocks' jobs could; each one's ``count``."""
    from concurrent.futures import ThreadPoolExecutor

    from routing.store import active_routing

    def sweep_once(_: int) -> int:
        with app.app_context():
            active = active_routing()
            assert active is not None
            return convo.sweep(active.document)[count]

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(sweep_once, range(2)))


def board_row(app: Flask) -> Any:
    """The stuck text's one row on the live board, now."""
    from console.board.live import stuck_text_rows
    from routing.store import active_routing

    with app.app_context():
        active = active_routing()
        assert active is not None
        (row,) = stuck_text_rows(active.document, convo.now())
    return row


def test_a_text_that_keeps_failing_is_escalated_to_the_supervisors_once_with_the_case_only(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    failing = HandlingFails(monkeypatch)
    answer = texting.deliver(sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS))
    assert FAILSAFE_TEXT in answer.text  # the webhook's fail-safe pointed them to the backup line
    message_id = inbound_id(app)

    wednesday_evening.shift(timedelta(seconds=31))
    assert clock_tick()["texts"]["escalated"] == 0  # a retry first: most faults pass
    assert texting.inbox(SUPERVISOR) == []
    wednesday_evening.shift(convo.ESCALATE_AFTER)
    assert clock_tick()["texts"]["escalated"] == 1
    wednesday_evening.shift(timedelta(minutes=1))
    assert clock_tick()["texts"]["escalated"] == 0

    alerts = texting.inbox(SUPERVISOR)
    assert len(alerts) == 1
    assert f"T{message_id}" in alerts[0]
    assert "kill" not in alerts[0] and "5550177" not in alerts[0]
    assert failing.attempts >= 3  # the webhook and two retries, at least
    with app.app_context():
        message = db.session.get(Message, message_id)
        assert message is not None and message.handled_at is None and message.escalated_at is not None


def test_a_stuck_text_handled_once_the_bug_is_fixed_leaves_the_retries(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    failing = HandlingFails(monkeypatch)
    texting.send(TEXTER, WORDS)
    wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))
    clock_tick()
    failing.heal()

    wednesday_evening.shift(timedelta(minutes=1))
    assert clock_tick()["texts"]["retried"] == 1

    assert texting.inbox(TEXTER)[-1].split("\n\n")[-1].startswith("Thank you. A counselor will text you back shortly")
    with app.app_context():
        assert db.session.scalars(convo.stuck_texts(convo.now())).all() == []


def test_a_text_a_retry_handles_in_time_is_never_escalated(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    failing = HandlingFails(monkeypatch)
    texting.send(TEXTER, WORDS)
    failing.heal()

    wednesday_evening.shift(timedelta(seconds=31))
    assert clock_tick()["texts"]["retried"] == 1
    wednesday_evening.shift(convo.ESCALATE_AFTER)
    assert clock_tick()["texts"]["escalated"] == 0

    assert texting.inbox(SUPERVISOR) == []


def test_with_no_supervisor_listed_a_stuck_text_is_logged_loudly_and_whoever_is_listed_later_is_told(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any], publish_routing: Callable[..., int], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    publish_routing(lambda document: document.update(supervisors=[]))
    HandlingFails(monkeypatch)
    texting.send(TEXTER, WORDS)
    message_id = inbound_id(app)

    wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))
    with caplog.at_level(logging.ERROR, logger="sms.conversations"):
        assert clock_tick()["texts"]["escalated"] == 1

    assert f"text {message_id} could not be handled and no supervisor is configured" in caplog.text
    assert "5550177" not in caplog.text and "kill" not in caplog.text
    assert texting.inbox(SUPERVISOR) == []

    publish_routing()  # Sam is listed now: the next round tells him
    wednesday_evening.shift(convo.REALERT_EVERY + timedelta(seconds=1))
    assert clock_tick()["texts"]["realerted"] == 1
    (alert,) = texting.inbox(SUPERVISOR)
    assert f"T{message_id}" in alert


def test_two_sweeps_at_once_tell_the_supervisors_once(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    HandlingFails(monkeypatch)
    texting.send(TEXTER, WORDS)
    wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))

    escalated = two_sweeps_at_once(app, "escalated")

    assert sum(escalated) == 1
    assert len(texting.inbox(SUPERVISOR)) == 1


def test_an_alert_twilio_refuses_is_shown_as_not_sent_and_the_text_still_listed(
    app: Flask, escalate_while_twilio_refuses: Callable[..., None]
) -> None:
    escalate_while_twilio_refuses(status=400, code=21211, message="Invalid 'To' Phone Number")

    row = board_row(app)

    assert (row.escalated, row.supervisors_told, row.alert) == (True, 0, "no: the alert could not be sent")


def test_a_text_too_new_to_be_stuck_cannot_be_taken_over(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    HandlingFails(monkeypatch)
    texting.send(TEXTER, WORDS)
    message_id = inbound_id(app)

    with app.app_context():
        taken_now = convo.take_over_stuck(message_id)
        db.session.commit()
    wednesday_evening.shift(convo.RETRY_AFTER + timedelta(seconds=1))
    with app.app_context():
        taken_later = convo.take_over_stuck(message_id)
        db.session.commit()

    assert (taken_now, taken_later) == (False, True)


def test_an_alert_no_supervisor_got_is_sent_again_until_one_does(
    app: Flask, texting: TextingPhone, escalate_while_twilio_refuses: Callable[..., None],
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    escalate_while_twilio_refuses(status=503, code=20503, message="Service Unavailable")
    message_id = inbound_id(app)

    wednesday_evening.shift(timedelta(minutes=1))
    assert clock_tick()["texts"]["realerted"] == 0  # not before the next round is due
    wednesday_evening.shift(convo.REALERT_EVERY)
    assert clock_tick()["texts"]["realerted"] == 1
    wednesday_evening.shift(convo.REALERT_EVERY + timedelta(seconds=1))
    assert clock_tick()["texts"]["realerted"] == 0  # Sam has it now: no more rounds

    (alert,) = texting.inbox(SUPERVISOR)
    assert f"T{message_id}" in alert and "kill" not in alert and "5550177" not in alert
    row = board_row(app)
    assert (row.supervisors_told, row.alert) == (1, "yes (1)")


def test_alerts_twilio_keeps_refusing_are_tried_every_five_minutes_for_six_rounds(
    app: Flask, escalate_while_twilio_refuses: Callable[..., None], wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    escalate_while_twilio_refuses(status=503, code=20503, message="Service Unavailable", times=None)

    realerted_at_minute = []
    for minute in range(1, 36):  # the clock's every-minute sweep
        wednesday_evening.shift(timedelta(seconds=61))
        if clock_tick()["texts"]["realerted"]:
            realerted_at_minute.append(minute)

    assert realerted_at_minute == [5, 10, 15, 20, 25]  # the first alert and five more, then the board alone
    with app.app_context():
        alerts = db.session.scalars(
            select(Message.status).where(Message.party == "supervisor", Message.direction == "out")
        ).all()
    assert alerts == ["failed"] * convo.MAX_ALERT_ROUNDS  # one per round to Sam, each refused


def test_two_sweeps_at_once_send_an_alert_round_once(
    app: Flask, texting: TextingPhone, escalate_while_twilio_refuses: Callable[..., None],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    escalate_while_twilio_refuses(status=503, code=20503, message="Service Unavailable")
    wednesday_evening.shift(convo.REALERT_EVERY + timedelta(seconds=1))

    realerted = two_sweeps_at_once(app, "realerted")

    assert sum(realerted) == 1
    assert len(texting.inbox(SUPERVISOR)) == 1
