"""The desk of a counselor whose phone blocks the line's texts (they texted STOP): "Take
contacts again" leaves them paused, and says why, until their START lifts the block; before,
it put them back and said "You are available" while every offer to them would fail."""

from __future__ import annotations

import html
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from console.models import COUNSELOR
from tests.conftest import TextingPhone
from tests.console.conftest import MakeUser, csrf_token, sign_in
from tests.rota import BEN, around_the_clock
from tests.sms.test_a_counselor_whose_phone_blocks_the_lines_texts import ben_blocks_the_line, bens_pause
from twilio_fake.rest_api import FakeTwilio


def test_the_desk_keeps_a_counselor_whose_phone_blocks_the_lines_texts_paused_until_their_start(
    app: Flask, client: FlaskClient, texting: TextingPhone, fake: FakeTwilio, make_user: MakeUser,
    publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz", "ben-carter")))
    sign_in(client, make_user(COUNSELOR, "ben", responder_id="ben-carter"))
    ben_blocks_the_line(fake, texting)

    def take_contacts_again() -> str:
        token = csrf_token(client, "/console/me")
        answer = client.post("/console/me/availability", data={"available": "1", "csrf_token": token})
        assert answer.status_code == 302
        return html.unescape(client.get("/console/me").get_data(as_text=True))

    refused = take_contacts_again()

    assert bens_pause(app) == (True, "sms_blocked")
    assert "You are still paused. Your phone is blocking the line's texts: text START to the line" in refused
    assert "You are available" not in refused

    fake.receive_keyword(BEN, "START")
    texting.send(BEN, "START")
    assert "Your phone takes the line's texts again" in html.unescape(client.get("/console/me").get_data(as_text=True))

    taken = take_contacts_again()

    assert bens_pause(app) == (False, None)
    assert "You are available: the line will offer you contacts." in taken
