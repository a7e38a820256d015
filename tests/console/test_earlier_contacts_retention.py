"""Earlier contacts on a counselor's desk stop at the retention window: a conversation older
than the texts window (a call older than the calls window) is no longer linked to the person,
even while their texter row keeps its hash (they wrote again since, or once sent STOP)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from console.desk.history import earlier_contacts
from console.models import COUNSELOR
from crisisline.db import db
from crisisline.models import Call
from ivr.call_log import phone_hash
from tests.conftest import TextingPhone
from tests.console.conftest import MakeUser, sign_in
from tests.console.test_board_and_desk import only_ana_on_call
from tests.console.test_inbox_and_wrap_up import me
from tests.rota import ANA
from workers.upkeep import purge_personal_data

TEXTER = "+13125550179"
DAY = timedelta(days=1)
WINDOW = timedelta(days=30)  # the tests' RETENTION_DAYS_TEXTS and _CALLS (the default)


def a_whole_conversation(texting: TextingPhone, body: str) -> None:
    """The texter writes, Ana takes it by text and ends it."""
    texting.send(TEXTER, body)
    tag = [text for text in texting.inbox(ANA) if text.startswith("New text #")][-1].split("#")[1].split(":")[0]
    assert texting.send(ANA, f"YES {tag}")
    texting.send(ANA, f"END {tag}")


@pytest.mark.usefixtures("clean_redis")
def test_a_regular_texters_conversations_older_than_the_texts_window_are_not_shown_on_the_desk(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    only_ana_on_call(publish_routing)
    now = datetime.now(UTC)
    with time_machine.travel(now - 400 * DAY, tick=False):
        a_whole_conversation(texting, "I want to kill myself")
    with time_machine.travel(now - 10 * DAY, tick=False):
        a_whole_conversation(texting, "I keep having panic attacks and I can't breathe")
    with app.app_context():
        purge_personal_data(now.isoformat())  # they wrote within the window: their row keeps its hash

    texting.send(TEXTER, "the panic attacks are back, I can't breathe")
    sign_in(client, make_user(COUNSELOR, "ana"))
    (contact,) = [c for c in me(client)["contacts"] if c["channel"] == "text"]

    assert contact["state"] == "offered"
    assert contact["earlier_count"] == 1
    assert [e["date"] for e in contact["earlier"]] == [(now - 10 * DAY).strftime("%Y-%m-%d")]


@pytest.mark.usefixtures("clean_redis")
def test_an_opted_out_texters_conversation_older_than_the_texts_window_is_no_earlier_contact(
    app: Flask, texting: TextingPhone, publish_routing: Callable[..., int]
) -> None:
    only_ana_on_call(publish_routing)
    now = datetime.now(UTC)
    with time_machine.travel(now - 400 * DAY, tick=False):
        a_whole_conversation(texting, "I want to kill myself")
        texting.send(TEXTER, "STOP")
    with app.app_context():
        before = earlier_contacts(phone_hash(TEXTER), now, now=now)
        # The same history as it was seen 371 days ago, the conversation then within the window.
        then = earlier_contacts(phone_hash(TEXTER), now, now=now - 400 * DAY + WINDOW - DAY)
        purge_personal_data(now.isoformat())  # the hash stays, to honour STOP
        gone = earlier_contacts(phone_hash(TEXTER), now, now=now)
        # Once purged, the conversation is no longer theirs at all (moved to a texter of its own).
        unlinked = earlier_contacts(phone_hash(TEXTER), now, now=now - 400 * DAY + WINDOW - DAY)

    assert (before.count, before.recent) == (gone.count, gone.recent) == (0, [])
    assert then.count == 1 and [e.channel for e in then.recent] == ["text"]
    assert unlinked.count == 0


def test_calls_older_than_the_calls_window_are_no_earlier_contacts_even_before_the_purge_runs(app: Flask) -> None:
    now = datetime.now(UTC)
    person = "a-keyed-hash-of-a-caller"
    with app.app_context():
        for sid, started in (("CA-old", now - WINDOW - DAY), ("CA-recent", now - WINDOW + DAY)):
            db.session.add(Call(call_sid=sid, caller_hash=person, started_at=started, need="suicide"))
        db.session.commit()

        history = earlier_contacts(person, now, now=now)

    assert history.count == 1
    assert [e.at for e in history.recent] == [now - WINDOW + DAY]
