"""Check-ins when something goes wrong: Twilio refuses a text, the person answers only after
the supervisors were told "no reply", a survey asks its question after the check-in's, the
person is in a conversation with the line when the check-in falls due. Each found by a
review; each test failed on the code before its fix."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation
from crisisline.settings import Settings
from tests.conftest import TextingPhone, settings_for
from tests.followups.conftest import checkins, contacts
from tests.followups.test_checkins import (
    CHECKIN_EN,
    HOURS,
    SECOND_EN,
    SUPERVISOR,
    TEXTER,
    checkin_sent,
    consent_by_text,
    end_a_text_conversation,
    no_reply_to_either_text,
)
from tests.rota import legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

TALK = "Thank you. A counselor will be with you shortly."
MESSAGES = r"/Messages\.json$"


def flagged_no_reply(
    app: Flask, texting: TextingPhone, clock: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    """The check-in and the second text went unanswered; the supervisor is told."""
    no_reply_to_either_text(app, texting, clock, run_due)
    assert run_due() == ["sent"]
    assert checkins(app)[0].state == "flagged"


def conversations(app: Flask) -> list[tuple[str, str | None, int]]:
    with app.app_context():
        rows = db.session.scalars(select(Conversation).order_by(Conversation.id))
        return [(c.state, c.language, c.priority) for c in rows]


def test_a_2_after_the_supervisors_were_told_no_reply_opens_the_prioritised_conversation_and_they_hear_of_it(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    """Before, it got the language menu, and a second "2" switched the person to Spanish."""
    flagged_no_reply(app, texting, wednesday_evening, run_due)
    wednesday_evening.shift(timedelta(minutes=30))

    assert texting.send(TEXTER, "2") == [TALK]

    (checkin,) = checkins(app)
    assert (checkin.state, checkin.reply) == ("answered", "talk")
    state, language, priority = conversations(app)[-1]
    assert state in ("queued", "offered") and language == "en" and priority >= 5  # ahead of ordinary texts
    told = f"Crisis line: check-in case C{checkin.id} has now replied; the line is looking after them."
    assert told not in texting.inbox(SUPERVISOR)  # not on the webhook carrying out what they asked
    assert run_due() == ["sent"]  # but by a worker, at once
    assert texting.inbox(SUPERVISOR)[-1] == told


def test_a_text_a_day_after_the_flag_is_an_ordinary_first_text(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    flagged_no_reply(app, texting, wednesday_evening, run_due)
    wednesday_evening.shift(25 * HOURS)

    answer = texting.send(TEXTER, "hello")

    assert TALK not in answer
    assert checkins(app)[0].state == "flagged"


def test_a_check_in_text_twilio_refuses_is_sent_again_five_minutes_later(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]],
) -> None:  # fmt: skip
    """Before, one refusal (a 429 or a 503) left the check-in consented for ever: nothing sent,
    nobody told."""
    consent_by_text(app, texting)
    wednesday_evening.shift(12 * HOURS + timedelta(minutes=1))
    fake.inject_fault("POST", MESSAGES, status=429, code=20429, message="Too Many Requests")
    assert run_due() == ["send_failed"]
    wednesday_evening.shift(timedelta(minutes=5, seconds=1))

    assert run_due() == ["sent"]  # tried again 5 minutes later
    assert texting.inbox(TEXTER)[-1] == CHECKIN_EN
    assert texting.inbox(TEXTER).count(CHECKIN_EN) == 1
    assert checkins(app)[0].state == "sent"


def test_a_check_in_text_refused_at_every_try_is_flagged_to_the_supervisors_after_about_two_hours(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]],
) -> None:  # fmt: skip
    consent_by_text(app, texting)
    fake.inject_fault("POST", MESSAGES, status=429, code=20429, message="Too Many Requests", times=None)
    wednesday_evening.shift(12 * HOURS + timedelta(minutes=1))
    outcomes = run_due()
    for wait in (5, 15, 30, 60):
        wednesday_evening.shift(timedelta(minutes=wait, seconds=1))
        outcomes += run_due()
    fake.clear_faults()
    wednesday_evening.shift(timedelta(seconds=1))
    outcomes += run_due()

    assert outcomes == ["send_failed"] * 5 + ["sent"]  # the last: the supervisors' flag
    (second,) = checkins(app)
    assert (second.state, second.flag_reason) == ("flagged", "send_failed")
    reason = "the check-in text could not be sent"
    assert texting.inbox(SUPERVISOR) == [
        f"Crisis line: check-in case C{second.id} needs a person: {reason}. Please follow up."
    ]


def test_a_flag_no_supervisor_could_be_told_is_sent_again(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]],
) -> None:  # fmt: skip
    """Before, a 503 on the flag left it flagged with nobody told, for good."""
    checkin_sent(app, texting, wednesday_evening, run_due)
    wednesday_evening.shift(4 * HOURS + timedelta(minutes=1))
    assert run_due() == ["sent"]
    wednesday_evening.shift(4 * HOURS + timedelta(minutes=1))
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, message="Service Unavailable")
    assert run_due() == ["send_failed"]

    wednesday_evening.shift(timedelta(minutes=5, seconds=1))
    assert run_due() == ["sent"]
    wednesday_evening.shift(2 * HOURS)
    assert run_due() == []  # told once

    (checkin,) = checkins(app)
    assert texting.inbox(SUPERVISOR) == [
        f"Crisis line: check-in case C{checkin.id} needs a person: no reply to two check-in texts. Please follow up."
    ]


def test_a_2_after_a_survey_sent_after_the_check_in_is_the_person_asking_to_talk(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """Before, the survey (sent second) took the "2" as a rating: "Thank you. Your answer helps
    us help others.", and nobody came."""

    def check_in_before_the_survey(document: dict[str, Any]) -> None:
        document["followups"]["survey"] = True
        document["followups"]["checkin_after_hours"] = {"default": "30m", "suicide": "30m", "danger_now": "30m"}
        document["followups"]["survey_after_minutes"] = 60

    publish_routing(check_in_before_the_survey)
    consent_by_text(app, texting)
    wednesday_evening.shift(timedelta(minutes=31))
    assert run_due() == ["sent"]
    wednesday_evening.shift(timedelta(minutes=30))
    assert run_due() == ["sent"]  # the survey, while the check-in awaits its answer

    assert texting.send(TEXTER, "2") == [TALK]
    assert (checkins(app)[0].state, checkins(app)[0].reply) == ("answered", "talk")
    assert texting.send(TEXTER, "4") != ["Thank you. Your answer helps us help others."]  # in conversation now


def test_a_check_in_text_twilio_failed_on_with_a_5xx_is_not_sent_again(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]],
) -> None:  # fmt: skip
    """A 5xx may come after Twilio took the text: sending it again could text the person twice.
    It is carried on as sent (a reply counts; silence brings the second text and the flag)."""
    consent_by_text(app, texting)
    wednesday_evening.shift(12 * HOURS + timedelta(minutes=1))
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, message="Service Unavailable")

    assert run_due() == ["sent"]
    wednesday_evening.shift(timedelta(minutes=5, seconds=1))
    assert run_due() == []
    assert checkins(app)[0].state == "sent"


def test_a_call_that_reached_nobody_since_the_check_in_is_no_answer_to_it(
    app: Flask, texting: TextingPhone, phone: Phone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]],
) -> None:  # fmt: skip
    """Calling and hanging up at the menu is trying and giving up: exactly whom the flag is for."""
    checkin_sent(app, texting, wednesday_evening, run_due)
    phone.hang_up(phone.call([Keys("1")], identity=phone.identity(TEXTER), hang_up_after_requests=2))

    wednesday_evening.shift(4 * HOURS + timedelta(minutes=1))
    assert run_due() == ["sent"]
    assert texting.inbox(TEXTER)[-1] == SECOND_EN


def test_a_check_in_due_while_the_person_is_in_a_conversation_waits_and_a_call_since_is_no_silence(
    app: Flask, texting: TextingPhone, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]],
) -> None:  # fmt: skip
    """Before, the check-in went out mid-conversation, its "2" went to the counselor, and the
    supervisors were later told "no reply" about someone who was talking to the line."""
    consent_by_text(app, texting)
    wednesday_evening.shift(12 * HOURS - timedelta(minutes=5))
    texting.send(TEXTER, "I want to kill myself")  # a new conversation, open when the check-in is due
    wednesday_evening.shift(timedelta(minutes=6))

    assert run_due() == ["postponed"]
    assert CHECKIN_EN not in texting.inbox(TEXTER)
    later = contacts(app)[-1]
    assert (later.kind, later.state, later.attempt) == ("checkin", "pending", 1)

    with app.app_context():
        db.session.execute(db.update(Conversation).values(state="closed"))  # it ended meanwhile
        db.session.commit()
    wednesday_evening.shift(HOURS + timedelta(seconds=1))
    assert run_due() == ["sent"]
    assert texting.inbox(TEXTER)[-1] == CHECKIN_EN

    # They call the line instead of answering 1 or 2, and talk with a counselor.
    caller = phone.call([Keys("1"), Keys("2")], identity=phone.identity(TEXTER), max_hold_turns=0)
    counselor = phone.answer(legs(fake)[-1].sid, [Keys("1")])  # whoever is on call now
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference == counselor.conference is not None
    phone.hang_up(caller)
    wednesday_evening.shift(4 * HOURS + timedelta(minutes=1))
    assert run_due() == ["not_needed"]  # no "we wanted to check on you again"
    wednesday_evening.shift(4 * HOURS + timedelta(minutes=1))
    assert run_due() == []
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.reply) == ("answered", "in_touch")
    assert SECOND_EN not in texting.inbox(TEXTER)
    assert texting.inbox(SUPERVISOR) == []


def test_a_crash_as_consent_is_recorded_leaves_the_question_open_and_the_retry_of_their_yes_schedules_it(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Before, the consent was stored first: a crash before the check-in was scheduled left a
    consent with nothing scheduled, and the retry of the YES opened a menu conversation."""
    from followups import checkins as checkins_module
    from tests.followups.test_checkin_reply_crash import crash_once, retry_later

    end_a_text_conversation(app, texting)
    crashed = crash_once(monkeypatch, checkins_module, "schedule")
    texting.send(TEXTER, "yes")
    assert crashed and checkins(app)[0].state == "asked"

    retry_later(wednesday_evening, clock_tick)

    assert checkins(app)[0].state == "consented"
    assert [c.kind for c in contacts(app)] == ["checkin"]
    assert conversations(app) == [("closed", "en", conversations(app)[0][2])]  # no menu conversation
    wednesday_evening.shift(12 * HOURS + timedelta(minutes=1))
    assert run_due() == ["sent"] and texting.inbox(TEXTER)[-1] == CHECKIN_EN


def test_a_short_follow_up_retention_never_cuts_a_check_in_still_under_way_from_whom_to_text(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, settings: Settings,
    run_due: Callable[[], list[str]], make_app: Callable[[Settings], Flask],
) -> None:  # fmt: skip
    """Before, ``RETENTION_DAYS_FOLLOWUPS=1`` cut a check-in from its person a day after the
    question, whatever was still to come: its second text (or a check-in due in two days)
    was never sent (``no_number``), and a reply was not recognised."""
    from workers.upkeep import purge_personal_data

    consent_by_text(app, texting)
    one_day = make_app(settings_for(settings.database_url, settings.redis_url, RETENTION_DAYS_FOLLOWUPS="1"))
    wednesday_evening.shift(12 * HOURS + timedelta(minutes=1))
    assert run_due() == ["sent"]
    wednesday_evening.shift(25 * HOURS)
    with one_day.app_context():
        purged = purge_personal_data()

    assert purged["checkins"] == 0
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.texter_id is not None) == ("sent", True)
    assert run_due() == ["sent"]  # the second text still goes out, to them
    assert texting.inbox(TEXTER)[-1] == SECOND_EN
