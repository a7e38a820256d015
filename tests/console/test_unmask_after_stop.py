"""The emergency unmask page lists someone who wrote after texting STOP (the line cannot text
them back), one row per person, until they text START: a supervisor can call them."""

from __future__ import annotations

import time_machine
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import TextingPhone
from tests.console.conftest import Account, audit_actions, csrf_token, sign_in
from tests.sms.test_texts_after_stop import TEXTER, WORDS, last_inbound_id


def test_a_supervisor_can_unmask_someone_who_wrote_after_stop_until_they_text_start(
    app: Flask, client: FlaskClient, supervisor: Account, texting: TextingPhone,
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    texting.send(TEXTER, "STOP")
    texting.send(TEXTER, "hello?")
    texting.send(TEXTER, WORDS)
    message_id = last_inbound_id(app)
    sign_in(client, supervisor)

    listed = client.get("/console/board/unmask").get_data(as_text=True)
    token = csrf_token(client, "/console/board/unmask")
    shown = client.post(
        f"/console/board/unmask/after_stop/{message_id}", data={"csrf_token": token, "reason": "said they would end it"}
    )

    assert listed.count("wrote after texting STOP") == 1  # one row per person, their latest text
    assert f"text T{message_id}" in listed and "5550177" not in listed
    assert shown.status_code == 200 and TEXTER in shown.get_data(as_text=True)
    assert ("sue-supervisor", "unmask", f"message:{message_id}") in audit_actions(app)

    texting.send(TEXTER, "START")
    assert "wrote after texting STOP" not in client.get("/console/board/unmask").get_data(as_text=True)
