"""Check-ins: consent at the end of a text conversation (YES) or a call (key 1), the check-in
text at its due time in the person's language, the replies, and the escalation of silence.
Signed webhooks in, the fake Twilio REST API out, over real HTTP; the clock is travelled."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation, Message, ScheduledContact, Texter, Transfer
from followups.checkins import CHECKIN_PRIORITY
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TextingPhone
from tests.followups.conftest import checkins, contacts
from tests.rota import BEN, DIEGO, leg_to
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import sms_params

TEXTER = "+13125550181"
CALLER = "+13125550182"
SUPERVISOR = "+13125550190"  # Sam Okafor in the example routing
CHLOE = "+13125550103"
QUESTION_EN = "Would you like us to text you later to check how you are? Reply YES. Reply STOP to stop texts."
CHECKIN_EN = (
    "Riverside County Crisis Line checking in. Reply 1 if you are OK, 2 if you would like to talk, "
    "or tell us how you are."
)
SECOND_EN = "Riverside County Crisis Line: we wanted to check on you again. Reply 1 if you are OK, 2 to talk."
CHECKIN_ES = (
    "Linea de Crisis de Riverside: queremos saber como esta. Responda 1 si esta bien, 2 si quiere hablar, o cuentenos."
)
HOURS = timedelta(hours=1)


def end_a_text_conversation(app: Flask, texting: TextingPhone, *, spanish: bool = False) -> int:
    """A texter talks with a counselor, who ends it with END; returns the conversation id."""
    texting.send(TEXTER, "me quiero morir" if spanish else "I want to kill myself")
    with app.app_context():
        tag = db.session.scalars(select(Conversation.id).order_by(Conversation.id.desc())).first()
    counselor = DIEGO if spanish else BEN
    texting.send(counselor, f"YES {tag}")
    texting.send(counselor, f"#{tag} I'm glad you reached out.")
    texting.send(counselor, f"END {tag}")
    assert tag is not None
    return tag


def consent_by_text(app: Flask, texting: TextingPhone, *, spanish: bool = False) -> None:
    end_a_text_conversation(app, texting, spanish=spanish)
    texting.send(TEXTER, "Sí" if spanish else "yes")


def checkin_sent(
    app: Flask, texting: TextingPhone, clock: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    consent_by_text(app, texting)
    clock.shift(12 * HOURS + timedelta(minutes=1))
    assert run_due() == ["sent"]
    assert texting.inbox(TEXTER)[-1] == CHECKIN_EN


def no_reply_to_either_text(
    app: Flask, texting: TextingPhone, clock: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    """The check-in and its second text went unanswered: the escalation is due."""
    checkin_sent(app, texting, clock, run_due)
    clock.shift(4 * HOURS + timedelta(minutes=1))
    assert run_due() == ["sent"]
    assert texting.inbox(TEXTER)[-1] == SECOND_EN
    clock.shift(4 * HOURS + timedelta(minutes=1))


def test_yes_after_a_counselor_ends_the_conversation_schedules_a_check_in_in_spanish_at_the_due_time(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], run_real_worker: Callable[[], None],
) -> None:  # fmt: skip
    tag = end_a_text_conversation(app, texting, spanish=True)
    assert texting.inbox(TEXTER)[-1].startswith("Quiere que le escribamos mas tarde")

    reply = texting.send(TEXTER, "Sí")

    assert reply == ["Gracias por avisarnos. Escribanos o llamenos cuando quiera."]
    (checkin,) = checkins(app)
    assert (checkin.origin, checkin.dedupe_key, checkin.state) == ("text", f"text:{tag}", "consented")
    assert (checkin.language, checkin.need) == ("es", "suicide")
    assert checkin.consented_at is not None
    assert checkin.due_at == checkin.consented_at + 12 * HOURS  # suicide: 12 h in the example routing
    with app.app_context():  # "Sí" answered the question: it did not open a new conversation
        assert db.session.scalar(select(db.func.count(Conversation.id))) == 1

    wednesday_evening.shift(11 * HOURS)
    assert run_due() == []  # not yet
    sent_before = len(texting.inbox(TEXTER))

    wednesday_evening.shift(HOURS + timedelta(minutes=1))
    run_real_worker()  # the Procfile's worker, as a real process

    assert texting.inbox(TEXTER)[sent_before:] == [CHECKIN_ES]
    (checkin,) = checkins(app)
    assert checkin.state == "sent"
    kinds = [(c.kind, c.attempt, c.state) for c in contacts(app)]
    assert kinds == [("checkin", 1, "sent"), ("checkin", 2, "pending")]


def test_a_new_first_text_after_the_question_is_not_taken_for_consent(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    end_a_text_conversation(app, texting)

    texting.send(TEXTER, "I want to kill myself again")

    (checkin,) = checkins(app)
    assert checkin.state == "asked"
    with app.app_context():
        states = db.session.scalars(select(Conversation.state).order_by(Conversation.id)).all()
    assert states == ["closed", "offered"]


def test_yes_long_after_the_question_is_an_ordinary_first_text(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    end_a_text_conversation(app, texting)
    wednesday_evening.shift(3 * HOURS)

    texting.send(TEXTER, "yes")

    assert checkins(app)[0].state == "asked"
    assert contacts(app) == []


def test_key_1_when_the_counselor_leaves_a_call_records_consent_once_and_ends_the_call_kindly(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], identity=phone.identity(CALLER), max_hold_turns=0)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)

    phone.hang_up(ben)
    phone.resume(caller, [Keys("1")], max_hold_turns=0)

    heard = caller.heard_text()
    assert "If you would like a text from us to check how you are doing, press 1." in heard
    assert heard.endswith("Thank you. We will text you. You can call or text us any time. Take care.")
    assert caller.ended_by == "hangup"
    (consent_step,) = [s for s in caller.steps if "/voice/checkin/consent" in s.url]
    assert consent_step.params["Digits"] == "1"

    again = phone.post(consent_step.url, consent_step.params)  # Twilio repeats the request

    assert again.status == 200 and "<Hangup" in again.body
    (checkin,) = checkins(app)
    assert (checkin.origin, checkin.state, checkin.language, checkin.need) == ("call", "consented", "en", "suicide")
    with app.app_context():
        texter = db.session.get(Texter, checkin.texter_id)
        from sms.conversations import texter_number

        assert texter is not None and texter_number(texter) == CALLER
    assert [(c.kind, c.due_at) for c in contacts(app)] == [("checkin", checkin.consented_at + 12 * HOURS)]
    assert len(leg_to_all(fake)) == 1  # nobody else was rung: the caller was done


def leg_to_all(fake: FakeTwilio) -> list[str]:
    return [leg.to for leg in fake.calls.values() if leg.direction == "outbound-api"]


def test_silence_at_the_check_in_question_searches_again_as_before(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], identity=phone.identity(CALLER), max_hold_turns=0)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)

    phone.hang_up(ben)
    phone.resume(caller, max_hold_turns=0)  # presses nothing

    heard = caller.heard_text()
    asked, told = heard.index("to check how you are doing, press 1"), heard.index("has been disconnected.")
    assert asked < told
    assert caller.ended_by == "on-hold"
    assert leg_to_all(fake) == [BEN, DIEGO]
    assert checkins(app) == []


def test_a_caller_who_texted_stop_is_not_asked(
    app: Flask, phone: Phone, fake: FakeTwilio, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    texting.send(CALLER, "STOP")
    caller = phone.call([Keys("1"), Keys("2")], identity=phone.identity(CALLER), max_hold_turns=0)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)

    phone.hang_up(ben)
    phone.resume(caller, [Keys("1")], max_hold_turns=0)

    assert "to check how you are doing" not in caller.heard_text()
    assert "The person you were talking with has been disconnected." in caller.heard_text()
    assert checkins(app) == []


def test_reply_1_is_ok_and_cancels_the_second_text(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    checkin_sent(app, texting, wednesday_evening, run_due)

    assert texting.send(TEXTER, "1") == ["Thank you for letting us know. Text or call us any time."]

    (checkin,) = checkins(app)
    assert (checkin.state, checkin.reply) == ("answered", "ok")
    wednesday_evening.shift(9 * HOURS)
    assert run_due() == []
    assert texting.inbox(TEXTER)[-1] == "Thank you for letting us know. Text or call us any time."
    assert [c.state for c in contacts(app)] == ["sent", "canceled"]


def test_reply_2_opens_a_prioritised_conversation_in_their_language_and_need(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    checkin_sent(app, texting, wednesday_evening, run_due)

    assert texting.send(TEXTER, "2") == ["Thank you. A counselor will be with you shortly."]

    (checkin,) = checkins(app)
    assert (checkin.state, checkin.reply) == ("answered", "talk")
    with app.app_context():
        talk = db.session.scalars(select(Conversation).order_by(Conversation.id.desc())).first()
    assert talk is not None
    assert (talk.state, talk.language, talk.need) == ("offered", "en", "suicide")
    assert talk.priority > 0  # ahead of ordinary texters
    # Thursday 05:01: Chloe is on the overnight shift.
    assert texting.inbox(CHLOE)[-1].startswith(f"New text #{talk.id}: English, thoughts of suicide")


def test_help_in_reply_to_a_check_in_is_asking_to_talk_and_gets_the_help_text_too(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    """Before, "HELP" was only the keyword: the help text, and a new conversation at the
    language menu behind ordinary texters, while the check-in stayed unanswered (a second text
    and a supervisor's flag to follow)."""
    checkin_sent(app, texting, wednesday_evening, run_due)

    replies = texting.send(TEXTER, "Help!")

    assert replies[0] == "Thank you. A counselor will be with you shortly."
    assert replies[1].startswith("Riverside County Crisis Line: text us to reach a crisis counselor")
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.reply) == ("answered", "talk")
    with app.app_context():
        talk = db.session.scalars(select(Conversation).order_by(Conversation.id.desc())).first()
    assert talk is not None
    assert (talk.state, talk.language) == ("offered", "en")
    assert talk.priority >= CHECKIN_PRIORITY  # ahead of ordinary texters
    assert texting.inbox(CHLOE)[-1].startswith(f"New text #{talk.id}: English, thoughts of suicide")
    wednesday_evening.shift(9 * HOURS)
    assert run_due() == []  # no second check-in text


@pytest.mark.parametrize("service", [False, True], ids=["plain", "advanced-opt-out"])
def test_info_in_reply_to_a_check_in_is_only_the_keyword(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]],
    service: bool,
) -> None:  # fmt: skip
    """With Advanced Opt-Out, Twilio sends INFO as ``OptOutType`` HELP (review: taken as words)."""
    checkin_sent(app, texting, wednesday_evening, run_due)

    if service:
        params = sms_params(TEST_ACCOUNT_SID, TEXTER, LINE_NUMBER, "INFO")
        params.update(OptOutType="HELP", MessagingServiceSid="MG" + "0" * 32)
        before = len(texting.inbox(TEXTER))
        texting.deliver(params)
        replies = texting.inbox(TEXTER)[before:]
    else:
        replies = texting.send(TEXTER, "INFO")

    assert replies[0].startswith("Riverside County Crisis Line: text us to reach a crisis counselor")
    (checkin,) = checkins(app)
    assert checkin.state == "sent"


def test_a_free_text_reply_is_kept_sealed_and_relayed_to_the_counselor_who_takes_it(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    checkin_sent(app, texting, wednesday_evening, run_due)

    reply = texting.send(TEXTER, "not great, couldn't sleep")

    assert reply == ["Thank you for telling us. A counselor will text you back."]
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.reply) == ("answered", "text")
    assert checkin.sealed_reply is not None and "sleep" not in checkin.sealed_reply
    with app.app_context():
        from followups.checkins import REPLY_CONTEXT
        from sms.outbox import vault

        assert vault().open(checkin.sealed_reply, context=REPLY_CONTEXT) == "not great, couldn't sleep"
        talk = db.session.scalars(select(Conversation).where(Conversation.state == "offered")).one()
    taken = texting.send(CHLOE, f"YES {talk.id}")
    assert taken[0] == f"#{talk.id}: not great, couldn't sleep"
    assert f"#{talk.id} has texted the line before." in taken[-1]


def test_stop_cancels_the_check_in_and_nothing_more_is_sent(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    checkin_sent(app, texting, wednesday_evening, run_due)
    sent_before = len(texting.inbox(TEXTER))

    assert texting.send(TEXTER, "STOP") == []
    wednesday_evening.shift(24 * HOURS)
    run_due()

    assert len(texting.inbox(TEXTER)) == sent_before
    (checkin,) = checkins(app)
    assert checkin.state == "opted_out"
    assert {c.state for c in contacts(app)} == {"sent", "canceled"}
    assert texting.inbox(SUPERVISOR) == []


def test_no_reply_gets_a_second_text_then_the_supervisor_is_told_without_personal_data(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    checkin_sent(app, texting, wednesday_evening, run_due)

    wednesday_evening.shift(3 * HOURS)
    assert run_due() == []
    wednesday_evening.shift(HOURS + timedelta(minutes=1))
    assert run_due() == ["sent"]
    assert texting.inbox(TEXTER)[-1] == SECOND_EN
    assert checkins(app)[0].state == "second_sent"

    wednesday_evening.shift(4 * HOURS + timedelta(minutes=1))
    assert run_due() == ["sent"]
    assert run_due() == []

    (checkin,) = checkins(app)
    assert (checkin.state, checkin.flag_reason) == ("flagged", "no_reply")
    expected = (
        f"Crisis line: check-in case C{checkin.id} needs a person: no reply to two check-in texts. Please follow up."
    )
    assert texting.inbox(SUPERVISOR) == [expected]  # Sam Okafor, the example routing's supervisor
    assert [(c.kind, c.attempt, c.state) for c in contacts(app)] == [
        ("checkin", 1, "sent"), ("checkin", 2, "sent"), ("checkin_escalate", 3, "sent"),
    ]  # fmt: skip
    assert texting.inbox(TEXTER)[-1] == SECOND_EN  # the texter gets nothing more


def test_a_late_reply_after_the_second_text_still_counts_and_stops_the_escalation(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    checkin_sent(app, texting, wednesday_evening, run_due)
    wednesday_evening.shift(4 * HOURS + timedelta(minutes=1))
    assert run_due() == ["sent"]

    texting.send(TEXTER, "1")
    wednesday_evening.shift(5 * HOURS)

    assert run_due() == []
    (checkin,) = checkins(app)
    assert (checkin.state, checkin.reply) == ("answered", "ok")
    assert contacts(app)[-1].state == "canceled"
    with app.app_context():
        flags = db.session.scalars(select(Message).where(Message.party == "supervisor")).all()
    assert flags == []


def test_one_reply_answers_every_check_in_awaiting_it_so_nobody_who_replied_is_texted_again_or_flagged(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    consent_by_text(app, texting)  # two conversations two hours apart, a check-in agreed in each
    wednesday_evening.shift(2 * HOURS)
    consent_by_text(app, texting)
    wednesday_evening.shift(12 * HOURS + timedelta(minutes=1))
    assert run_due() == ["sent", "sent"]

    assert texting.send(TEXTER, "1") == ["Thank you for letting us know. Text or call us any time."]

    older, newer = checkins(app)
    assert [(c.state, c.reply) for c in (older, newer)] == [("answered", "ok"), ("answered", "ok")]
    assert older.replied_at == newer.replied_at
    texts_after_the_reply = len(texting.inbox(TEXTER))
    wednesday_evening.shift(9 * HOURS)
    assert run_due() == []  # neither a second check-in text nor an escalation
    assert len(texting.inbox(TEXTER)) == texts_after_the_reply
    assert texting.inbox(SUPERVISOR) == []
    assert sorted(c.state for c in contacts(app)) == ["canceled", "canceled", "sent", "sent"]


def test_a_sender_finding_the_check_in_answered_sends_nothing(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    checkin_sent(app, texting, wednesday_evening, run_due)
    texting.send(TEXTER, "1")
    with app.app_context():  # as if the job had been claimed before the reply canceled it
        second = db.session.scalars(select(ScheduledContact).where(ScheduledContact.attempt == 2)).one()
        second.state = "pending"
        db.session.commit()
    sent_before = len(texting.inbox(TEXTER))
    wednesday_evening.shift(5 * HOURS)

    assert run_due() == ["not_needed"]
    assert len(texting.inbox(TEXTER)) == sent_before


def test_yes_from_a_texter_who_sent_stop_opts_them_back_in_and_is_not_consent(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates
) -> None:
    end_a_text_conversation(app, texting)
    texting.send(TEXTER, "STOP")

    assert texting.send(TEXTER, "YES") == ["You will get our texts again. Text us any time you need to talk."]

    (checkin,) = checkins(app)
    assert checkin.state == "opted_out"
    assert contacts(app) == []


def test_flushall_with_check_ins_pending_restores_all_and_sends_each_once(
    app: Flask, texting: TextingPhone, clean_redis: object, run_real_worker: Callable[[], None],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    from workers.upkeep import rebuild_scheduled_contacts

    texters = ["+13125550171", "+13125550172", "+13125550173"]
    for number in texters:
        texting.send(number, "I want to kill myself")
        with app.app_context():
            tag = db.session.scalars(select(Conversation.id).order_by(Conversation.id.desc())).first()
        (counselor,) = [c for c in (BEN, DIEGO) if any(f"#{tag}:" in text for text in texting.inbox(c))]
        texting.send(counselor, f"YES {tag}")
        texting.send(counselor, f"END {tag}")
        texting.send(number, "yes")
    assert [(c.kind, c.state) for c in contacts(app)] == [("checkin", "pending")] * 3

    clean_redis.flushall()  # type: ignore[attr-defined]
    with app.app_context():
        restored, again = rebuild_scheduled_contacts(), rebuild_scheduled_contacts()
    wednesday_evening.shift(12 * HOURS + timedelta(minutes=1))
    run_real_worker()
    with app.app_context():
        after = rebuild_scheduled_contacts()
    run_real_worker()

    assert (restored["requeued"], again["requeued"], after["requeued"]) == (3, 0, 0)
    for number in texters:
        assert texting.inbox(number).count(CHECKIN_EN) == 1
    assert [c.state for c in contacts(app) if c.kind == "checkin" and c.attempt == 1] == ["sent"] * 3


def test_a_2_answered_by_a_callback_keeps_the_check_ins_place_ahead_of_ordinary_callers(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates,
    run_due: Callable[[], list[str]], publish_routing: Callable[..., int],
) -> None:  # fmt: skip
    """By text a check-in answer queues at ``CHECKIN_PRIORITY`` at least; with ``talk_by: call``
    its callback queued at the need's own priority (found by a bug hunt)."""

    def talk_by_call(document: dict[str, Any]) -> None:
        document["followups"]["talk_by"] = "call"
        for need in document["needs"]:
            if need["key"] == "suicide":
                need["priority"] = 0  # valid: a line may prioritise only danger_now

    publish_routing(talk_by_call)
    checkin_sent(app, texting, wednesday_evening, run_due)
    texting.send(TEXTER, "2")

    assert run_due() == ["sent"]  # the callback's first attempt
    with app.app_context():
        (transfer,) = db.session.scalars(select(Transfer).where(Transfer.mode == "callback"))
        assert transfer.priority >= CHECKIN_PRIORITY


def test_a_checkin_agreed_to_before_the_person_answered_another_is_answered_by_it_and_sends_nothing(
    app: Flask, texting: TextingPhone, wednesday_evening: time_machine.Coordinates, run_due: Callable[[], list[str]]
) -> None:
    """Two conversations an hour apart, each ending with a check-in agreed to: the first is
    sent and answered "1". Before, the second still texted them an hour later, then flagged
    them to the supervisors as "no reply"."""
    consent_by_text(app, texting)
    wednesday_evening.shift(1 * HOURS)
    consent_by_text(app, texting)
    wednesday_evening.shift(11 * HOURS + timedelta(minutes=1))
    assert run_due() == ["sent"]
    texting.send(TEXTER, "1")

    outcomes = []
    for _ in range(3):
        wednesday_evening.shift(4 * HOURS + timedelta(minutes=1))
        outcomes += run_due()

    assert outcomes == ["not_needed"]
    assert texting.inbox(TEXTER).count(CHECKIN_EN) == 1
    assert texting.inbox(SUPERVISOR) == []
    answers = [(checkin.state, checkin.reply) for checkin in checkins(app)]
    assert answers == [("answered", "ok"), ("answered", "in_touch")]  # their "ok" is counted once
