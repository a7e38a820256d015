"""The supervisors' text about a check-in flagged "no reply" (``escalate_checkin``), when its run
stops part way or Twilio refuses some of them.

Found in review: a run that stopped after the flag was raised, while telling the supervisors
(a database blip, the job's timeout, a killed worker), went to ``needs_human`` and nobody was
ever texted (the flag could not be raised twice, and no next round was scheduled); and a flag
alert taken for one supervisor and refused for another counted as sent, so the other was never
texted again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy.exc import OperationalError

from sms import outbox
from tests.conftest import TextingPhone
from tests.followups.conftest import checkins, contacts
from tests.followups.test_checkins import SUPERVISOR, no_reply_to_either_text
from twilio_fake.rest_api import FakeTwilio

SECOND_SUPERVISOR = "+13125550191"
FLAG_TEXT = "needs a person: no reply to two check-in texts"


def stops_telling_the_supervisors(monkeypatch: pytest.MonkeyPatch, *, after_texting: bool) -> None:
    """The escalation's run stops inside ``tell_supervisors``, before or after it texted them."""
    tell = outbox.tell_supervisors

    def stops(*args: Any, **kwargs: Any) -> int:
        if after_texting:
            tell(*args, **kwargs)
        raise OperationalError("INSERT INTO messages", {}, Exception("server closed the connection"))

    monkeypatch.setattr(outbox, "tell_supervisors", stops)


@pytest.mark.parametrize("after_texting", [False, True], ids=["before texting them", "after texting them"])
def test_an_escalation_that_stops_while_telling_the_supervisors_still_tells_each_once(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch, after_texting: bool,
) -> None:  # fmt: skip
    no_reply_to_either_text(app, texting, wednesday_evening, run_due)
    stops_telling_the_supervisors(monkeypatch, after_texting=after_texting)
    with pytest.raises(OperationalError):
        run_due()  # the job fails as RQ sees it: the flag was raised first
    monkeypatch.undo()
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.flag_reason) == ("flagged", "no_reply")

    escalations = [c.state for c in contacts(app) if c.kind == "checkin_escalate"]
    assert escalations == ["needs_human", "pending"]  # never run twice; its next round, due at once
    run_due()

    alerts = [text for text in texting.inbox(SUPERVISOR) if f"C{checkin.id}" in text]
    assert len(alerts) == 1, alerts  # told, and never twice
    assert FLAG_TEXT in alerts[0]


def test_a_flag_alert_refused_for_one_supervisor_is_sent_to_them_again_and_not_to_the_other(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, fake: FakeTwilio,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(
        lambda document: document["supervisors"].append(
            {"id": "ida-park", "name": "Ida Park", "phone": "+1 312 555 0191"}
        )
    )
    no_reply_to_either_text(app, texting, wednesday_evening, run_due)
    fake.inject_fault("POST", r"/Messages\.json$", status=503, times=1)  # Sam's, the first

    assert run_due() == ["send_failed"]
    assert texting.inbox(SUPERVISOR) == []
    assert len(texting.inbox(SECOND_SUPERVISOR)) == 1

    wednesday_evening.shift(timedelta(minutes=30))  # past the first retry's wait
    run_due()

    (checkin,) = checkins(app)
    assert [FLAG_TEXT in text and f"C{checkin.id}" in text for text in texting.inbox(SUPERVISOR)] == [True]
    assert len(texting.inbox(SECOND_SUPERVISOR)) == 1  # not texted again
