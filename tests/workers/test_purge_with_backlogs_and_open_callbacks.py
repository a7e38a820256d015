"""The retention purge whatever the backlog (an operator shortening the window leaves tens of
thousands of calls due at once: one statement, no list of ids past the database's limit on
bound parameters), and never of the number an open callback is still to call, or its "we
tried" text still to reach."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import func, insert, select

from callbacks import attempts
from crisisline.db import db
from crisisline.models import Call, Callback, Conversation, Message, ScheduledContact, Texter
from tests.callbacks.test_callbacks import ask_for_callback
from tests.rota import around_the_clock
from twilio_fake.phone import Phone
from workers.contacts import run_scheduled_contact
from workers.upkeep import UNLINKED_CONVERSATION_PREFIX, purge_personal_data

# More than either backend takes as bound parameters in one statement (SQLite 32,766;
# psycopg 65,535).
BACKLOG = 70_000
SQLITE_DEFAULT_MAX_VARIABLES = 32_766


def test_a_backlog_of_calls_larger_than_the_databases_parameter_limit_is_purged_in_one_run(app: Flask) -> None:
    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    long_ago = now - timedelta(days=90)
    with app.app_context():
        db.session.execute(
            insert(Call),
            [
                {"call_sid": f"CA{n:032d}", "caller_hash": f"{n:064d}", "sealed_caller": "sealed",
                 "status": "completed", "started_at": long_ago}
                for n in range(BACKLOG)
            ],
        )  # fmt: skip
        db.session.commit()
        if db.engine.dialect.name == "sqlite":
            # SQLite's own default (Debian's build raises it to 250,000): the purge's connection
            # takes no more bound parameters a statement than most deployments' would.
            raw = db.session.connection().connection.driver_connection
            raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, SQLITE_DEFAULT_MAX_VARIABLES)  # type: ignore[union-attr]
        counts = purge_personal_data(now.isoformat())
        left = db.session.scalar(select(func.count(Call.id)).where(Call.sealed_caller.is_not(None)))

    assert (counts["calls"], left) == (BACKLOG, 0)


CONVERSATIONS_BACKLOG = 2_500  # more than the purge's chunk of ids a statement (1,000)


def test_a_backlog_of_old_conversations_is_unlinked_from_the_numbers_they_came_from_in_one_run(app: Flask) -> None:
    """Every conversation past the texts' window moves, with its text, to a texter row of its
    own, whatever their number: each of these people texted STOP (kept for good), so only the
    unlinking parts their old conversations from their number's hash."""
    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    long_ago = now - timedelta(days=400)
    hashes = [f"{n:064d}" for n in range(CONVERSATIONS_BACKLOG)]
    with app.app_context():
        db.session.execute(
            insert(Texter), [{"number_hash": h, "opted_out": True, "created_at": long_ago} for h in hashes]
        )
        people = {h: i for h, i in db.session.execute(select(Texter.number_hash, Texter.id))}
        db.session.execute(
            insert(Conversation),
            [{"texter_id": people[h], "state": "closed", "started_at": long_ago, "last_activity_at": long_ago,
              "closed_at": long_ago} for h in hashes],
        )  # fmt: skip
        started = [(c, t) for c, t in db.session.execute(select(Conversation.id, Conversation.texter_id))]
        db.session.execute(
            insert(Message),
            [{"conversation_id": conversation, "texter_id": texter, "direction": "in", "party": "texter",
              "message_sid": f"SM{conversation:032d}", "status": "received", "created_at": long_ago}
             for conversation, texter in started],
        )  # fmt: skip
        db.session.commit()

        first = purge_personal_data(now.isoformat())
        again = purge_personal_data(now.isoformat())
        its_texter = Texter.id == Conversation.texter_id
        moved = [
            (c, h) for c, h in db.session.execute(select(Conversation.id, Texter.number_hash).join(Texter, its_texter))
        ]
        its_conversation = Conversation.id == Message.conversation_id
        texts = [
            (m, c)
            for m, c in db.session.execute(
                select(Message.texter_id, Conversation.texter_id).join(Conversation, its_conversation)
            )
        ]
        still_opted_out = db.session.scalar(
            select(func.count(Texter.id)).where(Texter.number_hash.in_(hashes[:100]), Texter.opted_out.is_(True))
        )

    assert first["conversations_unlinked"] == CONVERSATIONS_BACKLOG
    assert again["conversations_unlinked"] == 0
    assert sorted(moved) == sorted((c, f"{UNLINKED_CONVERSATION_PREFIX}{c}") for c, _ in started)
    assert len(texts) == CONVERSATIONS_BACKLOG and all(message == conversation for message, conversation in texts)
    assert still_opted_out == 100  # their STOP still holds


@pytest.mark.usefixtures("clean_redis")
def test_the_number_of_an_open_callback_is_kept_past_the_calls_window_until_the_callback_ends(
    app: Flask, phone: Phone, publish_routing: Callable[..., int]
) -> None:
    publish_routing(around_the_clock)
    now = datetime.now(UTC)
    with time_machine.travel(now - timedelta(days=31), tick=False):
        ask_for_callback(phone)  # nobody has called them back yet

    with app.app_context():
        while_open = purge_personal_data(now.isoformat())
        (call,) = db.session.scalars(select(Call)).all()
        assert call.sealed_caller is not None and call.caller_hash is not None, "purged the number it is to call"
        (callback,) = db.session.scalars(select(Callback)).all()
        assert attempts.give_up(callback, "no_answer")  # after its last try: the "we tried" text is due
        while_the_text_is_due = purge_personal_data(now.isoformat())
        (text,) = db.session.scalars(select(ScheduledContact).where(ScheduledContact.kind == "callback_missed"))
        assert run_scheduled_contact(text.id) == "sent"
        # Given up unreached: the emergency unmask lists it for a day, by its case.
        while_listed = purge_personal_data(now.isoformat())
        once_ended = purge_personal_data((now + attempts.UNREACHED_LISTED_FOR + timedelta(minutes=1)).isoformat())
        db.session.refresh(call)

    counts = (while_open["calls"], while_the_text_is_due["calls"], while_listed["calls"], once_ended["calls"])
    assert counts == (0, 0, 0, 1)
    assert call.sealed_caller is None and call.caller_hash is None
