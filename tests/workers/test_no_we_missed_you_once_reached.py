"""A "we missed your call" or "we tried to call you back" text is not sent to someone who has
reached a counselor since (a counselor took their text) or is on the line again now. Before,
a text Twilio refused for now was sent up to 21 minutes later whatever had happened meanwhile:
someone a counselor had just talked with was told nobody had answered them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from crisisline.db import db
from crisisline.models import Conversation
from tests.callbacks.test_callbacks import BEN, TRIED_TEXT
from tests.conftest import TextingPhone
from tests.followups.conftest import due_contacts_runner
from tests.rota import around_the_clock
from tests.workers.test_one_text_refused_for_now import (
    CALLER,
    MESSAGES,
    a_callback_given_up,
    kinds_and_outcomes,
    texts_to,
)
from tests.workers.test_scheduled_contacts import MISSED_ES, wait_then_hang_up
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from workers import contacts as worker_contacts

pytestmark = pytest.mark.usefixtures("clean_redis")
HUNG_UP = "+13125550167"


def only_ben(document: dict[str, object]) -> None:
    around_the_clock(document, on_call=("ben-carter",))  # type: ignore[arg-type]


def a_counselor_takes_their_text(app: Flask, texting: TextingPhone, number: str) -> None:
    texting.send(number, "I want to kill myself")
    with app.app_context():
        tag = db.session.scalars(select(Conversation.id)).one()
    texting.send(BEN, f"YES {tag}")


def test_a_missed_call_text_refused_for_now_is_not_sent_once_a_counselor_has_taken_their_text(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(only_ben)
    wait_then_hang_up(phone, wednesday_evening, HUNG_UP, spanish=True)
    run_due = due_contacts_runner(app)
    fake.inject_fault("POST", MESSAGES, status=429, code=20429, message="Too Many Requests")
    assert run_due() == ["postponed"]

    a_counselor_takes_their_text(app, texting, HUNG_UP)
    wednesday_evening.shift(timedelta(seconds=61))

    assert run_due() == ["not_needed"]
    assert MISSED_ES not in texts_to(fake, HUNG_UP)
    assert kinds_and_outcomes(app, "missed_contact") == [("canceled", "postponed"), ("canceled", "not_needed")]


def test_a_missed_call_text_waits_while_they_hold_on_a_new_call_and_goes_once_they_leave_unheard(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    """Not sent to someone on hold again (it would tell them nobody answered), nor dropped:
    found by review, a person who then hung up again too soon for a text of that call's own
    was never told how to reach the line."""
    wait_then_hang_up(phone, wednesday_evening, HUNG_UP, spanish=True)
    again = phone.call([Keys("2"), Keys("2")], identity=phone.identity(HUNG_UP), max_hold_turns=0)  # straight back
    run_due = due_contacts_runner(app)

    assert run_due() == ["holding"]
    assert texts_to(fake, HUNG_UP) == []
    phone.hang_up(again)  # after a few seconds: too soon for a text of this call's own
    wednesday_evening.shift(timedelta(seconds=61))

    assert run_due() == ["sent"]
    assert texts_to(fake, HUNG_UP) == [MISSED_ES]
    assert run_due() == []


def test_someone_who_hangs_up_twice_after_waiting_long_enough_gets_one_missed_call_text(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    wait_then_hang_up(phone, wednesday_evening, HUNG_UP, spanish=True)
    run_due = due_contacts_runner(app)
    wait_then_hang_up(phone, wednesday_evening, HUNG_UP, spanish=True)  # the first's text waited meanwhile

    outcomes = run_due()
    wednesday_evening.shift(timedelta(minutes=2))
    outcomes += run_due()

    assert sorted(outcomes) == ["not_needed", "sent"]
    assert texts_to(fake, HUNG_UP) == [MISSED_ES]


def test_a_missed_call_text_still_goes_to_someone_whose_text_nobody_has_taken(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(only_ben)
    wait_then_hang_up(phone, wednesday_evening, HUNG_UP, spanish=True)
    texting.send(HUNG_UP, "I want to kill myself")  # offered to Ben, not taken: nobody has them yet

    assert due_contacts_runner(app)() == ["sent"]
    assert MISSED_ES in texts_to(fake, HUNG_UP)


def test_a_we_tried_text_refused_for_now_is_not_sent_once_a_counselor_has_taken_their_text(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    run_due = a_callback_given_up(app, phone, wednesday_evening, publish_routing)
    fake.inject_fault("POST", MESSAGES, status=429, code=20429, message="Too Many Requests")
    assert run_due() == ["postponed"]

    publish_routing(only_ben)  # Ben comes on call and takes their text
    a_counselor_takes_their_text(app, texting, CALLER)
    wednesday_evening.shift(timedelta(seconds=61))

    assert run_due() == ["not_needed"]
    assert TRIED_TEXT not in texts_to(fake, CALLER)


def test_a_we_tried_text_still_waiting_gives_way_to_the_missed_call_text_of_a_later_call(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """Found by review: a "we tried" text held while they were on hold, and that call's own
    "we missed you" after they hung up, reached them a minute apart. One is enough."""
    run_due = a_callback_given_up(app, phone, wednesday_evening, publish_routing)  # its text not run yet
    publish_routing(only_ben)  # Ben on call, not answering
    wait_then_hang_up(phone, wednesday_evening, CALLER)

    outcomes = run_due()

    assert sorted(outcomes) == ["not_needed", "sent"]
    assert kinds_and_outcomes(app, "callback_missed") == [("canceled", "not_needed")]
    assert TRIED_TEXT not in texts_to(fake, CALLER) and len(texts_to(fake, CALLER)) == 1


def test_runs_that_stop_part_way_between_holds_still_end_with_a_person_told(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Each wait while they hold and each rerun after a run stopped part way is counted on its
    own. Found by review: each reset the other's count, so runs that stopped between holds
    were rerun without end and never reached a person."""
    wait_then_hang_up(phone, wednesday_evening, HUNG_UP, spanish=True)
    phone.call([Keys("2"), Keys("2")], identity=phone.identity(HUNG_UP), max_hold_turns=0)  # holding from now on
    run_due = due_contacts_runner(app)
    blip = {"on": False}
    weigh = worker_contacts.held_back

    def weighing_that_can_fail(*args: object, **kwargs: object) -> str | None:
        if blip["on"]:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return weigh(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(worker_contacts, "held_back", weighing_that_can_fail)
    outcomes: list[str] = []
    for _ in range(worker_contacts.RERUNS_AFTER_INTERRUPTION + 1):
        blip["on"] = True
        with pytest.raises(OperationalError):
            run_due()
        wednesday_evening.shift(worker_contacts.RERUN_AFTER + timedelta(seconds=1))
        blip["on"] = False
        outcomes += run_due()
        wednesday_evening.shift(worker_contacts.RECHECK_WHILE_HOLDING + timedelta(seconds=1))

    assert outcomes == [worker_contacts.WHILE_HOLDING] * worker_contacts.RERUNS_AFTER_INTERRUPTION
    assert kinds_and_outcomes(app, "missed_contact") == [("needs_human", "worker_died_mid_send")]
    assert texts_to(fake, HUNG_UP) == []
