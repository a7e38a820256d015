"""A counselor who texted STOP (or END, alone) has a phone that blocks the line's texts: Twilio
refuses every text to it (21610), so the line pauses them. Their START lifts the block, and
the line says so; until then neither their ON nor the desk's "Take contacts again" puts them
back, since every offer would fail and pause them again while a texter waited. Before, their
START was answered "Not sent: START on its own is never passed on", the desk told them they
were available while the block stood, and a Messaging Service's own opt-out keyword could be
passed on to their texter as words."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from crisisline.db import db
from crisisline.models import ResponderState
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TextingPhone, sms_params
from tests.rota import BEN, around_the_clock
from twilio_fake.rest_api import FakeTwilio

TEXTER = "+13125550177"
STARTED_PAUSED = (
    "Crisis line: the line can text this phone again. You are paused. Reply ON to take calls, OFF to pause."
)


def bens_pause(app: Flask) -> tuple[bool, str | None]:
    with app.app_context():
        state = db.session.get(ResponderState, "ben-carter")
        return (state.paused, state.paused_reason) if state is not None else (False, None)


def ben_blocks_the_line(fake: FakeTwilio, texting: TextingPhone, word: str = "STOP") -> None:
    fake.receive_keyword(BEN, word)  # Twilio's own keyword handling, first
    texting.send(BEN, word)
    assert bens_pause(app=texting.app) == (True, "sms_blocked")  # type: ignore[arg-type]


@pytest.fixture
def ben_on_call(publish_routing: Callable[..., int]) -> None:
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz", "ben-carter")))


@pytest.mark.usefixtures("ben_on_call")
@pytest.mark.parametrize("word", ["START", "UNSTOP", "YES"])
def test_a_counselors_start_lifts_the_block_and_says_so_and_then_their_on_puts_them_back(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, word: str
) -> None:
    ben_blocks_the_line(fake, texting)
    fake.receive_keyword(BEN, word)

    told = texting.send(BEN, word)

    assert told == [STARTED_PAUSED]
    assert bens_pause(app) == (True, "sms_unblocked")
    assert texting.send(BEN, "ON") == ["Crisis line: you are available for calls."]
    assert bens_pause(app) == (False, None)


@pytest.mark.usefixtures("ben_on_call")
def test_a_counselors_on_while_their_phone_still_blocks_the_lines_texts_leaves_them_paused(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    ben_blocks_the_line(fake, texting, "END")  # END alone is a carrier opt-out word too

    texting.send(BEN, "ON")  # the answer is refused by Twilio (21610), as every text to him
    texting.send(TEXTER, "I can't stop thinking about killing myself")

    assert bens_pause(app) == (True, "sms_blocked")
    assert not [m for m in fake.messages.values() if m.to == BEN and m.body.startswith("New text #")]
    assert [m for m in fake.messages.values() if m.body.startswith("New text #")]  # Ana is offered the texter


@pytest.mark.usefixtures("ben_on_call")
def test_a_yes_from_a_counselor_whose_phone_does_not_block_the_line_still_asks_for_the_number(
    app: Flask, texting: TextingPhone
) -> None:
    told = texting.send(BEN, "YES")

    assert told and told[-1].startswith("Not sent: YES on its own is never passed on.")
    assert bens_pause(app) == (False, None)


@pytest.mark.usefixtures("ben_on_call")
def test_a_messaging_services_own_opt_out_keyword_from_a_counselor_never_reaches_their_texter(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    """Advanced Opt-Out: "PARAR" configured as an opt-out word arrives with ``OptOutType``."""
    texting.send(TEXTER, "I can't stop thinking about killing myself")
    (offer,) = [m for m in fake.messages.values() if m.body.startswith("New text #")]
    tag = offer.body.split("#")[1].split(":")[0]
    texting.send(offer.to, f"YES {tag}")
    params = sms_params(TEST_ACCOUNT_SID, offer.to, LINE_NUMBER, "PARAR", None, 0)
    params["OptOutType"] = "STOP"

    texting.deliver(params)

    assert not [m for m in fake.messages.values() if m.to == TEXTER and "PARAR" in m.body]
