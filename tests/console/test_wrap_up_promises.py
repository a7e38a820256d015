"""Wrap-ups keep what the counselor recorded: a check-in the person agreed to is scheduled even
when the request that stored the wrap-up failed part way, and no contact that still needs a
wrap-up is hidden behind the counselor's newer, wrapped-up ones."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from console.desk import wrapups
from console.models import COUNSELOR, WrapUp
from crisisline.db import db
from crisisline.models import CheckIn, Conversation, ScheduledContact, Texter, utcnow
from tests.conftest import TextingPhone
from tests.console.conftest import MakeUser, csrf_token, sign_in
from tests.console.test_board_and_desk import only_ana_on_call
from tests.console.test_inbox_and_wrap_up import offered_tag
from tests.rota import ANA
from workers import upkeep

TEXTER = "+13125550177"


def test_an_unwrapped_contact_stays_offered_after_twenty_newer_wrapped_ones(
    app: Flask, client: FlaskClient, publish_routing: Callable[..., int], make_user: MakeUser
) -> None:
    only_ana_on_call(publish_routing)
    ana = make_user(COUNSELOR, "ana")
    sign_in(client, ana)
    now = utcnow()
    with app.app_context():
        ids = []
        for n in range(wrapups.LIMIT + 1):  # Ana's closed conversations this week, oldest first
            texter = Texter(number_hash=f"hash-{n}")
            db.session.add(texter)
            db.session.flush()
            conversation = Conversation(
                texter_id=texter.id, state="closed", counselor_id="ana-ruiz", language="en",
                assigned_at=now - timedelta(hours=30 - n), closed_at=now - timedelta(hours=29 - n),
                close_reason="counselor_ended",
            )  # fmt: skip
            db.session.add(conversation)
            db.session.flush()
            ids.append(conversation.id)
        oldest, newer = ids[0], ids[1:]
        for conversation_id in newer:  # the newest 20 are wrapped up; the oldest is not
            db.session.add(
                WrapUp(
                    contact_key=f"text:{conversation_id}", channel="text", conversation_id=conversation_id,
                    responder_id="ana-ruiz", user_id=ana.id, outcome="other", followup_consent=False,
                    created_at=now,
                )
            )  # fmt: skip
        db.session.commit()
        pending = [contact.key for contact in wrapups.pending("ana-ruiz")]

    assert pending == [f"text:{oldest}"]
    assert f"Wrap up the text #{oldest}" in client.get("/console/me").get_data(as_text=True)


def test_a_check_in_agreed_to_in_a_wrap_up_that_failed_part_way_is_scheduled_when_it_is_sent_again(
    app: Flask,
    client: FlaskClient,
    texting: TextingPhone,
    publish_routing: Callable[..., int],
    make_user: MakeUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    texting.send(ANA, f"END {tag}")
    form = f"/console/me/wrap-up/text/{tag}"
    schedule = wrapups.schedule_checkin

    def killed(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("the worker died after the wrap-up was committed")

    monkeypatch.setattr(wrapups, "schedule_checkin", killed)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    fields = {"outcome": "de_escalated", "consent": "y"}
    first = client.post(form, data={**fields, "csrf_token": csrf_token(client, "/console/me")})
    assert first.status_code == 500
    with app.app_context():
        assert db.session.scalars(select(WrapUp.followup)).one() is None  # the promise, not yet kept

    monkeypatch.setattr(wrapups, "schedule_checkin", schedule)
    again = client.post(form, data={**fields, "csrf_token": csrf_token(client, "/console/me")})

    assert again.status_code == 302
    with app.app_context():
        wrap_up = db.session.scalars(select(WrapUp)).one()
        checkin = db.session.scalars(select(CheckIn).where(CheckIn.dedupe_key == f"text:{tag}")).one()
        assert (wrap_up.followup_consent, wrap_up.followup) == (True, "scheduled")
        assert checkin.state == "consented"


def _wrap_up_that_died_before_scheduling(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser, monkeypatch: pytest.MonkeyPatch,
) -> str:  # fmt: skip
    """A text conversation Ana wrapped up with the person's consent to a check-in, the request
    dying after the wrap-up was committed and before the check-in was scheduled. Its form."""
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    texting.send(ANA, f"END {tag}")
    form = f"/console/me/wrap-up/text/{tag}"

    def killed(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("the worker died after the wrap-up was committed")

    with monkeypatch.context() as dying:
        dying.setattr(wrapups, "schedule_checkin", killed)
        app.config["PROPAGATE_EXCEPTIONS"] = False
        fields = {"outcome": "de_escalated", "consent": "y", "csrf_token": csrf_token(client, "/console/me")}
        assert client.post(form, data=fields).status_code == 500
    return form


def _age_wrap_ups(app: Flask, by: timedelta) -> None:
    with app.app_context():
        for wrap_up in db.session.scalars(select(WrapUp)):
            wrap_up.created_at -= by
        db.session.commit()


def _checkin_contacts(app: Flask) -> list[tuple[int, str, datetime]]:
    """The check-in contacts scheduled: (id, job id, due)."""
    with app.app_context():
        contacts = db.session.scalars(select(ScheduledContact).where(ScheduledContact.kind == "checkin")).all()
        return [(contact.id, contact.job_id, contact.due_at) for contact in contacts]


def _jobs(clean_redis: redis.Redis) -> set[str]:
    queue = Queue("followups", connection=clean_redis)
    return set(ScheduledJobRegistry(queue=queue).get_job_ids()) | set(queue.get_job_ids())


def test_a_check_in_agreed_to_in_a_wrap_up_that_died_part_way_is_scheduled_by_the_clock_once(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser, monkeypatch: pytest.MonkeyPatch, clean_redis: redis.Redis,
) -> None:  # fmt: skip
    _wrap_up_that_died_before_scheduling(app, client, texting, publish_routing, make_user, monkeypatch)
    assert _checkin_contacts(app) == []  # the promise, stored and not kept
    _age_wrap_ups(app, timedelta(minutes=5))  # past the grace left to the request itself

    with app.app_context():
        first = upkeep.keep_stored_promises()
    contacts = _checkin_contacts(app)
    with app.app_context():
        second = upkeep.keep_stored_promises()

    assert (first["wrap_up_checkins"], second["wrap_up_checkins"]) == (1, 0)
    assert len(contacts) == 1
    assert _checkin_contacts(app) == contacts
    assert _jobs(clean_redis) == {contacts[0][1]}
    with app.app_context():
        wrap_up = db.session.scalars(select(WrapUp)).one()
        checkin = db.session.scalars(select(CheckIn)).one()
        assert (wrap_up.followup_consent, wrap_up.followup) == (True, "scheduled")
        assert checkin.state == "consented"
        # Due when it was promised: the need's hours after the wrap-up, not after the repair.
        hours = timedelta(hours=24)
        assert abs(contacts[0][2] - (wrap_up.created_at + hours)) < timedelta(seconds=5)


def test_the_clock_and_the_form_sent_again_schedule_the_promised_check_in_once(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser, monkeypatch: pytest.MonkeyPatch, clean_redis: redis.Redis,
) -> None:  # fmt: skip
    form = _wrap_up_that_died_before_scheduling(app, client, texting, publish_routing, make_user, monkeypatch)
    _age_wrap_ups(app, timedelta(minutes=5))
    fields = {"outcome": "de_escalated", "consent": "y", "csrf_token": csrf_token(client, "/console/me")}

    # The counselor's second submission and the clock's sweep at the same moment: both find the
    # wrap-up without its check-in before either schedules it.
    schedule = wrapups.schedule_checkin
    swept: list[dict[str, int]] = []

    def sweep_meanwhile(*args: object, **kwargs: object) -> str:
        if not sweeping:
            sweeping.append(True)
            with app.app_context():  # its own session, as the clock's
                swept.append(upkeep.keep_stored_promises())
        return schedule(*args, **kwargs)  # type: ignore[arg-type]

    sweeping: list[bool] = []

    monkeypatch.setattr(wrapups, "schedule_checkin", sweep_meanwhile)
    assert client.post(form, data=fields).status_code == 302
    monkeypatch.setattr(wrapups, "schedule_checkin", schedule)
    assert client.post(form, data=fields).status_code == 302
    with app.app_context():
        after = upkeep.keep_stored_promises()

    assert [counts["wrap_up_checkins"] for counts in swept] == [1]
    assert after["wrap_up_checkins"] == 0
    contacts = _checkin_contacts(app)
    assert len(contacts) == 1
    assert _jobs(clean_redis) == {contacts[0][1]}
    with app.app_context():
        assert db.session.scalars(select(WrapUp.followup)).one() == "scheduled"


@pytest.mark.parametrize("age", [timedelta(seconds=30), timedelta(hours=25)])
def test_the_clock_leaves_a_wrap_up_in_flight_or_past_its_check_in_alone(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser, monkeypatch: pytest.MonkeyPatch, clean_redis: redis.Redis, age: timedelta,
) -> None:  # fmt: skip
    """Younger than the grace: the request that stored it may still be scheduling it. Older than
    the check-in's wait (24 hours for this need): a check-in now would not be the one agreed to."""
    _wrap_up_that_died_before_scheduling(app, client, texting, publish_routing, make_user, monkeypatch)
    _age_wrap_ups(app, age)

    with app.app_context():
        assert upkeep.keep_stored_promises()["wrap_up_checkins"] == 0

    assert _checkin_contacts(app) == []


def test_the_form_sent_again_after_the_promised_time_schedules_the_check_in_ahead_not_at_once(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser, monkeypatch: pytest.MonkeyPatch, clean_redis: redis.Redis,
) -> None:  # fmt: skip
    """Found by review: counted from the wrap-up, a check-in whose time had passed was due in the
    past and went out at once (at night, too); the clock itself leaves such a promise alone."""
    form = _wrap_up_that_died_before_scheduling(app, client, texting, publish_routing, make_user, monkeypatch)
    _age_wrap_ups(app, timedelta(hours=30))  # past the need's 24 hours

    fields = {"outcome": "de_escalated", "consent": "y", "csrf_token": csrf_token(client, "/console/me")}
    assert client.post(form, data=fields).status_code == 302

    contacts = _checkin_contacts(app)
    assert len(contacts) == 1
    assert all(due > utcnow() + timedelta(hours=1) for _id, _job, due in contacts)
