"""A line whose number sits in a Messaging Service with Advanced Opt-Out may add its own
keywords ("PARAR", "COMENZAR"). Twilio applies them itself and sends the text on with
``OptOutType`` (twilio-semantics §2.4). Before, the line read only the words (found by a review
of the texts): after "PARAR" it kept the thread open and replied into Twilio's block, and after
"COMENZAR" Twilio would deliver again while the line still held the texter opted out, so every
later text of theirs went unanswered.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation, Texter
from routing.store import active_routing
from sms import unstored
from sms.inbound import receive_kept
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TextingPhone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import sms_params

TEXTER = "+13125550177"
SERVICE = "MG" + "0" * 32

pytestmark = pytest.mark.usefixtures("wednesday_evening")


def service_keyword(texting: TextingPhone, body: str, opt_out_type: str) -> None:
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, body)
    params.update(OptOutType=opt_out_type, MessagingServiceSid=SERVICE)
    texting.deliver(params)


def test_a_services_own_stop_keyword_opts_the_texter_out_and_closes_their_thread(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    texting.send(TEXTER, "me quiero morir")
    fake.opt_out(TEXTER)  # Twilio applies the service's keyword before the webhook
    service_keyword(texting, "PARAR", "STOP")

    with app.app_context():
        assert db.session.scalars(select(Texter.opted_out)).one() is True
        assert [c.state for c in db.session.scalars(select(Conversation))] == ["closed"]


def test_a_services_own_start_keyword_lets_the_texter_be_answered_again(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    texting.send(TEXTER, "STOP")
    fake.opt_in(TEXTER)  # Twilio applies the service's "COMENZAR"
    service_keyword(texting, "COMENZAR", "START")

    replies = texting.send(TEXTER, "necesito hablar con alguien por favor")

    assert replies  # the welcome and the menus, as for any texter
    with app.app_context():
        assert db.session.scalars(select(Texter.opted_out)).one() is False


def test_an_opt_out_type_the_line_does_not_know_is_ignored_and_the_words_are_read(
    app: Flask, texting: TextingPhone
) -> None:
    service_keyword(texting, "I want to die", "UNSUBSCRIBE-ALL")

    with app.app_context():
        assert db.session.scalars(select(Texter.opted_out)).one() is False
        assert len(db.session.scalars(select(Conversation)).all()) == 1


def test_a_services_stop_keyword_kept_through_a_database_outage_is_still_a_stop(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, clean_redis: object
) -> None:
    """Found by a review: a text kept in Redis while the database was away lost its OptOutType."""
    texting.send(TEXTER, "me quiero morir")
    fake.opt_out(TEXTER)
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, "PARAR")
    params.update(OptOutType="STOP", MessagingServiceSid=SERVICE)
    with app.app_context():
        assert unstored.keep(params, datetime.now(UTC))  # the database refused it: kept
        active = active_routing()
        assert active is not None
        stored = unstored.store_kept(
            lambda kept: receive_kept(active.document, kept, line_number=LINE_NUMBER), on_dead=lambda *_: None
        )
        assert stored == 1
        assert db.session.scalars(select(Texter.opted_out)).one() is True
        assert [c.state for c in db.session.scalars(select(Conversation))] == ["closed"]
