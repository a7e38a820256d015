"""When the line cannot handle a counselor's text (a bug, a database away, a slow answer), the
counselor reads what that means for them, not the public pointer to 988 that a texter gets:
they would take it for the line mistaking them for someone in crisis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from sqlalchemy.exc import OperationalError

import sms.inbound
import sms.views
from sms import unstored
from sms.views import FAILSAFE_TEXT
from tests.conftest import TextingPhone
from tests.rota import ANA
from tests.sms.stuck import HandlingFails

TROUBLE = (
    "Crisis line: the line is having trouble with your text. It is kept and will be handled as soon as it can be;"
    " an answer may come late."
)
TEXTER = "+13125550177"


def _broken(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("simulated bug")


@pytest.fixture
def production_deadline(app: Flask) -> Iterator[None]:
    voice_deadline = app.extensions["crisisline.deadline"]
    allowed = voice_deadline.seconds
    voice_deadline.seconds = 2.0
    yield
    voice_deadline.seconds = allowed


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselors_text_whose_handling_fails_is_answered_for_staff_and_a_texters_still_points_to_988(
    texting: TextingPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sms.inbound, "handle_staff_message", _broken)
    HandlingFails(monkeypatch)

    assert texting.send(ANA, "STATUS") == [TROUBLE]
    assert texting.send(TEXTER, "hello") == [FAILSAFE_TEXT]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselors_text_the_database_would_not_take_is_kept_and_answered_for_staff(
    texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, clean_redis: redis.Redis
) -> None:
    def refused(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("INSERT", {}, ConnectionRefusedError("database away"))

    monkeypatch.setattr(sms.views, "store_inbound", refused)

    assert texting.send(ANA, "YES 12") == [TROUBLE]
    assert clean_redis.llen(unstored.KEY) == 1  # kept for the clock, as it says
    assert texting.send(TEXTER, "hello") == [FAILSAFE_TEXT]


@pytest.mark.usefixtures("wednesday_evening", "production_deadline")
def test_a_counselors_text_slow_to_handle_gets_the_staff_note_then_its_answer(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = sms.inbound.handle_staff_message

    def slow(*args: object, **kwargs: object) -> object:
        time.sleep(2.5)  # past the 2 s deadline: the handling goes on and replies over REST
        return handle(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sms.inbound, "handle_staff_message", slow)

    assert texting.send(ANA, "STATUS") == [TROUBLE]
    give_up = time.monotonic() + 10
    while len(texting.inbox(ANA)) < 2 and time.monotonic() < give_up:
        time.sleep(0.05)  # the late handler's answer, over REST
    answers = texting.inbox(ANA)
    assert len(answers) == 2 and answers[0] == TROUBLE
    assert answers[1].startswith("Crisis line: you are")
