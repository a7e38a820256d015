"""A call a counselor takes, as the benches play Twilio's side of it (``bench.common.answered_call``):
every webhook in Twilio's order, the caller found through the redirect the line asked for, and a
ring whose caller moved on heard as the staff message it is, not counted as an accepted call."""

from __future__ import annotations

from bench.common import ACCOUNT_SID, AnswerOutcome, ResponderLeg, Webhook, answered_call, play
from twilio_fake.signing import CallIdentity

LEG = {
    "sid": "CA" + "1" * 32,
    "from": "+13125550100",
    "to": "+13125550101",
    "url": "http://127.0.0.1:5999/voice/offer/whisper?offer=12",
    "status_callback": "http://127.0.0.1:5999/voice/offer/status?offer=12",
}
WHISPER = (
    '<Response><Gather action="/voice/offer/decide?offer=12" method="POST" numDigits="1">'
    "<Say>Crisis line: English-speaking caller. Press 1 to accept, 2 to pass.</Say></Gather></Response>"
)
ROOM = (
    '<Response><Say>Connecting you now.</Say><Dial action="/voice/offer/after?offer=12" hangupOnStar="true">'
    '<Conference endConferenceOnExit="false" participantLabel="answer-12" startConferenceOnEnter="true" '
    'statusCallback="http://127.0.0.1:5999/voice/conference/events?transfer=7" statusCallbackEvent="start end '
    'join leave">crisisline-transfer-7-1</Conference></Dial></Response>'
)
CALLER = CallIdentity(ACCOUNT_SID, "+13125557777", "+13125550100")
JOIN_URL = "http://127.0.0.1:5999/voice/transfer/join?transfer=7"


class Line:
    """Answers each webhook as the line would for a caller still waiting (or as told)."""

    def __init__(self, **answers: str | None) -> None:
        self.answers = {"whisper": WHISPER, "accept": ROOM, "caller_join": "<Response><Dial/></Response>", **answers}
        self.sent: list[Webhook] = []

    def post(self, hook: Webhook) -> str | None:
        self.sent.append(hook)
        return self.answers.get(hook.kind, "")


def test_an_answered_call_sends_every_webhook_twilio_would_in_order_and_ends_accepted() -> None:
    line, asked = Line(), []

    def find_caller(transfer_id: int | None) -> tuple[CallIdentity, str]:
        asked.append(transfer_id)
        return CALLER, JOIN_URL

    outcome = play(answered_call(ResponderLeg.from_fake(LEG), find_caller), line.post)

    assert outcome == AnswerOutcome("accepted", transfer_id=7)
    assert asked == [7]  # the transfer the room's events name
    assert [(hook.kind, hook.params.get("CallStatus") or hook.params["StatusCallbackEvent"]) for hook in line.sent] == [
        ("offer_status", "initiated"),
        ("offer_status", "ringing"),
        ("whisper", "in-progress"),
        ("offer_status", "in-progress"),
        ("accept", "in-progress"),
        ("conference_callback", "participant-join"),
        ("caller_join", "in-progress"),
        ("conference_callback", "participant-join"),
        ("conference_callback", "conference-start"),
        ("status_after_talk", "completed"),
        ("conference_callback", "participant-leave"),
        ("conference_callback", "participant-leave"),
        ("conference_callback", "conference-end"),
        ("offer_status", "completed"),
    ]
    by_kind = {hook.kind: hook for hook in line.sent}
    assert by_kind["accept"].path == "/voice/offer/decide?offer=12" and by_kind["accept"].params["Digits"] == "1"
    assert by_kind["caller_join"].path == "/voice/transfer/join?transfer=7"
    assert by_kind["caller_join"].params["CallSid"] == CALLER.call_sid
    leg_events = [hook for hook in line.sent if hook.kind == "offer_status"]
    assert {hook.path for hook in leg_events} == {"/voice/offer/status?offer=12"}
    assert [hook.params["SequenceNumber"] for hook in leg_events] == ["0", "1", "2", "3"]
    room_events = [hook for hook in line.sent if hook.kind == "conference_callback"]
    assert {hook.path for hook in room_events} == {"/voice/conference/events?transfer=7"}
    assert len({hook.params["ConferenceSid"] for hook in room_events}) == 1
    assert [hook.params.get("ParticipantLabel") for hook in room_events] == [
        "answer-12", "caller", None, "caller", "answer-12", None
    ]  # fmt: skip
    assert all(hook.expect_status == 204 for hook in [*leg_events, *room_events, by_kind["status_after_talk"]])


def test_a_ring_whose_caller_moved_on_ends_after_the_staff_message_as_too_late() -> None:
    gone = "<Response><Say>The caller has hung up. Thank you.</Say><Hangup /></Response>"
    taken = "<Response><Say>This caller has already been connected. Thank you.</Say><Hangup /></Response>"
    at_whisper, at_accept = Line(whisper=gone), Line(accept=taken)

    def nobody(_transfer: int | None) -> None:
        raise AssertionError("no caller is looked for when nobody was accepted")

    first = play(answered_call(ResponderLeg.from_fake(LEG), nobody), at_whisper.post)
    second = play(answered_call(ResponderLeg.from_fake(LEG), nobody), at_accept.post)

    assert first == AnswerOutcome("too_late", "whisper/caller_gone")
    assert str(first) == "too_late/whisper/caller_gone"  # as the report counts it
    assert [hook.kind for hook in at_whisper.sent] == ["offer_status"] * 2 + ["whisper", "offer_status", "offer_status"]
    assert at_whisper.sent[-1].params["CallStatus"] == "completed"
    assert second == AnswerOutcome("too_late", "accept/already_connected")
    assert [hook.kind for hook in at_accept.sent][-2:] == ["accept", "offer_status"]
    assert at_accept.sent[-1].params["CallStatus"] == "completed"


def test_a_failed_webhook_or_a_caller_never_redirected_stops_the_call_as_failed() -> None:
    failing = Line(whisper=None)
    no_redirect = Line()

    failed = play(answered_call(ResponderLeg.from_fake(LEG), lambda _t: (CALLER, "")), failing.post)
    stranded = play(answered_call(ResponderLeg.from_fake(LEG), lambda _t: (CALLER, "")), no_redirect.post)

    assert failed == AnswerOutcome("failed", "whisper")
    assert failing.sent[-1].kind == "whisper"
    assert stranded == AnswerOutcome("failed", "caller_not_redirected", 7)
    assert "caller_join" not in [hook.kind for hook in no_redirect.sent]
