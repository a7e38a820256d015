"""Deleting call and message records in the fake Twilio, with Twilio's semantics: 204, then gone;
404/20404 for a record unknown or deleted before; 20009 for a call not over or a text not final.
Over real HTTP, through twilio-python and through the line's own ``TwilioRest``."""

from __future__ import annotations

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from crisisline.telephony import TwilioRest, make_rest_client
from twilio_fake.server import FakeTwilioServer
from twilio_fake.signing import new_sid

CALLER = "+14155550100"
HOTLINE = "+14155550199"
TWIML = "<Response><Say>Hi</Say></Response>"


def delete(server: FakeTwilioServer, resource: str, sid: str) -> requests.Response:
    return requests.delete(
        f"{server.base_url}/2010-04-01/Accounts/{server.account_sid}/{resource}/{sid}.json",
        auth=(server.account_sid, server.auth_token),
        timeout=5,
    )


@pytest.fixture
def rest(server: FakeTwilioServer) -> TwilioRest:
    return TwilioRest(make_rest_client(server.account_sid, server.auth_token, server.base_url))


def test_a_completed_call_is_deleted_with_204_and_is_then_unknown(server: FakeTwilioServer, client: Client) -> None:
    call = client.calls.create(to=CALLER, from_=HOTLINE, twiml=TWIML)
    server.fake.advance_call(call.sid, "in-progress")
    server.fake.advance_call(call.sid, "completed")

    response = delete(server, "Calls", call.sid)

    assert (response.status_code, response.text) == (204, "")
    assert call.sid not in server.fake.calls
    assert server.fake.delete_log == [(call.sid, 204)]
    with pytest.raises(TwilioRestException) as fetched:
        client.calls(call.sid).fetch()
    assert (fetched.value.status, fetched.value.code) == (404, 20404)


def test_deleting_an_unknown_call_or_message_answers_twilios_404_error(server: FakeTwilioServer) -> None:
    for resource, sid in (("Calls", new_sid("CA")), ("Messages", new_sid("SM"))):
        response = delete(server, resource, sid)

        assert response.status_code == 404
        body = response.json()
        assert (body["code"], body["status"]) == (20404, 404)
        assert body["more_info"] == "https://www.twilio.com/docs/errors/20404"
    assert [status for _, status in server.fake.delete_log] == [404, 404]


@pytest.mark.parametrize("status", ["queued", "ringing", "in-progress"])
def test_a_call_not_over_yet_is_not_deleted(server: FakeTwilioServer, client: Client, status: str) -> None:
    call = client.calls.create(to=CALLER, from_=HOTLINE, twiml=TWIML)
    if status != "queued":
        server.fake.advance_call(call.sid, status)

    response = delete(server, "Calls", call.sid)

    assert response.status_code == 400
    assert response.json()["code"] == 20009
    assert call.sid in server.fake.calls


def test_a_delivered_text_is_deleted_with_its_body_and_numbers(server: FakeTwilioServer, client: Client) -> None:
    message = client.messages.create(to=CALLER, from_=HOTLINE, body="You are not alone.")
    server.fake.deliver_message(message.sid)

    assert client.messages(message.sid).delete() is True

    assert message.sid not in server.fake.messages
    listed = client.messages.list(to=CALLER)
    assert listed == []


def test_a_text_still_on_its_way_is_not_deleted(server: FakeTwilioServer, client: Client) -> None:
    message = client.messages.create(to=CALLER, from_=HOTLINE, body="queued still")

    with pytest.raises(TwilioRestException) as refused:
        client.messages(message.sid).delete()

    assert (refused.value.status, refused.value.code) == (400, 20009)
    assert server.fake.messages[message.sid].body == "queued still"


def test_a_text_a_phone_sent_is_kept_as_received_and_can_be_deleted(server: FakeTwilioServer, client: Client) -> None:
    sid = new_sid("SM")
    recorded = requests.post(
        f"{server.base_url}/_fake/messages/inbound",
        data={"MessageSid": sid, "From": CALLER, "To": HOTLINE, "Body": "I need to talk"},
        timeout=5,
    )
    assert recorded.status_code == 201

    fetched = client.messages(sid).fetch()
    assert (fetched.direction, fetched.status, fetched.body) == ("inbound", "received", "I need to talk")
    assert delete(server, "Messages", sid).status_code == 204
    assert sid not in server.fake.messages


def test_the_lines_client_deletes_and_takes_a_404_as_gone_already(server: FakeTwilioServer, rest: TwilioRest) -> None:
    sid = new_sid("SM")
    server.fake.record_inbound_message(sid, CALLER, HOTLINE, "words")
    call = server.fake.create_call(CALLER, HOTLINE, twiml=TWIML)
    server.fake.advance_call(call.sid, "canceled")

    assert rest.messages(sid).delete() is True
    assert rest.messages(sid).delete() is False
    assert rest.calls(call.sid).delete() is True
    assert rest.calls(call.sid).delete() is False
    assert server.fake.delete_log == [(sid, 204), (sid, 404), (call.sid, 204), (call.sid, 404)]


def test_the_lines_client_raises_twilios_refusal_of_a_call_in_progress(
    server: FakeTwilioServer, rest: TwilioRest
) -> None:
    call = server.fake.create_call(CALLER, HOTLINE, twiml=TWIML)
    server.fake.advance_call(call.sid, "in-progress")

    with pytest.raises(TwilioRestException) as refused:
        rest.calls(call.sid).delete()

    assert (refused.value.status, refused.value.code) == (400, 20009)
