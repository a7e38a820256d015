"""Property-based: whatever order legs fail, answer, pass or hang up in — with Twilio's status
callbacks duplicated and reordered, and the caller hanging up at any moment — a caller always
has a next step, no responder is rung while engaged, and no transfer is accepted twice."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta
from typing import Any

import time_machine
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from crisisline.db import db
from crisisline.models import Offer, Transfer
from crisisline.settings import DEFAULT_ROUTING_FILE
from routing import store
from tests.conftest import _empty_all_tables
from tests.rota import legs
from twilio_fake.phone import Keys, Phone, PhoneCall, Silence
from twilio_fake.rest_api import FakeTwilio

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
REOFFER_AFTER_SECONDS = 60  # queue.reoffer_after_seconds in the example routing
BACKUP = "+18002738255"

leg_outcomes = st.sampled_from(["no-answer", "busy", "failed", "accept", "pass", "voicemail"])
actions = st.lists(
    st.one_of(
        st.tuples(st.just("leg"), st.integers(0, 3), leg_outcomes),
        st.tuples(st.just("redeliver"), st.integers(0, 50), st.just("")),
        st.tuples(st.just("hold"), st.just(0), st.just("")),
        st.tuples(st.just("staff-hangs-up"), st.integers(0, 3), st.just("")),
        st.tuples(st.just("caller-hangs-up"), st.just(0), st.just("")),
    ),
    max_size=10,
)


def _reset(app: Flask, fake: FakeTwilio, strategy: str) -> None:
    fake.reset()
    _empty_all_tables(app.config["SQLALCHEMY_DATABASE_URI"])
    with app.app_context():
        source = DEFAULT_ROUTING_FILE.read_text().replace("strategy: sequential", f"strategy: {strategy}")
        store.publish(source, published_by="tests")


def _assert_no_responder_rung_while_engaged(fake: FakeTwilio) -> None:
    by_number: dict[str, list[Any]] = {}
    for leg in legs(fake):
        by_number.setdefault(leg.to, []).append(leg)
    for number_legs in by_number.values():
        for earlier, later in itertools.pairwise(number_legs):
            assert earlier.status in TERMINAL, "a responder was rung while another of their legs was live"
            assert earlier.end_time is not None and earlier.end_time <= later.date_created


def _assert_one_acceptance_per_transfer(app: Flask) -> None:
    with app.app_context():
        for transfer in db.session.scalars(select(Transfer)):
            accepted = db.session.scalar(
                select(func.count(Offer.id)).where(
                    Offer.transfer_id == transfer.id,
                    Offer.purpose == "answer",
                    Offer.decided_at.is_not(None),
                    Offer.outcome.is_(None) | Offer.outcome.in_(("completed", "caller_gone")),
                )
            )  # fmt: skip
            assert (accepted or 0) <= 1
            if transfer.accepted_offer_id is not None:
                winner = db.session.get(Offer, transfer.accepted_offer_id)
                assert winner is not None and winner.transfer_id == transfer.id


def _assert_caller_has_a_next_step(
    phone: Phone, fake: FakeTwilio, caller: PhoneCall, clock: time_machine.Coordinates
) -> None:
    phone.resume(caller, dial_outcomes=["no-answer"] * 5, max_hold_turns=1)
    if caller.ended_by == "on-hold" and not [leg for leg in legs(fake) if leg.status not in TERMINAL]:
        # Everyone on shift passed or missed them lately: they wait in line, and are offered
        # again once the re-offer cooldown has passed (the hold loop alone sees to it).
        clock.shift(timedelta(seconds=REOFFER_AFTER_SECONDS + 1))
        phone.resume(caller, dial_outcomes=["no-answer"] * 5, max_hold_turns=1)
    if caller.ended_by == "in-conference":
        room = fake.get_conference(caller.conference or "")
        assert len(room.participants) >= 1
        return
    if caller.ended_by == "on-hold":
        live = [leg for leg in legs(fake) if leg.status not in TERMINAL]
        assert live, "caller on hold while nobody is being rung, even after the re-offer cooldown"
        return
    # Otherwise the caller was sent to the backup line (and, with it unanswered, told where to turn).
    assert caller.dials, caller.requested_paths()
    assert caller.dials[0].numbers == [BACKUP]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(strategy=st.sampled_from(["sequential", "parallel"]), script=actions)
def test_any_sequence_of_leg_events_keeps_every_invariant(
    app: Flask, phone: Phone, fake: FakeTwilio, strategy: str, script: list[tuple[str, int, str]],
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    _reset(app, fake, strategy)
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    answered: dict[str, PhoneCall] = {}
    caller_gone = False

    for action, index, outcome in script:
        live = [leg for leg in legs(fake) if leg.status not in TERMINAL and leg.sid not in answered]
        if action == "leg" and live:
            leg = live[index % len(live)]
            if outcome in ("no-answer", "busy", "failed"):
                fake.advance_call(leg.sid, outcome)
            else:
                keys = {"accept": [Keys("1")], "pass": [Keys("2")], "voicemail": [Silence()]}[outcome]
                answered[leg.sid] = phone.answer(leg.sid, keys)
        elif action == "redeliver" and fake.webhook_log:
            sent = fake.webhook_log[index % len(fake.webhook_log)]
            phone.post(sent.url, sent.params)  # a duplicate, usually out of order
        elif action == "hold" and not caller_gone and caller.paused:
            phone.resume(caller, max_hold_turns=1)
        elif action == "staff-hangs-up":
            in_room = [leg for leg in answered.values() if leg.conference]
            if in_room:
                phone.hang_up(in_room[index % len(in_room)])
        elif action == "caller-hangs-up" and not caller_gone and caller.paused:
            phone.hang_up(caller)
            caller_gone = True
        _assert_no_responder_rung_while_engaged(fake)
        _assert_one_acceptance_per_transfer(app)

    if not caller_gone and caller.paused:
        _assert_caller_has_a_next_step(phone, fake, caller, wednesday_evening)
    if caller_gone:
        assert _every_leg_ends(fake, answered), [(leg.sid, leg.status) for leg in legs(fake)]


def _every_leg_ends(fake: FakeTwilio, answered: dict[str, PhoneCall], seconds: float = 10.0) -> bool:
    """Every leg rung for a caller who hung up ends, unless someone answered it. The line ends
    them off the request thread (``transfer.flow.stop_ringing``), so on a busy machine the last
    may still be going when the hang-up's webhook has answered: it gets a moment."""
    give_up = time.monotonic() + seconds
    while not all(leg.status in TERMINAL or leg.sid in answered for leg in legs(fake)):
        if time.monotonic() > give_up:
            return False
        time.sleep(0.1)
    return True
