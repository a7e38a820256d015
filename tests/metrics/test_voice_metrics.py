"""Voice metrics from calls driven through the real line: signed webhooks over real HTTP, the
fake Twilio's REST API, SQLite and PostgreSQL. A Wednesday evening at the example line (Ben
and Diego on shift for mental health): calls answered, missed and rolled over, abandoned
early and late, sent to the backup line, and a callback chosen instead of waiting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call, CallEvent
from metrics import Report
from metrics.facts import Contact
from metrics.load import voice_contact
from routing.store import active_routing
from tests.rota import BEN, DIEGO, around_the_clock, legs
from transfer import state
from twilio_fake.phone import Keys, Phone, PhoneCall
from twilio_fake.rest_api import CallRecord, FakeTwilio

MENTAL_HEALTH = [Keys("1"), Keys("3")]
SUICIDE = [Keys("1"), Keys("2")]
BACKUP = "+18002738255"

pytestmark = pytest.mark.usefixtures("clean_redis")


def caller(phone: Phone, number: int, keys: list[Keys], **options: Any) -> PhoneCall:
    return phone.call(keys, identity=phone.identity(f"+131255503{number:02d}"), **options)


def ringing(fake: FakeTwilio) -> CallRecord:
    (leg,) = [leg for leg in legs(fake) if leg.status in ("queued", "initiated", "ringing")]
    return leg


def answered_by(phone: Phone, fake: FakeTwilio, person: PhoneCall) -> PhoneCall:
    """The ringing responder presses 1 and the waiting caller is brought in."""
    responder = phone.answer(ringing(fake).sid, [Keys("1")])
    phone.resume(person, max_hold_turns=0)
    assert person.conference is not None and person.conference == responder.conference
    return responder


def hang_up_together(phone: Phone, person: PhoneCall, responder: PhoneCall) -> None:
    phone.hang_up(person)
    phone.resume(responder)


def pause_everyone(app: Flask, paused: bool = True) -> None:
    with app.app_context():
        active = active_routing()
        assert active is not None
        for responder in active.document.responders:
            state.set_paused(responder.id, paused, "self" if paused else None)
        db.session.commit()


@dataclass(frozen=True)
class Evening:
    voice: Report
    by_need: Report


@pytest.fixture
def evening(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Traveller,
    metrics_of: Callable[..., Report],
) -> Evening:  # fmt: skip
    """Six callers for mental health, one after the other."""
    clock = wednesday_evening
    # 1. Answered by the first counselor rung, 12 s after joining the queue.
    first = caller(phone, 1, MENTAL_HEALTH, max_hold_turns=0)
    clock.shift(timedelta(seconds=12))
    hang_up_together(phone, first, answered_by(phone, fake, first))

    # 2. The first counselor rung does not answer; the next one takes the call after 30 s.
    second = caller(phone, 2, MENTAL_HEALTH, max_hold_turns=0)
    missed = ringing(fake)
    clock.shift(timedelta(seconds=20))
    fake.advance_call(missed.sid, "no-answer")
    assert ringing(fake).to in {BEN, DIEGO} - {missed.to}
    clock.shift(timedelta(seconds=10))
    hang_up_together(phone, second, answered_by(phone, fake, second))

    # 3. and 4. Hang up while waiting: after 10 s (within 988's first 30 s), and after 45 s.
    for number, seconds in ((3, 10), (4, 45)):
        waiting = caller(phone, number, MENTAL_HEALTH, max_hold_turns=0)
        clock.shift(timedelta(seconds=seconds))
        phone.hang_up(waiting)

    # 5. and 6. Everyone paused: one caller stays silent (the backup line), one presses 9.
    pause_everyone(app)
    to_backup = caller(phone, 5, MENTAL_HEALTH, dial_outcomes=["completed"])
    assert to_backup.dials[0].numbers == [BACKUP]
    callback = caller(phone, 6, [*MENTAL_HEALTH, Keys("9")])
    assert "We will call you back" in callback.heard_text()
    pause_everyone(app, paused=False)
    return Evening(metrics_of("voice"), metrics_of("voice", breakdown="need"))


def test_every_caller_who_left_the_menus_is_offered_and_two_were_answered(evening: Evening) -> None:
    values = evening.voice.overall.values
    assert (values["offered"], values["answered"], values["answered_by_counselor"]) == (6, 2, 2)
    assert values["answer_rate"] == pytest.approx(2 / 6)
    assert values["ended_in_menu"] == 0


def test_speed_to_answer_runs_from_joining_the_queue_to_the_counselor_pressing_1(evening: Evening) -> None:
    values = evening.voice.overall.values
    counts = evening.voice.speed_to_answer_counts
    assert sum(count for _, count in counts) == 2
    fast, slow = (second for second, count in counts for _ in range(count))
    assert 12 <= fast < 20 and 30 <= slow < 40  # the clock shifts, plus the webhooks' own time
    mean, median, p90 = (values[f"speed_to_answer_{name}"] for name in ("mean", "median", "p90"))
    assert isinstance(mean, float) and isinstance(p90, float)
    assert int(p90) == slow  # nearest rank: the slower of two
    assert mean == median  # of two: the mean of the two middle ones
    assert fast < mean < p90


def test_abandonment_counts_callers_who_hung_up_waiting_and_those_within_30_s_apart(evening: Evening) -> None:
    values = evening.voice.overall.values
    assert (values["abandoned"], values["abandoned_within_30s"]) == (2, 1)
    assert values["abandonment_rate"] == pytest.approx(2 / 6)
    assert values["abandonment_rate_after_30s"] == pytest.approx(1 / 5)  # the short one leaves both sides


def test_the_backup_line_and_the_callback_are_outcomes_of_their_own(evening: Evening) -> None:
    values = evening.voice.overall.values
    assert (values["to_backup"], values["chose_callback"]) == (1, 1)
    assert values["backup_rate"] == pytest.approx(1 / 6)
    assert values["callbacks_requested"] == 1 and values["callbacks_completed"] == 0


def test_a_missed_offer_is_one_rollover_to_the_next_counselor(evening: Evening) -> None:
    values = evening.voice.overall.values
    assert values["rollovers"] == 1
    assert values["rollovers_per_contact"] == pytest.approx(1 / 6)


def test_the_breakdown_by_need_has_a_row_per_need_that_adds_up(evening: Evening) -> None:
    rows = {row.group: row.values for row in evening.by_need.rows}
    assert set(rows) == {"all", "mental_health"}
    assert rows["mental_health"]["offered"] == rows["all"]["offered"] == 6


def test_the_daily_series_puts_every_call_on_wednesday(evening: Evening) -> None:
    (day,) = evening.voice.daily
    assert (day.offered, day.answered) == (6, 2)


def test_route_decided_says_callback_offer_when_nobody_is_on_call_and_a_callback_is_possible(
    app: Flask, phone: Phone, publish_routing: Callable[..., int], wednesday_evening: time_machine.Traveller,
    metrics_of: Callable[..., Report],
) -> None:  # fmt: skip
    publish_routing(lambda document: around_the_clock(document, on_call=()))
    chooses = caller(phone, 7, [*SUICIDE, Keys("9")])
    silent = caller(phone, 8, SUICIDE, dial_outcomes=["completed"])

    assert "We will call you back" in chooses.heard_text() and silent.dials[0].numbers == [BACKUP]
    with app.app_context():
        decided = db.session.scalars(select(CallEvent).where(CallEvent.kind == "route.decided")).all()
        assert [(e.detail["target"], e.detail["reason"]) for e in decided] == [("callback_offer", "nobody_on_call")] * 2
    values = metrics_of("voice").overall.values
    assert (values["offered"], values["chose_callback"], values["to_backup"], values["answered"]) == (2, 1, 1, 0)


def test_a_caller_who_hangs_up_in_the_menus_is_not_offered(
    app: Flask, phone: Phone, wednesday_evening: time_machine.Traveller, metrics_of: Callable[..., Report]
) -> None:
    caller(phone, 9, [Keys("1")], hang_up_after_requests=2)
    with app.app_context():
        (call,) = db.session.scalars(select(Call)).all()
        assert call.need is None
    values = metrics_of("voice").overall.values
    assert (values["offered"], values["ended_in_menu"]) == (0, 1)


def test_a_pickup_refused_because_the_account_was_closed_is_a_rollover_as_a_pass_is() -> None:
    """Found by review: the next person is rung as after a pass, but it was not counted."""
    start = datetime(2026, 12, 2, 23, 0, tzinfo=UTC)

    def contact(kind: str, detail: dict[str, str]) -> Contact | None:
        events = [
            ("call.started", start, {}),
            ("route.decided", start + timedelta(seconds=20), {"target": "counselors"}),
            (kind, start + timedelta(seconds=40), {"responder": "ben-carter", **detail}),
            ("offer.accepted", start + timedelta(seconds=70), {"responder": "diego-morales"}),
        ]
        return voice_contact(events, start, "en", "suicide", "completed", set(), {})

    passed, refused = contact("offer.passed", {}), contact("offer.ended", {"outcome": "account_closed"})

    assert passed is not None and refused is not None
    assert passed.rollovers == refused.rollovers == 1
