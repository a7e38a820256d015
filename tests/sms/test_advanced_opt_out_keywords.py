"""A line whose number sits in a Messaging Service with Advanced Opt-Out may add its own
keywords ("PARAR", "COMENZAR"). Twilio applies them itself and sends the text on with
``OptOutType`` (twilio-semantics §2.4). Before, the line read only the words (found by a review
of the texts): after "PARAR" it kept the thread open and replied into Twilio's block, and after
"COMENZAR" Twilio would deliver again while the line still held the texter opted out, so every
later text of theirs went unanswered.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation, Texter
from routing.store import active_routing
from sms import unstored
from sms.inbound import receive_kept
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TextingPhone
from tests.rota import BEN
from tests.sms.test_texting_edge_cases import only_conversation, taken_by_ben_who_wrote
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import sms_params

TEXTER = "+13125550177"
SERVICE = "MG" + "0" * 32

pytestmark = pytest.mark.usefixtures("wednesday_evening")


def service_keyword(texting: TextingPhone, body: str, opt_out_type: str | None) -> None:
    """A text through the line's Messaging Service; ``opt_out_type`` None: no keyword of it."""
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, body)
    params.update(MessagingServiceSid=SERVICE)
    if opt_out_type is not None:
        params.update(OptOutType=opt_out_type)
    texting.deliver(params)


def with_advanced_opt_out(document: dict[str, Any]) -> None:
    document["sms"]["advanced_opt_out"] = True


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


def kept_then_stored(params: dict[str, str]) -> None:
    """The text kept in Redis as when the database refused it, then stored by the clock."""
    assert unstored.keep(params, datetime.now(UTC))
    active = active_routing()
    assert active is not None
    stored = unstored.store_kept(
        lambda kept: receive_kept(active.document, kept, line_number=LINE_NUMBER), on_dead=lambda *_: None
    )
    assert stored == 1


def test_a_services_stop_keyword_kept_through_a_database_outage_is_still_a_stop(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, clean_redis: object
) -> None:
    """Found by a review: a text kept in Redis while the database was away lost its OptOutType."""
    texting.send(TEXTER, "me quiero morir")
    fake.opt_out(TEXTER)
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, "PARAR")
    params.update(OptOutType="STOP", MessagingServiceSid=SERVICE)
    with app.app_context():
        kept_then_stored(params)
        assert db.session.scalars(select(Texter.opted_out)).one() is True
        assert [c.state for c in db.session.scalars(select(Conversation))] == ["closed"]


def test_a_stop_word_the_services_advanced_opt_out_left_out_is_words_to_the_counselor(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    """Found by a review: a service whose Advanced Opt-Out list leaves out CANCEL (only STOP,
    HELP and START cannot be removed): Twilio blocks nothing and sends no OptOutType. Before,
    the line's own word list opted the texter out, closed their conversation without a word,
    and treated every later text of theirs as written after a STOP (no reply)."""
    publish_routing(with_advanced_opt_out)
    tag = taken_by_ben_who_wrote(app, texting)

    service_keyword(texting, "CANCEL", None)

    assert texting.inbox(BEN)[-1] == f"#{tag}: CANCEL"
    conversation = only_conversation(app)
    assert (conversation.state, conversation.counselor_id) == ("active", "ben-carter")
    with app.app_context():
        assert db.session.scalars(select(Texter.opted_out)).one() is False
    service_keyword(texting, "no, I meant I want to cancel everything", None)
    assert texting.inbox(BEN)[-1] == f"#{tag}: no, I meant I want to cancel everything"


def test_with_advanced_opt_out_a_services_stop_still_opts_the_texter_out(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int]
) -> None:
    publish_routing(with_advanced_opt_out)
    taken_by_ben_who_wrote(app, texting)
    fake.opt_out(TEXTER)

    service_keyword(texting, "STOP", "STOP")

    with app.app_context():
        assert db.session.scalars(select(Texter.opted_out)).one() is True
        assert [c.state for c in db.session.scalars(select(Conversation))] == ["closed"]


@pytest.mark.parametrize(
    ("advanced_opt_out", "through_the_service"),
    [(False, False), (False, True), (True, False)],
    ids=["long-code", "service-without-advanced-opt-out", "long-code-beside-a-service"],
)
def test_cancel_under_twilios_default_handling_still_opts_the_texter_out(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int],
    advanced_opt_out: bool, through_the_service: bool,
) -> None:  # fmt: skip
    """Twilio's default keywords (a long code, or a Messaging Service without Advanced Opt-Out,
    which sends no OptOutType) block CANCEL: the line's word list stands for it."""
    if advanced_opt_out:
        publish_routing(with_advanced_opt_out)
    taken_by_ben_who_wrote(app, texting)
    fake.opt_out(TEXTER)

    if through_the_service:
        service_keyword(texting, "CANCEL", None)
    else:
        texting.send(TEXTER, "CANCEL")

    with app.app_context():
        assert db.session.scalars(select(Texter.opted_out)).one() is True
        assert [c.state for c in db.session.scalars(select(Conversation))] == ["closed"]


def test_a_left_out_word_kept_through_a_database_outage_is_still_words(
    app: Flask, texting: TextingPhone, publish_routing: Callable[..., int], clean_redis: object
) -> None:
    """The text kept in Redis keeps ``MessagingServiceSid``: stored later, it is read as it came."""
    publish_routing(with_advanced_opt_out)
    tag = taken_by_ben_who_wrote(app, texting)
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, "END")
    params.update(MessagingServiceSid=SERVICE)
    with app.app_context():
        kept_then_stored(params)
        assert db.session.scalars(select(Texter.opted_out)).one() is False
    assert texting.inbox(BEN)[-1] == f"#{tag}: END"
