"""The hourly purge keeps the number of someone the board tells a supervisor to reach, for as
long as it lists them: the emergency unmask page gives it. Found by review: someone whose number
had gone with an old STOP wrote again after it ("I want to kill myself"); the line sealed their
number again, alerted the supervisors and listed them, and the next hourly purge deleted it, so
the supervisor who unmasked them got no number to call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from crisisline.db import db
from crisisline.models import Call, CheckIn, Conversation, Message, ScheduledContact, Texter
from crisisline.settings import Settings
from tests.conftest import TextingPhone, settings_for
from tests.console.conftest import Account, sign_in
from tests.console.test_reaching_people_the_board_lists import a_callback_the_line_could_not_make
from tests.console.test_unmask import unmask
from tests.followups.conftest import checkins, due_contacts_runner
from tests.followups.test_checkins import TEXTER as CHECKIN_TEXTER
from tests.followups.test_checkins_when_things_go_wrong import flagged_no_reply
from tests.sms.test_texts_after_stop import TEXTER, WORDS, last_inbound_id
from twilio_fake.phone import Phone
from workers.upkeep import UNLINKED_CONVERSATION_PREFIX, purge_personal_data


def test_the_number_of_someone_writing_after_an_old_stop_outlives_the_next_hourly_purge(
    app: Flask, client: FlaskClient, supervisor: Account, texting: TextingPhone
) -> None:
    now = datetime.now(UTC)
    with time_machine.travel(now - timedelta(days=40), tick=False):
        texting.send(TEXTER, "hello")
        texting.send(TEXTER, "STOP")
    with app.app_context():
        db.session.execute(update(Conversation).values(state="closed"))
        db.session.commit()
        purge_personal_data(now.isoformat())  # 40 days on: their number goes, their STOP stays
        person = ~Texter.number_hash.startswith(UNLINKED_CONVERSATION_PREFIX)  # not their old conversation's
        assert db.session.scalars(select(Texter.sealed_number).where(person)).one() is None

    texting.send(TEXTER, WORDS)  # today, after their STOP: the line cannot text them back
    message_id = last_inbound_id(app)
    with app.app_context():
        assert db.session.scalars(select(Texter.sealed_number).where(person)).one() is not None  # sealed again
        counts = purge_personal_data((now + timedelta(minutes=20)).isoformat())  # the next hourly run
    assert counts["texters"] == 0

    sign_in(client, supervisor)
    status, page = unmask(client, f"/console/board/unmask/after_stop/{message_id}", "said they would end it")
    assert status == 200 and TEXTER in page


def test_the_number_of_someone_whose_text_the_line_could_not_handle_outlives_the_purge_while_listed(
    app: Flask,
) -> None:
    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    with app.app_context():
        vault = app.extensions["crisisline.vault"]
        texter = Texter(number_hash="b" * 64, sealed_number=vault.seal(TEXTER, context="phone"),
                        created_at=now - timedelta(days=90))  # fmt: skip
        db.session.add(texter)
        db.session.flush()
        stuck = Message(direction="in", party="texter", texter_id=texter.id, status="received",
                        created_at=now - timedelta(hours=2))  # fmt: skip
        db.session.add(stuck)
        db.session.commit()

        kept = purge_personal_data(now.isoformat())["texters"]
        db.session.execute(update(Message).values(handled_at=now))  # a retry handled it
        db.session.commit()
        gone = purge_personal_data((now + timedelta(minutes=1)).isoformat())["texters"]

    assert (kept, gone) == (0, 1)


@pytest.mark.usefixtures("clean_redis")
def test_a_follow_up_the_line_could_not_finish_keeps_its_number_while_listed_however_short_the_window(
    app: Flask, client: FlaskClient, supervisor: Account, phone: Phone, monkeypatch: pytest.MonkeyPatch,
    wednesday_evening: time_machine.Coordinates, publish_routing: Callable[..., int], settings: Settings,
    make_app: Callable[[Settings], Flask],
) -> None:  # fmt: skip
    contact_id = a_callback_the_line_could_not_make(app, phone, monkeypatch, publish_routing)
    with app.app_context():
        given_up = db.session.get(ScheduledContact, contact_id)
        assert given_up is not None and given_up.finished_at is not None
        still_listed = given_up.finished_at + timedelta(hours=23)
        off_the_list = given_up.finished_at + timedelta(days=1, minutes=1)
        (call,) = db.session.scalars(select(Call)).all()
        call.started_at = given_up.finished_at - timedelta(hours=2)  # they had held a while
        db.session.execute(  # and the "we tried" text went: nothing else keeps their number
            update(ScheduledContact).where(ScheduledContact.kind == "callback_missed").values(state="sent")
        )
        db.session.commit()  # so their call is due by a window of one day while it is listed
    one_day = make_app(settings_for(settings.database_url, settings.redis_url, RETENTION_DAYS_CALLS="1"))

    with one_day.app_context():
        while_listed = purge_personal_data(still_listed.isoformat())["calls"]
        after = purge_personal_data(off_the_list.isoformat())["calls"]

    assert (while_listed, after) == (0, 1)


def test_an_old_texter_nobody_is_listed_for_loses_their_number_as_before(app: Flask) -> None:
    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    with app.app_context():
        vault = app.extensions["crisisline.vault"]
        db.session.add(Texter(number_hash="c" * 64, sealed_number=vault.seal(TEXTER, context="phone"),
                              created_at=now - timedelta(days=90)))  # fmt: skip
        db.session.commit()
        assert db.session.scalar(select(Message.id)) is None
        assert purge_personal_data(now.isoformat())["texters"] == 1


@pytest.mark.usefixtures("clean_redis")
def test_a_flagged_check_in_still_listed_keeps_its_number_through_the_purge(
    app: Flask, client: FlaskClient, supervisor: Account, texting: TextingPhone,
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    """Found by the review of this change: the board lists a flagged check-in for a month from
    its flag, but the purge unlinked its texter a month from when it was asked."""
    flagged_no_reply(app, texting, wednesday_evening, due_contacts_runner(app))
    (checkin,) = checkins(app)
    assert checkin.flagged_at is not None
    with app.app_context():  # agreed to 20 days before its flag (due 14 days later, a second text, ...)
        db.session.execute(
            update(CheckIn).where(CheckIn.id == checkin.id).values(asked_at=checkin.flagged_at - timedelta(days=20))
        )
        db.session.commit()
    wednesday_evening.shift(timedelta(days=11))  # flagged 11 days ago: listed 19 days more
    with app.app_context():
        purge_personal_data()  # the default 30-day window
    sign_in(client, supervisor)

    status, page = unmask(client, f"/console/board/unmask/checkin/{checkin.id}", "No reply to the check-in; calling")

    assert status == 200 and CHECKIN_TEXTER in page
