"""When something fails every text (a bug, a dependency down), many texts get stuck at once: each
supervisor then gets one summary per sweep (how many, the first cases, the live board), not a
text per stuck text, which would bury the alert and cost the line. Each text is still escalated
once, a summary a supervisor got counts as told for every text it covered, and one no
supervisor got is sent again in rounds, as a single text's alert is. A few texts keep their own
alert."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
import yaml
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Message
from crisisline.settings import DEFAULT_ROUTING_FILE
from routing.store import active_routing
from routing.validation import validate_text
from sms import conversations as convo
from tests.conftest import TextingPhone
from tests.sms.stuck import HandlingFails
from tests.sms.test_stuck_texts import two_sweeps_at_once
from twilio_fake.rest_api import FakeTwilio

SUPERVISOR = "+13125550190"  # Sam Okafor in the example routing
SECOND_SUPERVISOR = "+13125550191"
WORDS = "I want to kill myself"
REFUSED: dict[str, Any] = {"status": 503, "code": 20503, "message": "Service Unavailable"}


def texter(number: int) -> str:
    return f"+1312555018{number}"


def stuck_ids(app: Flask) -> list[int]:
    with app.app_context():
        return list(db.session.scalars(select(Message.id).where(Message.direction == "in").order_by(Message.id)))


def alerts_about(app: Flask) -> dict[int, convo.StuckAlerts]:
    """What the supervisors' alerts came to, per stuck text (the board's view of it)."""
    with app.app_context():
        active = active_routing()
        assert active is not None
        messages = db.session.scalars(convo.stuck_texts(convo.now())).all()
        return convo.stuck_alerts(messages, (supervisor.id for supervisor in active.document.supervisors))


def supervisor_alert_statuses(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Message.status).where(Message.party == "supervisor")))


@pytest.fixture
def texts_stuck(
    texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates
) -> Callable[[int], None]:
    """Factory: ``count`` texters' texts that no handling can handle, old enough to escalate."""

    def stick(count: int) -> None:
        HandlingFails(monkeypatch)
        for number in range(count):
            texting.send(texter(number), WORDS)
        wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))

    return stick


@pytest.fixture
def two_supervisors(publish_routing: Callable[..., int]) -> None:
    def add(document: dict[str, Any]) -> None:
        document["supervisors"].append({"id": "ana-ruiz", "name": "Ana Ruiz", "phone": "+1 312 555 0191"})

    publish_routing(add)


def test_many_stuck_texts_give_each_supervisor_one_summary_and_each_text_is_escalated(
    app: Flask, texting: TextingPhone, texts_stuck: Callable[[int], None], two_supervisors: None,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    texts_stuck(5)
    ids = stuck_ids(app)

    assert clock_tick()["texts"]["escalated"] == 5
    assert clock_tick()["texts"]["escalated"] == 0  # a sweep run again sends nothing again

    for phone in (SUPERVISOR, SECOND_SUPERVISOR):
        (summary,) = texting.inbox(phone)
        assert summary.startswith("Crisis line: 5 texts could not be handled, among them")
        assert f"T{ids[0]}, T{ids[1]}, T{ids[2]}." in summary and f"T{ids[3]}" not in summary  # the first few
        assert "live board" in summary
        assert "kill" not in summary and "55501" not in summary
    with app.app_context():
        escalated = db.session.scalars(select(Message.escalated_at).where(Message.id.in_(ids))).all()
    assert len(escalated) == 5 and None not in escalated
    assert {alerts.taken for alerts in alerts_about(app).values()} == {2}  # both supervisors, for every text


def test_three_stuck_texts_keep_an_alert_each(
    app: Flask, texting: TextingPhone, texts_stuck: Callable[[int], None], clock_tick: Callable[[], Any]
) -> None:
    texts_stuck(convo.SUMMARY_ABOVE)
    ids = stuck_ids(app)

    assert clock_tick()["texts"]["escalated"] == convo.SUMMARY_ABOVE

    alerts = texting.inbox(SUPERVISOR)
    assert sorted(re.findall(r"text (T\d+) could not be handled for \d+ minutes", " ".join(alerts))) == sorted(
        f"T{message_id}" for message_id in ids
    )  # fmt: skip
    assert len(alerts) == convo.SUMMARY_ABOVE


def test_a_summary_no_supervisor_got_is_sent_again_as_one_summary_until_one_does(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, texts_stuck: Callable[[int], None],
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    texts_stuck(5)
    fake.inject_fault("POST", r"/Messages\.json$", **REFUSED)
    assert clock_tick()["texts"]["escalated"] == 5
    assert texting.inbox(SUPERVISOR) == []
    assert {(alerts.tried, alerts.taken) for alerts in alerts_about(app).values()} == {(1, 0)}

    wednesday_evening.shift(timedelta(minutes=1))
    assert clock_tick()["texts"]["realerted"] == 0  # not before the next round is due
    wednesday_evening.shift(convo.REALERT_EVERY)
    assert clock_tick()["texts"]["realerted"] == 5  # every text, in one round
    wednesday_evening.shift(convo.REALERT_EVERY + timedelta(seconds=1))
    assert clock_tick()["texts"]["realerted"] == 0  # Sam has it now: no more rounds

    (summary,) = texting.inbox(SUPERVISOR)
    assert summary.startswith("Crisis line: 5 texts could not be handled")
    assert {(alerts.last_round, alerts.taken) for alerts in alerts_about(app).values()} == {(1, 1)}


def test_summaries_twilio_keeps_refusing_are_tried_every_five_minutes_for_six_rounds(
    app: Flask, fake: FakeTwilio, texts_stuck: Callable[[int], None], wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    texts_stuck(5)
    fake.inject_fault("POST", r"/Messages\.json$", **REFUSED, times=None)
    assert clock_tick()["texts"]["escalated"] == 5

    realerted_at_minute = {}
    for minute in range(1, 36):  # the clock's every-minute sweep
        wednesday_evening.shift(timedelta(seconds=61))
        if realerted := clock_tick()["texts"]["realerted"]:
            realerted_at_minute[minute] = realerted

    assert realerted_at_minute == {5: 5, 10: 5, 15: 5, 20: 5, 25: 5}  # every text each round, then the board
    assert supervisor_alert_statuses(app) == ["failed"] * convo.MAX_ALERT_ROUNDS  # one summary a round to Sam


def test_texts_of_different_rounds_due_together_each_keep_their_own_rounds(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch,
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    HandlingFails(monkeypatch)
    fake.inject_fault("POST", r"/Messages\.json$", **REFUSED, times=None)
    for number in range(4):
        texting.send(texter(number), WORDS)
    wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))
    assert clock_tick()["texts"]["escalated"] == 4  # the first four: their summary refused
    wednesday_evening.shift(convo.REALERT_EVERY + timedelta(seconds=1))
    for number in range(4, 9):
        texting.send(texter(number), WORDS)
    assert clock_tick()["texts"]["realerted"] == 4  # their round 1, refused too
    wednesday_evening.shift(convo.ESCALATE_AFTER + timedelta(seconds=1))
    assert clock_tick()["texts"]["escalated"] == 5  # the next five: round 0, refused

    # The clock is away; back, both groups are due at once, and Twilio takes texts again.
    wednesday_evening.shift(convo.REALERT_EVERY * 2)
    fake.clear_faults()
    assert clock_tick()["texts"]["realerted"] == 9
    wednesday_evening.shift(convo.REALERT_EVERY + timedelta(seconds=1))
    assert clock_tick()["texts"]["realerted"] == 0  # every text told: no more rounds

    ids = stuck_ids(app)
    alerts = alerts_about(app)
    assert {message_id: (alerts[message_id].last_round, alerts[message_id].taken) for message_id in ids} == {
        **{message_id: (2, 1) for message_id in ids[:4]},
        **{message_id: (1, 1) for message_id in ids[4:]},
    }  # fmt: skip
    summaries = texting.inbox(SUPERVISOR)
    assert sorted(summary.split(" could not")[0] for summary in summaries) == [
        "Crisis line: 4 texts", "Crisis line: 5 texts"
    ]  # fmt: skip


def test_two_sweeps_at_once_escalate_each_text_once_and_cover_each_by_one_alert(
    app: Flask, texting: TextingPhone, texts_stuck: Callable[[int], None]
) -> None:
    texts_stuck(8)

    escalated = two_sweeps_at_once(app, "escalated")

    assert sum(escalated) == 8
    assert {alerts.tried for alerts in alerts_about(app).values()} == {1}  # no text alerted twice, none left out
    # Each sweep tells of the texts it won: one summary, or an alert each if it won three or fewer.
    alerts = texting.inbox(SUPERVISOR)
    counted = [re.match(r"Crisis line: (\d+) texts could not", alert) for alert in alerts]
    assert sum(int(found[1]) if found else 1 for found in counted) == 8
    assert sum(1 for found in counted if found) in (1, 2)


def test_a_summary_is_not_alerted_twice_when_a_text_of_it_was_taken_over(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, texts_stuck: Callable[[int], None],
    wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    texts_stuck(5)
    fake.inject_fault("POST", r"/Messages\.json$", **REFUSED)
    clock_tick()
    first = stuck_ids(app)[0]
    with app.app_context():
        assert convo.take_over_stuck(first)
        db.session.commit()

    wednesday_evening.shift(convo.REALERT_EVERY + timedelta(seconds=1))
    assert clock_tick()["texts"]["realerted"] == 4  # a person has the first: the rest go again

    (summary,) = texting.inbox(SUPERVISOR)
    assert summary.startswith("Crisis line: 4 texts could not be handled") and f"T{first}," not in summary


# --- the prompt ---------------------------------------------------------------------------------


def test_a_config_written_before_the_summary_alert_stays_valid_with_an_english_stand_in() -> None:
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    del raw["staff_prompts"]["texts_stuck_sms"]

    document, problems = validate_text(yaml.safe_dump(raw, allow_unicode=True))

    assert document is not None and [str(p) for p in problems] == []
    summary = document.staff_prompt("texts_stuck_sms", count=40, cases="T12, T13, T14")
    assert summary.startswith("Crisis line: 40 texts could not be handled, among them T12, T13, T14.")


@pytest.mark.parametrize("placeholder", ["count", "cases"])
def test_a_summary_alert_without_its_count_or_cases_is_refused(placeholder: str) -> None:
    raw = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    raw["staff_prompts"]["texts_stuck_sms"] = raw["staff_prompts"]["texts_stuck_sms"].replace(
        f"{{{placeholder}}}", "some"
    )

    document, problems = validate_text(yaml.safe_dump(raw, allow_unicode=True))

    assert document is None
    assert any("texts_stuck_sms" in str(p) and f"{{{placeholder}}}" in str(p) for p in problems)
