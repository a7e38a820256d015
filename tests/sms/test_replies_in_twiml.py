"""A reply to the person whose text the line is answering goes out in the webhook's own TwiML,
as Twilio means replies to be sent: no REST request holds their webhook. Each reply is claimed
in the database before the answer and tracked by its ``<Message statusCallback>``. Texts to
anyone else (a counselor offered the conversation) still go over the REST API, as does a
texter's words relayed to the counselor whose webhook it answers (its SID must be kept). If the
webhook's deadline answers before its handler, the replies go over REST instead: none lost,
none sent twice."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select

import sms.views as sms_views
from crisisline.db import db
from crisisline.models import Message, Texter
from sms import outbox
from sms.outbox import MAX_TWIML_REPLIES, MAX_TWIML_REPLY_BYTES, TakenReply, TwimlReplies
from sms.views import FAILSAFE_TEXT
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TextingPhone
from tests.reliability.test_fault_matrix import DEADLINE, Line, line  # noqa: F401 - the line fixture
from tests.rota import BEN
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import signed_headers, sms_params

TEXTER = "+13125550177"
WORDS = "I want to kill myself tonight"
ANSWER = "A counselor will text you back"
WELCOME = "Riverside County Crisis Line. Your texts are private."
ROOMY_DEADLINE = 5.0


def outbound_to_texter(app: Flask) -> list[Message]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(Message).where(Message.direction == "out", Message.party == "texter").order_by(Message.id)
            )
        )


def post_text(url: str, params: dict[str, str]) -> requests.Response:
    """The webhook alone, signed as Twilio signs it: nobody sends what its TwiML holds."""
    webhook = url + "/sms/incoming"
    headers = signed_headers(TEST_AUTH_TOKEN, webhook, params, voice=False)
    response = requests.post(webhook, data=params, headers=headers, timeout=15)
    assert response.status_code == 200
    return response


@pytest.mark.usefixtures("wednesday_evening")
def test_a_texters_replies_are_in_the_webhooks_twiml_each_stored_first_with_its_status_callback(
    app: Flask, live_server: str
) -> None:
    answer = post_text(live_server, sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS))

    messages = ET.fromstring(answer.text).findall("Message")  # noqa: S314 - the app's own TwiML
    (row,) = outbound_to_texter(app)
    assert [message.text for message in messages] == [_opened(app, row)]
    assert ANSWER in (messages[0].text or "")
    assert messages[0].get("statusCallback") == f"{live_server}/sms/status?message={row.id}"
    assert "to" not in messages[0].attrib  # Twilio replies to the sender: no number in the answer
    assert (row.status, row.message_sid) == ("queued", None)  # handed to Twilio; its SID comes with the callback


@pytest.mark.usefixtures("wednesday_evening")
def test_twilio_sends_the_twiml_replies_and_their_status_callbacks_give_each_row_its_sid(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    replies = texting.send(TEXTER, WORDS)

    assert any(ANSWER in reply for reply in replies)
    to_texter = [message for message in fake.messages.values() if message.to == TEXTER]
    assert {message.direction for message in to_texter} == {"outbound-reply"}  # no REST request for them
    for message in to_texter:
        fake.deliver_message(message.sid)  # "sent", then "delivered", to each <Message statusCallback>
    rows = outbound_to_texter(app)
    assert [(row.message_sid, row.status) for row in rows] == [(message.sid, "delivered") for message in to_texter]
    # The counselor offered the conversation is texted over the REST API, off the texter's webhook.
    (offer,) = [message for message in fake.messages.values() if message.to == BEN]
    assert offer.direction == "outbound-api"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_reply_claimed_before_the_handling_failed_goes_out_with_the_fail_safe_and_never_again(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, clock_tick: Callable[[], Any]
) -> None:
    import sms.views

    real = sms.views.handle_texter_message

    def fails_after_replying(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(sms.views, "handle_texter_message", real)
        real(*args, **kwargs)
        raise RuntimeError("simulated bug after the reply was claimed")

    monkeypatch.setattr(sms.views, "handle_texter_message", fails_after_replying)
    replies = texting.send(TEXTER, "I am not doing well tonight and need to talk")

    assert len(replies) == 2
    assert replies[0].startswith("Riverside County Crisis Line. Your texts are private.")  # welcome and menu
    assert replies[1] == FAILSAFE_TEXT
    clock_tick()  # nothing for the clock to send again: the reply is claimed and went out
    assert texting.inbox(TEXTER) == replies


def reply(message_id: int, text: str = "words") -> TakenReply:
    return TakenReply(message_id, text)


def test_a_reply_is_kept_for_the_answer_only_if_it_goes_to_the_sender_from_the_number_they_texted() -> None:
    replies = TwimlReplies(TEXTER, LINE_NUMBER)

    assert replies.answers(TEXTER, LINE_NUMBER)
    assert not replies.answers("+13125550199", LINE_NUMBER)  # someone else: over REST
    assert not replies.answers(TEXTER, "+13125550111")  # from another of the line's numbers
    assert not TwimlReplies(None, LINE_NUMBER).answers(TEXTER, LINE_NUMBER)  # a withheld sender


def test_replies_the_handler_took_go_in_the_deadlines_answer_if_it_answers_after_all() -> None:
    replies = TwimlReplies(TEXTER, LINE_NUMBER)
    assert replies.take(reply(1, "first")) == (True, [])

    assert replies.render() == [(1, "first")]
    assert replies.abandon() == [(1, "first")]  # the handler's answer will be dropped: this one carries them
    assert replies.take(reply(2)) == (False, [])  # too late for any answer: over REST


def test_the_deadlines_answer_carries_the_replies_taken_so_far_and_later_ones_go_over_rest() -> None:
    replies = TwimlReplies(TEXTER, LINE_NUMBER)
    assert replies.take(reply(1, "first")) == (True, [])

    assert replies.abandon() == [(1, "first")]
    assert replies.render() is None  # the handler's answer is dropped
    assert replies.take(reply(2)) == (False, [])
    assert replies.abandon() == []  # never carried twice


def test_a_reply_that_does_not_fit_sends_the_ones_before_it_over_rest_first_and_every_later_one_too() -> None:
    replies = TwimlReplies(TEXTER, LINE_NUMBER)
    for number in range(MAX_TWIML_REPLIES):
        assert replies.take(reply(number)) == (True, [])

    taken, earlier = replies.take(reply(99))

    assert not taken
    assert [part.message_id for part in earlier] == list(range(MAX_TWIML_REPLIES))  # in order, before it
    assert replies.take(reply(100)) == (False, [])  # after it
    assert replies.render() == []


@pytest.mark.parametrize("text", ["x" * (MAX_TWIML_REPLY_BYTES + 1), "a vertical tab \x0b XML cannot carry"])
def test_a_reply_too_long_for_the_answer_or_not_xml_goes_over_rest(text: str) -> None:
    replies = TwimlReplies(TEXTER, LINE_NUMBER)
    assert replies.take(reply(1)) == (True, [])

    taken, earlier = replies.take(reply(2, text))

    assert (taken, [part.message_id for part in earlier]) == (False, [1])


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_taking_a_long_backlog_gets_every_text_once_in_order(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    texting.send(TEXTER, WORDS)  # queued, offered to Ben
    backlog = [f"still here {number}" for number in range(MAX_TWIML_REPLIES + 3)]
    for text in backlog:
        texting.send(TEXTER, text)
    offer = next(text for text in texting.inbox(BEN) if text.startswith("New text #"))
    tag = offer.split("#", 1)[1].split(":", 1)[0]

    texting.send(BEN, f"YES {tag}")  # the whole backlog is relayed in answer: more than fits

    relayed = [text for text in texting.inbox(BEN) if "still here" in text]
    assert [next(word for word in backlog if text.endswith(word)) for text in relayed] == backlog


@pytest.mark.usefixtures("wednesday_evening")
def test_a_texters_words_relayed_to_the_counselor_who_takes_them_go_over_rest_in_order_each_with_its_sid(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    """Twilio reports no SID for a TwiML reply but the last: a relay of the texter's words in
    the counselor's answer could never be deleted at Twilio after the purge (only texts to and
    from a texter are found there by number)."""
    texting.send(TEXTER, WORDS)  # queued, offered to Ben
    backlog = [f"still here {number}" for number in range(3)]
    for text in backlog:
        texting.send(TEXTER, text)
    offer = next(text for text in texting.inbox(BEN) if text.startswith("New text #"))
    tag = offer.split("#", 1)[1].split(":", 1)[0]

    answer = texting.deliver(sms_params(TEST_ACCOUNT_SID, BEN, LINE_NUMBER, f"YES {tag}"))

    in_answer = [message.text or "" for message in ET.fromstring(answer.text).findall("Message")]  # noqa: S314
    assert not any(WORDS in text or "still here" in text for text in in_answer)
    relayed = [message for message in fake.messages.values() if message.to == BEN and "#" + tag in message.body
               and any(words in message.body for words in (WORDS, *backlog))]  # fmt: skip
    assert [next(w for w in (WORDS, *backlog) if m.body.endswith(w)) for m in relayed] == [WORDS, *backlog]
    assert {message.direction for message in relayed} == {"outbound-api"}
    with app.app_context():
        kept = set(db.session.scalars(select(Message.message_sid).where(Message.idempotency_key.like("%:relay:%"))))
    assert {message.sid for message in relayed} <= kept  # each deletable by its SID after the purge


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_taking_a_long_backlog_over_a_slow_api_is_answered_in_time_and_gets_it_all_once_in_order(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    """Each relay is a REST request (500 ms here, as a slow Twilio API can take): twelve of them
    inside the counselor's webhook would pass its deadline (5 s in tests, 2 s by default), and
    they would read "the line is having trouble with your text" before the texter's words.
    Those past the webhook's share for REST sends wait for a send started at once beside the
    answer (the minute's sweep, should this process die)."""
    texting.send(TEXTER, WORDS)  # queued, offered to Ben
    backlog = [f"still here {number}" for number in range(11)]
    for text in backlog:
        texting.send(TEXTER, text)
    offer = next(text for text in texting.inbox(BEN) if text.startswith("New text #"))
    tag = offer.split("#", 1)[1].split(":", 1)[0]
    fake.inject_fault("POST", r"/Messages\.json$", status=200, delay=0.5, times=None)
    deadline = app.extensions["crisisline.settings"].voice_deadline_seconds

    started = time.monotonic()
    answer = texting.deliver(sms_params(TEST_ACCOUNT_SID, BEN, LINE_NUMBER, f"YES {tag}"))
    answered_in = answer.elapsed.total_seconds()

    assert "having trouble" not in answer.text
    # Its share for REST sends, one send that may be under way, and a second of grace for a
    # loaded machine (CI once took 3.52 s against 3.5): twelve sends inline would take 6 s.
    assert answered_in < deadline * outbox.WEBHOOK_REST_SHARE + 0.5 + 1.0, answered_in
    relayed = [message.body for message in fake.messages.values() if message.to == BEN
               and any(message.body.endswith(words) for words in (WORDS, *backlog))]  # fmt: skip
    assert [next(w for w in (WORDS, *backlog) if body.endswith(w)) for body in relayed] == [WORDS, *backlog]
    assert time.monotonic() - started < 12 * 0.5 + 3  # sent at once, not by the next minute's sweep
    with app.app_context():
        waiting = db.session.scalar(select(func.count()).where(Message.status == outbox.RETRYING))
    assert waiting == 0


def four_replies(document: object, texter: Texter, inbound: Message, body: str, *_: object) -> None:
    """A handler answering its texter with four texts: four ``<Message>`` verbs."""
    for number in range(4):
        outbox.send_text(key=f"reply:{inbound.id}:{number}", to_number=TEXTER, from_number=LINE_NUMBER,
                         body=f"reply {number}", party="line", texter=texter)  # fmt: skip


@pytest.mark.usefixtures("wednesday_evening")
def test_only_the_last_reply_has_an_action_so_no_reply_after_it_is_lost_and_its_status_comes_back(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio reports a TwiML reply's status only to a ``<Message>`` with an ``action`` too, and
    reaches no verb after an ``action`` (twilio-semantics §2.2)."""
    monkeypatch.setattr(sms_views, "handle_texter_message", four_replies)

    answer = texting.deliver(sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS))

    messages = ET.fromstring(answer.text).findall("Message")  # noqa: S314 - the app's own TwiML
    assert len(messages) == 4
    assert [message.get("action") for message in messages[:-1]] == [None] * (len(messages) - 1)
    assert messages[-1].get("action") == messages[-1].get("statusCallback") is not None
    relayed = [
        message for message in fake.messages.values() if message.to == TEXTER and message.direction == "outbound-reply"
    ]
    assert [message.body for message in relayed] == [message.text for message in messages]  # none unreachable
    sent_before = len(fake.messages)
    for message in relayed:
        fake.deliver_message(message.sid)
    (action,) = fake.webhooks(kind="message-action")
    assert action.status_code == 200 and "<Response />" in (action.response_text or "")
    assert len(fake.messages) == sent_before  # the action's empty answer sends nothing more
    with app.app_context():
        rows = list(db.session.scalars(select(Message).where(Message.id.in_(_ids(messages))).order_by(Message.id)))
    assert [row.status for row in rows] == ["queued"] * (len(rows) - 1) + ["delivered"]
    assert rows[-1].message_sid == relayed[-1].sid


@pytest.mark.usefixtures("wednesday_evening")
@pytest.mark.parametrize("status", ["received", "sent"])
def test_an_action_request_carrying_the_inbound_texts_parameters_never_breaks_or_rewrites_the_reply(
    app: Flask, live_server: str, status: str
) -> None:
    """Twilio's documents do not say whose MessageSid a <Message action> request carries."""
    inbound = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS)
    post_text(live_server, inbound)
    (row,) = outbound_to_texter(app)
    url = f"{live_server}/sms/status?message={row.id}"
    params = {**inbound, "MessageStatus": status, "SmsStatus": status}  # the inbound text's SID

    answer = requests.post(
        url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params, voice=False), timeout=15
    )

    assert answer.status_code == 200
    (after,) = outbound_to_texter(app)
    assert after.message_sid is None  # never the inbound text's SID
    assert after.status == ("queued" if status == "received" else "sent")


def test_no_reply_has_an_action_when_the_fail_safe_text_follows_it(app: Flask) -> None:
    from sms.views import _twiml

    with app.test_request_context("/sms/incoming", method="POST"):
        with_text = ET.fromstring(_twiml(FAILSAFE_TEXT, [(7, "words")]).get_data(as_text=True))  # noqa: S314
        alone = ET.fromstring(_twiml(replies=[(7, "words")]).get_data(as_text=True))  # noqa: S314

    assert [message.get("action") for message in with_text.findall("Message")] == [None, None]
    (last,) = alone.findall("Message")
    assert last.get("action") == last.get("statusCallback") is not None


def _ids(messages: list[ET.Element]) -> list[int]:
    return [int((message.get("statusCallback") or "").rsplit("=", 1)[1]) for message in messages]


def test_a_handling_that_replies_after_the_deadline_sends_its_reply_over_rest_once_after_the_fail_safe(
    line: Line, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch,  # noqa: F811 - the fixture, by name
) -> None:  # fmt: skip
    import sms.views

    real = sms.views.handle_texter_message

    def slow(*args: Any, **kwargs: Any) -> None:
        time.sleep(DEADLINE + 1.0)  # the deadline answers first...
        real(*args, **kwargs)  # ...then the reply is claimed

    monkeypatch.setattr(sms.views, "handle_texter_message", slow)
    texting = TextingPhone(line.url, fake)

    answer = texting.deliver(sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS))

    # Stored, no reply yet: the backup line now (a handling that then failed would have no
    # answer left to carry it), the reply when the handling gets to it.
    assert [m.text for m in ET.fromstring(answer.text).findall("Message")] == [FAILSAFE_TEXT]  # noqa: S314
    line.app.extensions["crisisline.deadline"].pool.shutdown(wait=True)  # the late handler finishes
    to_texter = [message for message in fake.messages.values() if message.to == TEXTER]
    assert [(message.body.startswith(WELCOME), message.direction) for message in to_texter] == [
        (False, "outbound-reply"), (True, "outbound-api"),
    ]  # fmt: skip
    (row,) = outbound_to_texter(line.app)  # the fail-safe text is not a stored reply
    assert row.message_sid == to_texter[1].sid


def test_a_stored_text_whose_handling_fails_after_the_deadline_still_pointed_the_texter_to_the_backup_line(
    line: Line, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch,  # noqa: F811 - the fixture, by name
) -> None:  # fmt: skip
    import sms.views

    def slow_then_fails(*_args: Any, **_kwargs: Any) -> None:
        time.sleep(DEADLINE + 1.0)
        raise RuntimeError("simulated database failure after the deadline answered")

    monkeypatch.setattr(sms.views, "handle_texter_message", slow_then_fails)
    texting = TextingPhone(line.url, fake)

    texting.deliver(sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS))
    line.app.extensions["crisisline.deadline"].pool.shutdown(wait=True)

    assert texting.inbox(TEXTER) == [FAILSAFE_TEXT]  # once, from the deadline's answer


def test_a_reply_taken_before_the_deadline_goes_in_the_deadlines_answer_once(
    line: Line, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch,  # noqa: F811 - the fixture, by name
) -> None:  # fmt: skip
    import sms.views

    real = sms.views.handle_texter_message
    # A longer deadline than the production one: the real handling must end inside it, and a
    # loaded test machine has been seen to take more than 2 s over the first text of a new app.
    deadline = line.app.extensions["crisisline.deadline"]
    monkeypatch.setattr(deadline, "seconds", ROOMY_DEADLINE)

    def slow(*args: Any, **kwargs: Any) -> None:
        started = time.monotonic()
        real(*args, **kwargs)  # the reply is claimed for the answer...
        time.sleep(max(0.0, started + ROOMY_DEADLINE + 0.5 - time.monotonic()))  # ...which the deadline gives first

    monkeypatch.setattr(sms.views, "handle_texter_message", slow)
    texting = TextingPhone(line.url, fake)

    answer = texting.deliver(sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, WORDS))

    messages = ET.fromstring(answer.text).findall("Message")  # noqa: S314 - the app's own TwiML
    assert [ANSWER in (message.text or "") for message in messages] == [True]  # the reply, not the fail-safe
    line.app.extensions["crisisline.deadline"].pool.shutdown(wait=True)  # the late handler finishes
    to_texter = [message for message in fake.messages.values() if message.to == TEXTER]
    assert [message.direction for message in to_texter] == ["outbound-reply"]  # sent once, by Twilio
    line.app.extensions["crisisline.background"].wait_idle(timeout=30)
    assert [row.status for row in outbound_to_texter(line.app)] == ["queued"]  # handed over, not left "claimed"


def _opened(app: Flask, row: Message) -> str:
    from sms import outbox

    with app.app_context():
        return outbox.vault().open(row.sealed_body or "", context=outbox.BODY_CONTEXT)
