"""Whole stories through the real processes (see conftest): callers and texters on one side,
counselors' phones on the other, the Twilio stand-in between them ringing out unanswered legs
after the routing's ring timeout, as Twilio does."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable

from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation, Offer, ResponderState, Transfer
from tests.conftest import ROOT
from tests.e2e.conftest import COUNSELOR_PHONES, CounselorPhone, Line, call_and_wait, on_call
from twilio_fake.phone import Keys, Words
from twilio_fake.rest_api import CallRecord

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


def _transfers(line: Line) -> list[Transfer]:
    return list(line.query(lambda: db.session.scalars(select(Transfer).order_by(Transfer.id)).all()))


def _offers(line: Line) -> list[Offer]:
    return list(line.query(lambda: db.session.scalars(select(Offer).order_by(Offer.id)).all()))


def _engaged(line: Line) -> dict[str, int | None]:
    states = line.query(lambda: db.session.scalars(select(ResponderState)).all())
    return {state.responder_id: state.engaged_offer_id for state in states}


def _eventually(check: Callable[[], object], seconds: float = 15.0) -> None:
    """Wait until ``check()`` neither fails an assertion nor returns something false."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
            failure = AssertionError(f"still false after {seconds:.0f} s")
        except AssertionError as error:
            failure = error
        if time.monotonic() > deadline:
            raise failure
        time.sleep(0.25)


def test_spanish_caller_reaches_the_spanish_counselor_who_accepts(fresh_line: Line) -> None:
    line = fresh_line
    line.publish(on_call("ben-carter", "diego-morales"))
    diego = CounselorPhone(line, COUNSELOR_PHONES["diego-morales"], talk=30).start()

    phone, call = call_and_wait(line, [Keys("2"), Keys("2")])  # español, pensamientos de suicidio

    assert call.conference is not None, call.heard_text()
    _eventually(lambda: len(diego.answered) == 1)
    whisper = diego.answered[0].heard_text()
    assert "Spanish-speaking caller" in whisper and "Press 1 to accept" in whisper
    assert diego.answered[0].conference == call.conference  # the two are in one room
    assert line.twilio.calls(to=COUNSELOR_PHONES["ben-carter"]) == []  # an English-only counselor is never rung
    (transfer,) = _transfers(line)
    assert (transfer.state, transfer.language) == ("connected", "es")

    phone.hang_up(call)  # the caller's final status reaches the line

    diego.join(20)
    assert diego.errors == []
    assert diego.answered[0].finished  # the line told Diego and ended his leg
    _eventually(lambda: _transfers(line)[0].state == "ended")
    _eventually(lambda: _engaged(line).get("diego-morales") is None)
    assert {leg.status for leg in line.twilio.calls()} <= TERMINAL


def test_first_counselor_rings_out_then_the_second_accepts(fresh_line: Line) -> None:
    line = fresh_line
    line.publish(on_call("ana-ruiz", "diego-morales", ring_timeout_seconds=5))
    numbers = {COUNSELOR_PHONES["ana-ruiz"]: "ana-ruiz", COUNSELOR_PHONES["diego-morales"]: "diego-morales"}
    phone = line.phone()
    call = phone.call([Keys("2"), Keys("2")], max_hold_turns=0)
    first_ring: list[CallRecord] = []

    def rings() -> bool:
        first_ring[:] = _ringing(line, numbers)
        return bool(first_ring)

    _eventually(rings)
    missed = numbers[first_ring[0].to]  # nobody picks up that phone: the stand-in rings it out
    (accepted,) = set(numbers.values()) - {missed}
    counselor = CounselorPhone(line, COUNSELOR_PHONES[accepted], talk=30).start()

    phone.wait_on_hold(call, seconds=40, turn_seconds=1.0)

    assert call.conference is not None, call.heard_text()[-300:]
    rung_out = line.twilio.get_call(first_ring[0].sid)
    assert rung_out.status == "no-answer"  # the stand-in's own ring timeout, not the test
    offers = {offer.responder_id: offer for offer in _offers(line)}
    assert offers[missed].outcome == "no_answer"
    assert offers[accepted].state == "accepted"
    phone.hang_up(call)
    counselor.join(20)
    assert counselor.errors == []
    _eventually(lambda: _transfers(line)[0].state == "ended")


def _ringing(line: Line, numbers: dict[str, str]) -> list[CallRecord]:
    legs = [leg for leg in line.twilio.calls(statuses=("ringing",)) if leg.to in numbers]
    assert legs
    return legs[:1]


def test_caller_who_hangs_up_while_phones_ring_cancels_every_leg_and_frees_everyone(fresh_line: Line) -> None:
    line = fresh_line
    line.publish(on_call("ana-ruiz", "ben-carter", "diego-morales", strategy="parallel", ring_timeout_seconds=30))
    phone = line.phone()
    call = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)  # English, suicide: all three can take it
    _eventually(lambda: len(line.twilio.calls(statuses=("ringing",))) == 3)

    phone.hang_up(call)

    _eventually(lambda: {leg.status for leg in line.twilio.calls() if leg.direction == "outbound-api"} == {"canceled"})
    _eventually(lambda: _transfers(line)[0].state == "abandoned")
    _eventually(lambda: set(_engaged(line).values()) <= {None})
    assert all(offer.state == "ended" for offer in _offers(line))


def test_readme_test_call_twice_in_a_row_reaches_a_human_both_times(fresh_line: Line) -> None:
    """The README's commands as a newcomer runs them: the phone CLI as a caller, twice, and the
    phone CLI as the counselor's phone, in their own processes."""
    line = fresh_line
    line.publish(on_call("diego-morales"))
    where = ["--base-url", line.url, "--twilio-url", line.twilio_url, "--secrets", str(line.secrets_file)]
    cli = [sys.executable, "-m", "twilio_fake.phone"]
    counselor = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [*cli, "answer-as", COUNSELOR_PHONES["diego-morales"], "--calls", "2", "--wait", "60", *where],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        outputs = []
        for _ in range(2):
            caller = subprocess.run(  # noqa: S603
                [*cli, "--press", "2", "--say", "quiero morir", "--talk", "2", "--wait", "45", *where],
                cwd=ROOT, capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            outputs.append(caller.stdout + caller.stderr)
        answered, _ = counselor.communicate(timeout=60)
    finally:
        counselor.kill()

    for output in outputs:
        assert "connected to a human" in output, output
        assert "you hung up" in output
    assert answered.count("connected with the caller") == 2, answered
    transfers = _transfers(line)
    assert [transfer.state for transfer in transfers] == ["ended", "ended"]
    assert {leg.status for leg in line.twilio.calls()} <= TERMINAL


def test_texters_whole_conversation_with_a_counselor(fresh_line: Line) -> None:
    line = fresh_line
    line.publish(on_call("diego-morales"))
    texter, diego = "+13125550188", COUNSELOR_PHONES["diego-morales"]

    line.text(texter, "quiero morir, no sé qué hacer")
    line.wait_for_text(texter, "consejero")  # answered in Spanish: a counselor will text back
    offer = line.wait_for_text(diego, "YES")
    tag = re.search(r"YES (\d+)", offer)
    assert tag is not None, offer
    number = tag.group(1)

    line.text(diego, f"YES {number}")
    line.text(diego, f"#{number} Hola, soy Diego. Estoy aquí contigo.")
    line.wait_for_text(texter, "Estoy aquí contigo")
    line.text(texter, "gracias, necesitaba hablar")
    line.wait_for_text(diego, "necesitaba hablar")
    line.text(diego, f"END {number}")

    _eventually(lambda: line.query(lambda: db.session.scalars(select(Conversation)).one().state) == "closed")
    texts_to_texter = line.inbox(texter)
    assert texts_to_texter[-1] != "Hola, soy Diego. Estoy aquí contigo."  # a closing text came after
    assert all(diego not in body for body in texts_to_texter)  # never the counselor's number
    assert all(texter not in body for body in line.inbox(diego))  # never the texter's number
    # Delivery is asynchronous (the closing texts went out a moment ago): each is reported delivered.
    _eventually(lambda: all(message["status"] == "delivered" for message in line.twilio.messages(texter)))
    _ = Words  # speech is exercised by the README story
