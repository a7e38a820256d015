"""The fake Twilio REST API, exercised over real HTTP through twilio-python (no mocks)."""

from __future__ import annotations

import time

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from crisisline.telephony import make_rest_client
from tests.fake.conftest import Received, WebhookReceiver
from twilio_fake.rest_api import count_segments
from twilio_fake.server import FakeTwilioServer

CALLER = "+14155550100"
HOTLINE = "+14155550199"
COUNSELOR = "+16175551212"
VOICE_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hi</Say></Response>'


def _status_callbacks(receiver: WebhookReceiver, path: str = "/status") -> list[dict[str, str]]:
    return [r.form for r in receiver.at(path)]


def _events(receiver: WebhookReceiver, path: str = "/conf") -> list[str]:
    return [form["StatusCallbackEvent"] for form in _status_callbacks(receiver, path)]


# ---- messages ---------------------------------------------------------------------------------


def test_message_create_returns_201_with_twilio_message_fields(server: FakeTwilioServer) -> None:
    response = requests.post(
        f"{server.base_url}/2010-04-01/Accounts/{server.account_sid}/Messages.json",
        data={"To": CALLER, "From": HOTLINE, "Body": "You are not alone."},
        auth=(server.account_sid, server.auth_token),
        timeout=5,
    )

    assert response.status_code == 201
    body = response.json()
    assert body["sid"].startswith("SM") and len(body["sid"]) == 34
    assert body["status"] == "queued"
    assert body["direction"] == "outbound-api"
    assert body["num_segments"] == "1"
    assert body["num_media"] == "0"
    assert body["from"] == HOTLINE and body["to"] == CALLER
    assert body["date_created"].endswith("+0000")
    assert body["uri"] == f"/2010-04-01/Accounts/{server.account_sid}/Messages/{body['sid']}.json"
    assert server.fake.messages[body["sid"]].body == "You are not alone."


def test_message_fetch_through_client_returns_created_message(client: Client) -> None:
    created = client.messages.create(to=CALLER, from_=HOTLINE, body="check-in")

    fetched = client.messages(created.sid).fetch()

    assert fetched.sid == created.sid
    assert fetched.body == "check-in"
    assert fetched.status == "queued"


@pytest.mark.parametrize("bad_number", ["+1234", "+15555550123", "not-a-number"])
def test_invalid_to_number_raises_21211(client: Client, bad_number: str) -> None:
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=bad_number, from_=HOTLINE, body="hello")

    assert caught.value.status == 400
    assert caught.value.code == 21211


def test_send_to_opted_out_number_raises_21610_until_opt_in(server: FakeTwilioServer, client: Client) -> None:
    server.fake.opt_out(CALLER)

    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=CALLER, from_=HOTLINE, body="hello")
    assert caught.value.code == 21610
    assert caught.value.status == 400

    server.fake.opt_in(CALLER)
    assert client.messages.create(to=CALLER, from_=HOTLINE, body="hello").status == "queued"


def test_body_over_1600_chars_raises_21617(client: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=CALLER, from_=HOTLINE, body="x" * 1601)

    assert caught.value.code == 21617


def test_wrong_auth_token_gets_401_with_twilio_error_json(server: FakeTwilioServer) -> None:
    response = requests.get(
        f"{server.base_url}/2010-04-01/Accounts/{server.account_sid}/Messages.json",
        auth=(server.account_sid, "wrong-token"),
        timeout=5,
    )

    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    bad_client = make_rest_client(server.account_sid, "wrong-token", server.base_url)
    with pytest.raises(TwilioRestException) as caught:
        bad_client.messages.create(to=CALLER, from_=HOTLINE, body="hi")
    assert caught.value.status == 401


def test_path_account_sid_must_match_credentials(server: FakeTwilioServer) -> None:
    response = requests.get(
        f"{server.base_url}/2010-04-01/Accounts/AC{'0' * 32}/Messages.json",
        auth=(server.account_sid, server.auth_token),
        timeout=5,
    )

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * 160, 1),  # GSM-7 fits 160 in one segment
        ("a" * 161, 2),  # then 153 per segment
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("Mañana te llamamos" + "a" * 142, 1),  # ñ is in the GSM-7 alphabet: still 160
        ("€" * 80, 1),  # extension chars cost two septets each
        ("€" * 81, 2),
        ("¿Cómo estás?" + "a" * 58, 1),  # ó/á force UCS-2: 70 per segment
        ("¿Cómo estás?" + "a" * 59, 2),  # 71 chars: then 67 per segment
        ("😀" * 35, 1),  # emoji are two UTF-16 units each
        ("😀" * 36, 2),
    ],
)
def test_count_segments_uses_gsm7_or_ucs2_limits(body: str, segments: int) -> None:
    assert count_segments(body) == segments


def test_message_with_accents_reports_ucs2_segments(client: Client) -> None:
    message = client.messages.create(to=CALLER, from_=HOTLINE, body="Está bien. " * 8)

    assert message.num_segments == "2"  # 88 UCS-2 chars > 70


def test_message_status_callbacks_are_signed_sent_then_delivered(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    message = client.messages.create(to=CALLER, from_=HOTLINE, body="hi", status_callback=receiver.url("/sms-status"))

    server.fake.deliver_message(message.sid)

    received = receiver.at("/sms-status")
    assert [r.form["MessageStatus"] for r in received] == ["sent", "delivered"]
    for request in received:
        assert request.signature_valid(server.auth_token)
        assert request.form["MessageSid"] == request.form["SmsSid"] == message.sid
        assert request.form["SmsStatus"] == request.form["MessageStatus"]
        assert request.form["AccountSid"] == server.account_sid
        assert request.form["From"] == HOTLINE and request.form["To"] == CALLER
        assert request.form["ApiVersion"] == "2010-04-01"
        assert "ErrorCode" not in request.form
    assert len(received[1].form["RawDlrDoneDate"]) == 10
    assert client.messages(message.sid).fetch().status == "delivered"


def test_undelivered_message_callback_carries_error_code(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    message = client.messages.create(to=CALLER, from_=HOTLINE, body="hi", status_callback=receiver.url("/sms-status"))

    server.fake.deliver_message(message.sid, final="undelivered", error_code=30005)

    final = receiver.at("/sms-status")[-1].form
    assert final["MessageStatus"] == "undelivered"
    assert final["ErrorCode"] == "30005"
    assert client.messages(message.sid).fetch().error_code == 30005


def test_failed_message_skips_sent_callback(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    message = client.messages.create(to=CALLER, from_=HOTLINE, body="hi", status_callback=receiver.url("/sms-status"))

    server.fake.deliver_message(message.sid, final="failed")

    assert [r.form["MessageStatus"] for r in receiver.at("/sms-status")] == ["failed"]


def test_auto_deliver_sends_callbacks_in_background(receiver: WebhookReceiver) -> None:
    with FakeTwilioServer(auto_deliver=True, auto_deliver_delay=0.01) as server:
        message = server.client().messages.create(
            to=CALLER, from_=HOTLINE, body="hi", status_callback=receiver.url("/sms-status")
        )
        deadline = time.monotonic() + 5
        while len(receiver.at("/sms-status")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)

        assert [r.form["MessageStatus"] for r in receiver.at("/sms-status")] == [
            "sent",
            "delivered",
        ]
        assert server.fake.messages[message.sid].status == "delivered"


def test_message_list_has_paging_meta_and_filters_by_to(server: FakeTwilioServer, client: Client) -> None:
    for index in range(3):
        client.messages.create(to=CALLER, from_=HOTLINE, body=f"m{index}")
    client.messages.create(to=COUNSELOR, from_=HOTLINE, body="other")
    list_uri = f"{server.base_url}/2010-04-01/Accounts/{server.account_sid}/Messages.json"
    auth = (server.account_sid, server.auth_token)

    page = requests.get(list_uri, params={"To": CALLER, "PageSize": "2"}, auth=auth, timeout=5)

    body = page.json()
    assert set(body) == {
        "messages",
        "page",
        "page_size",
        "uri",
        "first_page_uri",
        "next_page_uri",
        "previous_page_uri",
        "start",
        "end",
    }
    assert [m["body"] for m in body["messages"]] == ["m2", "m1"]  # newest first
    assert (body["page"], body["page_size"], body["start"], body["end"]) == (0, 2, 0, 1)
    assert body["previous_page_uri"] is None
    assert body["next_page_uri"].startswith(f"/2010-04-01/Accounts/{server.account_sid}/Messages.json?")
    # twilio-python follows next_page_uri to the end, and the filter holds across pages.
    everything = client.messages.list(to=CALLER, page_size=2)
    assert [m.body for m in everything] == ["m2", "m1", "m0"]
    last = requests.get(list_uri, params={"To": CALLER, "PageSize": "2", "Page": "1"}, auth=auth, timeout=5)
    assert last.json()["next_page_uri"] is None


# ---- calls ------------------------------------------------------------------------------------


def test_call_progress_sends_only_subscribed_events_in_sequence_and_fetches_url(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    receiver.reply("/voice", VOICE_TWIML)
    call = client.calls.create(
        to=COUNSELOR,
        from_=HOTLINE,
        url=receiver.url("/voice"),
        status_callback=receiver.url("/status"),
        status_callback_event=["ringing", "answered", "completed"],
    )
    assert call.status == "queued"
    assert call.direction == "outbound-api"

    server.fake.advance_call(call.sid, "ringing")
    twiml = server.fake.advance_call(call.sid, "in-progress")
    server.fake.advance_call(call.sid, "completed", duration=42)

    callbacks = receiver.at("/status")
    assert [r.form["CallStatus"] for r in callbacks] == ["ringing", "in-progress", "completed"]
    assert [r.form["SequenceNumber"] for r in callbacks] == ["0", "1", "2"]
    for callback in callbacks:
        assert callback.signature_valid(server.auth_token)
        assert callback.form["CallbackSource"] == "call-progress-events"
        assert callback.form["Direction"] == "outbound-api"
        assert callback.form["CallSid"] == call.sid
        assert callback.form["Timestamp"].endswith("+0000")
    assert "CallDuration" not in callbacks[0].form
    assert callbacks[2].form["CallDuration"] == "42"
    assert callbacks[2].form["SipResponseCode"] == "200"
    assert callbacks[2].form["Duration"] == "1"
    # The answered call fetched its Url, signed, and the TwiML came back to the test.
    (fetch,) = receiver.at("/voice")
    assert fetch.method == "POST"
    assert fetch.form["CallStatus"] == "in-progress"
    assert fetch.form["To"] == COUNSELOR
    assert fetch.signature_valid(server.auth_token)
    assert twiml == VOICE_TWIML
    fetched = client.calls(call.sid).fetch()
    assert fetched.status == "completed"
    assert fetched.duration == "42"


def test_call_without_event_list_only_gets_completed_callback(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    call = client.calls.create(to=COUNSELOR, from_=HOTLINE, twiml=VOICE_TWIML, status_callback=receiver.url("/status"))

    server.fake.advance_call(call.sid, "ringing")
    server.fake.advance_call(call.sid, "busy")

    (callback,) = receiver.at("/status")
    assert callback.form["CallStatus"] == "busy"
    assert callback.form["SequenceNumber"] == "0"
    assert callback.form["CallDuration"] == "0"
    assert callback.form["SipResponseCode"] == "486"
    assert "Duration" not in callback.form  # billed minutes only on completed


def test_answering_inline_twiml_call_returns_its_twiml(server: FakeTwilioServer, client: Client) -> None:
    call = client.calls.create(to=COUNSELOR, from_=HOTLINE, twiml=VOICE_TWIML)

    assert server.fake.advance_call(call.sid, "in-progress") == VOICE_TWIML


def test_answering_fills_in_skipped_initiated_and_ringing_events(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    call = client.calls.create(
        to=COUNSELOR,
        from_=HOTLINE,
        twiml=VOICE_TWIML,
        status_callback=receiver.url("/status"),
        status_callback_event=["initiated", "ringing", "answered"],
    )

    server.fake.advance_call(call.sid, "in-progress")

    assert [form["CallStatus"] for form in _status_callbacks(receiver)] == [
        "initiated",
        "ringing",
        "in-progress",
    ]


def test_terminal_call_ignores_further_advances(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    call = client.calls.create(to=COUNSELOR, from_=HOTLINE, twiml=VOICE_TWIML, status_callback=receiver.url("/status"))
    server.fake.advance_call(call.sid, "no-answer")

    assert server.fake.advance_call(call.sid, "in-progress") is None
    assert server.fake.advance_call(call.sid, "completed") is None
    assert [form["CallStatus"] for form in _status_callbacks(receiver)] == ["no-answer"]
    assert client.calls(call.sid).fetch().status == "no-answer"


def test_cancel_while_ringing_sends_canceled_callback(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    call = client.calls.create(to=COUNSELOR, from_=HOTLINE, twiml=VOICE_TWIML, status_callback=receiver.url("/status"))
    server.fake.advance_call(call.sid, "ringing")

    updated = client.calls(call.sid).update(status="canceled")

    assert updated.status == "canceled"
    (callback,) = receiver.at("/status")
    assert callback.form["CallStatus"] == "canceled"
    assert callback.signature_valid(server.auth_token)


def test_cancel_while_queued_sends_no_callback(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    call = client.calls.create(to=COUNSELOR, from_=HOTLINE, twiml=VOICE_TWIML, status_callback=receiver.url("/status"))

    assert client.calls(call.sid).update(status="canceled").status == "canceled"
    assert receiver.at("/status") == []


def test_cancel_does_not_touch_answered_call_but_completed_hangs_it_up(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    call = client.calls.create(to=COUNSELOR, from_=HOTLINE, twiml=VOICE_TWIML, status_callback=receiver.url("/status"))
    server.fake.advance_call(call.sid, "in-progress")

    assert client.calls(call.sid).update(status="canceled").status == "in-progress"
    assert client.calls(call.sid).update(status="completed").status == "completed"
    assert [form["CallStatus"] for form in _status_callbacks(receiver)] == ["completed"]


def test_call_without_url_or_twiml_is_rejected(client: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(to=COUNSELOR, from_=HOTLINE)

    assert caught.value.code == 21205


def test_call_to_invalid_number_raises_21211(client: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(to="+1234", from_=HOTLINE, twiml=VOICE_TWIML)

    assert caught.value.code == 21211


def test_unknown_call_sid_gives_404_code_20404(client: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        client.calls("CA" + "0" * 32).fetch()

    assert caught.value.status == 404
    assert caught.value.code == 20404


def test_redirect_of_live_call_fetches_new_url_and_records_twiml(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    receiver.reply("/next", VOICE_TWIML)
    call = client.calls.create(to=COUNSELOR, from_=HOTLINE, twiml="<Response><Pause/></Response>")
    server.fake.advance_call(call.sid, "in-progress")

    client.calls(call.sid).update(url=receiver.url("/next"))

    (fetch,) = receiver.at("/next")
    assert fetch.signature_valid(server.auth_token)
    assert fetch.form["CallStatus"] == "in-progress"
    (redirect,) = server.fake.get_call(call.sid).redirects
    assert (redirect.url, redirect.twiml, redirect.status_code) == (
        receiver.url("/next"),
        VOICE_TWIML,
        200,
    )


# ---- conferences and participants ------------------------------------------------------------


def _caller_in_room(server: FakeTwilioServer, receiver: WebhookReceiver, room: str) -> str:
    """An inbound caller joins ``room`` through TwiML, fixing its status callback."""
    caller_sid = "CA" + "1" * 32
    server.fake.record_inbound_call(caller_sid, CALLER, HOTLINE)
    server.fake.advance_call(caller_sid, "in-progress")
    server.fake.join_conference(
        room,
        caller_sid,
        start_on_enter=False,
        end_on_exit=True,
        label="caller",
        status_callback=receiver.url("/conf"),
        status_callback_event="start end join leave mute hold modify",
    )
    return caller_sid


def test_participant_create_dials_leg_that_joins_when_answered(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    caller_sid = _caller_in_room(server, receiver, "room-1")
    assert _events(receiver) == ["participant-join"]  # one participant: not started yet

    participant = client.conferences("room-1").participants.create(
        from_=HOTLINE,
        to=COUNSELOR,
        label="counselor",
        status_callback=receiver.url("/leg"),
        status_callback_event=["answered", "completed"],
    )
    assert participant.status == "queued"
    conference = server.fake.find_conference("room-1")
    assert conference is not None and participant.conference_sid == conference.sid

    server.fake.advance_call(participant.call_sid, "ringing")
    assert client.conferences(conference.sid).participants("counselor").fetch().status == "ringing"
    server.fake.advance_call(participant.call_sid, "in-progress")

    assert _events(receiver) == ["participant-join", "participant-join", "conference-start"]
    forms = _status_callbacks(receiver, "/conf")
    assert [form["SequenceNumber"] for form in forms] == ["0", "1", "2"]
    join = forms[1]
    assert join["CallSid"] == participant.call_sid
    assert join["ParticipantLabel"] == "counselor"
    assert (join["Muted"], join["Hold"], join["Coaching"]) == ("false", "false", "false")
    assert (join["StartConferenceOnEnter"], join["EndConferenceOnExit"]) == ("true", "false")
    assert join["ConferenceSid"] == conference.sid and join["FriendlyName"] == "room-1"
    assert forms[0]["CallSid"] == caller_sid
    assert all(r.signature_valid(server.auth_token) for r in receiver.at("/conf"))
    assert [f["CallStatus"] for f in _status_callbacks(receiver, "/leg")] == ["in-progress"]
    assert client.conferences(conference.sid).fetch().status == "in-progress"
    listed = client.conferences(conference.sid).participants.list()
    assert {p.call_sid for p in listed} == {caller_sid, participant.call_sid}
    assert {p.status for p in listed} == {"connected"}


def test_conference_start_fires_once_only(server: FakeTwilioServer, client: Client, receiver: WebhookReceiver) -> None:
    _caller_in_room(server, receiver, "room-2")
    for _ in range(2):
        leg = client.conferences("room-2").participants.create(from_=HOTLINE, to=COUNSELOR)
        server.fake.advance_call(leg.call_sid, "in-progress")

    assert _events(receiver).count("conference-start") == 1


def test_first_participant_sets_conference_callback(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    _caller_in_room(server, receiver, "room-3")
    leg = client.conferences("room-3").participants.create(
        from_=HOTLINE,
        to=COUNSELOR,
        conference_status_callback=receiver.url("/ignored"),
        conference_status_callback_event=["join"],
    )

    server.fake.advance_call(leg.call_sid, "in-progress")

    assert receiver.at("/ignored") == []
    assert "conference-start" in _events(receiver)


def test_participant_hold_and_mute_updates_fire_events(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    _caller_in_room(server, receiver, "room-4")
    conference = server.fake.find_conference("room-4")
    assert conference is not None

    updated = (
        client.conferences(conference.sid)
        .participants("caller")
        .update(hold=True, hold_url="https://example.org/hold.xml", muted=True)
    )
    client.conferences(conference.sid).participants("caller").update(hold=False)
    client.conferences(conference.sid).participants("caller").update(end_conference_on_exit=False)

    assert updated.hold is True and updated.muted is True
    assert _events(receiver)[1:] == [
        "participant-mute",
        "participant-hold",
        "participant-unhold",
        "participant-modify",
    ]
    hold_event = _status_callbacks(receiver, "/conf")[2]
    assert hold_event["Hold"] == "true" and hold_event["Muted"] == "true"


def test_participant_delete_kicks_it_and_hangs_up_its_leg(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    _caller_in_room(server, receiver, "room-5")
    leg = client.conferences("room-5").participants.create(
        from_=HOTLINE, to=COUNSELOR, status_callback=receiver.url("/leg")
    )
    server.fake.advance_call(leg.call_sid, "in-progress")
    conference_sid = leg.conference_sid

    assert client.conferences(conference_sid).participants(leg.call_sid).delete() is True

    leave = _status_callbacks(receiver, "/conf")[-1]
    assert leave["StatusCallbackEvent"] == "participant-leave"
    assert leave["CallSid"] == leg.call_sid
    assert leave["ReasonParticipantLeft"] == "participant_updated_via_api"
    assert [f["CallStatus"] for f in _status_callbacks(receiver, "/leg")] == ["completed"]
    remaining = client.conferences(conference_sid).participants.list()
    assert [p.call_sid for p in remaining] == ["CA" + "1" * 32]
    with pytest.raises(TwilioRestException) as caught:
        client.conferences(conference_sid).participants(leg.call_sid).fetch()
    assert caught.value.code == 20404


def test_end_conference_on_exit_ends_room_and_removes_others(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    caller_sid = _caller_in_room(server, receiver, "room-6")
    leg = client.conferences("room-6").participants.create(
        from_=HOTLINE, to=COUNSELOR, label="counselor", status_callback=receiver.url("/leg")
    )
    server.fake.advance_call(leg.call_sid, "in-progress")

    server.fake.advance_call(caller_sid, "completed")  # the caller (endConferenceOnExit) hangs up

    events = _events(receiver)
    assert events[-3:] == ["participant-leave", "participant-leave", "conference-end"]
    forms = _status_callbacks(receiver, "/conf")
    assert forms[-3]["CallSid"] == caller_sid
    assert forms[-3]["ReasonParticipantLeft"] == "participant_hung_up"
    assert forms[-2]["CallSid"] == leg.call_sid
    end = forms[-1]
    assert end["ReasonConferenceEnded"] == "participant-with-end-conference-on-exit-left"
    assert end["CallSidEndingConference"] == caller_sid
    assert end["ParticipantLabelEndingConference"] == "caller"
    sequence = [int(form["SequenceNumber"]) for form in forms]
    assert sequence == sorted(sequence)
    conference = client.conferences(leg.conference_sid).fetch()
    assert conference.status == "completed"
    assert conference.reason_conference_ended == "participant-with-end-conference-on-exit-left"
    assert client.conferences(leg.conference_sid).participants.list() == []
    assert server.fake.get_call(leg.call_sid).status == "completed"


def test_last_participant_leaving_ends_conference(server: FakeTwilioServer, receiver: WebhookReceiver) -> None:
    call_sid = "CA" + "2" * 32
    server.fake.record_inbound_call(call_sid, CALLER, HOTLINE)
    server.fake.join_conference("room-7", call_sid, status_callback=receiver.url("/conf"), status_callback_event="end")

    conference = server.fake.leave_conference("room-7", call_sid)

    assert conference.status == "completed"
    (end,) = _status_callbacks(receiver, "/conf")
    assert end["StatusCallbackEvent"] == "conference-end"
    assert end["ReasonConferenceEnded"] == "last-participant-left"


def test_participant_leg_that_is_busy_reports_failed_add(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    _caller_in_room(server, receiver, "room-8")
    leg = client.conferences("room-8").participants.create(from_=HOTLINE, to=COUNSELOR)

    server.fake.advance_call(leg.call_sid, "busy")

    leave = _status_callbacks(receiver, "/conf")[-1]
    assert leave["StatusCallbackEvent"] == "participant-leave"
    assert leave["ParticipantCallStatus"] == "busy"
    assert leave["ReasonParticipantLeft"] == "participant_add_failed"
    assert server.fake.find_conference("room-8") is not None  # the caller is still there


def test_conference_update_completed_ends_it_via_api(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    _caller_in_room(server, receiver, "room-9")
    conference = server.fake.find_conference("room-9")
    assert conference is not None

    updated = client.conferences(conference.sid).update(status="completed")

    assert updated.status == "completed"
    end = _status_callbacks(receiver, "/conf")[-1]
    assert end["ReasonConferenceEnded"] == "conference-ended-via-api"
    assert "CallSidEndingConference" not in end


def test_conference_list_filters_by_friendly_name_and_status(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    for room, sid in (("alpha", "CA" + "a" * 32), ("beta", "CA" + "b" * 32)):
        server.fake.record_inbound_call(sid, CALLER, HOTLINE)
        server.fake.join_conference(room, sid)
    server.fake.leave_conference("beta", "CA" + "b" * 32)

    alpha = client.conferences.list(friendly_name="alpha")
    assert [c.friendly_name for c in alpha] == ["alpha"]
    assert client.conferences.list(friendly_name="beta", status="init") == []
    assert [c.friendly_name for c in client.conferences.list(status="completed")] == ["beta"]


def test_duplicate_participant_label_is_rejected(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    _caller_in_room(server, receiver, "room-10")

    with pytest.raises(TwilioRestException) as caught:
        client.conferences("room-10").participants.create(from_=HOTLINE, to=COUNSELOR, label="caller")

    assert caught.value.code == 16025


# ---- faults, control endpoints, webhook failures ---------------------------------------------


def test_injected_fault_returns_500_then_succeeds(server: FakeTwilioServer, client: Client) -> None:
    server.fake.inject_fault("POST", r"/Messages\.json$", status=500, code=20500, times=1)

    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=CALLER, from_=HOTLINE, body="hi")
    assert caught.value.status == 500
    assert caught.value.code == 20500

    assert client.messages.create(to=CALLER, from_=HOTLINE, body="hi").status == "queued"
    assert len(server.fake.messages) == 1


def test_injected_delay_slows_request_without_failing_it(server: FakeTwilioServer, client: Client) -> None:
    server.fake.inject_fault("*", r"/Calls", status=200, delay=0.3)
    started = time.monotonic()

    call = client.calls.create(to=COUNSELOR, from_=HOTLINE, twiml=VOICE_TWIML)

    assert time.monotonic() - started >= 0.3
    assert call.status == "queued"


def test_control_endpoints_advance_deliver_state_and_reset(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    call = client.calls.create(to=COUNSELOR, from_=HOTLINE, twiml=VOICE_TWIML)
    message = client.messages.create(to=CALLER, from_=HOTLINE, body="hi")

    advanced = requests.post(
        f"{server.base_url}/_fake/calls/{call.sid}/advance", data={"status": "in-progress"}, timeout=5
    ).json()
    delivered = requests.post(
        f"{server.base_url}/_fake/messages/{message.sid}/deliver", data={"final": "undelivered"}, timeout=5
    ).json()
    state = requests.get(f"{server.base_url}/_fake/state", timeout=5).json()

    assert advanced == {"call": advanced["call"], "twiml": VOICE_TWIML}
    assert advanced["call"]["status"] == "in-progress"
    assert delivered["status"] == "undelivered"
    assert [c["sid"] for c in state["calls"]] == [call.sid]
    assert [m["status"] for m in state["messages"]] == ["undelivered"]
    assert requests.post(f"{server.base_url}/_fake/reset", timeout=5).status_code == 204
    assert requests.get(f"{server.base_url}/_fake/state", timeout=5).json()["calls"] == []


def test_unreachable_webhook_is_logged_not_raised(server: FakeTwilioServer, client: Client) -> None:
    message = client.messages.create(to=CALLER, from_=HOTLINE, body="hi", status_callback="http://127.0.0.1:9/nowhere")

    entries = server.fake.deliver_message(message.sid)

    assert [entry.params["MessageStatus"] for entry in entries] == ["sent", "delivered"]
    assert all(entry.status_code is None and entry.error for entry in entries)
    assert server.fake.webhooks(kind="message-status", sid=message.sid) == entries


def test_webhook_handler_can_call_back_into_the_api_without_deadlock(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    def hold_on_join(received: Received) -> None:
        # What the app does: react to a conference event by calling the REST API.
        if received.form["StatusCallbackEvent"] == "participant-join":
            conference_sid = received.form["ConferenceSid"]
            client.conferences(conference_sid).participants(received.form["CallSid"]).update(muted=True)

    receiver.handlers["/conf"] = hold_on_join

    caller_sid = _caller_in_room(server, receiver, "room-11")

    conference = server.fake.find_conference("room-11")
    assert conference is not None
    assert conference.participants[caller_sid].muted is True
    assert _events(receiver) == ["participant-join", "participant-mute"]


def test_redirecting_a_conference_call_takes_it_out_of_the_room(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    receiver.reply("/after", VOICE_TWIML)
    caller_sid = _caller_in_room(server, receiver, "room-12")
    leg = client.conferences("room-12").participants.create(from_=HOTLINE, to=COUNSELOR)
    server.fake.advance_call(leg.call_sid, "in-progress")

    client.calls(leg.call_sid).update(url=receiver.url("/after"))

    leave = _status_callbacks(receiver, "/conf")[-1]
    assert leave["StatusCallbackEvent"] == "participant-leave"
    assert leave["CallSid"] == leg.call_sid
    assert leave["ReasonParticipantLeft"] == "participant_updated_via_api"
    redirected = server.fake.get_call(leg.call_sid)
    assert redirected.status == "in-progress"  # it now runs the new TwiML
    assert redirected.redirects[-1].twiml == VOICE_TWIML
    assert [p.call_sid for p in client.conferences(leg.conference_sid).participants.list()] == [caller_sid]


def test_hanging_up_a_conference_call_via_api_leaves_the_room(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    _caller_in_room(server, receiver, "room-13")
    leg = client.conferences("room-13").participants.create(
        from_=HOTLINE, to=COUNSELOR, status_callback=receiver.url("/leg")
    )
    server.fake.advance_call(leg.call_sid, "in-progress")

    client.calls(leg.call_sid).update(status="completed")

    assert _events(receiver)[-1] == "participant-leave"
    assert [f["CallStatus"] for f in _status_callbacks(receiver, "/leg")] == ["completed"]
    assert server.fake.find_conference("room-13") is not None  # the caller is still in it


def test_status_callback_with_get_method_is_signed_over_the_query_string(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    call = client.calls.create(
        to=COUNSELOR,
        from_=HOTLINE,
        twiml=VOICE_TWIML,
        status_callback=receiver.url("/status?leg=agent"),
        status_callback_method="GET",
    )

    server.fake.advance_call(call.sid, "completed")

    (callback,) = receiver.at("/status")
    assert callback.method == "GET"
    assert callback.args["leg"] == "agent"
    assert callback.args["CallStatus"] == "completed"
    assert callback.signature_valid(server.auth_token)


def test_inbound_call_final_status_goes_to_number_callback(server: FakeTwilioServer, receiver: WebhookReceiver) -> None:
    call_sid = "CA" + "3" * 32
    server.fake.record_inbound_call(call_sid, CALLER, HOTLINE, status_callback=receiver.url("/status"))

    assert server.fake.advance_call(call_sid, "in-progress") is None  # the test phone has TwiML
    server.fake.advance_call(call_sid, "completed")

    (callback,) = receiver.at("/status")
    assert callback.form["Direction"] == "inbound"
    assert callback.form["CallStatus"] == "completed"
    assert callback.form["From"] == CALLER
    assert callback.signature_valid(server.auth_token)


def test_leg_answering_after_its_room_ended_opens_a_new_room(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    caller_sid = _caller_in_room(server, receiver, "room-14")
    leg = client.conferences("room-14").participants.create(from_=HOTLINE, to=COUNSELOR)
    server.fake.advance_call(leg.call_sid, "ringing")
    server.fake.advance_call(caller_sid, "completed")  # caller leaves: the room ends

    server.fake.advance_call(leg.call_sid, "in-progress")

    reopened = server.fake.find_conference("room-14")
    assert reopened is not None and reopened.sid != leg.conference_sid
    assert list(reopened.participants) == [leg.call_sid]


def test_calls_list_by_parent_call_sid_returns_only_that_calls_dial_legs(
    server: FakeTwilioServer, client: Client
) -> None:
    """``ParentCallSid`` filters the calls a ``<Dial>`` spawned from one call (twilio-python's
    ``parent_call_sid``): how the line tells a caller on the backup line from one on hold."""
    caller = client.calls.create(to=CALLER, from_=HOTLINE, twiml=VOICE_TWIML)
    other = client.calls.create(to=COUNSELOR, from_=HOTLINE, twiml=VOICE_TWIML)
    child = server.fake.create_call(
        to=COUNSELOR, from_=HOTLINE, twiml=VOICE_TWIML, direction="outbound-dial", parent_call_sid=caller.sid
    )

    children = client.calls.list(parent_call_sid=caller.sid)

    assert [c.sid for c in children] == [child.sid]
    assert children[0].parent_call_sid == caller.sid
    assert client.calls.list(parent_call_sid=other.sid) == []
