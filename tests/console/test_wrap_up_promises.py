"""Wrap-ups keep what the counselor recorded: a check-in the person agreed to is scheduled even
when the request that stored the wrap-up failed part way, and no contact that still needs a
wrap-up is hidden behind the counselor's newer, wrapped-up ones."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.desk import wrapups
from console.models import COUNSELOR, WrapUp
from crisisline.db import db
from crisisline.models import CheckIn, Conversation, Texter, utcnow
from tests.conftest import TextingPhone
from tests.console.conftest import MakeUser, csrf_token, sign_in
from tests.console.test_board_and_desk import only_ana_on_call
from tests.console.test_inbox_and_wrap_up import offered_tag
from tests.rota import ANA

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
