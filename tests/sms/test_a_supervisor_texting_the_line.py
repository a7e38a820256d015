"""A supervisor who texts the line (answering one of its alerts) is staff, not a texter (found
by a review of the texts). Before, "Thanks, I am looking into it" got the welcome and the need
menu, opened a conversation that could be offered to counselors and counted in the metrics,
and a STOP to it would have stopped the line's alerts to them without a word.
"""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select

import sms.inbound
from crisisline.db import db
from crisisline.models import Conversation, Message, Texter
from tests.conftest import TextingPhone
from tests.rota import BEN
from tests.sms.stuck import HandlingFails
from tests.sms.test_staff_failsafe_text import TROUBLE

SAM = "+13125550190"  # the example routing's supervisor
TEXTER = "+13125550177"

pytestmark = pytest.mark.usefixtures("wednesday_evening")


def test_a_supervisor_replying_to_the_line_is_told_it_is_not_passed_on_and_is_not_put_through_the_menus(
    app: Flask, texting: TextingPhone
) -> None:
    answer = texting.send(SAM, "Thanks, I am looking into it now.")

    assert len(answer) == 1 and "texts from supervisors are not passed on" in answer[0]
    with app.app_context():
        assert db.session.scalars(select(Conversation)).all() == []
        assert db.session.scalars(select(Texter)).all() == []
        (stored,) = db.session.scalars(select(Message).where(Message.direction == "in")).all()
        assert (stored.party, stored.handled_at is not None) == ("supervisor", True)


def test_a_supervisors_text_reaches_no_counselor(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")  # a counselor is busy with a real texter
    before = list(texting.inbox(BEN))

    texting.send(SAM, "Calling case C12 now")
    texting.send(SAM, "STOP")

    assert texting.inbox(BEN) == before
    with app.app_context():
        assert len(db.session.scalars(select(Conversation)).all()) == 1


def test_a_supervisors_text_the_line_cannot_handle_is_answered_for_staff_not_with_the_988_pointer(
    texting: TextingPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(sms.inbound.outbox, "send_text", broken)
    HandlingFails(monkeypatch)

    answer = texting.send(SAM, "On it")

    assert answer == [TROUBLE]
