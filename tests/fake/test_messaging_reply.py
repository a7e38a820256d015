"""The fake sends the ``<Message>``s of a messaging webhook's TwiML answer as Twilio does (§2.2):
to the sender from the number texted unless they say otherwise; status callbacks only for a
``<Message>`` with an ``action`` too, which is requested once it is processed and ends the
answer; to an opted-out number the message fails (21610) instead of being refused; an answer
Twilio would drop whole sends nothing."""

from __future__ import annotations

import pytest

from tests.fake.conftest import WebhookReceiver
from twilio_fake.rest_api import MAX_TWIML_BYTES, FakeTwilio, FakeTwilioError
from twilio_fake.server import FakeTwilioServer

SENDER = "+13125550177"
LINE = "+13125550100"


def test_each_message_goes_to_the_sender_from_the_number_they_texted() -> None:
    fake = FakeTwilio()
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        "<Message>first</Message>"
        '<Message to="+13125550199"><Body>second</Body></Message></Response>'
    )

    first, second = fake.reply_with_twiml(SENDER, LINE, twiml)

    assert (first.to, first.from_, first.body) == (SENDER, LINE, "first")
    assert (second.to, second.from_, second.body) == ("+13125550199", LINE, "second")
    assert {first.direction, second.direction} == {"outbound-reply"}


def test_a_status_callback_without_an_action_gets_no_callbacks(
    server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    twiml = f'<Response><Message statusCallback="{receiver.url("/status")}">hello</Message></Response>'

    (message,) = server.fake.reply_with_twiml(SENDER, LINE, twiml)
    server.fake.deliver_message(message.sid)

    assert message.status == "delivered"
    assert receiver.at("/status") == []


def test_an_action_is_requested_once_sent_then_the_status_callbacks_follow(
    server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    url = receiver.url("/status")
    receiver.reply("/status", "<Response/>")
    twiml = f'<Response><Message statusCallback="{url}" action="{url}">hello</Message></Response>'

    (message,) = server.fake.reply_with_twiml(SENDER, LINE, twiml)
    assert receiver.at("/status") == []  # nothing until Twilio has processed it
    server.fake.deliver_message(message.sid)
    server.fake.deliver_message(message.sid)  # a message already final sends nothing more

    received = receiver.at("/status")
    assert [r.form["MessageStatus"] for r in received] == ["sent", "sent", "delivered"]
    assert [entry.kind for entry in server.fake.webhooks(sid=message.sid)] == [
        "message-action", "message-status", "message-status",
    ]  # fmt: skip
    for request in received:
        assert request.signature_valid(server.auth_token)
        assert request.form["MessageSid"] == message.sid


def test_the_verbs_after_an_action_are_never_reached_and_its_answer_goes_on(
    server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    url = receiver.url("/next")
    receiver.reply("/next", "<Response><Message>from the action</Message></Response>")
    twiml = f'<Response><Message action="{url}">first</Message><Message>never sent</Message></Response>'

    (first,) = server.fake.reply_with_twiml(SENDER, LINE, twiml)
    server.fake.deliver_message(first.sid)

    assert [m.body for m in server.fake.messages.values()] == ["first", "from the action"]
    assert len(receiver.at("/next")) == 1


def test_a_reply_to_an_opted_out_number_fails_with_21610() -> None:
    fake = FakeTwilio()
    fake.opt_out(SENDER)

    (message,) = fake.reply_with_twiml(SENDER, LINE, "<Response><Message>hello</Message></Response>")

    assert (message.status, message.error_code) == ("failed", 21610)


def test_a_failed_reply_to_an_opted_out_number_still_has_its_action_and_callback(
    server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    url = receiver.url("/status")
    receiver.reply("/status", "<Response/>")
    server.fake.opt_out(SENDER)

    server.fake.reply_with_twiml(
        SENDER, LINE, f'<Response><Message statusCallback="{url}" action="{url}">hi</Message></Response>'
    )

    assert [(r.form["MessageStatus"], r.form["ErrorCode"]) for r in receiver.at("/status")] == [
        ("failed", "21610"), ("failed", "21610"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("twiml", "code"),
    [
        ("<Response><Message>" + "x" * MAX_TWIML_BYTES + "</Message></Response>", 11750),
        ("<Response><Message>a vertical tab \x0b</Message></Response>", 12100),
        ("not TwiML", 12100),
    ],
)
def test_an_answer_twilio_would_drop_whole_sends_nothing(twiml: str, code: int) -> None:
    fake = FakeTwilio()

    with pytest.raises(FakeTwilioError) as refused:
        fake.reply_with_twiml(SENDER, LINE, twiml)

    assert refused.value.code == code
    assert fake.messages == {}
