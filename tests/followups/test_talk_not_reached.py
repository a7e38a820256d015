"""A check-in answered "2, I'd like to talk" on a line with ``followups.talk_by: call`` asks for a
callback. When that callback gives up (nobody free to call within ``give_up_after_minutes``, or
no answer to its last try), the person got only the "we tried" text: before, no supervisor was
told that someone who said they wanted to talk was never reached. Now the check-in is flagged:
the supervisors are texted and the board lists it until someone follows up."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from callbacks.attempts import OPEN_CALLBACK_STATES, give_up
from crisisline.db import db
from crisisline.models import Callback, CheckIn, Conversation
from crisisline.settings import Settings
from followups import checkins as checkins_module
from followups import replies
from followups.checkins import ANSWER_HANDLED_WITHIN, _flag, flagged_checkins, now
from routing.store import active_routing
from tests.callbacks.test_callbacks import ask_for_callback
from tests.conftest import TextingPhone, settings_for
from tests.followups.conftest import checkins
from tests.followups.test_checkins import SUPERVISOR, TEXTER, checkin_sent
from tests.rota import BEN, around_the_clock
from twilio_fake.phone import Phone
from workers.upkeep import purge_personal_data

TRIED = "Riverside County Crisis Line: we tried to call you back."
FLAG_NOBODY_FREE = (
    "Crisis line: check-in case C{case} needs a person: asked to talk in reply to a check-in, and no counselor was"
    " free to call them back. Please follow up."
)


def talk_by_call(document: dict[str, Any]) -> None:
    document["followups"]["talk_by"] = "call"


def nobody_on_call(document: dict[str, Any]) -> None:
    talk_by_call(document)
    around_the_clock(document, on_call=())


def asked_to_talk_with_nobody_on_call(
    app: Flask, texting: TextingPhone, clock: time_machine.Coordinates, run_due: Callable[[], list[str]],
    publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(talk_by_call)
    checkin_sent(app, texting, clock, run_due)
    publish_routing(nobody_on_call)
    assert texting.send(TEXTER, "2") == ["Thank you. A counselor will be with you shortly."]
    run_due()  # the callback's first attempt: nobody to ring, it waits in the queue


def given_up_by_the_clock(app: Flask, clock: time_machine.Coordinates) -> None:
    """``give_up_after_minutes`` (2 h) pass with nobody free: the clock's tend gives up."""
    clock.shift(timedelta(minutes=121))
    with app.app_context():
        from workers.upkeep import tend_callbacks

        assert tend_callbacks()["gave_up"] == 1


def test_a_2_whose_callback_nobody_took_in_time_is_flagged_to_the_supervisors_and_listed(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    asked_to_talk_with_nobody_on_call(app, texting, wednesday_evening, run_due, publish_routing)

    given_up_by_the_clock(app, wednesday_evening)
    run_due()  # the "we tried" text and the supervisors' flag

    assert texting.inbox(TEXTER)[-1].startswith(TRIED)
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.reply, checkin.flag_reason) == ("flagged", "talk", "talk_nobody_free")
    assert texting.inbox(SUPERVISOR) == [FLAG_NOBODY_FREE.format(case=checkin.id)]
    with app.app_context():
        (listed,) = flagged_checkins(now(), limit=10)
    assert (listed.checkin_id, listed.told) == (checkin.id, 1)
    assert listed.reason.startswith("asked to talk in reply to a check-in")


def test_a_text_after_the_flag_is_a_new_conversation_not_a_second_answer_to_the_check_in(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """A "2" again would otherwise be promised a counselor by a callback that has given up."""
    asked_to_talk_with_nobody_on_call(app, texting, wednesday_evening, run_due, publish_routing)
    given_up_by_the_clock(app, wednesday_evening)
    run_due()
    publish_routing(talk_by_call)  # Ben and Diego back on

    replies = texting.send(TEXTER, "I want to kill myself")

    assert not any(reply.startswith("Thank you. A counselor will be with you shortly") for reply in replies)
    (checkin,) = checkins(app)
    assert checkin.state == "flagged"
    with app.app_context():
        assert db.session.scalars(select(Conversation.state).order_by(Conversation.id.desc())).first() == "offered"


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        ("no_answer", "talk_no_answer"), ("nobody_free", "talk_nobody_free"), ("line_failed", "talk_line_failed"),
        ("number_invalid", "talk_number_refused"), ("number_not_callable", "talk_number_refused"),
    ],
)  # fmt: skip
def test_a_check_in_callback_that_gives_up_flags_its_check_in_once_whichever_way_it_ended(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int], outcome: str, reason: str,
) -> None:  # fmt: skip
    asked_to_talk_with_nobody_on_call(app, texting, wednesday_evening, run_due, publish_routing)

    with app.app_context():
        (callback,) = db.session.scalars(select(Callback)).all()
        assert (give_up(callback, outcome), give_up(callback, outcome)) == (True, False)
    run_due()
    run_due()

    (checkin,) = checkins(app)
    assert (checkin.state, checkin.flag_reason) == ("flagged", reason)
    assert len(texting.inbox(SUPERVISOR)) == 1


def test_a_callback_asked_for_on_a_call_that_gives_up_flags_no_check_in(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """A texter's CALL is an ordinary callback: the supervisors hear of it as of any callback
    given up (``tests/callbacks/test_supervisors_told_of_unreached_callbacks.py``), not as a flag."""
    publish_routing(nobody_on_call)
    texting.send(TEXTER, "I want to kill myself")
    texting.send(TEXTER, "CALL")
    run_due()

    with app.app_context():
        (callback,) = db.session.scalars(select(Callback)).all()
        assert give_up(callback, "nobody_free")
    run_due()

    assert [text.startswith(f"Crisis line: callback case CB{callback.id} ") for text in texting.inbox(SUPERVISOR)] == [
        True
    ]
    assert checkins(app) == []


def test_a_talk_flag_after_an_earlier_flag_of_the_same_check_in_is_told_under_its_own_keys(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """Found by review: the talk flag's contact and alerts took the keys of the check-in's
    earlier flag (here: its text's run interrupted), so no supervisor heard of it."""
    publish_routing(talk_by_call)
    checkin_sent(app, texting, wednesday_evening, run_due)
    with app.app_context():
        (checkin,) = db.session.scalars(select(CheckIn)).all()
        active = active_routing()
        assert active is not None
        _flag(checkin, active.document, "send_uncertain")
    run_due()
    assert len(texting.inbox(SUPERVISOR)) == 1  # the earlier flag
    publish_routing(nobody_on_call)
    texting.send(TEXTER, "2")  # within a day of that flag: it still answers the check-in
    run_due()

    with app.app_context():
        (callback,) = db.session.scalars(select(Callback)).all()
        assert give_up(callback, "nobody_free")
    run_due()

    (checkin,) = checkins(app)
    assert checkin.flag_reason == "talk_nobody_free"
    assert texting.inbox(SUPERVISOR)[-1] == FLAG_NOBODY_FREE.format(case=checkin.id)
    with app.app_context():
        (listed,) = flagged_checkins(now(), limit=10)
    assert (listed.reason.startswith("asked to talk"), listed.tried, listed.told) == (True, 1, 1)


def test_a_talk_flag_lost_to_a_database_blip_at_the_give_up_is_raised_by_the_clock(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    asked_to_talk_with_nobody_on_call(app, texting, wednesday_evening, run_due, publish_routing)
    flag = checkins_module.flag_talk_not_reached

    def database_blip(*_args: object, **_kwargs: object) -> bool:
        raise OperationalError("UPDATE checkins", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(checkins_module, "flag_talk_not_reached", database_blip)
    given_up_by_the_clock(app, wednesday_evening)
    assert checkins(app)[0].state == "answered"
    monkeypatch.setattr(checkins_module, "flag_talk_not_reached", flag)  # the database is back

    with app.app_context():
        from workers.upkeep import keep_stored_promises

        first, second = keep_stored_promises(), keep_stored_promises()
    run_due()

    assert (first["talk_flags"], second["talk_flags"]) == (1, 0)
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.flag_reason) == ("flagged", "talk_nobody_free")
    assert texting.inbox(SUPERVISOR) == [FLAG_NOBODY_FREE.format(case=checkin.id)]


def test_a_person_who_talked_with_a_counselor_by_text_since_their_2_is_not_flagged(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """Found by review: they were flagged "no counselor was free" while Ben texted with them."""
    asked_to_talk_with_nobody_on_call(app, texting, wednesday_evening, run_due, publish_routing)
    publish_routing(talk_by_call)  # Ben and Diego back on
    wednesday_evening.shift(timedelta(minutes=30))
    texting.send(TEXTER, "nobody called, I want to kill myself")
    with app.app_context():
        tag = db.session.scalars(select(Conversation.id).order_by(Conversation.id.desc())).first()
    texting.send(BEN, f"YES {tag}")
    texting.send(BEN, f"#{tag} I'm here, let's talk.")

    with app.app_context():
        (callback,) = db.session.scalars(select(Callback)).all()
        give_up(callback, "nobody_free")
    run_due()

    assert checkins(app)[0].state == "answered"
    assert texting.inbox(SUPERVISOR) == []


def asked_to_talk_after_asking_for_a_callback_on_a_call(
    app: Flask, texting: TextingPhone, phone: Phone, clock: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """Their "2" joins the callback they asked for on a call (one callback per person)."""
    publish_routing(talk_by_call)
    checkin_sent(app, texting, clock, run_due)
    publish_routing(nobody_on_call)
    ask_for_callback(phone, TEXTER)
    assert texting.send(TEXTER, "2") == ["Thank you. A counselor will be with you shortly."]
    run_due()
    with app.app_context():
        assert [c.origin for c in db.session.scalars(select(Callback))] == ["call"]  # joined, not a second


def test_a_2_that_joined_the_callback_they_had_asked_for_on_a_call_is_flagged_when_it_gives_up(
    app: Flask, texting: TextingPhone, phone: Phone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """Before, only a callback keyed by the check-in flagged it: a "2" that joined the callback
    the person had asked for on a call was never flagged, and no supervisor was told."""
    asked_to_talk_after_asking_for_a_callback_on_a_call(
        app, texting, phone, wednesday_evening, run_due, publish_routing
    )

    given_up_by_the_clock(app, wednesday_evening)
    run_due()

    (checkin,) = checkins(app)
    assert (checkin.state, checkin.flag_reason) == ("flagged", "talk_nobody_free")
    assert texting.inbox(SUPERVISOR) == [FLAG_NOBODY_FREE.format(case=checkin.id)]


def test_a_2_that_joined_a_callback_whose_flag_was_lost_is_flagged_by_the_clock(
    app: Flask, texting: TextingPhone, phone: Phone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    asked_to_talk_after_asking_for_a_callback_on_a_call(
        app, texting, phone, wednesday_evening, run_due, publish_routing
    )
    monkeypatch.setattr(replies, "checkins_carried_by", lambda _callback: [])  # the signal's flag lost
    given_up_by_the_clock(app, wednesday_evening)
    assert checkins(app)[0].state == "answered"
    monkeypatch.undo()

    with app.app_context():
        from workers.upkeep import keep_stored_promises

        first, second = keep_stored_promises(), keep_stored_promises()
    run_due()

    assert (first["talk_flags"], second["talk_flags"]) == (1, 0)
    assert checkins(app)[0].flag_reason == "talk_nobody_free"


def test_a_callback_asked_for_on_a_call_after_the_2_was_handled_flags_no_check_in(
    app: Flask, texting: TextingPhone, phone: Phone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """A "2" whose own callback connected them, and a later callback of theirs that gave up:
    the later one carries no check-in."""
    asked_to_talk_with_nobody_on_call(app, texting, wednesday_evening, run_due, publish_routing)
    with app.app_context():
        (own,) = db.session.scalars(select(Callback)).all()
        own.state, own.outcome, own.finished_at = "connected", "connected", now()
        own_id = own.id
        db.session.commit()
    wednesday_evening.shift(timedelta(hours=1))
    ask_for_callback(phone, TEXTER)
    run_due()

    with app.app_context():
        later = db.session.scalars(select(Callback).order_by(Callback.id.desc())).first()
        assert later is not None and later.id != own_id
        assert give_up(later, "nobody_free")
        later_id = later.id
    run_due()

    assert checkins(app)[0].state == "answered"
    # Told as any callback given up, not as the check-in's flag.
    assert [text.startswith(f"Crisis line: callback case CB{later_id} ") for text in texting.inbox(SUPERVISOR)] == [
        True
    ]


@pytest.mark.parametrize("callback", ["its own", "joined"])
def test_a_2_to_a_check_in_asked_days_ago_keeps_whom_it_came_from_while_its_callback_and_handling_last(
    app: Flask, texting: TextingPhone, phone: Phone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int], settings: Settings,
    make_app: Callable[[Settings], Flask], callback: str,
) -> None:  # fmt: skip
    """``RETENTION_DAYS_FOLLOWUPS=1``: a check-in asked three days ago and answered "2" a minute
    ago lost its link to the person at the next hourly purge, its callback still open: when that
    callback gave up, nothing could see they had talked with someone since, and the clock's
    retry of their "2" could no longer find it. It keeps it while the callback is open and for
    ``ANSWER_HANDLED_WITHIN`` after the reply; then it goes as before."""
    if callback == "joined":
        asked_to_talk_after_asking_for_a_callback_on_a_call(
            app, texting, phone, wednesday_evening, run_due, publish_routing
        )
    else:
        asked_to_talk_with_nobody_on_call(app, texting, wednesday_evening, run_due, publish_routing)
    with app.app_context():
        db.session.execute(update(CheckIn).values(asked_at=now() - timedelta(days=3)))
        db.session.commit()
        (its_callback,) = db.session.scalars(select(Callback)).all()
        assert its_callback.state in OPEN_CALLBACK_STATES
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.reply) == ("answered", "talk")
    assert checkin.replied_at is not None and checkin.texter_id is not None
    replied, texter_id = checkin.replied_at, checkin.texter_id
    short = make_app(settings_for(settings.database_url, settings.redis_url, RETENTION_DAYS_FOLLOWUPS="1"))

    def texter_after_purge_at(moment: datetime) -> int | None:
        with short.app_context():
            purge_personal_data(moment.isoformat())
        return checkins(app)[0].texter_id

    assert texter_after_purge_at(replied + timedelta(minutes=1)) == texter_id  # the next hourly purge
    # Long past the reply, its callback still open (retries may take days): kept.
    assert texter_after_purge_at(replied + ANSWER_HANDLED_WITHIN + timedelta(hours=1)) == texter_id

    with app.app_context():  # the callback reaches them and ends
        db.session.execute(
            update(Callback).values(state="connected", outcome="connected", finished_at=replied + timedelta(hours=1))
        )
        db.session.commit()
    assert texter_after_purge_at(replied + ANSWER_HANDLED_WITHIN - timedelta(minutes=1)) == texter_id
    assert texter_after_purge_at(replied + ANSWER_HANDLED_WITHIN + timedelta(minutes=1)) is None
    assert checkins(app)[0].sealed_reply is None


def test_words_in_reply_to_a_check_in_asked_days_ago_go_with_the_window_while_whom_they_came_from_stays(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], settings: Settings, make_app: Callable[[Settings], Flask],
) -> None:  # fmt: skip
    """Keeping an answer's link to the person while it is carried out must not keep their words
    past ``RETENTION_DAYS_FOLLOWUPS`` (review: both were kept): nothing reads them once relayed."""
    checkin_sent(app, texting, wednesday_evening, run_due)
    texting.send(TEXTER, "not great, couldn't sleep")
    with app.app_context():
        db.session.execute(update(CheckIn).values(asked_at=now() - timedelta(days=3)))
        db.session.commit()
    (checkin,) = checkins(app)
    assert checkin.state == "answered" and checkin.sealed_reply is not None and checkin.replied_at is not None
    short = make_app(settings_for(settings.database_url, settings.redis_url, RETENTION_DAYS_FOLLOWUPS="1"))

    with short.app_context():
        purged = purge_personal_data((checkin.replied_at + timedelta(minutes=1)).isoformat())

    (after,) = checkins(app)
    assert after.sealed_reply is None and purged["checkin_replies"] == 1
    assert after.texter_id == checkin.texter_id and purged["checkins"] == 0
