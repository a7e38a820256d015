"""A consented check-in is never silently kept from going, and a YES to a question already
consented to is never taken for a first text. Each test failed on the code before its fix."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import CheckIn, Conversation
from followups import checkins as checkins_module
from routing.store import active_routing
from tests.conftest import TextingPhone
from tests.followups.conftest import checkins
from tests.followups.test_checkins import (
    CHECKIN_EN,
    HOURS,
    SUPERVISOR,
    TEXTER,
    consent_by_text,
    end_a_text_conversation,
)

CHECKIN_OK = "Thank you for letting us know. Text or call us any time."


def open_conversations(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Conversation.state).where(Conversation.state != "closed")))


def test_a_check_in_kept_waiting_a_day_by_an_open_conversation_is_flagged_to_the_supervisors_not_sent_into_it(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    """Before, it was put off an hour at a time for as long as a conversation of theirs was
    open, and a conversation left queued never closes: the check-in never went, and nobody knew."""
    consent_by_text(app, texting)
    wednesday_evening.shift(12 * HOURS - timedelta(minutes=5))
    texting.send(TEXTER, "I want to kill myself")  # a new conversation, left open
    wednesday_evening.shift(timedelta(minutes=6))
    assert run_due() == ["postponed"]
    first_due = checkins(app)[0].due_at

    outcomes: list[str] = ["postponed"]
    for _hour in range(48):
        wednesday_evening.shift(HOURS + timedelta(seconds=1))
        outcomes = run_due()
        if outcomes not in ([], ["postponed"]):
            break
    assert open_conversations(app)  # still open all along

    assert outcomes == ["not_needed"]
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.flag_reason) == ("flagged", "in_conversation")
    assert checkin.flagged_at is not None and checkin.flagged_at - first_due >= timedelta(hours=24)
    assert checkin.flagged_at - first_due < timedelta(hours=26)
    assert run_due() == ["sent"]  # the supervisors are told, by a worker
    assert texting.inbox(SUPERVISOR)[-1] == (
        f"Crisis line: check-in case C{checkin.id} needs a person: the check-in text waited a day for a "
        "conversation of theirs to close. Please follow up."
    )
    assert CHECKIN_EN not in texting.inbox(TEXTER)
    wednesday_evening.shift(2 * HOURS)
    assert run_due() == []  # nothing more is postponed
    assert CHECKIN_EN not in texting.inbox(TEXTER)


def test_a_yes_after_the_wrap_up_recorded_consent_is_thanked_once_and_opens_no_conversation(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    """Before, the YES found no question open (the counselor's wrap-up had consented to it) and
    opened a new conversation at the language menu, later closed with "We have not heard from you"."""
    end_a_text_conversation(app, texting)  # the question is texted as the counselor ends it
    with app.app_context():  # the counselor's wrap-up records the consent they gave them
        active = active_routing()
        assert active is not None
        checkin = db.session.scalars(select(CheckIn)).one()
        assert checkins_module.consent(checkin, active.document)
    wednesday_evening.shift(timedelta(minutes=10))

    assert texting.send(TEXTER, "yes") == [CHECKIN_OK]
    assert texting.send(TEXTER, "Yes!") == []  # confirmed once
    assert open_conversations(app) == []
    (checkin,) = checkins(app)
    assert checkin.state == "consented"


def test_a_second_yes_to_the_question_is_not_a_first_text(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    end_a_text_conversation(app, texting)
    assert texting.send(TEXTER, "yes") == [CHECKIN_OK]
    wednesday_evening.shift(timedelta(minutes=5))

    assert texting.send(TEXTER, "yes") == []
    assert open_conversations(app) == []


def test_a_yes_after_the_consent_window_is_still_an_ordinary_first_text(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    consent_by_text(app, texting)
    wednesday_evening.shift(checkins_module.CONSENT_WINDOW + timedelta(minutes=1))

    texting.send(TEXTER, "yes")
    assert open_conversations(app) != []
