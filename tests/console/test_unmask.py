"""Emergency unmask: a supervisor reveals a live caller's or texter's number only with a
reason; every unmask is audited (who, when, which contact) with the reason sealed; the number
is in that one response, never cached, never logged, never stored by the console."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.models import UNMASK_REASON_CONTEXT, AuditEntry
from crisisline.db import db
from crisisline.models import Conversation, Transfer
from crisisline.retention import ENDED_CONTACT_UNMASKABLE_FOR
from tests.conftest import TextingPhone
from tests.console.conftest import Account, audit_actions, csrf_token, sign_in
from tests.console.test_board_and_desk import MENTAL_HEALTH, caller, only_ana_on_call
from twilio_fake.phone import Phone
from twilio_fake.rest_api import FakeTwilio

CALLER = "+13125550201"
TEXTER = "+13125550177"
REASON = "Caller said they have taken pills and went silent"


def unmask(client: FlaskClient, path: str, reason: str | None) -> tuple[int, str]:
    data = {"csrf_token": csrf_token(client, "/console/board/unmask")}
    if reason is not None:
        data["reason"] = reason
    response = client.post(path, data=data)
    return response.status_code, response.get_data(as_text=True)


def test_a_supervisor_unmasks_a_waiting_caller_only_with_a_reason_and_it_is_audited(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, texting: TextingPhone,
    publish_routing: Callable[..., int], supervisor: Account, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    only_ana_on_call(publish_routing)
    caller(phone, CALLER, MENTAL_HEALTH)
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    sign_in(client, supervisor)
    with app.app_context():
        transfer_id = db.session.scalars(select(Transfer)).one().id
        conversation_id = db.session.scalars(select(Conversation)).one().id

    listing = client.get("/console/board/unmask").get_data(as_text=True)
    assert f"call {transfer_id}" in listing and f"text #{conversation_id}" in listing
    assert CALLER not in listing and CALLER[-7:] not in listing
    assert "Emergency unmask" in client.get("/console/board").get_data(as_text=True)
    before = audit_actions(app)

    # No reason, a blank one, or one padded to length (once a 500): refused, nothing revealed or audited.
    for reason in (None, "", "   ", "OD      ", "ok\n\n\n\n"):
        status, page = unmask(client, f"/console/board/unmask/voice/{transfer_id}", reason)
        assert status == 400 and CALLER not in page and CALLER[2:] not in page
    assert audit_actions(app) == before

    response = client.post(
        f"/console/board/unmask/voice/{transfer_id}",
        data={"reason": REASON, "csrf_token": csrf_token(client, "/console/board/unmask")},
    )
    assert response.status_code == 200 and CALLER in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    status, page = unmask(client, f"/console/board/unmask/text/{conversation_id}", "Texter wrote about a plan tonight")
    assert status == 200 and TEXTER in page

    assert audit_actions(app)[-2:] == [
        ("sue-supervisor", "unmask", f"call:{transfer_id}"),
        ("sue-supervisor", "unmask", f"text:{conversation_id}"),
    ]
    with app.app_context():
        entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "unmask").order_by(AuditEntry.id))
        first = next(iter(entries))
        stored = json.dumps(first.detail) + (first.target or "") + (first.sealed_detail or "")
        assert first.detail["shown"] is True
        assert CALLER not in stored and CALLER[2:] not in stored and "pills" not in stored  # reason sealed
        assert app.extensions["crisisline.vault"].open(first.sealed_detail, context=UNMASK_REASON_CONTEXT) == REASON
    # Supervisors read the reason on the audit page; the number is nowhere there.
    audit = client.get("/console/audit").get_data(as_text=True)
    assert REASON in audit and CALLER not in audit and TEXTER not in audit
    # Never logged, in any form.
    assert CALLER not in caplog.text and CALLER[2:] not in caplog.text and "pills" not in caplog.text
    assert TEXTER not in caplog.text


def test_only_a_live_contact_or_one_that_just_ended_can_be_unmasked(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int], supervisor: Account
) -> None:
    """Once past ``ENDED_CONTACT_UNMASKABLE_FOR`` after it ended (see
    test_unmasking_a_contact_that_just_ended.py for the minutes before)."""
    only_ana_on_call(publish_routing)
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    texting.send(TEXTER, "STOP")  # their thread closes
    with app.app_context():
        conversation = db.session.scalars(select(Conversation)).one()
        assert conversation.state == "closed"

    with time_machine.travel(datetime.now(UTC) + ENDED_CONTACT_UNMASKABLE_FOR + timedelta(seconds=1), tick=False):
        sign_in(client, supervisor)
        status, page = unmask(client, f"/console/board/unmask/text/{conversation.id}", REASON)
    assert status == 404 and TEXTER not in page
    assert not [entry for entry in audit_actions(app) if entry[1] == "unmask"]
