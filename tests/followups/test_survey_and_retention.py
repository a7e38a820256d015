"""The optional survey (a 1-5 rating that is anonymous once given), per-kind retention of
follow-up data, and the operator's view of check-ins."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select, update

from crisisline.db import db
from crisisline.models import CheckIn, Conversation, SurveyResponse, Texter
from crisisline.settings import Settings, SettingsError
from ivr.call_log import PHONE_CONTEXT
from tests.conftest import TextingPhone, settings_for
from tests.followups.conftest import checkins
from tests.followups.test_checkins import TEXTER, consent_by_text
from workers.upkeep import UNLINKED_CONVERSATION_PREFIX, purge_personal_data

SURVEY_EN = "How helpful was talking with us? Reply 1 (not at all) to 5 (very)."


def surveys(app: Flask) -> list[SurveyResponse]:
    with app.app_context():
        return list(db.session.scalars(select(SurveyResponse).order_by(SurveyResponse.id)))


def survey_on(document: dict[str, object]) -> None:
    document["followups"]["survey"] = True  # type: ignore[index]


def test_a_survey_rating_is_stored_without_any_link_to_the_person(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(survey_on)
    consent_by_text(app, texting)
    wednesday_evening.shift(timedelta(minutes=59))
    assert run_due() == []

    wednesday_evening.shift(timedelta(minutes=2))
    assert run_due() == ["sent"]
    assert texting.inbox(TEXTER)[-1] == SURVEY_EN
    assert surveys(app)[0].texter_id is not None  # only while the answer is awaited

    assert texting.send(TEXTER, "4") == ["Thank you. Your answer helps us help others."]

    (survey,) = surveys(app)
    assert (survey.rating, survey.texter_id, survey.language, survey.need) == (4, None, "en", "suicide")
    assert survey.answered_at is not None
    assert checkins(app)[0].state == "consented"  # the check-in itself is untouched


def test_an_answered_survey_keeps_no_key_leading_back_to_its_check_in_conversation_or_number(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(survey_on)
    consent_by_text(app, texting)
    wednesday_evening.shift(timedelta(minutes=61))
    assert run_due() == ["sent"]
    texting.send(TEXTER, "2")  # a low rating

    (survey,) = surveys(app)
    (checkin,) = checkins(app)
    assert (survey.rating, survey.texter_id) == (2, None)
    assert survey.dedupe_key.startswith("unlinked:") and checkin.dedupe_key not in survey.dedupe_key
    with app.app_context():
        vault = app.extensions["crisisline.vault"]
        found = db.session.scalars(
            select(Texter.sealed_number)
            .join(CheckIn, CheckIn.texter_id == Texter.id)
            .where(CheckIn.dedupe_key == survey.dedupe_key.removeprefix("survey:"))
        ).all() + db.session.scalars(
            select(Texter.sealed_number)
            .join(Conversation, Conversation.texter_id == Texter.id)
            .where("survey:text:" + Conversation.id.cast(db.String) == survey.dedupe_key)
        ).all()  # fmt: skip
        numbers = {vault.open(sealed, context=PHONE_CONTEXT) for sealed in found if sealed}
    assert numbers == set()


def test_a_survey_the_purge_unlinks_from_its_asker_loses_its_check_in_key_once(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(survey_on)
    consent_by_text(app, texting)
    start = datetime.now(UTC)
    wednesday_evening.shift(timedelta(minutes=61))
    assert run_due() == ["sent"]  # never answered
    assert surveys(app)[0].dedupe_key == "survey:" + checkins(app)[0].dedupe_key  # while awaited

    with app.app_context():
        first = purge_personal_data((start + timedelta(hours=26)).isoformat())
    unlinked = surveys(app)[0].dedupe_key
    with app.app_context():
        again = purge_personal_data((start + timedelta(hours=27)).isoformat())

    assert (first["surveys"], again["surveys"]) == (1, 0)
    assert unlinked.startswith("unlinked:") and checkins(app)[0].dedupe_key not in unlinked
    assert surveys(app)[0].dedupe_key == unlinked  # a second purge changes nothing


def test_no_survey_unless_the_line_runs_one(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    consent_by_text(app, texting)
    wednesday_evening.shift(timedelta(hours=2))

    assert run_due() == []
    assert surveys(app) == []


def test_purge_scrubs_follow_up_links_and_replies_per_kind_window_and_twice_changes_nothing(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, settings: Settings,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int], make_app: Callable[[Settings], Flask],
) -> None:  # fmt: skip
    publish_routing(survey_on)
    consent_by_text(app, texting)
    start = datetime.now(UTC)
    wednesday_evening.shift(timedelta(minutes=61))
    assert run_due() == ["sent"]  # the survey, never answered

    with app.app_context():  # a day later: the unanswered survey becomes anonymous
        day_later = [purge_personal_data((start + timedelta(hours=26)).isoformat()) for _ in range(2)]
    assert (day_later[0]["surveys"], day_later[0]["checkins"], day_later[0]["texters"]) == (1, 0, 0)
    assert set(day_later[1].values()) == {0}
    assert surveys(app)[0].texter_id is None

    wednesday_evening.shift(timedelta(hours=12))
    assert run_due() == ["sent"]  # the check-in
    texting.send(TEXTER, "I'm a bit better today")
    with app.app_context():
        db.session.execute(update(Conversation).values(state="closed"))
        db.session.commit()

    short = make_app(settings_for(settings.database_url, settings.redis_url, RETENTION_DAYS_FOLLOWUPS="7"))
    with short.app_context():  # follow-ups kept 7 days, texts the general 30
        week = purge_personal_data((start + timedelta(days=8)).isoformat())
    assert (week["checkins"], week["texts"], week["texters"], week["calls"]) == (1, 0, 0, 0)
    (checkin,) = checkins(app)
    assert (checkin.sealed_reply, checkin.texter_id) == (None, None)
    assert (checkin.state, checkin.reply, checkin.need, checkin.language) == ("answered", "text", "suicide", "en")
    assert checkin.replied_at is not None and checkin.consented_at is not None

    with app.app_context():
        month = purge_personal_data((start + timedelta(days=31)).isoformat())
        again = purge_personal_data((start + timedelta(days=31)).isoformat())
        texter = db.session.scalars(
            select(Texter).where(~Texter.number_hash.startswith(UNLINKED_CONVERSATION_PREFIX))
        ).one()  # not their old conversation's
    assert month["texters"] == 1 and month["texts"] > 0 and month["checkins"] == 0
    assert set(again.values()) == {0}
    assert texter.sealed_number is None and texter.number_hash.startswith("purged:")


def test_a_survey_never_asked_loses_its_link_to_the_person_with_its_check_in_so_their_number_is_purged(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(survey_on)
    consent_by_text(app, texting)
    start = datetime.now(UTC)
    texting.send(TEXTER, "STOP")  # before the survey was due: it is never asked
    wednesday_evening.shift(timedelta(hours=2))
    run_due()
    (survey,) = surveys(app)
    assert (survey.asked_at, survey.texter_id is not None) == (None, True)

    with app.app_context():
        week = purge_personal_data((start + timedelta(days=7)).isoformat())
    assert week["surveys"] == 0  # the follow-ups' window (30 days) has not passed
    with app.app_context():
        month = purge_personal_data((start + timedelta(days=31)).isoformat())
        texter = db.session.scalars(
            select(Texter).where(~Texter.number_hash.startswith(UNLINKED_CONVERSATION_PREFIX))
        ).one()  # not their old conversation's

    assert month["surveys"] == 1
    assert surveys(app)[0].texter_id is None
    assert month["texters"] == 1 and texter.sealed_number is None  # kept STOP, lost the number


def test_retention_days_can_be_set_per_kind_and_default_to_the_general_window(database_url: str) -> None:
    redis_url = "redis://127.0.0.1:6379/0"
    general = settings_for(database_url, redis_url, PERSONAL_DATA_RETENTION_DAYS="60", RETENTION_DAYS_TEXTS="10")

    assert (general.retention_days_calls, general.retention_days_texts, general.retention_days_followups) == (
        60,
        10,
        60,
    )
    with pytest.raises(SettingsError) as refused:
        settings_for(database_url, redis_url, RETENTION_DAYS_FOLLOWUPS="0", RETENTION_DAYS_CALLS="a week")
    assert "RETENTION_DAYS_FOLLOWUPS: must be a whole number of days, 1 to 3650" in str(refused.value)
    assert "RETENTION_DAYS_CALLS: must be a whole number of days, 1 to 3650" in str(refused.value)


def test_workers_status_counts_check_ins_and_scheduled_contacts_by_state(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    consent_by_text(app, texting)

    result = app.test_cli_runner().invoke(args=["workers", "status"])

    assert result.exit_code == 0, result.output
    assert "check-ins: consented 1" in result.output
    assert "scheduled contacts: pending 1" in result.output
    assert "callbacks: none" in result.output
    with app.app_context():
        assert db.session.scalar(select(db.func.count(CheckIn.id))) == 1
