"""A referral Twilio never said it took (its answer came after the line's REST timeout) is not
reported "already sent": the counselor is told it may not have gone out, to give the numbers
by voice, and it is never sent twice. One Twilio is still answering (within the timeout) is
reported as being sent, not as maybe not sent."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from console.models import COUNSELOR
from tests.conftest import TextingPhone
from tests.console.conftest import MakeUser, csrf_token, sign_in
from tests.console.test_delivery_in_the_thread import next_text_times_out
from tests.console.test_desk_actions import flashed, post, rota
from tests.console.test_inbox_and_wrap_up import offered_tag
from tests.rota import ANA
from transfer import dispatch
from twilio_fake.rest_api import FakeTwilio

TEXTER = "+13125550177"
MAY_NOT_HAVE_BEEN_SENT = (
    "The referral may not have been sent: Twilio could not be reached. Give them the numbers by voice."
)


def test_a_referral_twilio_never_confirmed_is_reported_as_maybe_not_sent_on_every_try(
    app: Flask, client: FlaskClient, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    rota(publish_routing, unit_on_shift=False)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    send = f"/console/me/referral/text/{tag}/send"
    next_text_times_out(app, fake)

    post(client, app, send, service="county-mobile-crisis")
    first = flashed(client)
    post(client, app, send, service="county-mobile-crisis")
    again = flashed(client)

    assert first == again == MAY_NOT_HAVE_BEEN_SENT
    referrals_sent = [m for m in fake.messages.values() if "County Mobile Crisis Team" in m.body]
    assert len(referrals_sent) <= 1  # Twilio took the first request late; the second sent nothing


def test_a_referral_twilio_has_not_answered_yet_is_reported_as_being_sent_not_maybe_not_sent(
    app: Flask, client: FlaskClient, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    rota(publish_routing, unit_on_shift=False)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    send = f"/console/me/referral/text/{tag}/send"
    # Twilio answers after the request stopped waiting for the send, before the send times out.
    with app.app_context():
        dispatch.rest_client().client.http_client.timeout = 8.0  # type: ignore[union-attr]
    fake.inject_fault("POST", r"/Messages\.json$", status=200, delay=4.0, times=1)
    fields = {"service": "county-mobile-crisis", "csrf_token": csrf_token(client, "/console/me")}

    client.post(send, data=fields)  # answered before Twilio is: the send carries on
    first = flashed(client)
    client.post(send, data=fields)  # the counselor clicks again while Twilio is still answering
    again = flashed(client)
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    post(client, app, send, service="county-mobile-crisis")
    after = flashed(client)

    being_sent = "Sending the referral to the text #{tag}: County Mobile Crisis Team."
    assert first == again == being_sent.format(tag=tag)
    assert after == "Already sent: this referral went to them before (nothing was sent twice)."
    referrals_sent = [m for m in fake.messages.values() if "County Mobile Crisis Team" in m.body]
    assert len(referrals_sent) == 1
