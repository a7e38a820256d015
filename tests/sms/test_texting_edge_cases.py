"""The hard cases of texting: words sent while waiting, commands without a number, bursts of
texts handled by several processes, texters waiting on a silent counselor, blocked phones."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import func, select

from crisisline.db import db
from crisisline.models import Conversation, ConversationOffer, Message, ResponderState
from sms.views import FAILSAFE_TEXT
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TextingPhone
from tests.rota import BEN
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import sms_params

TEXTER = "+13125550177"


def only_conversation(app: Flask) -> Conversation:
    with app.app_context():
        return db.session.scalars(select(Conversation)).one()


@pytest.mark.usefixtures("wednesday_evening")
def test_help_written_to_a_counselor_reaches_the_counselor(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = only_conversation(app).id
    texting.send(BEN, f"YES {tag}")

    replies = texting.send(TEXTER, "help")

    assert texting.inbox(BEN)[-1] == f"#{tag}: help"
    assert not any(reply.startswith("Riverside County Crisis Line: text us") for reply in replies)


@pytest.mark.usefixtures("wednesday_evening")
@pytest.mark.parametrize("word", ["END", "yes", "PASS", "stop", "Help"])
def test_a_counselors_command_without_a_number_is_never_relayed(app: Flask, texting: TextingPhone, word: str) -> None:
    texting.send(TEXTER, "I want to kill myself")
    texting.send(BEN, f"YES {only_conversation(app).id}")
    before = texting.inbox(TEXTER)

    replies = texting.send(BEN, word)

    assert texting.inbox(TEXTER) == before
    command = word.upper()
    assert replies == [
        f"Not sent: {command} on its own is never passed on. To send it to your texter, write #12 {command}."
        " Commands take the number: YES 12, END 12, PASS 12."
    ]


def taken_by_ben_who_wrote(app: Flask, texting: TextingPhone) -> int:
    """A texter's conversation, taken by Ben, who has written once: its tag."""
    texting.send(TEXTER, "I want to kill myself")
    tag = only_conversation(app).id
    texting.send(BEN, f"YES {tag}")
    texting.send(BEN, f"#{tag} Hi, I'm Ben.")
    return tag


def test_a_texter_waiting_on_a_silent_counselor_goes_back_to_the_queue_not_closed(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any]
) -> None:
    tag = taken_by_ben_who_wrote(app, texting)
    texting.send(TEXTER, "are you there? please")

    wednesday_evening.shift(timedelta(minutes=61))
    clock_tick()

    with app.app_context():
        conversation = db.session.get(Conversation, tag)
    assert conversation is not None
    assert conversation.state in ("queued", "offered")  # not closed
    assert not any(t.startswith("We have not heard from you") for t in texting.inbox(TEXTER))
    assert texting.inbox(BEN)[-1] == f"#{tag} had no reply for a while, so it went back to the queue for someone else."


def test_a_texter_asking_again_and_again_is_still_passed_on_from_a_silent_counselor(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any]
) -> None:
    tag = taken_by_ben_who_wrote(app, texting)
    for minutes in (0, 20, 20, 19):  # unanswered for 59 minutes, asking every 20 or so
        wednesday_evening.shift(timedelta(minutes=minutes))
        texting.send(TEXTER, "are you there? please")
        clock_tick()
        assert only_conversation(app).state == "active"  # not an hour yet since the first

    wednesday_evening.shift(timedelta(minutes=2))
    clock_tick()

    assert only_conversation(app).state in ("queued", "offered")
    assert texting.inbox(BEN)[-1] == f"#{tag} had no reply for a while, so it went back to the queue for someone else."


def test_a_text_stored_before_the_counselor_wrote_and_handled_after_still_times_the_wait(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any]
) -> None:
    tag = taken_by_ben_who_wrote(app, texting)
    texting.send(TEXTER, "are you there? please")
    with app.app_context():  # stored a moment before Ben wrote, its handling retried after
        conversation = db.session.get(Conversation, tag)
        assert conversation is not None and conversation.last_counselor_at is not None
        last = db.session.scalars(select(Message).where(Message.direction == "in").order_by(Message.id.desc())).first()
        assert last is not None
        last.created_at = conversation.last_counselor_at - timedelta(seconds=5)
        db.session.commit()

    wednesday_evening.shift(timedelta(minutes=61))
    clock_tick()

    assert only_conversation(app).state in ("queued", "offered")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_burst_of_first_texts_opens_one_conversation(app: Flask, texting: TextingPhone) -> None:
    bursts = [sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, f"hola necesito ayuda {n}") for n in range(4)]
    barrier = threading.Barrier(len(bursts))

    def deliver(params: dict[str, str]) -> None:
        barrier.wait()
        texting.deliver(params)

    threads = [threading.Thread(target=deliver, args=(params,)) for params in bursts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    with app.app_context():
        assert db.session.scalar(select(func.count(Conversation.id))) == 1


@pytest.mark.usefixtures("wednesday_evening")
def test_sweeps_running_at_once_make_one_offer(app: Flask, texting: TextingPhone) -> None:
    texting.send(BEN, "OFF")
    texting.send(TEXTER, "I want to kill myself")  # offered to Diego
    with app.app_context():
        db.session.execute(db.update(ConversationOffer).values(state="expired"))
        db.session.execute(db.update(Conversation).values(state="queued"))
        db.session.commit()
    texting.send(BEN, "ON")  # Ben is free again: both sweeps below would offer to him

    def sweep_once() -> None:
        with app.app_context():
            from workers.upkeep import sweep_text_conversations

            sweep_text_conversations()

    threads = [threading.Thread(target=sweep_once) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    with app.app_context():
        open_offers = db.session.scalar(
            select(func.count(ConversationOffer.id)).where(ConversationOffer.state == "open")
        )
    assert open_offers == 1


def test_an_offer_that_failed_half_way_leaves_the_conversation_queued_for_the_next_pass(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    import sms.conversations

    real = sms.conversations.ensure_responder_state

    def fails_once(responder_id: str) -> None:
        monkeypatch.setattr(sms.conversations, "ensure_responder_state", real)
        raise RuntimeError("simulated database error between the claim and the offer")

    monkeypatch.setattr(sms.conversations, "ensure_responder_state", fails_once)
    texting.send(TEXTER, "I want to kill myself")

    assert only_conversation(app).state == "queued"  # never "offered" to nobody
    assert texting.inbox(BEN) == []
    wednesday_evening.shift(timedelta(seconds=31))
    clock_tick()
    assert texting.inbox(BEN)[0].startswith("New text #")
    assert only_conversation(app).state == "offered"


def test_an_idle_close_read_before_the_texter_wrote_again_leaves_the_conversation_open(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    from routing.store import active_routing
    from sms.conversations import close, now

    texting.send(TEXTER, "hello")  # the menus: waiting on the texter
    wednesday_evening.shift(timedelta(minutes=61))
    with app.app_context():
        document = active_routing().document  # type: ignore[union-attr]
        quiet_since = now() - timedelta(minutes=document.sms.idle_close_minutes)
        read_by_the_sweep = db.session.scalars(select(Conversation)).one()  # idle, as the sweep read it
    texting.send(TEXTER, "sorry, I'm here")  # the texter writes before the sweep closes it

    with app.app_context():
        closed = close(read_by_the_sweep, document, "idle", tell_texter="idle_closed", quiet_since=quiet_since)

    assert closed is False
    assert only_conversation(app).state != "closed"
    assert not any("closed" in text.lower() for text in texting.inbox(TEXTER))


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_whose_phone_blocks_the_line_is_paused(app: Flask, texting: TextingPhone, fake: FakeTwilio) -> None:
    fake.opt_out(BEN)

    texting.send(TEXTER, "I want to kill myself")  # the offer text to Ben fails with 21610

    with app.app_context():
        state = db.session.get(ResponderState, "ben-carter")
    assert state is not None
    assert (state.paused, state.paused_reason) == (True, "sms_blocked")


def test_an_inbound_text_without_a_message_sid_is_refused(texting: TextingPhone) -> None:
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, "hello")
    del params["MessageSid"]
    from tests.conftest import TEST_AUTH_TOKEN
    from twilio_fake.signing import signed_headers

    response = texting.session.post(
        texting.url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, texting.url, params, voice=False), timeout=10
    )

    assert response.status_code == 400


def test_a_text_whose_handling_crashed_is_handled_later_not_lost(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    import sms.views

    real = sms.views.handle_texter_message

    def crash_once(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr(sms.views, "handle_texter_message", real)
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(sms.views, "handle_texter_message", crash_once)
    replies = texting.send(TEXTER, "I want to kill myself")
    assert replies == [FAILSAFE_TEXT]  # the webhook answered the 988 pointer by TwiML; nothing was handled

    wednesday_evening.shift(timedelta(seconds=31))
    clock_tick()  # the clock's sweep retries it

    assert texting.inbox(TEXTER)[-1].split("\n\n")[-1].startswith("Thank you. A counselor will text you back shortly")
    assert texting.inbox(BEN)[0].startswith("New text #")


# --- odd requests: whatever else is wrong with them, what a texter wrote is kept ----------------


def stored_bodies(app: Flask, message_sid: str) -> list[str]:
    """The opened bodies of the inbound texts stored under ``message_sid`` (malformed ones
    are stored under a digest of it)."""
    from crisisline import twilio_params
    from crisisline.models import Message
    from sms import outbox

    with app.app_context():
        rows = db.session.scalars(
            select(Message).where(Message.message_sid == twilio_params.message_key(message_sid))
        ).all()
        return [outbox.vault().open(row.sealed_body or "", context=outbox.BODY_CONTEXT) for row in rows]


@pytest.fixture
def twilio_reaches_every_plausible_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twilio delivered a text from the number, so it can send one back; the fake's strict
    libphonenumber check (its 21211) would refuse numbers libphonenumber does not know yet."""
    import phonenumbers

    from twilio_fake import rest_api

    def reachable(number: str) -> bool:
        try:
            return phonenumbers.is_possible_number(phonenumbers.parse(number, None))
        except phonenumbers.NumberParseException:
            return False

    monkeypatch.setattr(rest_api, "is_valid_number", reachable)


@pytest.mark.usefixtures("wednesday_evening")
def test_a_text_whose_num_media_only_looks_like_a_digit_is_kept_and_answered(app: Flask, texting: TextingPhone) -> None:
    assert "²".isdigit()  # but int("²") raises: this used to lose the text
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, "I need to talk to someone tonight")
    params["NumMedia"] = "²"

    texting.deliver(params)

    assert stored_bodies(app, params["MessageSid"]) == ["I need to talk to someone tonight"]
    assert texting.inbox(TEXTER)[0].startswith("Riverside County Crisis Line.")


@pytest.mark.usefixtures("wednesday_evening", "twilio_reaches_every_plausible_number")
@pytest.mark.parametrize("number", ["+16725550123", "+8821234567890", "+15555550123"])
def test_a_texter_whose_number_libphonenumber_does_not_know_gets_the_first_reply(
    app: Flask, texting: TextingPhone, number: str
) -> None:
    replies = texting.send(number, "Hi, I really need to talk to someone tonight")

    assert replies[0].startswith("Riverside County Crisis Line.")
    assert only_conversation(app).state == "need"


@pytest.mark.parametrize(
    "message_sid",
    ["SM" + "a" * 4998, "SM\x00" + "b" * 31, "not-a-sid"],
    ids=["5000 characters", "NUL byte", "malformed"],
)
def test_a_text_with_a_malformed_message_sid_is_kept_once(app: Flask, texting: TextingPhone, message_sid: str) -> None:
    params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, "please help", message_sid=message_sid)

    texting.deliver(params)
    texting.deliver(params)  # Twilio's retry: still one row

    assert stored_bodies(app, message_sid) == ["please help"]


@pytest.mark.parametrize("sender", ["anonymous", "", "+266696687", "not a number", "+1312555\x000123"])
def test_a_text_from_a_sender_we_cannot_answer_is_still_kept(app: Flask, texting: TextingPhone, sender: str) -> None:
    params = sms_params(TEST_ACCOUNT_SID, sender, LINE_NUMBER, "I am scared\x00 and alone " + "é" * 2000)
    params["NumSegments"] = "x" * 500

    texting.deliver(params)

    assert stored_bodies(app, params["MessageSid"]) == ["I am scared\x00 and alone " + "é" * 2000]
    assert texting.fake.messages == {}  # nobody to reply to


@pytest.mark.usefixtures("wednesday_evening")
def test_a_need_chosen_after_another_text_queued_the_conversation_still_counts_and_never_lowers_priority(
    app: Flask, texting: TextingPhone
) -> None:
    texting.send(TEXTER, "I want to kill myself")  # queued at once, priority 8
    sent = len(texting.inbox(TEXTER))

    with app.app_context():  # a second text of theirs, handled side by side, chose from the menu
        from routing.store import active_routing
        from sms import conversations

        conversation = db.session.scalars(select(Conversation)).one()
        active = active_routing()
        assert active is not None
        conversations.queue(conversation, active.document, welcome="Welcome.", need=("substance_use", 5))

    conversation = only_conversation(app)
    assert (conversation.state, conversation.need, conversation.priority) in {
        ("queued", "substance_use", 8), ("offered", "substance_use", 8)
    }  # fmt: skip
    assert len(texting.inbox(TEXTER)) == sent  # the text that queued it told them the wait; once


@pytest.mark.usefixtures("wednesday_evening")
def test_a_need_named_in_a_text_handled_beside_one_that_got_the_menu_still_tells_the_wait(
    app: Flask, texting: TextingPhone
) -> None:
    menu = texting.send(TEXTER, "I am not doing well tonight and need to talk")  # welcome and menu
    assert len(menu) == 1 and "What is happening?" in menu[0]

    with app.app_context():  # their second first text, read while the conversation was new, named a need
        from routing.store import active_routing
        from sms import conversations

        conversation = db.session.scalars(select(Conversation)).one()
        active = active_routing()
        assert active is not None
        conversations.queue(conversation, active.document, welcome="Riverside County Crisis Line.",
                            need=("suicide", 8))  # fmt: skip

    told = texting.inbox(TEXTER)[-1]
    assert told.startswith("Riverside County Crisis Line.\n\n")
    assert "A counselor will text you back shortly" in told
    assert only_conversation(app).priority == 8


def crash_once_before_telling_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies (a bug, a kill) after the queueing committed, before the wait is told."""
    from sms import conversations

    real = conversations.estimate_wait_minutes

    def crash_once(*args: Any, **kwargs: Any) -> int:
        monkeypatch.setattr(conversations, "estimate_wait_minutes", real)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(conversations, "estimate_wait_minutes", crash_once)


def test_a_texter_queued_by_a_text_whose_handling_died_before_the_wait_is_told_it_by_the_clocks_retry(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    crash_once_before_telling_the_wait(monkeypatch)
    assert texting.send(TEXTER, "I want to kill myself") == [FAILSAFE_TEXT]
    assert only_conversation(app).state in ("queued", "offered")  # queued, but told nothing of it

    wednesday_evening.shift(timedelta(seconds=31))
    clock_tick()  # the clock's sweep retries the text: it finds them waiting

    told = texting.inbox(TEXTER)[1:]  # after the fail-safe
    assert len(told) == 1
    assert told[0].startswith("Riverside County Crisis Line. Your texts are private.")  # the welcome too
    assert "A counselor will text you back shortly" in told[0]


def test_a_menu_answer_whose_handling_died_before_the_wait_is_told_it_once_without_a_second_welcome(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    texting.send(TEXTER, "I am not doing well tonight and need to talk")  # welcome and menu
    crash_once_before_telling_the_wait(monkeypatch)
    assert texting.send(TEXTER, "1") == [FAILSAFE_TEXT]

    wednesday_evening.shift(timedelta(seconds=31))
    clock_tick()
    texting.send(TEXTER, "hello? is anyone there")  # a text while waiting: told already, nothing more
    wednesday_evening.shift(timedelta(seconds=31))
    clock_tick()

    told = [text for text in texting.inbox(TEXTER) if text != FAILSAFE_TEXT]
    assert len(told) == 2, told
    assert told[1].startswith("Thank you. A counselor will text you back shortly")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_text_while_waiting_soon_after_the_queueing_never_races_the_wait_being_told(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_once_before_telling_the_wait(monkeypatch)
    texting.send(TEXTER, "I want to kill myself")

    texting.send(TEXTER, "please")  # within seconds: the handling that queued them may still tell it

    assert texting.inbox(TEXTER) == [FAILSAFE_TEXT]  # the crashed handling's answer, nothing more


def step_on_a_copy_read_before_another_text(app: Flask, body: str, **meanwhile: object) -> None:
    """This handling read the conversation; then another text of theirs, handled by another
    process, changed it (``meanwhile``); then this handling's step runs on its copy."""
    from routing.store import active_routing
    from sms import texting as texting_module

    with app.app_context():
        conversation = db.session.scalars(select(Conversation)).one()  # this handling's copy
        active = active_routing()
        assert active is not None
        with db.engine.begin() as other_process:
            table = Conversation.__table__
            other_process.execute(table.update().where(table.c.id == conversation.id).values(**meanwhile))
        texting_module.handle_step(active.document, conversation, None, body)  # type: ignore[arg-type]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_menu_answer_never_puts_a_conversation_another_text_queued_back_to_the_menu(
    app: Flask, texting: TextingPhone
) -> None:
    texting.send(TEXTER, "?")  # which language?
    assert only_conversation(app).state == "language"

    step_on_a_copy_read_before_another_text(app, "1", state="queued")

    assert only_conversation(app).state == "queued"
    assert not any("What is happening?" in text for text in texting.inbox(TEXTER))


@pytest.mark.usefixtures("wednesday_evening")
def test_a_need_named_in_another_language_never_overwrites_the_language_of_a_text_that_queued_them_first(
    app: Flask, texting: TextingPhone
) -> None:
    texting.send(TEXTER, "?")  # which language?

    step_on_a_copy_read_before_another_text(
        app, "I want to kill myself", state="queued", language="es", need="suicide", priority=8
    )

    assert only_conversation(app).language == "es"


@pytest.mark.usefixtures("wednesday_evening")
def test_risk_words_while_waiting_never_lower_a_priority_another_text_raised(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I am not doing well tonight and need to talk")
    texting.send(TEXTER, "6")  # something else: queued at the lowest priority
    waiting = only_conversation(app)
    assert waiting.state in ("queued", "offered") and waiting.priority == 0

    # danger now, in a text handled beside this one
    step_on_a_copy_read_before_another_text(app, "I want to kill myself", priority=9)

    assert only_conversation(app).priority == 9
