"""A text Twilio refuses for now (429, 500, 503: it created nothing, a later try may be taken) is
not lost to that one answer: the minute's sweep tries it again, once a try, under its own
claimed row, and only after several minutes of refusals does it fail as a refusal for good does
(found by a bug hunt: one 503 lost a texter's "I took the pills" on its way to their counselor)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import RETRYING_ROWS, Conversation, Message
from crisisline.settings import Settings
from crisisline.telephony import REST_TIMEOUT_SECONDS
from sms import conversations as convo
from sms import outbox
from tests.conftest import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TextingPhone
from tests.console.test_delivery_in_the_thread import plan_of
from tests.rota import BEN, DIEGO
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import signed_headers

TEXTER = "+13125550177"
MESSAGES = r"/Messages\.json$"


def ben_holds_a_texter(app: Flask, texting: TextingPhone) -> int:
    texting.send(TEXTER, "I want to kill myself")
    with app.app_context():
        tag = db.session.scalars(select(Conversation)).one().id
    texting.send(BEN, f"YES {tag}")
    texting.send(BEN, f"#{tag} Hi, I'm Ben. Are you safe?")
    return tag


def copies(fake: FakeTwilio, number: str, words: str) -> int:
    return sum(1 for m in fake.messages.values() if m.to == number and words in m.body)


def retrying_text(app: Flask) -> int:
    with app.app_context():
        return db.session.scalars(convo.refused_texts()).one().id


def status_callback(texting: TextingPhone, message_id: int, status: str) -> None:
    """Twilio's status callback for the line's text ``message_id`` (no ErrorCode), over HTTP."""
    url = texting.url.replace("/sms/incoming", f"/sms/status?message={message_id}")
    params = {"AccountSid": TEST_ACCOUNT_SID, "MessageSid": "SM" + "a" * 32, "MessageStatus": status}
    headers = signed_headers(TEST_AUTH_TOKEN, url, params, voice=False)
    assert texting.session.post(url, data=params, headers=headers, timeout=15).status_code == 200


class CallbackDuringTheTry:
    """The REST client, but while the sweep's try of ``message_id`` is in flight, a status
    callback for that text reaches the line (before Twilio answers the try)."""

    def __init__(self, texting: TextingPhone, message_id: int, status: str) -> None:
        self.real, self.texting, self.message_id, self.status = outbox.rest_client, texting, message_id, status
        self.messages = self

    def __call__(self) -> CallbackDuringTheTry:
        return self

    def create(self, **request: Any) -> Any:
        if request["status_callback"].endswith(f"message={self.message_id}"):
            status_callback(self.texting, self.message_id, self.status)
        return self.real().messages.create(**request)


@pytest.mark.parametrize(("status", "code"), [(503, 20503), (500, 20500), (429, 20429)])
def test_a_texters_words_twilio_refused_for_now_reach_their_counselor_once_on_the_sweeps_next_try(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any], status: int, code: int,
) -> None:  # fmt: skip
    tag = ben_holds_a_texter(app, texting)
    fault = fake.inject_fault("POST", MESSAGES, status=status, code=code, message="refused for now", times=100)

    texting.send(TEXTER, "no. I took the pills")

    assert fault.remaining == 99  # one try on the webhook, none repeated inline
    assert copies(fake, BEN, "I took the pills") == 0
    fake.clear_faults()
    clock_tick()  # within the minute: retried by the sweep, as Twilio created nothing
    for minutes in (1, 2, 5, 10):
        wednesday_evening.shift(timedelta(minutes=minutes))
        clock_tick()

    assert f"#{tag}: no. I took the pills" in texting.inbox(BEN)
    assert copies(fake, BEN, "I took the pills") == 1  # never two copies
    with app.app_context():
        conversation = db.session.get(Conversation, tag)
        assert conversation is not None and (conversation.state, conversation.counselor_id) == ("active", "ben-carter")


def test_a_refused_text_is_tried_once_a_sweep_and_its_later_parts_follow_it_in_order(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    tag = ben_holds_a_texter(app, texting)
    long_words = "I took the pills. " + "x" * 1580 + " END"  # with its tag, two texts
    fault = fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=100)
    texting.send(TEXTER, long_words)
    assert fault.remaining == 99  # the first part; the second waits behind it, untried

    clock_tick()
    clock_tick()  # two sweeps in one minute (two clocks, say): each try is its own
    assert fault.remaining == 97
    fake.clear_faults()
    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    relayed = [m.body for m in fake.messages.values() if m.to == BEN and m.body.startswith(f"#{tag}: I took")]
    rest = [m.body for m in fake.messages.values() if m.to == BEN and m.body.endswith(" END")]
    assert len(relayed) == 1 and len(rest) == 1
    bodies = [m.body for m in fake.messages.values() if m.to == BEN]
    assert bodies.index(relayed[0]) < bodies.index(rest[0])


def test_a_texters_words_twilio_keeps_refusing_hand_them_to_the_next_counselor_within_minutes(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Tried for a bounded time, then failed as a refusal for good is: the texter is handed back
    to the queue, not left an hour believing Ben is reading, and the next counselor gets it all."""
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=None)
    texting.send(TEXTER, "no. I took the pills")

    for _ in range(4):
        wednesday_evening.shift(timedelta(minutes=1))
        clock_tick()
    with app.app_context():
        assert db.session.get(Conversation, tag).counselor_id == "ben-carter"  # type: ignore[union-attr]
    for _ in range(3):
        wednesday_evening.shift(timedelta(minutes=1))
        clock_tick()

    with app.app_context():
        conversation = db.session.get(Conversation, tag)
        assert conversation is not None
        assert conversation.state in ("queued", "offered") and conversation.counselor_id is None
        (relay,) = db.session.scalars(
            select(Message).where(Message.party == "counselor", Message.idempotency_key.like(f"c{tag}:relay:%"),
                                  Message.responder_id == "ben-carter", Message.direction == "out")
            .order_by(Message.id.desc()).limit(1)
        ).all()  # fmt: skip
        assert (relay.status, relay.error_code, relay.message_sid) == ("failed", 20503, None)
    assert copies(fake, BEN, "I took the pills") == 0
    fake.clear_faults()
    taken = texting.send(DIEGO, f"YES {tag}")
    assert any("no. I took the pills" in text for text in taken)


def test_a_counselors_words_twilio_refused_for_now_reach_the_texter_on_the_sweeps_next_try(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=429, code=20429)
    texting.send(BEN, f"#{tag} Please call 911 now, or tell me where you are")
    assert copies(fake, TEXTER, "call 911") == 0

    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    assert copies(fake, TEXTER, "Please call 911 now") == 1
    assert not any("not delivered" in text.lower() for text in texting.inbox(BEN))


def test_a_counselors_words_twilio_keeps_refusing_are_reported_to_the_counselor(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    tag = ben_holds_a_texter(app, texting)
    fault = fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=None)
    texting.send(BEN, f"#{tag} Please call 911 now")
    for _ in range(6):
        wednesday_evening.shift(timedelta(minutes=1))
        clock_tick()
    fake.faults.remove(fault)
    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()  # the note to Ben was refused for now too: sent on the sweep after

    assert copies(fake, TEXTER, "call 911") == 0
    assert any(f"#{tag}" in text and "busy or failing" in text for text in texting.inbox(BEN)), texting.inbox(BEN)


def test_a_refusal_that_is_not_for_now_fails_at_once_and_is_never_sent_again(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """A 504 came from a gateway that may have passed the request on: the text may have gone out."""
    ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=504, code=20504)
    texting.send(TEXTER, "no. I took the pills")
    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    assert copies(fake, BEN, "I took the pills") == 0
    with app.app_context():
        refused = db.session.execute(
            select(Message.status, Message.error_code).where(
                Message.party == "counselor", Message.direction == "out", Message.error_code.is_not(None))
        ).all()  # fmt: skip
    assert [tuple(row) for row in refused] == [("failed", 20504)]


def test_on_sqlite_the_sweep_finds_refused_texts_through_their_partial_index_not_the_whole_table(
    app: Flask, settings: Settings
) -> None:
    """Every minute, among every text the line has kept: a handful at most are ``retrying``."""
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite's rule: a partial index only for a query that states its condition word for word")
    assert f"status = '{outbox.RETRYING}'" == RETRYING_ROWS
    with app.app_context():
        plan = plan_of(lambda: db.session.scalars(convo.refused_texts().limit(100)).all())
    assert any("USING INDEX ix_messages_retrying" in step for step in plan), plan


def test_a_retry_twilio_does_not_answer_is_never_sent_again_and_holds_the_others_to_the_next_sweep(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """A try that gets no answer may have gone out (left for a person, as any such text); the
    sweep does not wait out the REST timeout once per refused text behind it."""
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=2)
    texting.send(TEXTER, "no. I took the pills")  # to Ben: refused for now
    texting.send(BEN, f"#{tag} Please call 911 now")  # to the texter: refused for now
    with app.app_context():
        refused = db.session.scalars(select(Message.id).where(Message.status == "retrying").order_by(Message.id)).all()
    hang = fake.inject_fault("POST", MESSAGES, status=200, delay=REST_TIMEOUT_SECONDS + 1, times=100)

    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()
    assert hang.remaining == 99  # one try, then the pass stopped
    fake.clear_faults()
    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    assert copies(fake, TEXTER, "Please call 911 now") == 1
    assert copies(fake, BEN, "I took the pills") <= 1  # the unanswered try may have gone out: never again
    with app.app_context():
        statuses = db.session.execute(
            select(Message.status, Message.error_code).where(Message.id.in_(refused)).order_by(Message.id)
        ).all()
    # Never sent again (the board lists the first after 2 min), and no longer holding later texts
    # to Ben behind it (its code dropped: ``outbox._WAITING_BEFORE``); the second, taken, drops its refusal.
    assert [tuple(row) for row in statuses] == [("claimed", None), ("queued", None)]


def test_a_counselors_refused_words_are_not_sent_again_once_they_passed_the_conversation_on(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Found by the review of the retry: the holder was checked when Ben wrote, not when the
    sweep sent his words minutes later, so they reached a texter Diego now had."""
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)
    texting.send(BEN, f"#{tag} I'll stay with you all night")
    texting.send(BEN, f"PASS {tag}")
    wednesday_evening.shift(timedelta(seconds=5))
    texting.send(DIEGO, f"YES {tag}")

    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    assert copies(fake, TEXTER, "stay with you all night") == 0
    with app.app_context():  # given up, not left to be tried again
        relays = db.session.scalars(
            select(Message.status).where(Message.idempotency_key.like(f"c{tag}:relay:%"), Message.party == "texter")
        ).all()
    assert "retrying" not in relays and "failed" in relays


def test_a_counselors_last_words_refused_for_now_before_their_end_reach_the_texter_before_the_closing_text(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Found by review: one 503 on Ben's last words, then his END, and the sweep gave them up
    (the conversation was no longer active): the texter got "this conversation has ended"
    without the safety advice, and Ben was never told. His END does not take them back."""
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)  # one blip, on Ben's words
    texting.send(BEN, f"#{tag} If you feel unsafe tonight call 988 right away")
    texting.send(BEN, f"END {tag}")
    assert copies(fake, TEXTER, "call 988 right away") == 0

    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    to_texter = texting.inbox(TEXTER)  # in the order Twilio took them
    assert copies(fake, TEXTER, "call 988 right away") == 1
    words = next(i for i, body in enumerate(to_texter) if "call 988 right away" in body)
    closing = next(i for i, body in enumerate(to_texter) if "ended" in body.lower())
    assert words < closing  # in the order Ben sent them


def test_a_counselors_last_words_refused_before_their_end_are_not_sent_once_the_texter_wrote_again(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Found by the review of the fix above: the texter's new conversation (maybe with another
    counselor) is not to get the last one's words minutes later."""
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)
    texting.send(BEN, f"#{tag} If you feel unsafe tonight call 988 right away")
    texting.send(BEN, f"END {tag}")
    wednesday_evening.shift(timedelta(seconds=20))
    texting.send(TEXTER, "I want to kill myself")  # a new conversation
    with app.app_context():
        assert len(db.session.scalars(select(Conversation)).all()) == 2

    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    assert copies(fake, TEXTER, "call 988 right away") == 0


def test_a_counselors_last_words_that_cannot_be_delivered_after_their_end_are_told_to_them(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    """The same words refused for good (a carrier's filter) after the END: Ben is told, as he
    would be while the conversation was open (``sms_not_delivered``)."""
    tag = ben_holds_a_texter(app, texting)
    texting.send(BEN, f"#{tag} If you feel unsafe tonight call 988 right away")
    texting.send(BEN, f"END {tag}")
    (words,) = [m for m in fake.messages.values() if m.to == TEXTER and "call 988" in m.body]

    fake.deliver_message(words.sid, "undelivered", 30007)

    assert any(f"#{tag}" in text and "not" in text.lower() for text in texting.inbox(BEN)[-2:])


def test_a_status_a_text_reached_while_its_retry_was_refused_again_is_kept_and_it_is_never_sent_again(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Found by review: a try refused again wrote ``retrying`` back over the status a callback
    had recorded meanwhile, and the next sweep sent Ben the texter's words a second time."""
    ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=2)  # the webhook's try, the sweep's
    texting.send(TEXTER, "no. I took the pills")
    relay = retrying_text(app)
    monkeypatch.setattr(outbox, "rest_client", CallbackDuringTheTry(texting, relay, "delivered"))

    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()  # refused again, after the callback said "delivered"
    with app.app_context():
        assert db.session.get(Message, relay).status == "delivered"  # type: ignore[union-attr]
    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()

    assert copies(fake, BEN, "I took the pills") == 0  # the callback said it arrived: never again


def test_a_counselors_words_sent_on_a_retry_and_then_not_delivered_are_not_reported_as_refused(
    app: Flask, texting: TextingPhone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    """Found by review: a text Twilio took on its retry kept the refusal's code, so when it later
    did not arrive, Ben was told Twilio had kept refusing it (he would wait for Twilio, not ask
    the texter another way)."""
    tag = ben_holds_a_texter(app, texting)
    fake.inject_fault("POST", MESSAGES, status=503, code=20503, times=1)
    texting.send(BEN, f"#{tag} Please call 911 now")
    words = retrying_text(app)
    wednesday_evening.shift(timedelta(minutes=1))
    clock_tick()
    assert copies(fake, TEXTER, "Please call 911 now") == 1
    with app.app_context():
        assert db.session.get(Message, words).error_code is None  # type: ignore[union-attr]

    status_callback(texting, words, "undelivered")  # Twilio took it; it did not arrive (no code given)

    (note,) = [text for text in texting.inbox(BEN) if text.startswith(f"[#{tag}:") and "did not reach" in text]
    assert "busy or failing" not in note
