"""An answered survey leads back to no check-in and no texter.

Before: the rating dropped only the survey row's own links. Its scheduled contact kept
``survey:<check-in id>`` and the check-in id, finished within a second of the survey's
``asked_at``; the inbound text carrying the rating kept its texter and its sealed body (the
rating itself), stored within a second of ``answered_at``. So the "anonymous" rating named its
check-in, and through it the texter, their conversations and calls, for as long as those rows
lived (the purge touched none of them)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select, update

from crisisline.db import db
from crisisline.models import CheckIn, Message, MetricFact, ScheduledContact, SurveyResponse, TwilioRecord
from followups.checkins import coarse_time
from metrics.rollup import refresh_metrics_rollup
from tests.conftest import TextingPhone
from tests.followups.test_checkins import TEXTER, consent_by_text
from workers.upkeep import purge_personal_data

THANKS = ["Thank you. Your answer helps us help others."]
RATING_SID = "SM" + "5a" * 16


def survey_on(document: dict[str, object]) -> None:
    document["followups"]["survey"] = True  # type: ignore[index]


def answer_a_survey(
    app: Flask, texting: TextingPhone, clock: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    consent_by_text(app, texting)
    clock.shift(timedelta(minutes=61))
    assert run_due() == ["sent"]
    assert texting.send(TEXTER, "2", message_sid=RATING_SID) == THANKS


def links(app: Flask) -> dict[str, object]:
    """Everything that could lead from the survey to its check-in or its texter."""
    with app.app_context():
        (survey,) = db.session.scalars(select(SurveyResponse)).all()
        contacts = db.session.execute(
            select(ScheduledContact.checkin_id, ScheduledContact.dedupe_key).where(ScheduledContact.kind == "survey")
        ).all()
        rating = db.session.scalars(select(Message).where(Message.message_sid == RATING_SID)).one()
        return {
            "survey": (survey.rating, survey.texter_id, survey.dedupe_key.startswith("unlinked:")),
            "survey_contacts": [(c.checkin_id, c.dedupe_key.startswith("survey:")) for c in contacts],
            "rating_text": (rating.texter_id, rating.sealed_body),
            "times": [
                t for t in (survey.asked_at, survey.answered_at) if t is None or t.minute or t.second or t.microsecond
            ],
            "twilio_record": db.session.scalar(select(TwilioRecord.kind).where(TwilioRecord.sid == RATING_SID)),
        }


UNLINKED = {
    "survey": (2, None, True), "survey_contacts": [(None, False)], "rating_text": (None, None), "times": [],
    "twilio_record": "message",
}  # fmt: skip


@pytest.mark.usefixtures("clean_redis")
def test_a_rating_unlinks_its_survey_contact_and_its_own_text_at_once(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(survey_on)
    answer_a_survey(app, texting, wednesday_evening, run_due)

    assert links(app) == UNLINKED  # no purge needed
    # Twilio delivering the same text again is still recognised: no second thanks, one rating.
    assert texting.send(TEXTER, "2", message_sid=RATING_SID) == []
    assert links(app) == UNLINKED
    # The check-in it came with still goes as agreed (12 hours after consent).
    wednesday_evening.shift(timedelta(hours=12))
    assert run_due() == ["sent"]
    with app.app_context():
        (checkin,) = db.session.scalars(select(CheckIn)).all()
        assert checkin.state == "sent"
        # The metrics put the rating on the local day and hour it was given.
        refresh_metrics_rollup()
        fact = db.session.scalars(select(MetricFact).where(MetricFact.source == "survey")).one()
        survey = db.session.scalars(select(SurveyResponse)).one()
        assert survey.answered_at is not None
        local = survey.answered_at.astimezone(ZoneInfo("America/Chicago"))
        assert (fact.rating, fact.local_day, fact.local_hour) == (2, local.date().isoformat(), local.hour)


@pytest.mark.usefixtures("clean_redis")
def test_the_purge_unlinks_surveys_answered_before_ratings_unlinked_themselves(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(survey_on)
    answer_a_survey(app, texting, wednesday_evening, run_due)
    with app.app_context():  # as a rating left them before: linked, to the second
        (checkin,) = db.session.scalars(select(CheckIn)).all()
        texter_id = checkin.texter_id
        db.session.execute(
            update(ScheduledContact)
            .where(ScheduledContact.kind == "survey")
            .values(checkin_id=checkin.id, dedupe_key=f"survey:{checkin.id}")
        )
        db.session.execute(
            update(Message).where(Message.message_sid == RATING_SID).values(texter_id=texter_id, sealed_body="v2:x")
        )
        precise = datetime.now(UTC).replace(minute=17, second=3, microsecond=52)
        db.session.execute(update(SurveyResponse).values(asked_at=precise, answered_at=precise))
        db.session.execute(TwilioRecord.__table__.delete())
        db.session.commit()

    with app.app_context():
        purge_personal_data(datetime.now(UTC).isoformat())

    assert links(app) == UNLINKED
    with app.app_context():  # the check-in itself is untouched, within its retention
        assert db.session.scalars(select(CheckIn.texter_id)).one() == texter_id


@pytest.mark.usefixtures("clean_redis")
def test_an_answered_survey_is_not_linked_to_its_check_in_or_texter_after_the_purge(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """The reviewer's case: nothing matches the survey's times to the second either."""
    publish_routing(survey_on)
    answer_a_survey(app, texting, wednesday_evening, run_due)
    with app.app_context():
        purge_personal_data((datetime.now(UTC) + timedelta(days=400)).isoformat())

    with app.app_context():
        (survey,) = db.session.scalars(select(SurveyResponse)).all()
        assert survey.texter_id is None and survey.dedupe_key.startswith("unlinked:")
        assert survey.asked_at is not None and survey.answered_at is not None
        contacts = db.session.execute(
            select(ScheduledContact.checkin_id, ScheduledContact.finished_at).where(ScheduledContact.kind == "survey")
        ).all()
        by_time = [c for c in contacts if abs((c.finished_at - survey.asked_at).total_seconds()) < 2]
        texts = db.session.execute(
            select(Message.texter_id, Message.created_at).where(
                Message.direction == "in", Message.texter_id.is_not(None)
            )
        ).all()
        answered_by = {t.texter_id for t in texts if abs((t.created_at - survey.answered_at).total_seconds()) < 2}
    assert [c.checkin_id for c in contacts] == [None]
    assert not by_time and not answered_by


def test_a_rating_time_is_kept_to_the_local_hour_even_in_a_half_hour_zone() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    at = datetime(2026, 1, 1, 18, 50, 12, tzinfo=UTC)  # 00:20 on 2 January in Kolkata
    coarse = coarse_time(at, kolkata)
    assert coarse == datetime(2026, 1, 1, 18, 30, tzinfo=UTC)
    assert coarse.astimezone(kolkata).date().isoformat() == "2026-01-02"
