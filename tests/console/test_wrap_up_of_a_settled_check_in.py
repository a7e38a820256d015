"""A call's wrap-up that records the person's consent to a check-in whose question was already
settled (answered or declined before, so nothing new is scheduled) tells the counselor so, not
that the line has no number for them."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.models import COUNSELOR, WrapUp
from crisisline.db import db
from crisisline.models import CheckIn, Transfer
from tests.console.conftest import MakeUser, sign_in
from tests.console.test_board_and_desk import MENTAL_HEALTH, caller, only_ana_on_call
from tests.console.test_inbox_and_wrap_up import CALLER, post
from tests.rota import ANA, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio


def test_consent_in_a_calls_wrap_up_to_a_check_in_already_settled_is_not_called_no_number(
    app: Flask, client: FlaskClient, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ana"))
    call = caller(phone, CALLER, MENTAL_HEALTH)
    (leg,) = [leg for leg in legs(fake) if leg.to == ANA]
    counselor = phone.answer(leg.sid, [Keys("1")])
    phone.resume(call, max_hold_turns=0)
    phone.hang_up(call)
    phone.resume(counselor)
    with app.app_context():
        transfer = db.session.scalars(select(Transfer)).one()
        transfer_id, call_id = transfer.id, transfer.call_id
        db.session.add(CheckIn(dedupe_key=f"call:{call_id}", origin="call", call_id=call_id, language="en",
                               state="declined"))  # fmt: skip
        db.session.commit()

    saved = post(client, f"/console/me/wrap-up/voice/{transfer_id}", outcome="referred", consent="y")

    assert saved.status_code == 302
    desk = client.get("/console/me").get_data(as_text=True)
    assert "No check-in could be scheduled (they declined or it was already settled)." in desk
    assert "the line has no number to text them at" not in desk
    with app.app_context():
        assert db.session.scalars(select(WrapUp)).one().followup == "not_scheduled"
