"""Text, follow-up and survey metrics from texts driven through the real line (signed SMS
webhooks, the fake Twilio) and check-ins sent by their scheduled contacts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation, MetricFact
from metrics import Report
from metrics.facts import ABANDONED
from metrics.load import load_facts, text_contacts
from routing.store import active_routing
from tests.conftest import TextingPhone
from tests.metrics.conftest import WEDNESDAY, WEDNESDAY_AND_THURSDAY, number
from tests.rota import BEN

FIRST_TEXTER, SECOND_TEXTER, THIRD_TEXTER = "+13125550381", "+13125550382", "+13125550383"

pytestmark = pytest.mark.usefixtures("clean_redis")


def newest_conversation(app: Flask) -> int:
    with app.app_context():
        tag = db.session.scalars(select(Conversation.id).order_by(Conversation.id.desc())).first()
    assert tag is not None
    return tag


def test_texts_answered_and_abandoned_with_speed_to_answer_and_first_response(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Traveller,
    metrics_of: Callable[..., Report],
) -> None:  # fmt: skip
    texting.send(FIRST_TEXTER, "I keep having panic attacks and I can't breathe")
    tag = newest_conversation(app)
    wednesday_evening.shift(timedelta(seconds=40))
    texting.send(BEN, f"YES {tag}")
    wednesday_evening.shift(timedelta(seconds=20))
    texting.send(BEN, f"#{tag} I'm here with you.")
    texting.send(BEN, f"END {tag}")
    texting.send(SECOND_TEXTER, "I have been having panic attacks all day and I am scared")
    wednesday_evening.shift(timedelta(seconds=5))
    texting.send(SECOND_TEXTER, "STOP")

    values = metrics_of("sms").overall.values
    assert (values["offered"], values["answered"], values["abandoned"], values["abandoned_within_30s"]) == (2, 1, 1, 1)
    assert values["answer_rate"] == pytest.approx(0.5)
    assert 40 <= number(values["speed_to_answer_mean"]) < 48
    assert 60 <= number(values["first_response_mean"]) < 70
    assert values["first_responses"] == 1
    assert metrics_of("voice").overall.values["offered"] == 0  # texts are not calls


def test_a_conversation_that_only_carried_the_reply_to_start_is_no_contact_nor_abandoned(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Traveller,
    metrics_of: Callable[..., Report],
) -> None:  # fmt: skip
    texting.send(FIRST_TEXTER, "I have been having panic attacks all day and I am scared")
    wednesday_evening.shift(timedelta(seconds=5))
    texting.send(FIRST_TEXTER, "STOP")  # a real contact, abandoned
    texting.send(THIRD_TEXTER, "STOP")
    wednesday_evening.shift(timedelta(minutes=1))
    texting.send(THIRD_TEXTER, "START")  # nothing open: a conversation opened for the reply only
    with app.app_context():
        reasons = dict(db.session.execute(select(Conversation.id, Conversation.close_reason)).all())
        started_only = {cid for cid, reason in reasons.items() if reason == "opted_in"}
        abandoned = set(reasons) - started_only
        assert len(started_only) == 1 and len(abandoned) == 1

    values = metrics_of("sms").overall.values  # the rollup brought up to now, checked against the replay
    assert (values["offered"], values["abandoned"]) == (1, 1)
    with app.app_context():
        contacts = text_contacts(db.session, list(reasons))
        assert set(contacts) == abandoned and contacts[abandoned.pop()].outcome == ABANDONED
        active = active_routing()
        assert active is not None
        replayed = load_facts(db.session, WEDNESDAY, active.document).contacts
        assert [(c.channel, c.outcome, c.offered) for c in replayed] == [("sms", ABANDONED, True)]
        rolled_up = db.session.execute(
            select(MetricFact.source_id, MetricFact.outcome).where(MetricFact.source == "conversation")
        ).all()
        assert [source_id for source_id, _ in rolled_up] == [cid for cid in reasons if cid not in started_only]
        assert [outcome for _, outcome in rolled_up] == [ABANDONED]


def test_the_migration_removes_facts_rolled_up_before_for_start_only_conversations(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Traveller,
    metrics_of: Callable[..., Report],
) -> None:  # fmt: skip
    texting.send(FIRST_TEXTER, "I have been having panic attacks all day and I am scared")
    texting.send(FIRST_TEXTER, "STOP")  # a real contact, abandoned: its fact stays
    texting.send(THIRD_TEXTER, "STOP")
    wednesday_evening.shift(timedelta(minutes=1))
    texting.send(THIRD_TEXTER, "START")
    metrics_of("sms")  # the rollup brought up to now
    with app.app_context():
        started_only = db.session.scalar(select(Conversation.id).where(Conversation.close_reason == "opted_in"))
        kept = db.session.scalar(select(MetricFact).where(MetricFact.source == "conversation"))
        assert kept is not None and started_only is not None
        # As the rollup wrote it before START-only conversations were left out.
        kept_source = kept.source_id
        stale = {column.key: getattr(kept, column.key) for column in MetricFact.__table__.columns if column.key != "id"}
        db.session.add(MetricFact(**{**stale, "source_id": started_only}))
        db.session.commit()

        downgrade(revision="e4b8c2d6f0a3")
        upgrade()

        facts = db.session.scalars(select(MetricFact.source_id).where(MetricFact.source == "conversation")).all()
    assert facts == [kept_source]


def consent_after_a_conversation(app: Flask, texting: TextingPhone, texter: str) -> None:
    texting.send(texter, "I want to kill myself")
    tag = newest_conversation(app)
    texting.send(BEN, f"YES {tag}")
    texting.send(BEN, f"#{tag} I'm glad you reached out.")
    texting.send(BEN, f"END {tag}")
    assert texting.send(texter, "yes")  # consent to a check-in


def test_follow_ups_due_sent_reached_and_escalated_and_survey_scores(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Traveller,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int], metrics_of: Callable[..., Report],
) -> None:  # fmt: skip
    publish_routing(lambda document: document["followups"].update(survey=True))
    consent_after_a_conversation(app, texting, FIRST_TEXTER)
    consent_after_a_conversation(app, texting, SECOND_TEXTER)
    wednesday_evening.shift(timedelta(minutes=61))
    assert run_due() == ["sent", "sent"]  # the surveys
    texting.send(FIRST_TEXTER, "5")
    texting.send(SECOND_TEXTER, "2")

    wednesday_evening.shift(timedelta(hours=11))  # suicide: the check-in goes 12 h after consent
    assert run_due() == ["sent", "sent"]
    texting.send(FIRST_TEXTER, "1")  # "I'm OK": reached
    wednesday_evening.shift(timedelta(hours=4, minutes=1))
    assert run_due() == ["sent"]  # the second text to the one who did not reply
    wednesday_evening.shift(timedelta(hours=4, minutes=1))
    run_due()  # no reply still: the supervisor is told

    values = metrics_of("sms", WEDNESDAY_AND_THURSDAY).overall.values
    assert (values["followups_due"], values["followups_sent"]) == (2, 2)
    assert (values["followups_reached"], values["followups_escalated"]) == (1, 1)
    assert values["survey_answers"] == 2
    assert values["survey_mean_score"] == pytest.approx(3.5)
    assert metrics_of("sms").overall.values["followups_due"] == 0  # due on Thursday, not Wednesday
