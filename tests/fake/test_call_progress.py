"""The stand-in's call progress on its own: ring timeouts (opt-in), busy and failed legs, the
order of hang-up callbacks across a call and its conference, and the simulated phone's final
status callback. Everything over real HTTP, through twilio-python and a webhook receiver."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.fake.conftest import WebhookReceiver
from twilio_fake import local_line
from twilio_fake.phone import TALKING, Keys, Phone, RemoteTwilio, RequestsTransport, main
from twilio_fake.server import FakeTwilioServer

CALLER = "+14155550100"
HOTLINE = "+14155550199"
COUNSELOR = "+16175551212"
LEG_EVENTS = ["initiated", "ringing", "answered", "completed"]
WHISPER = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Gather numDigits="1" action="/accept">'
    "<Say>Press 1 to accept.</Say></Gather></Response>"
)


@pytest.fixture
def ringing_server() -> Iterator[FakeTwilioServer]:
    """The stand-in as ``dev.py run`` starts it: legs ring by themselves and time out."""
    with FakeTwilioServer(ring_timeouts=True, dial_delay=0.05) as running:
        yield running


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _statuses(receiver: WebhookReceiver, path: str = "/status") -> list[str]:
    return [r.form["CallStatus"] for r in receiver.at(path)]


def _place(client: Client, receiver: WebhookReceiver, timeout: int, to: str = COUNSELOR) -> str:
    call = client.calls.create(
        to=to,
        from_=HOTLINE,
        url=receiver.url("/whisper"),
        status_callback=receiver.url("/status"),
        status_callback_event=LEG_EVENTS,
        timeout=timeout,
    )
    return str(call.sid)


# ---- ring timeouts ----------------------------------------------------------------------------


def test_unanswered_leg_rings_then_ends_no_answer_after_its_timeout(
    ringing_server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    client = ringing_server.client()
    started = time.monotonic()
    sid = _place(client, receiver, timeout=1)

    _wait_for(lambda: "no-answer" in _statuses(receiver))

    assert time.monotonic() - started >= 1.0  # not before its Timeout
    callbacks = receiver.at("/status")
    assert _statuses(receiver) == ["initiated", "ringing", "no-answer"]
    assert [r.form["SequenceNumber"] for r in callbacks] == ["0", "1", "2"]
    assert all(r.signature_valid(ringing_server.auth_token) for r in callbacks)
    final = callbacks[-1].form
    assert final["CallDuration"] == "0"
    assert final["SipResponseCode"] == "487"
    assert "Duration" not in final
    assert client.calls(sid).fetch().status == "no-answer"
    assert receiver.at("/whisper") == []  # never answered: its Url was never fetched


def test_leg_answered_before_its_timeout_is_not_ended(
    ringing_server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    receiver.reply("/whisper", WHISPER)
    sid = _place(ringing_server.client(), receiver, timeout=1)
    _wait_for(lambda: "ringing" in _statuses(receiver))

    assert ringing_server.fake.advance_call(sid, "in-progress") == WHISPER
    time.sleep(1.5)

    assert _statuses(receiver) == ["initiated", "ringing", "in-progress"]
    assert ringing_server.fake.get_call(sid).status == "in-progress"


def test_without_ring_timeouts_legs_wait_for_the_test(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    sid = _place(client, receiver, timeout=1)

    time.sleep(1.5)

    assert server.fake.get_call(sid).status == "queued"
    assert receiver.at("/status") == []


def test_canceled_leg_is_not_timed_out_later(ringing_server: FakeTwilioServer, receiver: WebhookReceiver) -> None:
    client = ringing_server.client()
    sid = _place(client, receiver, timeout=1)
    _wait_for(lambda: "ringing" in _statuses(receiver))

    client.calls(sid).update(status="canceled")
    time.sleep(1.5)

    assert _statuses(receiver) == ["initiated", "ringing", "canceled"]


def test_reset_drops_pending_ring_timeouts(ringing_server: FakeTwilioServer, receiver: WebhookReceiver) -> None:
    _place(ringing_server.client(), receiver, timeout=1)
    _wait_for(lambda: "ringing" in _statuses(receiver))

    ringing_server.fake.reset()
    time.sleep(1.5)

    assert _statuses(receiver) == ["initiated", "ringing"]


@pytest.mark.parametrize(("behaviour", "sip"), [("busy", "486"), ("failed", "404")])
def test_busy_or_unreachable_number_ends_without_ringing(
    ringing_server: FakeTwilioServer, receiver: WebhookReceiver, behaviour: str, sip: str
) -> None:
    ringing_server.fake.program_number(COUNSELOR, behaviour)

    _place(ringing_server.client(), receiver, timeout=30)
    _wait_for(lambda: behaviour in _statuses(receiver))

    assert _statuses(receiver) == ["initiated", behaviour]
    assert receiver.at("/status")[-1].form["SipResponseCode"] == sip


def test_programmed_number_applies_even_without_ring_timeouts(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    server.fake.program_number(COUNSELOR, "no-answer")

    _place(client, receiver, timeout=1)
    _wait_for(lambda: "no-answer" in _statuses(receiver), seconds=10)

    assert _statuses(receiver) == ["initiated", "ringing", "no-answer"]
    other = _place(client, receiver, timeout=1, to="+16175551213")  # not programmed: waits
    time.sleep(0.5)
    assert server.fake.get_call(other).status == "queued"


def test_participant_leg_that_rings_out_reports_a_failed_add(
    ringing_server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    fake = ringing_server.fake
    caller_sid = "CA" + "1" * 32
    fake.record_inbound_call(caller_sid, CALLER, HOTLINE)
    fake.advance_call(caller_sid, "in-progress")
    fake.join_conference("room-t", caller_sid, status_callback=receiver.url("/conf"), status_callback_event="leave")
    leg = ringing_server.client().conferences("room-t").participants.create(
        from_=HOTLINE, to=COUNSELOR, timeout=1, status_callback=receiver.url("/status"),
        status_callback_event=LEG_EVENTS,
    )  # fmt: skip

    _wait_for(lambda: "no-answer" in _statuses(receiver))

    assert _statuses(receiver) == ["initiated", "ringing", "no-answer"]
    (leave,) = [r.form for r in receiver.at("/conf")]
    assert leave["CallSid"] == leg.call_sid
    assert leave["ParticipantCallStatus"] == "no-answer"
    assert leave["ReasonParticipantLeft"] == "participant_add_failed"
    assert fake.find_conference("room-t") is not None  # the caller is still in it


# ---- hang-ups: the room's events, then each leg's final status ---------------------------------


def test_caller_hanging_up_sends_room_events_then_final_statuses_in_order(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    fake = server.fake
    caller_sid = "CA" + "1" * 32
    fake.record_inbound_call(caller_sid, CALLER, HOTLINE, status_callback=receiver.url("/caller-status"))
    fake.advance_call(caller_sid, "in-progress")
    fake.join_conference(
        "room-h", caller_sid, end_on_exit=True, status_callback=receiver.url("/conf"),
        status_callback_event="start end join leave",
    )  # fmt: skip
    leg = client.conferences("room-h").participants.create(
        from_=HOTLINE, to=COUNSELOR, status_callback=receiver.url("/status")
    )
    fake.advance_call(leg.call_sid, "in-progress")
    before = len(receiver.requests)

    fake.advance_call(caller_sid, "completed")  # the caller hangs up

    order = [
        (r.path, r.form.get("StatusCallbackEvent") or r.form["CallStatus"], r.form.get("CallSid"))
        for r in receiver.requests[before:]
    ]
    assert order == [
        ("/conf", "participant-leave", caller_sid),
        ("/conf", "participant-leave", leg.call_sid),
        ("/conf", "conference-end", None),
        ("/status", "completed", leg.call_sid),
        ("/caller-status", "completed", caller_sid),
    ]
    leaves = receiver.at("/conf")[-3:-1]
    assert [r.form["ParticipantCallStatus"] for r in leaves] == ["completed", "in-progress"]
    assert [r.form["ReasonParticipantLeft"] for r in leaves] == ["participant_hung_up", "moderator_ended_conference"]


def test_counselor_hanging_up_leaves_the_room_then_reports_completed(
    server: FakeTwilioServer, client: Client, receiver: WebhookReceiver
) -> None:
    fake = server.fake
    caller_sid = "CA" + "1" * 32
    fake.record_inbound_call(caller_sid, CALLER, HOTLINE, status_callback=receiver.url("/caller-status"))
    fake.advance_call(caller_sid, "in-progress")
    fake.join_conference("room-c", caller_sid, status_callback=receiver.url("/conf"), status_callback_event="leave end")
    leg = client.conferences("room-c").participants.create(
        from_=HOTLINE, to=COUNSELOR, status_callback=receiver.url("/status")
    )
    fake.advance_call(leg.call_sid, "in-progress")
    before = len(receiver.requests)

    fake.advance_call(leg.call_sid, "completed")  # the counselor hangs up; the caller stays

    order = [(r.path, r.form.get("StatusCallbackEvent") or r.form["CallStatus"]) for r in receiver.requests[before:]]
    assert order == [("/conf", "participant-leave"), ("/status", "completed")]
    assert fake.get_call(caller_sid).status == "in-progress"
    assert fake.find_conference("room-c") is not None


# ---- the simulated phone's own final status ----------------------------------------------------


def test_phone_hanging_up_on_hold_sends_the_callers_final_status_through_the_stand_in(
    server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    hold = "<Response><Say>Please hold.</Say><Redirect>/voice/hold</Redirect></Response>"
    receiver.reply("/voice/incoming", hold)
    receiver.reply("/voice/hold", hold)
    remote = RemoteTwilio(server.base_url)
    phone = Phone(RequestsTransport(), receiver.url(""), server.auth_token, server.account_sid, HOTLINE, fake=remote)

    call = phone.call(max_hold_turns=1)
    assert call.ended_by == "on-hold"
    phone.hang_up(call)

    (final,) = receiver.at("/voice/status")
    assert final.form["CallStatus"] == "completed"
    assert final.form["CallSid"] == call.identity.call_sid
    assert final.form["Direction"] == "inbound"
    assert final.signature_valid(server.auth_token)
    assert server.fake.get_call(call.identity.call_sid).status == "completed"


@pytest.mark.parametrize(
    ("outcome", "statuses"), [("completed", ["completed", "canceled"]), ("busy", ["busy", "busy"])]
)
def test_a_dial_of_two_numbers_leaves_two_child_calls_twilio_lists_by_parent_call_sid(
    server: FakeTwilioServer, receiver: WebhookReceiver, client: Client, outcome: str, statuses: list[str]
) -> None:
    """Over HTTP, as ``dev.py run``'s phones drive it: each ``<Number>`` is a child call of the
    caller's; once one answers, the other is canceled. The action's ``DialCallSid`` is the first."""
    dial = (
        "<Response><Dial action='/after'><Number>+16175551212</Number><Number>+16175551213</Number></Dial></Response>"
    )
    receiver.reply("/voice/incoming", dial)
    receiver.reply("/after", "<Response><Hangup/></Response>")
    phone = Phone(
        RequestsTransport(), receiver.url(""), server.auth_token, server.account_sid, HOTLINE,
        fake=RemoteTwilio(server.base_url),
    )  # fmt: skip

    call = phone.call(dial_outcomes=[outcome])

    children = client.calls.list(parent_call_sid=call.identity.call_sid)
    by_number = {child.to: child for child in children}
    assert [by_number["+16175551212"].status, by_number["+16175551213"].status] == statuses
    assert {child.direction for child in children} == {"outbound-dial"}
    (after,) = receiver.at("/after")
    assert after.form["DialCallSid"] == by_number["+16175551212"].sid


def test_a_dial_still_talking_leaves_its_child_call_in_progress(
    server: FakeTwilioServer, receiver: WebhookReceiver, client: Client
) -> None:
    receiver.reply("/voice/incoming", "<Response><Dial><Number>+16175551212</Number></Dial></Response>")
    phone = Phone(
        RequestsTransport(), receiver.url(""), server.auth_token, server.account_sid, HOTLINE, fake=server.fake
    )

    call = phone.call(dial_outcomes=[TALKING])

    assert call.ended_by == "on-a-dial"
    (child,) = client.calls.list(parent_call_sid=call.identity.call_sid)
    assert child.status == "in-progress"

    client.calls(call.identity.call_sid).update(status="completed")  # the caller's call ends

    assert server.fake.get_call(child.sid).status == "completed"  # and its <Dial> with it


def test_a_redirect_of_the_caller_ends_their_dial_and_a_completed_leg_talked(
    server: FakeTwilioServer, receiver: WebhookReceiver, client: Client
) -> None:
    receiver.reply("/voice/incoming", "<Response><Dial><Number>+16175551212</Number></Dial></Response>")
    receiver.reply("/elsewhere", "<Response><Pause length='1'/></Response>")
    phone = Phone(
        RequestsTransport(), receiver.url(""), server.auth_token, server.account_sid, HOTLINE, fake=server.fake
    )
    talking = phone.call(dial_outcomes=[TALKING])
    done = phone.call(dial_outcomes=["completed"])

    client.calls(talking.identity.call_sid).update(url=receiver.url("/elsewhere"))

    (redirected,) = client.calls.list(parent_call_sid=talking.identity.call_sid)
    (completed,) = client.calls.list(parent_call_sid=done.identity.call_sid)
    assert redirected.status == "completed"
    assert (completed.status, server.fake.get_call(completed.sid).duration) == ("completed", 42)
    with pytest.raises(ValueError, match="unknown dial outcome"):
        phone.call(dial_outcomes=["answred"])


def test_phone_without_a_stand_in_posts_the_final_status_itself(receiver: WebhookReceiver) -> None:
    receiver.reply("/voice/incoming", "<Response><Say>Goodbye.</Say></Response>")
    token = "0" * 32
    phone = Phone(RequestsTransport(), receiver.url(""), token, "AC" + "0" * 32, HOTLINE, status_path="/voice/status")

    call = phone.call()

    assert call.ended_by == "end-of-twiml"
    (final,) = receiver.at("/voice/status")
    assert final.form["CallStatus"] == "completed"
    assert final.signature_valid(token)


def test_remote_phone_answers_a_ringing_leg_and_presses_a_key(
    ringing_server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    receiver.reply("/whisper", WHISPER)
    receiver.reply("/accept", "<Response><Say>Connecting you now.</Say><Hangup/></Response>")
    remote = RemoteTwilio(ringing_server.base_url)
    sid = _place(ringing_server.client(), receiver, timeout=30)
    _wait_for(lambda: [leg.sid for leg in remote.calls(to=COUNSELOR, statuses=["ringing"])] == [sid])
    phone = Phone(
        RequestsTransport(), receiver.url(""), ringing_server.auth_token, ringing_server.account_sid, HOTLINE,
        fake=remote,
    )  # fmt: skip

    record = phone.answer(sid, [Keys("1")])

    assert [heard.text for heard in record.heard] == ["Press 1 to accept.", "Connecting you now."]
    assert receiver.at("/accept")[0].form["Digits"] == "1"
    # The leg's last status callback is posted by the fake's own thread once the call ends,
    # which may be after the phone's hang-up returns (on a loaded machine it was).
    _wait_for(lambda: "completed" in _statuses(receiver))
    assert _statuses(receiver) == ["initiated", "ringing", "in-progress", "completed"]


def test_texting_an_opt_out_word_blocks_later_sends(server: FakeTwilioServer, client: Client) -> None:
    remote = RemoteTwilio(server.base_url)

    remote.keyword(CALLER, " stop ")
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=CALLER, from_=HOTLINE, body="hello")
    assert caught.value.code == 21610
    remote.keyword(CALLER, "STOP PLEASE")  # not a single keyword: no change either way
    remote.keyword(CALLER, "START")
    client.messages.create(to=CALLER, from_=HOTLINE, body="hello")

    assert [m["body"] for m in remote.messages(CALLER)] == ["hello"]


# ---- the CLI ---------------------------------------------------------------------------------


def test_phone_help_names_its_commands_and_no_missing_document(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["text", "--help"], ["answer-as", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    shown = capsys.readouterr().out
    assert "answer-as" in shown and "text" in shown and "instance/line.json" in shown
    assert "reference" not in shown and ".md" not in shown


def test_local_line_file_is_read_only_while_its_writer_runs(tmp_path: Path) -> None:
    path = tmp_path / "line.json"
    line = local_line.LocalLine("http://127.0.0.1:5001", "redis://127.0.0.1:6390/0", "http://127.0.0.1:8089")

    local_line.write_local_line(line, path)
    assert local_line.read_local_line(path) is None  # pid 0: no running dev.py wrote it

    local_line.write_local_line(local_line.LocalLine(**{**line.__dict__, "pid": __import__("os").getpid()}), path)
    assert local_line.read_local_line(path) == local_line.LocalLine(
        "http://127.0.0.1:5001", "redis://127.0.0.1:6390/0", "http://127.0.0.1:8089", pid=__import__("os").getpid()
    )
    local_line.remove_local_line(path)
    assert local_line.read_local_line(path) is None


def test_dev_run_refuses_a_busy_port_before_saying_the_line_is_up(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    import dev

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        assert dev.run_line(["--port", str(port)]) == 1

    printed = capsys.readouterr()
    assert f"Port {port} on 127.0.0.1 is already in use" in printed.err
    assert "--port 5050" in printed.err and "PORT=5050" in printed.err
    assert "The line is up" not in printed.out + printed.err
