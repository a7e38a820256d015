"""A supervisor texted that callback case CB12 never reached its person can reach them: the
emergency unmask lists the callback for a day after it was given up, and the purge keeps its
number that long. Before, the alert named a case the console could not find, so the person who
asked for a call (thoughts of suicide, say) could not be called by anyone.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from crisisline.db import db
from crisisline.models import Call, ScheduledContact
from crisisline.settings import Settings
from tests.callbacks.test_callbacks import CALLER, ask_for_callback, callbacks, fake_now
from tests.conftest import settings_for
from tests.console.conftest import Account, audit_actions, csrf_token, make_user, sign_in, supervisor  # noqa: F401
from twilio_fake.phone import Phone
from workers.upkeep import purge_personal_data, tend_callbacks

pytestmark = pytest.mark.usefixtures("clean_redis")
REASON = "Callback for thoughts of suicide never made; calling them now"
OURS = {"Origin": "http://localhost"}  # as a browser sends a form from the console's own page


def a_callback_nobody_was_free_to_make(
    app: Flask, phone: Phone, rota: Callable[..., None], run_worker: Callable[..., None]
) -> int:
    """Given up at ``fake_now() + 121 min``; its "we tried" text and the supervisors' alert gone."""
    rota(on_call=())
    ask_for_callback(phone)  # English, thoughts of suicide, 9
    run_worker()
    with time_machine.travel(fake_now() + timedelta(minutes=121)), app.app_context():
        tend_callbacks()
        # A pending text keeps the number on its own: not what is tested here.
        db.session.execute(
            update(ScheduledContact)
            .where(ScheduledContact.kind.in_(("callback_missed", "callback_unreached")))
            .values(state="sent", finished_at=datetime.now(UTC))
        )
        db.session.commit()
    (callback,) = callbacks(app)
    assert callback.state == "gave_up"
    return callback.id


def test_a_supervisor_unmasks_a_callback_nobody_reached_by_its_case(
    app: Flask, phone: Phone, client: FlaskClient, supervisor: Account,  # noqa: F811
    rota: Callable[..., None], run_worker: Callable[..., None],
) -> None:  # fmt: skip
    callback_id = a_callback_nobody_was_free_to_make(app, phone, rota, run_worker)

    with time_machine.travel(fake_now() + timedelta(minutes=130)):
        sign_in(client, supervisor)
        listing = html.unescape(client.get("/console/board/unmask").get_data(as_text=True))
        assert f"callback CB{callback_id}" in listing
        assert CALLER not in listing  # never before a reason
        token = csrf_token(client, "/console/board/unmask")
        shown = client.post(
            f"/console/board/unmask/callback/{callback_id}", data={"reason": REASON, "csrf_token": token}, headers=OURS
        )
    assert shown.status_code == 200
    assert CALLER in shown.get_data(as_text=True)
    assert (supervisor.username, "unmask", f"callback:{callback_id}") in audit_actions(app)


def test_a_callback_nobody_reached_keeps_its_number_for_a_day_however_short_the_window_then_leaves_the_page(
    app: Flask, phone: Phone, client: FlaskClient, supervisor: Account,  # noqa: F811
    rota: Callable[..., None], run_worker: Callable[..., None], settings: Settings,
    make_app: Callable[[Settings], Flask],
) -> None:  # fmt: skip
    callback_id = a_callback_nobody_was_free_to_make(app, phone, rota, run_worker)
    given_up = fake_now() + timedelta(minutes=121)
    one_day = make_app(
        settings_for(settings.database_url, settings.redis_url, RETENTION_DAYS_CALLS="1", RETENTION_DAYS_TEXTS="1")
    )

    def sealed_number() -> str | None:
        with one_day.app_context():
            return db.session.scalars(select(Call.sealed_caller)).one()

    with one_day.app_context():  # the call is past a one-day window; its callback ended 23 h ago
        purge_personal_data((given_up + timedelta(hours=23)).isoformat())
    assert sealed_number() is not None
    with one_day.app_context():
        purge_personal_data((given_up + timedelta(days=1, minutes=5)).isoformat())
    assert sealed_number() is None

    with time_machine.travel(given_up + timedelta(days=1, minutes=5)):
        sign_in(client, supervisor)
        listing = html.unescape(client.get("/console/board/unmask").get_data(as_text=True))
    assert f"callback CB{callback_id}" not in listing
