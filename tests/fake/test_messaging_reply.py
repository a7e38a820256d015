"""The fake sends the ``<Message>``s of a messaging webhook's TwiML answer as Twilio does (§2.2):
to the sender from the number texted unless they say otherwise, each with its status callback;
to an opted-out number the message fails (21610) instead of being refused; an answer Twilio
would drop whole sends nothing."""

from __future__ import annotations

import pytest

from twilio_fake.rest_api import MAX_TWIML_BYTES, FakeTwilio, FakeTwilioError

SENDER = "+13125550177"
LINE = "+13125550100"


def test_each_message_goes_to_the_sender_from_the_number_they_texted_with_its_status_callback() -> None:
    fake = FakeTwilio()
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Message statusCallback="https://line.example/sms/status?message=1">first</Message>'
        '<Message to="+13125550199"><Body>second</Body></Message></Response>'
    )

    first, second = fake.reply_with_twiml(SENDER, LINE, twiml)

    assert (first.to, first.from_, first.body, first.status_callback) == (
        SENDER, LINE, "first", "https://line.example/sms/status?message=1",
    )  # fmt: skip
    assert (second.to, second.body, second.status_callback) == ("+13125550199", "second", None)
    assert {first.direction, second.direction} == {"outbound-reply"}


def test_a_reply_to_an_opted_out_number_fails_with_21610() -> None:
    fake = FakeTwilio()
    fake.opt_out(SENDER)

    (message,) = fake.reply_with_twiml(SENDER, LINE, "<Response><Message>hello</Message></Response>")

    assert (message.status, message.error_code) == ("failed", 21610)


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
