"""What Twilio's failures leave behind: a lost callback, a failed redirect, a crashed hold turn.
The caller is never left alone, and never pulled off the backup line."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import transfer.flow
from crisisline.db import db
from crisisline.models import Offer, Transfer
from line_queue.responders import set_paused
from routing.store import active_routing
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_BACKUP_NUMBER
from tests.rota import BEN, DIEGO, leg_to, legs
from twilio_fake.phone import TALKING, Keys, Phone, PhoneCall
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity


def only_transfer(app: Flask) -> Transfer:
    with app.app_context():
        return db.session.scalars(select(Transfer)).one()


def transfers(app: Flask) -> list[Transfer]:
    with app.app_context():
        return list(db.session.scalars(select(Transfer).order_by(Transfer.id)))


@pytest.mark.usefixtures("wednesday_evening")
def test_a_failed_redirect_after_acceptance_still_brings_the_caller_in_on_their_next_hold_turn(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    fake.inject_fault("POST", rf"/Calls/{caller.identity.call_sid}\.json$", status=500)

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    assert ben.conference is not None
    assert only_transfer(app).state == "connecting"  # not "abandoned": the caller is still there

    phone.resume(caller, max_hold_turns=1)

    assert caller.conference == ben.conference
    assert only_transfer(app).state == "connected"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_whose_responder_left_before_twilio_could_bring_them_in_is_told_and_searched_for_not_joined_alone(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    fake.inject_fault("POST", rf"/Calls/{caller.identity.call_sid}\.json$", status=500, times=None)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])  # accepted; the caller's redirect fails
    phone.hang_up(ben)  # Ben's phone drops; the staff-left redirect fails too
    fake.clear_faults()

    phone.resume(caller, max_hold_turns=1)

    assert caller.conference is None  # never put in an empty room
    # They never reached Ben: they are asked to stay on the line, not told he was disconnected.
    assert "Please stay on the line; someone will be with you" in caller.heard_text()
    assert "The person you were talking with has been disconnected." not in caller.heard_text()
    assert [t.state for t in transfers(app)] == ["ended", "waiting"]  # searched for again


@pytest.mark.usefixtures("wednesday_evening")
def test_a_hold_turn_that_sees_an_acceptance_made_during_its_pass_waits_for_the_redirect_instead_of_joining(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn's own copy said "waiting"; the pass's fresh read says "connecting", accepted this
    instant. Joining too would bounce the caller the accepting responder's redirect is bringing in
    out of the room and back (Twilio: "already in a conference")."""
    import line_queue
    from transfer import state

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    transfer_id = only_transfer(app).id

    def accepted_during_the_pass(*_args: object, **_kwargs: object) -> int:
        assert state.move_transfer(transfer_id, ("waiting",), "connecting", accepted_at=state.now())
        db.session.commit()
        return 0

    monkeypatch.setattr(line_queue, "safety_net_due", lambda: True)
    monkeypatch.setattr(line_queue, "fill_soon", accepted_during_the_pass)
    phone.resume(caller, max_hold_turns=1)

    turn = caller.steps[-1]
    assert "/voice/hold" in turn.url and turn.twiml is not None
    assert turn.twiml.find(".//Conference") is None
    assert [child.tag for child in turn.twiml] == ["Pause", "Redirect"]
    assert only_transfer(app).state == "connecting"  # nothing marked the caller as joined


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_going_to_the_backup_line_just_as_a_responder_accepts_waits_for_the_redirect(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """The callback-or-backup choice ran out (``declined``) the instant a responder accepted: not
    the backup line, and not a second join while the responder's redirect brings the caller in."""
    from transfer import state

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    transfer_id = only_transfer(app).id
    with app.app_context():
        assert state.move_transfer(transfer_id, ("waiting",), "connecting", accepted_at=state.now())
        db.session.commit()

    url = f"{phone.base_url}/voice/callback/declined?transfer={transfer_id}&reason=hold_limit"
    reply = phone.post(url, caller.identity.voice_params("in-progress"))

    assert "<Dial" not in reply.body and "<Conference" not in reply.body
    assert "<Pause" in reply.body and "/voice/hold" in reply.body
    assert only_transfer(app).state == "connecting"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_redirect_whose_answer_timed_out_is_not_taken_for_failed_and_brings_the_caller_in_once(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Twilio took the redirect but answered after our 3 s timeout: it may still carry it out.
    Recorded as failed, the caller's next hold turn would join them at once and the late
    redirect would then bounce them out of the room and back."""
    from crisisline.models import CallEvent

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    fake.inject_fault("POST", rf"/Calls/{caller.identity.call_sid}\.json$", status=200, delay=4.0)

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    with app.app_context():
        kinds = set(db.session.scalars(select(CallEvent.kind)))
    assert "transfer.redirect_failed" not in kinds
    deadline = time.monotonic() + 10
    while not fake.get_call(caller.identity.call_sid).redirects and time.monotonic() < deadline:
        time.sleep(0.05)  # Twilio carries the slow redirect out after all
    phone.resume(caller, max_hold_turns=1)

    assert caller.conference == ben.conference is not None
    joins = [step for step in caller.steps if step.twiml is not None and step.twiml.find(".//Conference") is not None]
    assert [step.url.split("?")[0].rsplit("/", 2)[-2:] for step in joins] == [["transfer", "join"]]
    assert only_transfer(app).state == "connected"


def caller_and_ben_in_the_room(phone: Phone, fake: FakeTwilio) -> tuple[PhoneCall, PhoneCall, int]:
    """A caller Ben took and talks with in the conference, and the redirects the caller has had
    so far (the one into the room)."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    return caller, ben, len(fake.get_call(caller.identity.call_sid).redirects)


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_who_hung_up_in_the_room_moves_the_caller_on_from_the_conference_event_without_the_clock(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller, ben, redirected = caller_and_ben_in_the_room(phone, fake)
    room = ben.conference or ""
    # Ben's phone drops: Twilio takes him out of the room (participant-leave, his call
    # completed); his leg's own final status callback is lost. No clock runs.
    fake.calls[ben.identity.call_sid].status = "completed"
    fake.leave_conference(room, ben.identity.call_sid)

    with app.app_context():
        outcomes = [(o.state, o.outcome) for o in db.session.scalars(select(Offer).order_by(Offer.id))]
    assert outcomes[0] == ("ended", "completed")  # Ben's acceptance ended: he left the caller
    assert len(fake.get_call(caller.identity.call_sid).redirects) == redirected + 1  # sent on at once, over REST
    phone.resume(caller, max_hold_turns=0)
    assert "The person you were talking with has been disconnected." in caller.heard_text()
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]

    # The lost callback arrives after all, twice: nothing more happens.
    for _ in range(2):
        fake.advance_call(ben.identity.call_sid, "completed")
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]
    assert len(fake.get_call(caller.identity.call_sid).redirects) == redirected + 1


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_who_leaves_the_room_with_their_call_still_on_does_not_move_the_caller_from_the_event(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Leaving the room with the call in progress is pressing * for the menu, not a hang-up:
    the conference event alone moves nobody (the menu's own answers do)."""
    caller, ben, redirected = caller_and_ben_in_the_room(phone, fake)
    fake.leave_conference(ben.conference or "", ben.identity.call_sid)  # his call is still in progress

    assert len(fake.get_call(caller.identity.call_sid).redirects) == redirected
    assert only_transfer(app).state == "connected"
    assert [leg.to for leg in legs(fake)] == [BEN]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_leaving_the_room_reported_as_completed_while_their_call_goes_on_moves_nobody(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Were Twilio to report a final status for a ``*`` exit (undocumented), the line asks
    Twilio whether the call is really over before it moves the caller."""
    caller, ben, redirected = caller_and_ben_in_the_room(phone, fake)
    fake.leave_conference(ben.conference or "", ben.identity.call_sid, reported_status="completed")

    assert fake.get_call(ben.identity.call_sid).status == "in-progress"
    assert len(fake.get_call(caller.identity.call_sid).redirects) == redirected
    assert only_transfer(app).state == "connected"
    with app.app_context():
        assert db.session.scalars(select(Offer.state).order_by(Offer.id)).first() == "accepted"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_lost_callback_after_the_counselor_left_is_repaired_by_the_clock(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    # Ben's phone drops; Twilio's final status callback for his leg never arrives.
    fake.leave_conference(ben.conference or "", ben.identity.call_sid)
    fake.calls[ben.identity.call_sid].status = "completed"

    with app.app_context():
        from workers.upkeep import reconcile_transfers

        counts = reconcile_transfers()
        again = reconcile_transfers()

    assert counts == {"offers_closed": 1, "callers_moved": 1, "stray_legs_cancelled": 0}
    assert again == {"offers_closed": 0, "callers_moved": 0, "stray_legs_cancelled": 0}
    phone.resume(caller, max_hold_turns=0)
    assert "The person you were talking with has been disconnected." in caller.heard_text()
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_crashed_hold_turn_sends_the_caller_to_backup_and_stops_the_search(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(transfer.flow, "hold_step", crash)
    phone.resume(caller, dial_outcomes=["completed"], max_hold_turns=1)

    assert caller.dials[0].numbers == [TEST_BACKUP_NUMBER]
    assert "action" not in caller.dials[0].attributes  # the fail-safe's dial: it needs no request back
    assert fake.get_call(leg_to(fake, BEN).sid).status == "canceled"
    assert only_transfer(app).state == "to_backup"
    late = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])  # had it still rung, too late now
    assert late.conference is None


@pytest.mark.usefixtures("wednesday_evening")
def test_hold_turns_failing_on_the_database_send_the_caller_to_backup_and_still_stop_the_search(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failed the turns, not the search's own statements later (a dropped
    connection, a failover): once it answers again, nobody may pull the caller off the backup."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    def database_fails(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(transfer.flow, "hold_step", database_fails)
    phone.resume(caller, dial_outcomes=["completed"], max_hold_turns=5)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert caller.dials[0].numbers == [TEST_BACKUP_NUMBER]
    assert "late=2" in caller.requested_paths()[-1]  # held twice more first, then the backup line
    assert only_transfer(app).state == "to_backup"
    assert fake.get_call(leg_to(fake, BEN).sid).status == "canceled"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_press_of_1_handled_after_the_counselors_leg_ended_is_no_acceptance(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN)
    fake.advance_call(ben_leg.sid, "in-progress")  # Ben hears the whisper
    fake.advance_call(ben_leg.sid, "completed")  # ...presses 1 and hangs up: the end is handled first
    with app.app_context():
        offer_id = db.session.scalars(select(Offer.id).where(Offer.call_sid == ben_leg.sid)).one()
    ben = CallIdentity(TEST_ACCOUNT_SID, LINE_NUMBER, BEN, call_sid=ben_leg.sid, direction="outbound-api")

    phone.post(f"{phone.base_url}/voice/offer/decide?offer={offer_id}", ben.voice_params("in-progress", Digits="1"))

    transfer = only_transfer(app)
    assert (transfer.state, transfer.accepted_offer_id) == ("waiting", None)  # still searched for
    with app.app_context():
        assert db.session.get(Offer, offer_id).state != "accepted"  # type: ignore[union-attr]
    phone.resume(caller, max_hold_turns=1)
    assert caller.conference is None  # never joined to a room with nobody


def picked_up_while_twilio_answers(
    fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch, *, then: Exception | None = None
) -> None:
    """Every call the line places is answered (its whisper runs) before the line reads Twilio's
    REST answer; with ``then``, that answer is lost (``then`` is raised instead)."""
    import crisisline.telephony

    real_create = crisisline.telephony._Calls.create

    def answered_first(self: object, **values: object) -> object:
        placed = real_create(self, **values)  # type: ignore[arg-type]
        settle, fake.settle = fake.settle, None  # (its settle waits for the app's background: this ring)
        try:
            fake.advance_call(placed.sid, "in-progress")
        finally:
            fake.settle = settle
        if then is not None:
            raise then
        return placed

    monkeypatch.setattr(crisisline.telephony._Calls, "create", answered_first)


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_who_picks_up_before_twilios_rest_answer_arrives_is_kept_on_the_line(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    picked_up_while_twilio_answers(fake, monkeypatch)
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    ben_leg = leg_to(fake, BEN)
    assert fake.get_call(ben_leg.sid).status == "in-progress"  # not hung up as a stray leg
    with app.app_context():
        offer = db.session.scalars(select(Offer).where(Offer.responder_id == "ben-carter")).one()
    assert (offer.state, offer.call_sid) == ("answered", ben_leg.sid)


def ben_presses_1_after_his_rest_answer_was_lost(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> PhoneCall:
    """Ben picks up while Twilio's answer to his ring is on its way, the answer is lost (a read
    timeout), and he presses 1. Returns the caller's call, paused on hold."""
    import requests

    picked_up_while_twilio_answers(fake, monkeypatch, then=requests.ReadTimeout("the REST answer never came"))
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    app.extensions["crisisline.background"].wait_idle(timeout=30)
    monkeypatch.undo()
    ben_leg = leg_to(fake, BEN)
    with app.app_context():
        offer_id = db.session.scalars(select(Offer.id).where(Offer.responder_id == "ben-carter")).one()
    ben = CallIdentity(TEST_ACCOUNT_SID, LINE_NUMBER, BEN, call_sid=ben_leg.sid, direction="outbound-api")
    phone.post(f"{phone.base_url}/voice/offer/decide?offer={offer_id}", ben.voice_params("in-progress", Digits="1"))
    return caller


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_who_picks_up_while_twilios_rest_answer_is_lost_can_still_accept(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = ben_presses_1_after_his_rest_answer_was_lost(app, phone, fake, monkeypatch)

    assert only_transfer(app).state in ("connecting", "connected")  # Ben's acceptance counts
    phone.resume(caller, max_hold_turns=2)
    assert only_transfer(app).state == "connected"
    with app.app_context():
        assert db.session.scalars(select(Offer).where(Offer.responder_id == "ben-carter")).one().state == "accepted"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_who_hung_up_is_not_searched_for_again(app: Flask, phone: Phone, fake: FakeTwilio) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    transfer_id = only_transfer(app).id

    # Twilio posts the caller's <Dial> action with the final status after they hang up.
    url = f"{phone.base_url}/voice/transfer/after?transfer={transfer_id}"
    reply = phone.post(url, caller.identity.voice_params("completed", DialCallStatus="answered"))

    assert "<Dial" not in reply.body
    assert len(transfers(app)) == 1
    assert [leg.to for leg in legs(fake)] == [BEN]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_hearing_the_whisper_is_told_and_hung_up_when_the_caller_leaves(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben_leg = leg_to(fake, BEN)
    fake.advance_call(ben_leg.sid, "ringing")
    fake.advance_call(ben_leg.sid, "in-progress")  # Ben is listening to the whisper

    phone.hang_up(caller)

    app.extensions["crisisline.background"].wait_idle(timeout=30)
    told = fake.get_call(ben_leg.sid).redirects[-1].twiml or ""
    assert "The caller has hung up" in told and "<Hangup" in told  # said, then his leg ends
    with app.app_context():
        from crisisline.models import ResponderState

        state = db.session.get(ResponderState, "ben-carter")
    assert state is not None and state.engaged_offer_id is None


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_whose_hang_up_was_stored_but_whose_transfer_stayed_open_is_closed_by_the_clock(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """The status callback stores the call's end before it closes the transfer: if it fails in
    between, the clock closes the transfer (it would otherwise stay "connected" for good)."""
    from crisisline.models import Call

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    fake.leave_conference(ben.conference or "", ben.identity.call_sid)
    fake.calls[ben.identity.call_sid].status = "completed"  # his final callback is lost too
    with app.app_context():
        db.session.execute(db.update(Call).where(Call.call_sid == caller.identity.call_sid).values(status="completed"))
        db.session.commit()
    assert only_transfer(app).state == "connected"

    with app.app_context():
        from workers.upkeep import reconcile_transfers

        reconcile_transfers()

    closed = only_transfer(app)
    assert (closed.state, closed.end_reason) == ("ended", "caller_left")
    assert [leg.to for leg in legs(fake)] == [BEN]  # nobody is rung for a caller who has gone


def on_the_backup_line(fake: FakeTwilio, caller_sid: str) -> None:
    """The caller's ``<Dial>`` to the backup line is answered and still going (the fail-safe's
    answer put them there while the line could not record it): a child leg of their call."""
    fake.dial_leg(caller_sid, TEST_BACKUP_NUMBER, LINE_NUMBER, "in-progress")


# Past ``flow.HOLD_STALE_AFTER`` (75 s) without a hold turn.
HOLD_TURNS_STOPPED = timedelta(seconds=80)


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_who_accepts_a_caller_deep_in_a_long_hold_music_clip_gets_them(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    """A hold turn lasts as long as the line's hold music: with a long clip, the caller's turns
    stop for minutes while they are still on our line. The press of 1 must bring them in."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    wednesday_evening.shift(HOLD_TURNS_STOPPED)

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert ben.conference is not None
    assert only_transfer(app).state == "connected"  # the redirect brought the caller into the room
    redirected_to = [redirect.url or "" for redirect in fake.get_call(caller.identity.call_sid).redirects]
    assert ["/voice/transfer/join" in url for url in redirected_to] == [True]


@pytest.mark.parametrize("since_last_hold_turn", [timedelta(seconds=5), HOLD_TURNS_STOPPED])
def test_a_counselor_who_accepts_a_caller_now_on_the_backup_line_never_pulls_them_off_it(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    since_last_hold_turn: timedelta,
) -> None:  # fmt: skip
    """However recent their last hold turn (a database blip: the fail-safe sent them on a
    moment ago and could not record it), the press of 1 asks Twilio where the caller is."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    on_the_backup_line(fake, caller.identity.call_sid)
    wednesday_evening.shift(since_last_hold_turn)

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert ben.conference is None
    assert "The caller has been passed to our backup line." in ben.heard_text()
    assert only_transfer(app).state == "to_backup"
    assert fake.get_call(caller.identity.call_sid).redirects == []


@pytest.mark.usefixtures("wednesday_evening")
def test_a_counselor_answering_for_a_caller_already_passed_to_the_backup_line_is_told_so_not_that_they_hung_up(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Their leg was still ringing when the search ended (its cancel not yet through)."""
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    with app.app_context():
        from transfer import state

        assert state.move_transfer(only_transfer(app).id, ("waiting",), "to_backup", end_reason="caller_not_holding")
        db.session.commit()

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert ben.conference is None
    assert "The caller has been passed to our backup line." in ben.heard_text()
    assert "hung up" not in ben.heard_text()


@pytest.mark.usefixtures("wednesday_evening")
def test_the_minutes_repair_ends_the_search_for_a_caller_on_the_backup_line_and_stops_their_ringing(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    on_the_backup_line(fake, caller.identity.call_sid)
    wednesday_evening.shift(HOLD_TURNS_STOPPED)

    with app.app_context():
        from workers.upkeep import reconcile_transfers

        counts = reconcile_transfers()
        again = reconcile_transfers()
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert counts["callers_moved"] == 1 and again["callers_moved"] == 0
    assert only_transfer(app).state == "to_backup"
    assert fake.get_call(leg_to(fake, BEN).sid).status == "canceled"
    assert fake.get_call(caller.identity.call_sid).redirects == []  # left where they are


@pytest.mark.usefixtures("wednesday_evening")
def test_the_minutes_repair_leaves_a_caller_in_a_long_hold_turn_waiting_and_their_counselor_ringing(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    wednesday_evening.shift(HOLD_TURNS_STOPPED)

    with app.app_context():
        from workers.upkeep import reconcile_transfers

        counts = reconcile_transfers()

    assert counts["callers_moved"] == 0
    assert only_transfer(app).state == "waiting"
    assert fake.get_call(leg_to(fake, BEN).sid).status in ("queued", "initiated", "ringing")


@pytest.mark.usefixtures("wednesday_evening")
def test_the_minutes_repair_brings_a_caller_held_past_the_limit_in_a_long_clip_to_their_next_hold_turn(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    """Only a hold turn keeps ``max_hold_seconds`` (4 min here): a clip longer than that would
    keep the caller waiting past it, their counselor's phone still ringing, until it ended."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    wednesday_evening.shift(timedelta(minutes=4, seconds=1))

    with app.app_context():
        from workers.upkeep import reconcile_transfers

        counts = reconcile_transfers()
        again = reconcile_transfers()  # the next minute's run, before that turn came

    redirected_to = [redirect.url or "" for redirect in fake.get_call(caller.identity.call_sid).redirects]
    assert len(redirected_to) == 1 and "/voice/hold?" in redirected_to[0], redirected_to
    assert counts["callers_moved"] == 1 and again["callers_moved"] == 0
    phone.resume(caller, max_hold_turns=1)
    assert "All of our counselors are helping other callers" in caller.heard_text()
    assert caller.dials[-1].numbers == [TEST_BACKUP_NUMBER]


@pytest.mark.usefixtures("wednesday_evening")
def test_the_minutes_repair_closes_the_search_for_a_caller_whose_hang_up_was_never_heard(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    fake.get_call(caller.identity.call_sid).status = "completed"  # ended; its status callback lost
    wednesday_evening.shift(HOLD_TURNS_STOPPED)

    with app.app_context():
        from workers.upkeep import reconcile_transfers

        counts = reconcile_transfers()
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert counts["callers_moved"] == 1
    transfer = only_transfer(app)
    assert (transfer.state, transfer.end_reason) == ("abandoned", "caller_left")
    assert fake.get_call(leg_to(fake, BEN).sid).status == "canceled"


@pytest.mark.parametrize(
    ("since_last_hold_turn", "outcome"), [(timedelta(seconds=5), "connected"), (HOLD_TURNS_STOPPED, "to_backup")]
)
@pytest.mark.parametrize("listing", ["fails", "slow"])
def test_when_twilio_cannot_say_where_the_caller_is_their_hold_turns_decide_the_press_of_1(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    since_last_hold_turn: timedelta, outcome: str, listing: str,
) -> None:  # fmt: skip
    """Slow: past ``WHEREABOUTS_TIMEOUT_SECONDS``, so the counselor's answer stays within the
    webhook's 2 s deadline (past it, they would hear an error and be hung up)."""
    from transfer.dispatch import WHEREABOUTS_TIMEOUT_SECONDS

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    wednesday_evening.shift(since_last_hold_turn)
    if listing == "fails":
        fake.inject_fault("GET", r"/Calls\.json$", status=500, times=None)
    else:
        fake.inject_fault("GET", r"/Calls\.json$", status=200, delay=WHEREABOUTS_TIMEOUT_SECONDS + 1.5, times=None)

    started = time.monotonic()
    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert time.monotonic() - started < 2.5  # the deadline (2 s) and its 0.5 s margin
    assert "sorry" not in ben.heard_text().lower()
    assert only_transfer(app).state == outcome
    assert (ben.conference is not None) == (outcome == "connected")
    assert (fake.get_call(caller.identity.call_sid).redirects != []) == (outcome == "connected")


def test_asking_twilio_where_the_caller_is_never_holds_a_database_transaction_open(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Up to 0.8 s each on a counselor's press of 1 and in the minute's repair: idle in a
    transaction, a PostgreSQL connection holds its snapshot (and a pooler's server connection)."""
    from transfer import dispatch

    asked_inside_a_transaction: list[bool] = []
    ask = dispatch.caller_dial_legs

    def watched(call_sid: str | None) -> list[str] | None:
        asked_inside_a_transaction.append(db.session().in_transaction())
        return ask(call_sid)

    monkeypatch.setattr(dispatch, "caller_dial_legs", watched)
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    wednesday_evening.shift(HOLD_TURNS_STOPPED)

    phone.answer(leg_to(fake, BEN).sid, [Keys("1")])  # the first caller: the press of 1 asks
    with app.app_context():
        from workers.upkeep import reconcile_transfers

        reconcile_transfers()  # the second, quiet for 80 s: the repair asks
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert asked_inside_a_transaction == [False, False]


@pytest.mark.usefixtures("wednesday_evening")
def test_the_minutes_repair_counts_a_caller_who_finished_on_the_backup_line_as_sent_there_not_abandoned(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    """The fail-safe sent them to the backup line, they talked and hung up, and none of it
    reached the database: no abandonment in the figures, no "we missed you" text."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    fake.dial_leg(caller.identity.call_sid, TEST_BACKUP_NUMBER, LINE_NUMBER, "completed")
    fake.get_call(caller.identity.call_sid).status = "completed"  # their status callback lost
    wednesday_evening.shift(HOLD_TURNS_STOPPED)

    with app.app_context():
        from workers.upkeep import reconcile_transfers

        counts = reconcile_transfers()
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert counts["callers_moved"] == 1
    assert only_transfer(app).state == "to_backup"
    assert [m for m in fake.messages.values() if m.to == caller.identity.from_] == []


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_deep_in_a_long_hold_clip_with_nobody_left_to_ring_is_moved_on_at_once(
    app: Flask, phone: Phone, fake: FakeTwilio, wednesday_evening: time_machine.Coordinates
) -> None:
    """Nobody left to ring: the caller is redirected to their next hold turn (the callback
    offer or the backup line) rather than left in the clip, or sent to backup unoffered."""
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    wednesday_evening.shift(HOLD_TURNS_STOPPED)
    with app.app_context():  # everyone else goes off shift meanwhile
        active = active_routing()
        assert active is not None
        for responder in active.document.responders:
            set_paused(responder.id, True, "self")
        db.session.commit()
    fake.advance_call(leg_to(fake, BEN).sid, "no-answer")  # nobody left to ring

    redirected_to = [redirect.url or "" for redirect in fake.get_call(caller.identity.call_sid).redirects]
    assert len(redirected_to) == 1 and "/voice/hold?" in redirected_to[0], redirected_to
    assert only_transfer(app).state == "waiting"

    # A second offer closing in the same moment (a pass) finds nobody left too: the caller is
    # not redirected again, into the middle of the prompt the first redirect brought.
    with app.app_context():
        active = active_routing()
        assert active is not None
        transfer.flow.ring_next(db.session.get(Transfer, only_transfer(app).id), active.document)
    assert len(fake.get_call(caller.identity.call_sid).redirects) == 1


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_the_failsafe_sent_to_the_backup_line_unrecorded_is_never_pulled_off_it_when_the_database_returns(
    app: Flask, phone: Phone, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the database fails the hold turns and everything after them (the fail-safe's
    own bookkeeping too), the caller talks with the backup line, the database comes back, and
    the counselor still ringing presses 1."""
    import crisisline.failsafe

    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    def database_fails(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    with monkeypatch.context() as outage:
        outage.setattr(transfer.flow, "hold_step", database_fails)
        outage.setattr(crisisline.failsafe, "AFTER_FAILSAFE", [])  # it could not record where they went
        phone.resume(caller, dial_outcomes=[TALKING], max_hold_turns=5)
        app.extensions["crisisline.background"].wait_idle(timeout=30)
    assert caller.dials[-1].numbers == [TEST_BACKUP_NUMBER] and caller.ended_by == "on-a-dial"
    assert only_transfer(app).state == "waiting"  # nothing recorded it

    ben = phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    assert ben.conference is None
    assert only_transfer(app).state == "to_backup"
    assert fake.get_call(caller.identity.call_sid).redirects == []


@pytest.mark.usefixtures("wednesday_evening")
def test_a_need_answer_handled_after_the_callers_hang_up_rings_nobody(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    """Before, the search began for a caller already gone: a counselor was rung (and counted a
    miss if they did not pick up) until the minute's repair noticed, 75 s or more later."""
    from twilio_fake.signing import gather_digits_params

    caller = phone.call([Keys("1")], hang_up_after_requests=2)  # the greeting and the language answer
    phone.hang_up(caller)  # their final status callback is handled first
    phone.post(f"{phone.base_url}/voice/menu/need?lang=en&attempt=1", gather_digits_params(caller.identity, "2"))
    app.extensions["crisisline.background"].wait_idle(timeout=30)

    assert [transfer.state for transfer in transfers(app)] == ["abandoned"]
    assert legs(fake) == []
