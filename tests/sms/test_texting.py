"""Texters sorted by language and need, then a private conversation with a counselor, relayed
through the line's number. Signed webhooks in, the fake Twilio REST API out, real HTTP both ways."""

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
from crisisline.models import Conversation, Message
from tests.conftest import TextingPhone
from tests.rota import ANA, BEN, DIEGO
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import new_sid, sms_params

TEXTER = "+13125550177"
OTHER_TEXTER = "+13125550178"


def conversation_of(app: Flask, number_of_conversation: int = 1) -> Conversation:
    with app.app_context():
        return db.session.scalars(select(Conversation).order_by(Conversation.id)).all()[number_of_conversation - 1]


@pytest.mark.usefixtures("wednesday_evening")
@pytest.mark.parametrize(
    ("first_text", "language"),
    [
        ("Hi, I really need to talk to someone tonight", "en"),
        ("hola, necesito hablar con alguien por favor", "es"),
        ("I can't stop crying and I don't know what to do", "en"),
        ("no se que hacer, estoy muy mal", "es"),
    ],
)
def test_language_is_detected_from_a_realistic_first_text(
    app: Flask, texting: TextingPhone, first_text: str, language: str
) -> None:
    replies = texting.send(TEXTER, first_text)

    assert conversation_of(app).language == language
    assert conversation_of(app).state == "need"
    # One text: separate texts may arrive in either order, and the menu must follow the welcome.
    assert len(replies) == 1
    welcome = {"en": "Riverside County Crisis Line.", "es": "Linea de Crisis"}[language]
    assert replies[0].startswith(welcome)
    menu_start = {"en": "What is happening?", "es": "Que esta pasando?"}[language]
    assert replies[0].index(menu_start) > len(welcome)
    assert ("1 someone in danger right now" in replies[0]) == (language == "en")


@pytest.mark.usefixtures("wednesday_evening")
def test_language_is_asked_when_unsure_and_the_answer_is_taken(app: Flask, texting: TextingPhone) -> None:
    assert texting.send(TEXTER, "ok") == ["Reply 1 for English / Responda 2 para español"]

    replies = texting.send(TEXTER, "2")

    assert conversation_of(app).language == "es"
    assert "\n\nQue esta pasando?" in replies[0]


@pytest.mark.usefixtures("wednesday_evening")
def test_need_by_number_queues_and_offers_the_conversation(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I need to talk to someone")

    replies = texting.send(TEXTER, "4")

    conversation = conversation_of(app)
    assert (conversation.need, conversation.state) == ("substance_use", "offered")
    assert replies[0].startswith("Thank you. A counselor will text you back shortly")
    (offer,) = texting.inbox(BEN)
    assert offer.startswith(f"New text #{conversation.id}: English, drug or alcohol use, waiting ")
    assert offer.endswith(f"Reply YES {conversation.id} to take it.")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_first_text_naming_a_need_skips_the_menus_and_raises_priority(app: Flask, texting: TextingPhone) -> None:
    replies = texting.send(TEXTER, "I want to kill myself")

    conversation = conversation_of(app)
    assert (conversation.language, conversation.need, conversation.priority) == ("en", "suicide", 8)
    # One text, the welcome first, then the wait: two texts may arrive in either order.
    assert len(replies) == 1
    welcome, wait = replies[0].split("\n\n")
    assert welcome.startswith("Riverside County Crisis Line.")
    assert wait.startswith("Thank you. A counselor will text you back shortly")
    assert texting.inbox(BEN)[0].startswith(f"New text #{conversation.id}: English, thoughts of suicide")


@pytest.mark.usefixtures("wednesday_evening")
def test_counselor_takes_and_both_sides_talk_through_the_line_number(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversation_of(app).id

    taken = texting.send(BEN, f"YES {tag}")
    texting.send(TEXTER, "are you there?")
    texting.send(BEN, f"#{tag} I'm here. I'm Ben. Are you safe right now?")

    assert taken == [f"#{tag}: I want to kill myself", taken[-1]]
    assert taken[-1].startswith(f"You have #{tag}.")
    assert texting.inbox(BEN)[-1] == f"#{tag}: are you there?"
    assert texting.inbox(TEXTER)[-1] == "I'm here. I'm Ben. Are you safe right now?"
    # Neither side ever sees the other's number: every text comes from the line.
    assert {m.from_ for m in fake.messages.values()} == {"+13125550100"}
    assert conversation_of(app).counselor_id == "ben-carter"


def test_a_yes_whose_backlog_failed_half_way_is_finished_by_the_retry_not_called_too_late(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch, wednesday_evening: time_machine.Coordinates,
    clock_tick: Callable[[], Any],
) -> None:  # fmt: skip
    import sms.conversations

    texting.send(TEXTER, "I want to kill myself")
    texting.send(TEXTER, "I have the pills here")
    tag = conversation_of(app).id
    real = sms.conversations.relay_to_counselor
    relayed: list[int] = []

    def fails_on_the_second(*args: Any, **kwargs: Any) -> None:
        relayed.append(1)
        if len(relayed) == 2:
            monkeypatch.setattr(sms.conversations, "relay_to_counselor", real)
            raise RuntimeError("simulated failure relaying the backlog")
        real(*args, **kwargs)

    monkeypatch.setattr(sms.conversations, "relay_to_counselor", fails_on_the_second)
    texting.send(BEN, f"YES {tag}")  # taken, the first text relayed, then the failure
    assert conversation_of(app).counselor_id == "ben-carter"

    wednesday_evening.shift(timedelta(seconds=31))
    clock_tick()  # the sweep handles Ben's YES again

    backlog = [text for text in texting.inbox(BEN) if text.startswith(f"#{tag}: ")]
    assert backlog == [f"#{tag}: I want to kill myself", f"#{tag}: I have the pills here"]  # each once
    assert texting.inbox(BEN)[-1].startswith(f"You have #{tag}.")
    assert not any("too late" in text.lower() or "already" in text.lower() for text in texting.inbox(BEN))


@pytest.mark.usefixtures("wednesday_evening")
def test_untagged_replies_go_to_the_only_conversation_and_ambiguous_ones_bounce(
    app: Flask, texting: TextingPhone
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    first = conversation_of(app).id
    texting.send(BEN, f"YES {first}")
    texting.send(BEN, "Hi, I'm Ben.")
    assert texting.inbox(TEXTER)[-1] == "Hi, I'm Ben."

    texting.send(OTHER_TEXTER, "I want to die")
    second = conversation_of(app, 2).id
    texting.send(BEN, f"yes #{second}")
    texting.send(TEXTER, "thank you")
    texting.send(OTHER_TEXTER, "hello?")
    bounced = texting.send(BEN, "Take a deep breath.")

    assert bounced == [
        f"Not sent: you have several conversations (#{second}, #{first}). Start your reply with the tag, like #12."
    ]
    assert texting.inbox(OTHER_TEXTER)[-1] != "Take a deep breath."
    texting.send(BEN, f"#{second} Take a deep breath.")
    assert texting.inbox(OTHER_TEXTER)[-1] == "Take a deep breath."


def test_an_untagged_reply_just_after_another_texter_wrote_bounces_rather_than_going_to_them(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    """Ben holds two conversations and is answering the texter who wrote three minutes ago when
    the other writes "ok": his untagged words went to the one who wrote last, a second before
    he sent them, who cannot have been the one he was answering."""
    texting.send(TEXTER, "I want to kill myself")
    texting.send(OTHER_TEXTER, "I want to die")
    first, second = conversation_of(app).id, conversation_of(app, 2).id
    texting.send(BEN, f"YES {first}")
    texting.send(BEN, f"YES {second}")
    texting.send(TEXTER, "I have the pills in my hand")
    wednesday_evening.shift(timedelta(minutes=3))  # Ben reads, thinks, types his answer
    texting.send(OTHER_TEXTER, "ok")
    wednesday_evening.shift(timedelta(seconds=1))

    bounced = texting.send(BEN, "Can you put the pills down on the table for me?")

    assert bounced == [
        f"Not sent: you have several conversations (#{second}, #{first}). Start your reply with the tag, like #12."
    ]
    assert "Can you put the pills down on the table for me?" not in texting.inbox(OTHER_TEXTER)
    # A minute and more after they wrote, the newest texter is the one answered, as before.
    wednesday_evening.shift(timedelta(seconds=61))
    texting.send(BEN, "Thank you for telling me.")
    assert texting.inbox(OTHER_TEXTER)[-1] == "Thank you for telling me."


@pytest.mark.usefixtures("wednesday_evening")
def test_end_closes_with_a_message_in_the_texters_language(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "me quiero morir")
    tag = conversation_of(app).id
    texting.send(DIEGO, f"YES {tag}")  # Diego speaks Spanish; any counselor may take a waiting text

    assert texting.send(BEN, f"END {tag}") == [f"#{tag} is already taken or closed. Thank you."]
    assert texting.send(DIEGO, f"END {tag}") == [f"#{tag} is closed. Thank you."]

    assert texting.inbox(TEXTER)[-2:] == [
        "Esta conversacion ha terminado. Escribanos cuando necesite hablar.",
        "Quiere que le escribamos mas tarde para saber como esta? Responda SI. Responda STOP para parar.",
    ]  # the closing text, then (check-ins being on) the consent question
    assert conversation_of(app).state == "closed"


@pytest.mark.usefixtures("wednesday_evening")
def test_pass_hands_the_conversation_to_someone_else(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversation_of(app).id
    texting.send(BEN, f"YES {tag}")

    assert texting.send(BEN, f"PASS {tag}") == [f"#{tag} is back in the queue for someone else."]

    assert texting.inbox(DIEGO)[-1].startswith(f"New text #{tag}:")
    assert conversation_of(app).state == "offered"


def test_an_offer_not_taken_in_time_goes_to_the_next_counselor(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any]
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversation_of(app).id
    assert texting.inbox(BEN)[0].startswith(f"New text #{tag}")

    wednesday_evening.shift(timedelta(seconds=121))
    texting.send(TEXTER, "hello?")
    clock_tick()  # the clock, every minute, expires offers not taken in time

    assert texting.inbox(DIEGO)[0].startswith(f"New text #{tag}")
    taken = texting.send(BEN, f"YES {tag}")  # Ben may still take it
    # What the texter wrote before being taken comes first, their first words included.
    assert taken[:2] == [f"#{tag}: I want to kill myself", f"#{tag}: hello?"]
    assert taken[2].startswith(f"You have #{tag}")


def test_nobody_free_tells_the_wait_then_gives_the_backup_option_once(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates, clock_tick: Callable[[], Any]
) -> None:
    # Ana, the only counselor on for this need, is busy with as many texters as she may take.
    for number in range(3):
        texting.send(f"+1312555026{number}", "I have been drinking all day and I can't stop")
        texting.send(ANA, f"YES {conversation_of(app, number + 1).tag}")

    replies = texting.send(TEXTER, "I have been drinking all day and I can't stop")
    assert replies[-1].split("\n\n")[-1].startswith("All our counselors are busy right now; the wait is about")

    wednesday_morning.shift(timedelta(seconds=901))
    clock_tick()
    texting.send(TEXTER, "still there?")
    clock_tick()
    texting.send(TEXTER, "hello")

    backups = [t for t in texting.inbox(TEXTER) if t.startswith("If you cannot wait")]
    assert len(backups) == 1


def test_with_the_only_counselor_for_their_need_off_a_texter_is_given_the_backup_option_at_once_and_once(
    app: Flask, texting: TextingPhone, wednesday_morning: time_machine.Coordinates, clock_tick: Callable[[], Any]
) -> None:
    texting.send(ANA, "OFF")  # the only counselor on for this need: nobody could ever take them

    replies = texting.send(TEXTER, "I have been drinking all day and I can't stop")
    assert replies[-1].split("\n\n")[-1].startswith("If you cannot wait")

    wednesday_morning.shift(timedelta(seconds=901))
    clock_tick()
    texting.send(TEXTER, "still there?")

    assert sum(text.startswith("If you cannot wait") or "\n\nIf you cannot wait" in text
               for text in texting.inbox(TEXTER)) == 1  # fmt: skip


def test_an_idle_conversation_closes_with_a_message(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, clock_tick: Callable[[], Any]
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversation_of(app).id
    texting.send(BEN, f"YES {tag}")
    texting.send(BEN, f"#{tag} I'm Ben. I'm here with you.")  # then the texter goes quiet

    wednesday_evening.shift(timedelta(minutes=61))
    clock_tick()

    assert conversation_of(app).close_reason == "idle"
    assert texting.inbox(TEXTER)[-1].startswith("We have not heard from you in a while")
    assert texting.inbox(BEN)[-1] == f"#{tag} was closed (the texter stopped or went quiet)."


@pytest.mark.usefixtures("wednesday_evening")
def test_texting_again_starts_a_new_conversation_the_counselor_is_told_about(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")
    first = conversation_of(app).id
    texting.send(BEN, f"YES {first}")
    texting.send(BEN, f"END {first}")

    texting.send(TEXTER, "I want to kill myself again")
    second = conversation_of(app, 2)
    taken = texting.send(BEN, f"YES {second.id}")

    assert second.previous_id == first
    assert f"#{second.id} has texted the line before." in taken[-1]


@pytest.mark.usefixtures("wednesday_evening")
def test_stop_silences_everything_start_resumes_and_help_explains(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversation_of(app).id
    texting.send(BEN, f"YES {tag}")
    sent_before = len(texting.inbox(TEXTER))

    texting.send(TEXTER, "STOP")
    texting.send(BEN, f"#{tag} are you still there?")
    texting.send(TEXTER, "hello")

    assert len(texting.inbox(TEXTER)) == sent_before  # nothing more, from any feature
    assert conversation_of(app).close_reason == "stopped"
    assert f"#{tag} was closed (the texter stopped or went quiet)." in texting.inbox(BEN)
    assert texting.inbox(BEN)[-1] == f"#{tag} is already taken or closed. Thank you."

    assert texting.send(TEXTER, "START") == ["You will get our texts again. Text us any time you need to talk."]
    help_text = texting.send(TEXTER, "HELP")[0]
    assert help_text.startswith(
        "Riverside County Crisis Line: text us to reach a crisis counselor, or call +13125550100."
    )


@pytest.mark.usefixtures("wednesday_evening")
def test_twilio_opt_out_error_marks_the_texter_opted_out(app: Flask, texting: TextingPhone, fake: FakeTwilio) -> None:
    fake.opt_out(TEXTER)  # they opted out with the carrier or Twilio directly

    texting.send(TEXTER, "I want to kill myself")
    texting.send(TEXTER, "hello?")

    with app.app_context():
        failed = db.session.scalars(select(Message).where(Message.error_code == 21610)).all()
    assert len(failed) == 1  # tried once, then never again
    assert [m.status for m in fake.messages.values() if m.to == TEXTER] == ["failed"]  # by Twilio, 21610
    assert texting.inbox(TEXTER) == []


@pytest.mark.usefixtures("wednesday_evening")
def test_the_same_message_delivered_five_times_is_handled_once(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")
    tag = conversation_of(app).id
    texting.send(BEN, f"YES {tag}")
    params = sms_params("AC" + "7" * 32, TEXTER, "+13125550100", "I took the pills", new_sid("SM"))

    threads = [threading.Thread(target=texting.deliver, args=(params,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    texting.deliver(params)
    texting.deliver(params)

    assert texting.inbox(BEN).count(f"#{tag}: I took the pills") == 1
    with app.app_context():
        stored = db.session.scalar(select(func.count(Message.id)).where(Message.message_sid == params["MessageSid"]))
    assert stored == 1


@pytest.mark.usefixtures("wednesday_evening")
def test_pictures_get_a_notice_and_the_words_still_count(app: Flask, texting: TextingPhone) -> None:
    assert texting.send(TEXTER, "", num_media=1) == [
        "We cannot receive pictures. Please tell us in words what is happening.",
        "Reply 1 for English / Responda 2 para español",
    ]

    replies = texting.send(TEXTER, "I want to kill myself", num_media=2)

    assert replies[0] == "We cannot receive pictures. Please tell us in words what is happening."
    assert conversation_of(app).need == "suicide"


@pytest.mark.usefixtures("wednesday_evening")
def test_message_bodies_and_numbers_are_stored_only_encrypted(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "I want to kill myself")

    with app.app_context():
        bodies = db.session.scalars(select(Message.sealed_body)).all()
    assert bodies
    assert not any("kill myself" in (body or "") for body in bodies)


def test_the_clock_job_re_offers_a_timed_out_text_without_any_inbound_message(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    wednesday_evening.shift(timedelta(seconds=121))

    with app.app_context():
        from workers.upkeep import sweep_text_conversations

        counts = sweep_text_conversations()

    assert counts["reoffered"] == 1
    assert texting.inbox(DIEGO)[0].startswith("New text #")


def test_a_counselor_is_not_offered_more_than_their_limit_of_conversations(
    app: Flask, texting: TextingPhone, publish_routing: object, wednesday_evening: time_machine.Coordinates
) -> None:
    publish_routing(lambda document: document["sms"].update(max_conversations_per_counselor=1))  # type: ignore[operator]
    texting.send(DIEGO, "OFF")
    texting.send(TEXTER, "I want to kill myself")
    texting.send(BEN, f"YES {conversation_of(app).id}")

    texting.send(OTHER_TEXTER, "I want to kill myself")

    second = conversation_of(app, 2)
    assert second.state == "queued"  # Ben is full and Diego is paused: nobody is offered it
    assert not any(text.startswith(f"New text #{second.id}") for text in texting.inbox(BEN))
    assert texting.send(BEN, f"YES {second.id}") == [
        f"Not taken: you are at your limit of open conversations (1). #{second.id} goes to someone else."
        " To take more, END or PASS one first."
    ]


@pytest.mark.usefixtures("wednesday_evening")
def test_delivery_statuses_are_recorded_and_never_go_backwards(
    app: Flask, texting: TextingPhone, fake: FakeTwilio
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    welcome = next(m for m in fake.messages.values() if m.to == TEXTER)

    fake.deliver_message(welcome.sid, final="delivered")
    sent_callback = next(
        w
        for w in fake.webhooks()
        if w.params.get("MessageSid") == welcome.sid and w.params.get("MessageStatus") == "sent"
    )
    texting.session.post(sent_callback.url, data=sent_callback.params, headers=_signed(sent_callback), timeout=10)

    with app.app_context():
        row = db.session.scalars(select(Message).where(Message.message_sid == welcome.sid)).one()
    assert row.status == "delivered"


def _signed(entry: object) -> dict[str, str]:
    from tests.conftest import TEST_AUTH_TOKEN
    from twilio_fake.signing import signed_headers

    return signed_headers(TEST_AUTH_TOKEN, entry.url, entry.params, voice=False)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("wednesday_evening")
def test_need_by_keyword_after_the_menu_and_a_retry_for_nonsense(app: Flask, texting: TextingPhone) -> None:
    texting.send(TEXTER, "hola, necesito hablar con alguien por favor")

    assert texting.send(TEXTER, "banana") == ["Perdon, responda con uno de los numeros, o cuentenos en pocas palabras."]
    texting.send(TEXTER, "mi amigo tomo una sobredosis")

    conversation = conversation_of(app)
    assert (conversation.language, conversation.need) == ("es", "substance_use")
    assert texting.inbox(DIEGO)[0].startswith(f"New text #{conversation.id}: Spanish, drug or alcohol use")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_two_digit_answer_is_no_menu_answer_and_is_asked_again(app: Flask, texting: TextingPhone) -> None:
    # "12" is not the need of its first digit (1: someone in danger, the highest priority).
    texting.send(TEXTER, "I need to talk to someone")

    assert texting.send(TEXTER, "12") == ["Sorry, please reply with one of the numbers, or tell us in a few words."]

    conversation = conversation_of(app)
    assert (conversation.state, conversation.need, conversation.menu_attempts) == ("need", None, 1)
    assert texting.inbox(BEN) == []


@pytest.mark.usefixtures("wednesday_evening")
def test_a_two_digit_answer_at_the_language_menu_is_asked_again(app: Flask, texting: TextingPhone) -> None:
    question = ["Reply 1 for English / Responda 2 para español"]
    assert texting.send(OTHER_TEXTER, "ok") == question

    assert texting.send(OTHER_TEXTER, "12") == question  # not language 1

    conversation = conversation_of(app)
    assert (conversation.state, conversation.language, conversation.menu_attempts) == ("language", None, 2)
    assert texting.send(OTHER_TEXTER, "2.")[0].startswith("Linea de Crisis")


@pytest.mark.usefixtures("wednesday_evening")
def test_matching_words_remembers_the_configs_words_but_never_what_a_texter_wrote(
    app: Flask, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    from routing.validation import normalised_configured

    remembered: list[str] = []

    def recording(word: str) -> str:
        remembered.append(word)
        return normalised_configured(word)

    monkeypatch.setattr("sms.language.normalised_configured", recording)
    monkeypatch.setattr("ivr.menu.normalised_configured", recording)
    normalised_configured.cache_clear()

    texting.send(TEXTER, "Necesito hablar con alguien, no puedo dormir Zqxwv")
    texting.send(TEXTER, "quiero hablar, Zqxwv")

    assert conversation_of(app).language == "es"
    assert remembered, "the configured words go through the cache"
    assert not [word for word in remembered if "zqxwv" in word.lower()]
    assert normalised_configured.cache_info().hits > 0  # the second text normalised nothing again


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_is_not_told_the_texter_texted_before_when_that_was_before_the_texts_window(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    texting.send(TEXTER, "I want to kill myself")
    first = conversation_of(app).id
    texting.send(BEN, f"YES {first}")
    texting.send(BEN, f"END {first}")
    wednesday_evening.shift(timedelta(days=31))  # past the texts' 30 days; no purge has run yet

    texting.send(TEXTER, "I want to kill myself again")
    second = conversation_of(app, 2)
    taken = texting.send(BEN, f"YES {second.id}")

    assert second.previous_id == first
    assert "texted the line before" not in taken[-1]
