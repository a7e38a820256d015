"""The warm-transfer flows, as plain functions the webhooks call. Each is idempotent: a
duplicated or late Twilio callback finds the state already moved on and does nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import requests
from blinker import Namespace
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from twilio.base.exceptions import TwilioRestException

import line_queue
from crisisline import events
from crisisline.background import start_later, start_soon
from crisisline.db import commit_keeping_loaded, db, insert_once
from crisisline.failsafe import answered_by_failsafe
from crisisline.models import ACTIVE_OFFER_STATES, Call, Callback, CallEvent, Offer, ResponderState, Transfer
from ivr import call_log
from routing.document import RoutingDocument
from routing.store import active_routing
from transfer import dispatch, joining, state
from transfer.twiml import spoken_wait
from workers.contacts import schedule

log = logging.getLogger(__name__)
# A responder accepted a callback search (sender: the transfer; ``document``): a receiver
# dials the person into the responder's conference and returns True if their phone rings, or
# else the key of the staff prompt the responder is told (``callback_no_answer`` by default).
callback_accepted = Namespace().signal("callback-accepted")
# The person a callback's attempt reached was put through to the backup line by the fail-safe
# (sender: the transfer, its move to ``to_backup`` not yet committed): a receiver records the
# callback's outcome, in that transaction.
callback_on_backup = Namespace().signal("callback-on-backup")
# A live search began for a caller holding on our line (sender: the transfer, committed;
# ``call``): a receiver stops a search of theirs that rings counselors to call them back.
live_search_started = Namespace().signal("live-search-started")
TERMINAL_LEG_STATUSES = dispatch.TERMINAL_LEG_STATUSES
# An offer whose press of 1 came after the counselor's webhook had answered without it (its
# deadline passed): not a miss of theirs.
DEADLINE_PASSED = "deadline_passed"


def record_event(transfer: Transfer, kind: str, key: str, **detail: object) -> None:
    """Append an event to the caller's call record (once per ``key``), for metrics."""
    call = db.session.get(Call, transfer.call_id)
    if call is not None:
        call_log.record_event(call, kind, key, {"transfer": transfer.id, "round": transfer.round, **detail})


# The caller heard that nobody who speaks their language is available (docs/metrics.md).
LANGUAGE_NOTICE = "transfer.language_notice"


def begin(
    call: Call, document: RoutingDocument, language: str, need: str, *, language_matched: bool,
    notice_said: bool = False,
) -> Transfer:  # fmt: skip
    """Put this caller in the queue; the first hold step, in the same request, rings.
    ``notice_said``: the answer putting them on hold says nobody who speaks their language is
    available (their hold turns do not say it again)."""
    need_config = document.need(need)
    priority = need_config.priority if need_config else 0
    transfer = state.start_transfer(
        call, language, need, language_matched=language_matched, priority=priority,
        language_notice="said" if notice_said else None,
    )  # fmt: skip
    record_event(
        transfer,
        "transfer.started",
        f"transfer:{transfer.id}:started",
        need=need,
        language=language,
        language_matched=language_matched,
    )
    if notice_said:
        record_event(transfer, LANGUAGE_NOTICE, f"transfer:{transfer.id}:language_notice", at="put_on_hold")
    # The menu's answer, the route and the new transfer in one commit; the call and the transfer
    # (read back through RETURNING) stay loaded: nobody else has seen the transfer yet.
    commit_keeping_loaded()
    call_log.facts_of(call)  # its line number and whether it can be called back, for its hold turns and rings
    if db.session.scalar(_CALL_STATUS, {"call": call.id}) in call_log.TERMINAL_STATUSES:
        # They hung up as they chose, and their call's end was handled before this answer was
        # stored (it found no transfer to end): nobody may be rung for nobody. Read after the
        # commit, so either this or the hang-up's handling sees the other.
        leg_gone(transfer, call)
        return transfer
    if answered_by_failsafe(call.call_sid):
        # This request ran past its deadline and the caller is on the backup line already:
        # no search for them (checked after the commit, so either this or the fail-safe's own
        # hook, ``failsafe_took_over``, sees the transfer and ends it).
        send_to_backup(transfer, "failsafe")
        db.session.commit()
        return transfer
    try:
        live_search_started.send(transfer, call=call)
    except Exception as error:  # their own search goes on: a callback's accept checks again
        log.error("live-search-started receiver failed: %s", type(error).__name__)
        db.session.rollback()
    return transfer  # its first hold step (``hold_step``) rings who is free, at once


# Built once: every need answer reads it (``crisisline.db``, "Statements built once").
_CALL_STATUS = select(Call.status).where(Call.id == bindparam("call"))


@dataclass(frozen=True)
class HoldStep:
    """What the waiting caller hears next: ``hold`` (``message`` key, with ``position`` and
    ``minutes`` for the prompts that say them), ``join``, ``settle`` (a second's pause while
    the redirect to their responder lands), ``staff_left`` (everyone who accepted has gone:
    on to the staff-left turn), ``callback_or_backup``, ``callback_confirmed`` (they asked for a
    callback, and it is stored: told so, then hung up on) or ``backup``. ``language_notice``: a
    ``hold`` first says nobody who speaks their language is available (someone who does not
    is being rung for them)."""

    kind: str
    message: str = ""
    minutes: int = 0
    offer_callback: bool = False
    position: int = 0
    reason: str = ""  # why a ``callback_or_backup`` step moves the caller on, if they choose nothing
    language_notice: bool = False


def hold_step(transfer: Transfer, document: RoutingDocument, tick: int) -> HoldStep:
    """One turn of the caller's hold loop: the safety net that needs no worker.

    Accepted already → join the conference (also covers a lost REST redirect). Hold limit
    passed → a callback offer or the backup line. Nobody on shift who could ever take them →
    the same, at once. Otherwise offer free responders to the queue (a lost status callback
    cannot stall it) and keep holding, hearing their place in line and an honest wait.
    """
    accepted = join_or_settle(transfer)
    if accepted is not None:
        return accepted
    if transfer.state == "callback":
        # Handed to their callback (the key's request, stored): a late turn of that request
        # (its deadline's "one more hold turn") tells them so, never the backup line.
        return HoldStep("callback_confirmed", "callback_confirmed")
    if transfer.state != "waiting":
        return HoldStep("backup", "nobody_available")
    if transfer.last_hold_at is None or state.now() - transfer.last_hold_at >= state.HOLD_BEAT_EVERY:
        state.touch_hold(transfer.id)  # the heartbeat, only when it is getting old: no write otherwise
        db.session.commit()
    callback_ok = callback_possible(transfer, document)
    waited = (state.now() - transfer.started_at).total_seconds()
    if held_past_the_limit(transfer, document):
        if callback_ok:  # a few seconds to choose a callback, else the backup line
            return HoldStep("callback_or_backup", "nobody_available", reason="hold_limit")
        return backup_unless_accepted(transfer, "hold_limit")
    # The first step (the need answer, a callback's first turn) rings at once; later turns
    # are the safety net for a lost event. ``advance`` refreshes ``transfer`` if it could have changed.
    result = dispatch.advance(transfer.id, document, safety_net=tick > 1, joined="voice" if tick <= 1 else None)
    accepted = join_or_settle(transfer)  # a pass refreshes ``transfer``: someone may have accepted meanwhile
    if accepted is not None:
        return accepted
    if result.exhausted:
        if callback_ok:
            return HoldStep("callback_or_backup", "nobody_available", reason="nobody_left")
        return backup_unless_accepted(transfer, "nobody_left")
    offer = callback_ok and waited >= document.callbacks.offer_after_seconds
    notice = _language_notice_now(transfer)
    if tick <= 1:
        return HoldStep("hold", "hold", offer_callback=offer, language_notice=notice)
    place = line_queue.position(document, "voice", transfer.priority, transfer.queued_since, transfer.id)
    if place == 1 and result.ringing:
        return HoldStep("hold", "hold_next", offer_callback=offer, position=1, language_notice=notice)
    minutes = line_queue.expected_wait_minutes(document, place, transfer.language, transfer.need)
    if document.queue.announce_position:
        return HoldStep(
            "hold", "hold_position", minutes=minutes, offer_callback=offer, position=place, language_notice=notice
        )
    message = "hold_wait" if tick % 2 == 0 else "hold_update"
    return HoldStep("hold", message, minutes=minutes, offer_callback=offer, position=place, language_notice=notice)


def held_past_the_limit(transfer: Transfer, document: RoutingDocument) -> bool:
    """Whether the caller has waited the routing's ``max_hold_seconds``: their next hold turn
    offers a callback or takes them to the backup line."""
    return (state.now() - transfer.started_at).total_seconds() >= document.transfer.max_hold_seconds


def _language_notice_now(transfer: Transfer) -> bool:
    """Whether this hold turn says nobody who speaks the caller's language is available: someone
    who does not was rung for them (``dispatch.ring_for_transfer``) and they have not heard it.
    Said once, by the first turn to claim it; a turn with nothing to say writes nothing."""
    if transfer.language_notice != "due" or not state.claim_language_notice(transfer.id):
        return False
    record_event(transfer, LANGUAGE_NOTICE, f"transfer:{transfer.id}:language_notice", at="hold_turn")
    db.session.commit()
    return True


def join_or_settle(transfer: Transfer) -> HoldStep | None:
    """Once a responder has accepted: join the conference, or settle for a second while the
    accepting responder's REST redirect is bringing the caller in this very moment (joining
    as well would bounce them out of the room and back), or ``staff_left`` if everyone who
    accepted has left already. None while nobody has accepted.

    Every place a hold turn reads an accepted transfer asks this, whichever read saw it."""
    if transfer.state not in ("connecting", "connected"):
        return None
    # Both ways: a clock stepped back must not make "just accepted" last until it catches up.
    since = state.now() - transfer.accepted_at if transfer.accepted_at is not None else None
    just_accepted = since is not None and -JOIN_REDIRECT_GRACE < since < JOIN_REDIRECT_GRACE
    if transfer.state == "connecting" and transfer.mode == "live" and just_accepted and not _redirect_failed(transfer):
        return HoldStep("settle")
    if transfer.mode == "live" and not state.staff_on_call(transfer.id):
        # The responder who accepted has gone already (their leg ended while Twilio could not
        # move the caller): no empty room; the staff-left turn tells them and searches again.
        return HoldStep("staff_left")
    return HoldStep("join")


def _redirect_failed(transfer: Transfer) -> bool:
    key = f"transfer:{transfer.id}:redirect_failed"
    return (
        db.session.scalar(
            select(CallEvent.id).where(CallEvent.call_id == transfer.call_id, CallEvent.dedupe_key == key)
        )
        is not None
    )


def callback_possible(transfer: Transfer, document: RoutingDocument) -> bool:
    """A live caller whose number we can call back, on a line that offers callbacks."""
    if transfer.mode != "live" or not document.callbacks.enabled:
        return False
    facts = call_log.known_facts(transfer.caller_call_sid)
    if facts is None or facts.call_id != transfer.call_id:
        call = db.session.get(Call, transfer.call_id)
        if call is None or call.call_sid != transfer.caller_call_sid:
            return False
        facts = call_log.facts_of(call)
    return facts.has_caller_number


def backup_unless_accepted(transfer: Transfer, reason: str) -> HoldStep:
    """To the backup line, unless a responder accepted in this very moment: then join them."""
    if send_to_backup(transfer, reason):
        return HoldStep("backup", "nobody_available")
    db.session.refresh(transfer)
    return join_or_settle(transfer) or HoldStep("backup", "nobody_available")


def send_to_backup(transfer: Transfer, reason: str) -> bool:
    """Give up the search (once): stop every ringing leg; the caller goes to the backup line."""
    if not state.move_transfer(transfer.id, ("waiting",), "to_backup", end_reason=reason):
        db.session.commit()
        return False
    waited = round((state.now() - transfer.started_at).total_seconds())
    if transfer.mode == "live":  # a callback search that stops is a callback outcome, recorded by callbacks
        key = f"transfer:{transfer.id}:backup"
        record_event(transfer, "transfer.to_backup", key, reason=reason, waited_seconds=waited)
    db.session.commit()
    stop_ringing(transfer)
    return True


def stop_ringing(transfer: Transfer, keep: int | None = None) -> None:
    """Stop every responder leg still ringing (or whispering) for this transfer.

    The offers end here; the legs are ended off the request thread (Twilio REST calls a slow
    API must not add to anyone's wait). If this process dies first, a leg still answered
    finds its offer over and is ended by its own webhook.

    A round that ended because nobody from the line was with the caller also sends away a unit
    whose press of 1 committed just before that end: it is headed for (or in) the room the
    caller has left, and is told so (``state.send_unit_away``). Read with the ringing legs."""
    for offer in state.offers_to_stop(transfer.id):
        if offer.id == keep:
            continue
        if offer.state == "accepted":
            _send_unit_away(offer, transfer, tell=True)
            continue
        leg = state.finish_offer_for_its_leg(offer, "superseded")
        if leg is not None:
            db.session.commit()
            answered, call_sid = leg.answered, leg.call_sid
            told = _why_the_whisper_ended(transfer) if answered else None
            if call_sid and told:
                start_soon(f"hang_up:{call_sid}", partial(dispatch.tell_responder, call_sid, told))
            elif call_sid:
                start_soon(f"hang_up:{call_sid}", partial(dispatch.hang_up_call, call_sid, answered=answered))
    db.session.commit()


# What a responder still hearing the whisper is told as their phone is freed, by how the
# round ended, rather than a call that just drops mid-sentence.
_WHISPER_ENDED_BY = {"abandoned": "caller_gone", "to_backup": "caller_on_backup", "connecting": "already_connected",
                     "connected": "already_connected"}  # fmt: skip


def _why_the_whisper_ended(transfer: Transfer) -> str | None:
    active = active_routing()
    key = _WHISPER_ENDED_BY.get(transfer.state)
    if key == "caller_on_backup" and transfer.mode != "live":
        key = None  # a callback's search given up (nobody free in time): nobody is on any line
    return active.document.staff_prompt(key) if active is not None and key else None


# What a unit sent away hears: the caller is not gone, the counselor is (``send_unit_away``).
UNIT_NOT_NEEDED = "unit_not_needed"


def _unit_too_late_key(transfer: Transfer) -> str:
    """What a unit whose press of 1 came too late is told: the caller hung up, or the counselor
    left and the caller is being connected to someone else (then "hung up" would be untrue)."""
    return UNIT_NOT_NEEDED if transfer.end_reason == "staff_left" else "caller_gone"


def _send_unit_away(offer: Offer, transfer: Transfer, *, tell: bool) -> bool:
    """A unit accepted joining a round that has ended with its caller moved on: the acceptance
    ends (taken back from the figures: the unit never joined the caller), the unit is freed and,
    with ``tell``, told over REST (off the request thread), as a counselor left in the room is
    (``on_the_backup_line``). True if this sent it away. Committed."""
    call_sid = offer.call_sid  # read before the commit expires it
    if not state.send_unit_away(offer):
        db.session.commit()
        return False
    key = f"offer:{offer.id}:outcome"
    _unrecord(transfer, key)
    record_event(transfer, "offer.ended", key, responder=offer.responder_id, outcome="caller_gone")
    db.session.commit()
    active = active_routing()
    if tell and call_sid and active is not None:
        told = active.document.staff_prompt(UNIT_NOT_NEEDED)
        start_soon(f"tell:{call_sid}", partial(dispatch.tell_responder, call_sid, told))
    return True


# After an acceptance, how long the caller's own hold turn leaves the REST redirect to bring
# them in before joining them itself (the redirect was never sent: a failed one is recorded
# and joins at once). Longer than the redirect's own timeout: a slow redirect that lands after
# the turn joined them would bounce the caller out of the room and back.
JOIN_REDIRECT_GRACE = timedelta(seconds=dispatch.INLINE_REST_TIMEOUT_SECONDS + 2)
# A caller whose hold turns stopped this long ago may have left our hold loop (the fail-safe
# or the Fallback URL took them to the backup line, or they hung up) or be deep in a long
# hold-music clip: Twilio is asked which (``caller_is_ours``, the minute's repair).
HOLD_STALE_AFTER = timedelta(seconds=75)


def caller_is_holding(transfer: Transfer) -> bool:
    beat = transfer.last_hold_at or transfer.started_at
    return state.now() - beat < HOLD_STALE_AFTER


def caller_is_off_our_line(transfer: Transfer) -> bool | None:
    """Whether a live caller has left our TwiML for a ``<Dial>`` (the backup line); None when
    Twilio cannot say. Asked of Twilio, not told by the hold turns: a long hold-music clip
    stops the turns for minutes while the caller is still ours, and a hold turn handled late,
    after the fail-safe sent the caller to the backup line, can still stamp its beat.
    Ends the session's read transaction first (nothing is pending here): the database is not
    held idle in a transaction while Twilio answers."""
    commit_keeping_loaded()
    legs = dispatch.caller_dial_legs(transfer.caller_call_sid)
    if legs is None:
        return None
    return any(status in dispatch.LIVE_LEG_STATUSES for status in legs)


def caller_is_ours(transfer: Transfer) -> bool:
    """Whether a live caller can be brought to a counselor: no live ``<Dial>`` leg of theirs,
    or, when Twilio cannot say, hold turns recent enough to show they are in our loop."""
    off = caller_is_off_our_line(transfer)
    return caller_is_holding(transfer) if off is None else not off


def too_late_key(transfer: Transfer) -> str:
    """What a responder is told when the caller they answered for is no longer theirs to take."""
    if transfer.state == "to_backup" and transfer.mode == "live":
        return "caller_on_backup"  # still being helped: "hung up" would be untrue
    if transfer.state in ("abandoned", "ended", "to_backup", "callback"):
        return "caller_gone"  # a callback search given up, or a caller who left to be called back
    return "already_connected"


@dataclass(frozen=True)
class WhisperStep:
    """What an answering responder hears: ``whisper`` (``text``) or ``staff`` message ``text``."""

    kind: str
    text: str


def _still_answering() -> bool:
    return True


def adopt_lost_leg(
    offer: Offer, transfer: Transfer, call_sid: str | None, *, still_answering: Callable[[], bool] = _still_answering
) -> bool:
    """A responder answered a leg whose REST answer was lost (Twilio placed it after our
    request timed out): if the caller still waits and the responder is free, it becomes the
    offer it was meant to be, and they are briefed as usual. Otherwise they hear the truth.
    Not once this webhook's deadline has apologised and hung the leg up (``still_answering``):
    revived then, it would ring on with no leg behind it, holding up the caller's search."""
    if offer.state != "ended" or offer.outcome != state.LOST_REST_ANSWER or not call_sid:
        return False
    if transfer.state != "waiting" or offer.purpose != "answer" or not still_answering():
        return False
    adopted = state.revive_lost_offer(offer, call_sid)
    db.session.commit()
    db.session.refresh(offer)
    if adopted:
        record_event(transfer, "offer.adopted", f"offer:{offer.id}:adopted", responder=offer.responder_id)
        db.session.commit()
    return adopted


def offer_answered(
    offer: Offer, transfer: Transfer, document: RoutingDocument, call_sid: str | None = None, *,
    still_answering: Callable[[], bool] = _still_answering,
) -> WhisperStep:  # fmt: skip
    """A responder picked up (on ``call_sid``): brief them, or tell them the caller is taken or
    gone. The leg's SID is kept if the offer has none yet (its REST answer is still on its way,
    or was lost): so the line can still tell them, or end their leg, when the caller leaves.

    ``still_answering`` says whether this webhook's answer is still ours to give: once its
    deadline has answered with the apology, they are never briefed, so the offer is not marked
    answered (their leg's end would count the line's slowness as their ``no_decision``); it
    ends as ``state.NOT_BRIEFED`` (``line_failed_the_leg``, or their leg's end)."""
    if offer.purpose == "join":
        if transfer.state != "connected" or offer.state not in ACTIVE_OFFER_STATES:
            state.finish_offer(offer, "superseded")
            db.session.commit()
            return WhisperStep("staff", document.staff_prompt("caller_gone"))
    elif transfer.state != "waiting" or offer.state not in ACTIVE_OFFER_STATES:
        state.finish_offer(offer, "superseded")
        db.session.commit()
        key = too_late_key(transfer)
        return WhisperStep("staff", document.staff_prompt(key))
    if not still_answering():
        db.session.commit()
        return WhisperStep("staff", "")  # never heard: the deadline's apology went out instead
    answered = db.session.execute(
        db.update(Offer)
        # A responder whose console account was closed while their phone rang is not briefed
        # on the caller: checked in this UPDATE, so the usual pickup costs no extra statement.
        .where(Offer.id == offer.id, Offer.state.in_(("placing", "ringing")), state.still_rung(Offer.responder_id))
        .values(state="answered", answered_at=state.now(), call_sid=func.coalesce(Offer.call_sid, call_sid))
    ).rowcount  # type: ignore[attr-defined]
    if not answered and state.is_closed(offer.responder_id):  # one read, only when refused
        return WhisperStep("staff", document.staff_prompt(_refuse_closed_account(offer, transfer, document).key))
    db.session.commit()
    language = document.language(transfer.language)
    need = document.need(transfer.need)
    need_label = need.labels.get(document.menu.default_language, need.key) if need else transfer.need
    if offer.purpose == "join":
        text = document.staff_prompt("whisper_add_unit", language=language.staff_name, need=need_label)
    elif transfer.mode == "callback":
        asked = _callback_requested_at(transfer) or transfer.started_at
        ago = spoken_wait((state.now() - asked).total_seconds())
        text = document.staff_prompt("whisper_callback", language=language.staff_name, need=need_label, ago=ago)
    else:
        waited = spoken_wait((state.now() - transfer.started_at).total_seconds())
        text = document.staff_prompt("whisper", language=language.staff_name, need=need_label, wait=waited)
    return WhisperStep("whisper", text)


@dataclass(frozen=True)
class Decision:
    """``joined`` (put the responder in the conference), or a ``staff`` message ``key``."""

    kind: str
    key: str = ""
    lead: str = "connecting"  # for ``joined``: what the responder hears before the conference


def _promise_nothing(_lead: str) -> bool:
    return True


def offer_decided(
    offer: Offer, transfer: Transfer, document: RoutingDocument, digits: str, *,
    still_answering: Callable[[], bool] = _still_answering, promise_join: Callable[[str], bool] = _promise_nothing,
) -> Decision:  # fmt: skip
    """The responder pressed a key after the whisper.

    ``still_answering`` says whether this webhook's answer is still ours to give (its deadline
    has not answered with an apology); ``promise_join(lead)``, called once the acceptance is
    stored, makes a deadline that passes from then on put the responder in the room with that
    lead, as a timely answer would, while the caller's redirect is still on its way; False if
    the deadline has already apologised.
    """
    if digits != "1":
        if state.finish_offer(offer, "passed"):
            record_event(transfer, "offer.passed", f"offer:{offer.id}:outcome", responder=offer.responder_id)
            state.count_missed(offer.responder_id, "passed")
            db.session.commit()
            if offer.purpose == "answer":
                ring_next(transfer, document)
            else:
                joining.unit_did_not_come_soon(transfer.id, document)
        elif state.passed_after_all(offer.id):
            # Their press of 2 and their hang-up crossed, and the leg's end was handled first
            # (``no_decision``, the next person rung already): a pass, not a miss of theirs,
            # nor a pause (already rung, they were not paused before this offer).
            state.count_missed(offer.responder_id, "passed")
            state.resume_after_a_pass(offer.responder_id)
            db.session.commit()
        return Decision("staff", "passed")

    if offer.state == "accepted" and transfer.state in ("connecting", "connected"):
        return Decision("joined")  # the same key press delivered again: answer it the same way

    if offer.purpose == "join":
        if transfer.state == "connected" and state.accept_join(offer.id):
            record_event(
                transfer,
                "offer.accepted",
                f"offer:{offer.id}:outcome",
                responder=offer.responder_id,
                purpose="join",
            )
            db.session.commit()
            # Read again after the commit (it expired the copy): a round's end that waited for
            # this acceptance (``accept_join`` holds the round) has committed by now if it came
            # first, and the unit is told here rather than sent into the room the caller left.
            # One that commits later sends the unit away itself (``stop_ringing``).
            if transfer.state != "connected":
                _send_unit_away(offer, transfer, tell=False)  # unless that end did (telling the same)
                return Decision("staff", _unit_too_late_key(transfer))
            return Decision("joined")
        if state.is_closed(offer.responder_id):  # one read, only for a refused press
            return _refuse_closed_account(offer, transfer, document)
        db.session.commit()  # the transfer is read again below: as it stands now
        return Decision("staff", _unit_too_late_key(transfer))

    if transfer.mode == "live" and not caller_is_ours(transfer):
        # On the backup line (or not holding, when Twilio cannot say): bringing them in would
        # pull them off it mid-sentence.
        send_to_backup(transfer, "caller_not_holding")
    if not still_answering():
        # The counselor already heard the deadline's apology and is being hung up: accepting
        # now would bring the caller into a room nobody will be in. Ring the next person.
        if state.finish_offer(offer, DEADLINE_PASSED):
            _deadline_passed(offer, transfer, document)
        return Decision("staff", "passed")
    if not state.accept(transfer.id, offer.id):
        if state.is_closed(offer.responder_id):  # one read, only for a refused press
            return _refuse_closed_account(offer, transfer, document)
        state.finish_offer(offer, "too_late")
        db.session.commit()
        db.session.refresh(transfer)
        key = too_late_key(transfer)
        return Decision("staff", key)
    waited = (state.now() - transfer.started_at).total_seconds()
    record_event(
        transfer,
        "offer.accepted",
        f"offer:{offer.id}:outcome",
        responder=offer.responder_id,
        speed_to_answer_seconds=round(waited),
    )
    state.count_missed(offer.responder_id, "accepted")
    # Kept loaded: what follows reads only what an acceptance does not change, and the room
    # promised next must not wait on reading the rows again (a slow database is why it may be late).
    commit_keeping_loaded()
    # From here a deadline puts the counselor in the room, not in an apology.
    if not promise_join("callback_calling" if transfer.mode == "callback" else "connecting"):
        # It apologised while the acceptance was being written (a slow database): withdrawn,
        # unless the caller may have moved on meanwhile (their hold turn joins them once the
        # redirect's grace is over), and the next person is rung.
        if state.withdraw_acceptance(transfer.id, offer, DEADLINE_PASSED, accepted_after=_withdrawable_since()):
            _unrecord(transfer, f"offer:{offer.id}:outcome")  # no acceptance in the figures
            _deadline_passed(offer, transfer, document)
        else:
            db.session.commit()
        return Decision("staff", "passed")
    if transfer.mode == "callback":
        stop_ringing(transfer, keep=offer.id)
        # The callbacks feature dials the person (it subscribes; transfer does not import it).
        # A receiver answers True (their phone rings) or the staff prompt to tell the counselor.
        answers = [result for _receiver, result in callback_accepted.send(transfer, document=document)]
        if True in answers:
            return Decision("joined", lead="callback_calling")
        told = next((answer for answer in answers if isinstance(answer, str)), "callback_no_answer")
        return Decision("staff", told)
    # The caller first (their next hold turn would also bring them in if this fails), then
    # stop the other ringing phones, so pressing 1 never waits on them.
    redirected = dispatch.redirect_caller(transfer, "transfer.caller_join")
    if redirected == dispatch.CALLER_GONE:
        state.move_transfer(transfer.id, ("connecting",), "abandoned", end_reason="caller_left")
        state.finish_offer(offer, "caller_gone", from_states=("accepted",))
        db.session.commit()
        stop_ringing(transfer)
        return Decision("staff", "caller_gone")
    if redirected == dispatch.REDIRECT_FAILED:
        # Their next hold turn brings them in: it must not wait for a redirect that never comes.
        # Not when it is ``unsure``: Twilio may still carry it out, so the turns wait out the grace.
        record_event(transfer, "transfer.redirect_failed", f"transfer:{transfer.id}:redirect_failed")
        db.session.commit()
    stop_ringing(transfer, keep=offer.id)
    return Decision("joined")


# The offer a responder's phone is ringing for, for a caller (not picked up yet): to answer
# them, or a unit's to join their call. By their ``engaged_offer_id``, so one indexed read.
# Bound: ``responder``.
_RINGING_FOR_A_CALLER = (
    select(Offer)
    .join(ResponderState, ResponderState.engaged_offer_id == Offer.id)
    .where(
        ResponderState.responder_id == bindparam("responder"),
        Offer.purpose.in_(("answer", "join")),
        Offer.state.in_(("placing", "ringing")),
    )
)


@events.responder_paused.connect
def paused_while_rung(responder_id: str, **_: object) -> bool:
    """A responder paused themselves (their ``OFF``, the desk's switch; committed) while their
    phone rang for a caller (or, a unit's, to join a call): the offer ends as their press of 2
    would end it (``passed``, one conditional UPDATE), their phone stops ringing and the
    caller's next person (the next unit) is rung, both off the request thread, rather than the
    caller waiting out the ring timeout on someone who said they are away. A phone picked up
    already (the whisper, a press of 1, the call itself) is left alone: they decide there. The
    leg's own status callback that follows (``canceled``) finds the offer closed and does
    nothing. True if it ended an offer."""
    offer = db.session.scalars(_RINGING_FOR_A_CALLER, {"responder": responder_id}).first()
    if offer is None:
        db.session.commit()
        return False
    offer_id, transfer_id, purpose = offer.id, offer.transfer_id, offer.purpose
    transfer = db.session.get(Transfer, transfer_id)
    if transfer is None or not state.finish_offer(offer, "passed", from_states=("placing", "ringing")):
        db.session.commit()  # picked up meanwhile, or ended by its leg: theirs to decide, or done
        return False
    record_event(transfer, "offer.passed", f"offer:{offer_id}:outcome", responder=responder_id, paused=True)
    state.count_missed(responder_id, "passed")
    db.session.commit()
    # Read after the end is committed: a SID stored before it is here, and a leg whose REST
    # answer comes after it finds the offer over and is ended by its own ring (``_PLACED``).
    call_sid = db.session.scalar(select(Offer.call_sid).where(Offer.id == offer_id))
    if call_sid:
        start_soon(f"hang_up:{call_sid}", partial(dispatch.hang_up_call, call_sid, answered=False))
    start_soon(f"ring-next:{transfer_id}", partial(_ring_next_after_a_pause, transfer_id, purpose))
    return True


def _ring_next_after_a_pause(transfer_id: int, purpose: str) -> None:
    """As after a press of 2: the caller's next person, or for a unit asked to join, the next
    unit on shift (or the counselor told none is coming)."""
    transfer = db.session.get(Transfer, transfer_id)
    active = active_routing()
    if transfer is not None and active is not None and purpose == "answer" and transfer.state == "waiting":
        ring_next(transfer, active.document)
    elif transfer is not None and active is not None and purpose == "join" and transfer.state == "connected":
        joining.unit_did_not_come(transfer.id, active.document)
    db.session.commit()


def _refuse_closed_account(offer: Offer, transfer: Transfer, document: RoutingDocument) -> Decision:
    """A press of 1 refused because the responder's console account was closed while their
    phone rang: the offer ends as a pass does, the caller is not dropped (the next person is
    rung), and the responder is told why (``not_rung``)."""
    if state.finish_offer(offer, state.ACCOUNT_CLOSED):
        record_event(
            transfer, "offer.ended", f"offer:{offer.id}:outcome", responder=offer.responder_id,
            outcome=state.ACCOUNT_CLOSED,
        )  # fmt: skip
        db.session.commit()
        db.session.refresh(transfer)  # ``accept`` may have moved it and back: what it is now
        if offer.purpose == "answer" and transfer.state == "waiting":
            ring_next(transfer, document)
    else:
        db.session.commit()
    return Decision("staff", "not_rung")


def offer_leg_ended(offer: Offer, transfer: Transfer, document: RoutingDocument, status: str) -> bool:
    """A responder's leg reached a final status (Twilio may repeat or reorder these).

    Returns True if this moved the caller on (their responder left and nobody else is there).
    """
    if offer.state == "accepted":
        return _accepted_leg_ended(offer, transfer)
    outcome = {
        "busy": "busy",
        "no-answer": "no_answer",
        "failed": "failed",
        "canceled": "canceled",
        # Answered (Twilio says ``completed`` only then) but never briefed: the line's whisper
        # failed, or their hang-up was handled before it. Not their miss.
        "completed": "no_decision" if offer.state == "answered" else state.NOT_BRIEFED,
    }[status]
    if not state.finish_offer(offer, outcome):
        # Closed meanwhile, or accepted: their press of 1 was handled after this callback read
        # the offer and before it closed it. Then they have left a caller who is on their way
        # into the room: the staff-left handling moves the caller on (one read, only here).
        db.session.refresh(offer)
        return _accepted_leg_ended(offer, transfer) if offer.state == "accepted" else False
    record_event(
        transfer,
        "offer.missed" if outcome in state.MISSED_OUTCOMES else "offer.ended",
        f"offer:{offer.id}:outcome",
        responder=offer.responder_id,
        outcome=outcome,
    )
    missed = state.count_missed(offer.responder_id, outcome)
    # Paused in the commit that frees them, before the next person is rung: neither this pass
    # nor another process's may offer them a caller in between. Told after: the text is a REST
    # request of up to 3 s the caller must not wait on.
    paused = outcome in state.MISSED_OUTCOMES and missed >= document.transfer.pause_after_missed
    paused = paused and pause_for_missed(offer.responder_id)
    db.session.commit()
    if offer.purpose == "answer" and transfer.state == "waiting":
        ring_next(transfer, document)
    elif offer.purpose == "join" and transfer.state == "connected":
        joining.unit_did_not_come_soon(transfer.id, document)
    if paused:
        tell_paused(offer.responder_id, missed, document, transfer)
    return False


def staff_left_the_room(transfer: Transfer, label: str, call_sid: str | None, call_status: str | None) -> bool:
    """A responder's ``participant-leave`` from the caller's conference (their label is ours:
    ``answer-12``, ``join-12``). When it says their call is over, their leg's end is handled now,
    as its final status callback would handle it: a caller is never left alone in the room
    because that callback was lost, failed, or comes late (the room does not end when a
    responder leaves it, so the caller's ``<Dial>`` would not end either). A responder who
    pressed ``*`` for their menu leaves with their call still in progress: nothing here. What
    Twilio reports for that exit is not documented, so a final status is confirmed with Twilio
    first (one request, only when a responder in the room reports one); when Twilio cannot say,
    the leg's own status callback (or the clock's repair) decides, as before.
    Idempotent with the status callback (the offer moves from ``accepted`` once).
    True if this moved the caller on."""
    if call_status not in TERMINAL_LEG_STATUSES or call_sid is None:
        return False
    purpose, _, offer_id = label.partition("-")
    if purpose not in ("answer", "join") or not offer_id.isascii() or not offer_id.isdigit():
        return False
    offer = db.session.get(Offer, int(offer_id))
    if offer is None or offer.transfer_id != transfer.id or offer.call_sid != call_sid:
        return False
    active = active_routing()
    if offer.state != "accepted" or active is None:
        return False  # ended already (its status callback came first), or never in the room
    commit_keeping_loaded()  # nothing pending: no transaction held open while Twilio answers
    if dispatch.call_has_ended(call_sid) is not True:
        return False
    return offer_leg_ended(offer, transfer, active.document, call_status)


# A responder's leg's end the line failed to handle (the database failed its status callback,
# or the room's participant-leave, both acknowledged all the same: Twilio sends neither again)
# is handled again after these many seconds from the failure. A caller inside the room has no
# hold turn to carry them on: without this, only the clock's minute repair would, and nothing
# with the clock down.
LEG_END_AGAIN_AFTER_SECONDS = (1.0, 3.0, 10.0)


def leg_end_again_later(offer_id: int | None, status: str | None, attempt: int = 0) -> None:
    """Handle offer ``offer_id``'s leg end again soon, off the request thread. ``status``: the
    final status Twilio reported for it, or None to ask Twilio (a room's participant-leave)."""
    if offer_id is None:
        return
    _again_later(f"leg-end-again:{offer_id}", attempt, partial(_leg_end_again, offer_id, status, attempt))


def _again_later(name: str, attempt: int, job: Callable[[], object]) -> None:
    """Run ``job`` off the request thread at the ``attempt``-th of ``LEG_END_AGAIN_AFTER_SECONDS``
    (counted from the first failure); after the last, nothing more."""
    if attempt >= len(LEG_END_AGAIN_AFTER_SECONDS):
        return
    wait = LEG_END_AGAIN_AFTER_SECONDS[attempt] - (LEG_END_AGAIN_AFTER_SECONDS[attempt - 1] if attempt else 0.0)
    start_later(wait, name, job)


def _leg_end_again(offer_id: int, status: str | None, attempt: int) -> None:
    try:
        offer = db.session.get(Offer, offer_id, populate_existing=True)
        if offer is None:
            return
        transfer = db.session.get(Transfer, offer.transfer_id)
        if offer.state not in (*ACTIVE_OFFER_STATES, "accepted"):
            # Closed meanwhile (a repeated callback, the clock), or closed by the failed handling
            # itself before what followed failed: the caller must still not be left alone.
            if transfer is not None:  # a counselor's or the unit left last: nobody else there?
                _after_staff_left(transfer)
            return
        active = active_routing()
        commit_keeping_loaded()  # no transaction held open while Twilio is asked
        if transfer is None or active is None or not offer.call_sid:
            return
        final = status if status in TERMINAL_LEG_STATUSES else dispatch.call_status(offer.call_sid)
        if final in TERMINAL_LEG_STATUSES:
            offer_leg_ended(offer, transfer, active.document, final)
    except (DBAPIError, PoolTimeout) as error:
        db.session.rollback()
        log.warning("leg end of offer %s failed again (%s): trying later", offer_id, type(error).__name__)
        leg_end_again_later(offer_id, status, attempt + 1)


def _accepted_leg_ended(offer: Offer, transfer: Transfer) -> bool:
    """An accepted responder's leg ended: they were with the caller (or the caller was on their
    way in) and have left. The caller must not be left alone. True if this moved them on."""
    if not state.finish_offer(offer, "completed", from_states=("accepted",)):
        return False
    record_event(transfer, "offer.left", f"offer:{offer.id}:left", responder=offer.responder_id)
    db.session.commit()
    return _after_staff_left(transfer)


def ring_next(transfer: Transfer, document: RoutingDocument) -> None:
    """An offer for this caller closed without an acceptance: ring the next person. With nobody
    left, a live caller is moved on now rather than at their next hold turn (a long hold-music
    clip can put that minutes away)."""
    result = dispatch.advance(transfer.id, document)
    if result.exhausted and transfer.mode == "live" and _first_to_find_nobody_left(transfer):
        if caller_is_ours(transfer):
            dispatch.redirect_caller(transfer, "transfer.hold")
        else:
            send_to_backup(transfer, "caller_not_holding")


def _first_to_find_nobody_left(transfer: Transfer) -> bool:
    """One mover per time nobody is left: two offers closing at once (a pass and a leg's end)
    both find it, and a second redirect would cut into the callback-or-backup prompt the first
    brought. Claimed by the last offer made, so a later round with new offers moves them again."""
    last_offer = db.session.scalar(select(func.max(Offer.id)).where(Offer.transfer_id == transfer.id)) or 0
    claimed = insert_once(
        CallEvent,
        {"call_id": transfer.call_id, "kind": "transfer.nobody_left", "detail": {"transfer": transfer.id},
         "dedupe_key": f"transfer:{transfer.id}:nobody_left:{last_offer}", "occurred_at": state.now(),
         "sealed_detail": None},
    )  # fmt: skip
    db.session.commit()
    return claimed


def _withdrawable_since() -> datetime:
    """An acceptance made after this can still be withdrawn: no hold turn has joined the caller
    for it yet (they wait ``JOIN_REDIRECT_GRACE`` for the redirect), with a second to spare."""
    return state.now() - JOIN_REDIRECT_GRACE + timedelta(seconds=1)


def _unrecord(transfer: Transfer, key: str) -> None:
    """Take back an event recorded in this round (a withdrawn acceptance). Not committed."""
    db.session.execute(delete(CallEvent).where(CallEvent.call_id == transfer.call_id, CallEvent.dedupe_key == key))


def _deadline_passed(offer: Offer, transfer: Transfer, document: RoutingDocument) -> None:
    """The offer just closed as ``DEADLINE_PASSED`` (not committed): recorded, not counted as
    the counselor's miss, and the next person rung."""
    record_event(
        transfer, "offer.ended", f"offer:{offer.id}:outcome", responder=offer.responder_id, outcome=DEADLINE_PASSED
    )
    db.session.commit()
    ring_next(transfer, document)


def line_failed_the_leg(offer_id: int, outcome: str, attempt: int = 0) -> None:
    """The line answered a responder's pickup or key with its apology and hangs their leg up
    (its own webhook failed: the database, the deadline, Twilio's fallback), before any decision
    of theirs was stored. The offer ends now with ``outcome`` (``state.NOT_BRIEFED`` or
    ``DEADLINE_PASSED``: not their miss), rather than as ``no_decision`` when their leg's
    ``completed`` finds it still answered; and the caller's next person is rung, as after a
    pass. Run off the request thread (the apology never waits on the database); a database
    failure tries again soon (``LEG_END_AGAIN_AFTER_SECONDS``). One winner with the leg's end
    and the handler itself (a conditional UPDATE from the active states: an accepted offer,
    or one already ended, is left alone)."""
    try:
        offer = db.session.get(Offer, offer_id, populate_existing=True)
        # A retry after the end was stored but what follows failed: on to what follows (each
        # step of it is idempotent).
        ended_here = attempt > 0 and offer is not None and (offer.state, offer.outcome) == ("ended", outcome)
        if offer is None or (offer.state not in ACTIVE_OFFER_STATES and not ended_here):
            db.session.commit()
            return
        transfer = db.session.get(Transfer, offer.transfer_id)
        if transfer is None:
            db.session.commit()
            return
        if not ended_here:
            if not state.finish_offer(offer, outcome):
                db.session.commit()
                return
            key = f"offer:{offer.id}:outcome"
            record_event(transfer, "offer.ended", key, responder=offer.responder_id, outcome=outcome)
            db.session.commit()
        active = active_routing()
        if active is None:
            return
        if offer.purpose == "answer" and transfer.state == "waiting":
            ring_next(transfer, active.document)
        elif offer.purpose == "join" and transfer.state == "connected":
            joining.unit_did_not_come_soon(transfer.id, active.document)
    except (DBAPIError, PoolTimeout) as error:
        db.session.rollback()
        log.warning("offer %s the line failed not ended (%s): trying later", offer_id, type(error).__name__)
        _again_later(f"line-failed:{offer_id}", attempt, partial(line_failed_the_leg, offer_id, outcome, attempt + 1))


def pause_for_missed(responder_id: str) -> bool:
    """Pause a responder who missed too many offers in a row (not committed: in the commit
    that frees them). True if this paused them: they are then told (:func:`tell_paused`)."""
    return state.set_paused(responder_id, True, "missed_offers")


def tell_paused(responder_id: str, missed: int, document: RoutingDocument, transfer: Transfer) -> None:
    """Tell a responder just paused for missed offers, by SMS, how to return."""
    responder = document.responder(responder_id)
    if responder is None:
        return
    try:
        dispatch.rest_client().messages.create(
            to=responder.phone, from_=dispatch.line_number(transfer),
            body=document.staff_prompt("paused_sms", count=missed),
        )  # fmt: skip
    except (TwilioRestException, requests.RequestException, OSError) as error:
        log.warning("pause notice to %s not sent: %s", responder_id, type(error).__name__)


def _after_staff_left(transfer: Transfer) -> bool:
    """If nobody from the line is with the caller any more, move the caller on (True if moved).
    A failed redirect is retried by ``transfer.reconcile`` every minute."""
    db.session.refresh(transfer)
    if transfer.state not in ("connecting", "connected") or state.staff_on_call(transfer.id):
        return False
    if caller_hung_up(transfer) or not transfer.caller_call_sid:
        return False
    if transfer.mode == "callback" and transfer.state == "connecting":
        return False  # the person's phone is still ringing: their status callback settles it
    if transfer.mode == "live" and caller_is_off_our_line(transfer):
        on_the_backup_line(transfer, "caller_on_backup")  # never pulled off it mid-conversation
        return False
    return move_on_after_staff_left(transfer) == dispatch.REDIRECTED


# A move of the caller after staff left holds for its window and the next (30 to 60 s): time
# for the staff-left turn it brings to end the round. One that never arrived (its redirect lost)
# is tried again by the minute's repair after that.
MOVE_ON_WINDOW_SECONDS = 30
MOVED_ALREADY = "moved_already"


def move_on_after_staff_left(transfer: Transfer) -> str:
    """Redirect the caller to the staff-left turn, once: ``dispatch.redirect_caller``'s outcome,
    or ``MOVED_ALREADY``. The leaving leg's status callback and the clock's repair can both find
    nobody from the line left with the caller at once, and a second redirect would pull them out
    of wherever the first sent them (the check-in question, a new counselor's room). Reads the
    round again once it has the claim: moved on meanwhile, it is left alone."""
    claim = _first_to_move_on(transfer)
    if claim is None:
        return MOVED_ALREADY
    db.session.refresh(transfer)
    if transfer.state not in ("connecting", "connected"):
        return MOVED_ALREADY
    outcome = dispatch.redirect_caller(transfer, "transfer.staff_left")
    if outcome == dispatch.REDIRECT_FAILED:
        # Twilio refused it (or could not be reached): nobody moved them, so the claim goes
        # back and the next mover (the minute's repair) may. An "unsure" one may still happen.
        db.session.execute(
            delete(CallEvent).where(CallEvent.call_id == transfer.call_id, CallEvent.dedupe_key.in_(claim))
        )
        db.session.commit()
    return outcome


def _first_to_move_on(transfer: Transfer) -> list[str] | None:
    """Claims this window and the one before it, in that order (no deadlock between two
    claimers): of two movers in the same or neighbouring windows, one finds a row taken.
    The claim's keys, or None if another mover has it."""
    db.session.commit()  # the claim is its own transaction: a lost one rolls back nothing else
    window = int(state.now().timestamp()) // MOVE_ON_WINDOW_SECONDS
    keys = [f"transfer:{transfer.id}:moved_on:{each}" for each in (window - 1, window)]
    for key in keys:
        claimed = insert_once(
            CallEvent,
            {"call_id": transfer.call_id, "kind": "transfer.moved_on", "detail": {"transfer": transfer.id},
             "dedupe_key": key, "occurred_at": state.now(), "sealed_detail": None},
        )  # fmt: skip
        if not claimed:
            db.session.rollback()
            return None
    db.session.commit()
    return keys


def caller_hung_up(transfer: Transfer) -> bool:
    """Our records say the caller's leg is over. For a live caller that is their call's status;
    the leg we dial for a callback reports to its transfer, which ends when the leg does."""
    if transfer.caller_call_sid and transfer.mode == "live":
        caller = db.session.get(Call, transfer.call_id)
        if caller is not None and caller.call_sid == transfer.caller_call_sid:
            return caller.status in call_log.TERMINAL_STATUSES
    return transfer.state not in state.OPEN_TRANSFER_STATES


def caller_left(call: Call) -> None:
    """The caller hung up: stop every ringing leg at once and record the abandonment."""
    transfer = state.open_transfer(call)
    if transfer is None or transfer.caller_call_sid != call.call_sid:
        return  # e.g. a callback search under way for them: their old call's end is old news
    leg_gone(transfer, call)


def leg_gone(transfer: Transfer, call: Call) -> bool:
    """The caller's leg of this transfer ended: abandon the search or end the conversation.
    True if this moved the transfer (not already moved by another process)."""
    # Try both moves: an acceptance may commit between reading the state and writing it.
    if state.move_transfer(transfer.id, ("waiting",), "abandoned", end_reason="caller_left"):
        waited = round((state.now() - transfer.started_at).total_seconds())
        record_event(transfer, "transfer.abandoned", f"transfer:{transfer.id}:abandoned", waited_seconds=waited)
        _commit_moved(transfer)
        stop_ringing(transfer)
        _invite_back(call, waited)
        return True
    if state.move_transfer(transfer.id, ("connecting", "connected"), "ended", end_reason="caller_left"):
        record_event(transfer, "transfer.ended", f"transfer:{transfer.id}:ended")
        _commit_moved(transfer)
        stop_ringing(transfer)
        release_staff(transfer)
        return True
    return False


def _commit_moved(transfer: Transfer) -> None:
    """Commit a ``move_transfer`` of ``transfer``: what the UPDATE changed is read again when
    used; the rest of the rows the request holds stay loaded (its id, for one, is all that
    stopping the ringing needs: reading the transfer again for it was a SELECT)."""
    db.session.expire(transfer, ["state", "ended_at", "end_reason"])
    commit_keeping_loaded()


def release_staff(transfer: Transfer) -> None:
    """The caller has gone: anyone from the line still on a leg for them (back in an empty
    room after the conference ended, say) is told and their leg ended, which frees them."""
    active = active_routing()
    text = active.document.staff_prompt("caller_gone") if active else "The caller has hung up."
    for offer in state.staff_on_call(transfer.id):
        dispatch.tell_responder(offer.call_sid, text)


def caller_joined(transfer: Transfer) -> bool:
    """The caller's join TwiML was fetched: they are now with the responder."""
    if state.move_transfer(transfer.id, ("connecting",), "connected", connected_at=state.now()):
        record_event(transfer, "transfer.connected", f"transfer:{transfer.id}:connected")
        db.session.commit()
    db.session.refresh(transfer)
    return transfer.state == "connected"


def restart_after_staff_left(transfer: Transfer, document: RoutingDocument) -> Transfer:
    """Close this round and start a new search for the same caller, language and need."""
    state.move_transfer(transfer.id, ("connecting", "connected"), "ended", end_reason="staff_left")
    record_event(transfer, "transfer.staff_left", f"transfer:{transfer.id}:staff_left")
    db.session.commit()
    # A co-responder unit rung (or being briefed) to join this round must not ring on into an
    # empty room, nor stay engaged, while the caller is searched for again.
    stop_ringing(transfer)
    return restart_for_person(transfer, document, transfer.caller_call_sid)


def restart_for_person(transfer: Transfer, document: RoutingDocument, caller_call_sid: str) -> Transfer:
    """A new live search for the person on ``caller_call_sid`` (same language and need):
    after their responder left, or a called-back person whose responder had gone."""
    call = db.session.get(Call, transfer.call_id)
    assert call is not None
    # They keep their place in line: being dropped by a responder must not send them to the back.
    renewed = state.start_transfer(
        call, transfer.language, transfer.need, language_matched=transfer.language_matched,
        caller_call_sid=caller_call_sid or call.call_sid, priority=transfer.priority,
        queued_since=transfer.queued_since,
        language_notice="said" if transfer.language_notice == "said" else None,  # once a call is enough
    )  # fmt: skip
    record_event(renewed, "transfer.started", f"transfer:{renewed.id}:started", need=renewed.need,
                 language=renewed.language, language_matched=renewed.language_matched)  # fmt: skip
    db.session.commit()
    if renewed.caller_call_sid == call.call_sid and (
        db.session.scalar(_CALL_STATUS, {"call": call.id}) in call_log.TERMINAL_STATUSES
    ):
        # They hung up, and their call's end was handled before this request (Twilio's redirect
        # or their answer, sent while they were still on): it found no round to end, so nobody
        # may be rung for nobody. Read after the commit, as ``begin`` does.
        leg_gone(renewed, call)
        return renewed
    if answered_by_failsafe(caller_call_sid or call.call_sid):
        # This request ran past its deadline and the person is on the backup line already: no
        # counselor may be rung for them (checked after the commit, as ``begin`` does).
        send_to_backup(renewed, "failsafe")
        return renewed
    dispatch.advance(renewed.id, document)
    return renewed


def current_round(transfer: Transfer) -> Transfer:
    """The round a caller's request acts on: ``transfer``, or, when its counselor left and a new
    search for the same caller on the same leg has begun, that search. A request for the old
    round can arrive late (a join redirect Twilio carried out after our REST request timed out):
    its hold turn must not send a caller who is being searched for to the backup line.
    Reads nothing unless ``transfer`` ended that way."""
    if transfer.state != "ended" or transfer.end_reason != "staff_left":
        return transfer
    renewed = state.open_transfer_on_leg(transfer.caller_call_sid)
    if renewed is None or renewed.call_id != transfer.call_id or renewed.round <= transfer.round:
        return transfer
    return renewed


def caller_still_with_us(
    offer: Offer, transfer: Transfer, *, before_asking_twilio: Callable[[], object] | None = None
) -> bool:
    """Before putting a responder back into the room: is the caller still in it?

    Checks our own records first, then asks Twilio, because the conference-end that sends a
    responder to their menu can arrive before the caller's final status callback. Twilio is
    given ``WHEREABOUTS_TIMEOUT_SECONDS``: unsure counts as still there. ``before_asking_twilio``
    runs once our records say the caller is there (the webhook's promise of the room, should
    its deadline pass while Twilio is asked).
    """
    db.session.refresh(transfer)
    if offer.state != "accepted" or transfer.state not in ("connecting", "connected"):
        return False
    if caller_hung_up(transfer) or not transfer.caller_call_sid:
        return False
    if before_asking_twilio is not None:
        before_asking_twilio()
    ended = dispatch.call_has_ended(transfer.caller_call_sid, timeout=dispatch.WHEREABOUTS_TIMEOUT_SECONDS)
    return ended is not True


def failsafe_took_over(call_sid: str) -> None:
    """The fail-safe sent this caller to the backup line: stop searching for them, so no
    accepting responder can pull them off it. Best effort: the database may be what failed.

    Found by the leg, not the call: a person the line called back is on a leg the line placed
    (their transfers hang on the call that asked), and their counselor, waiting in the room, is
    told and freed as a live caller's is."""
    transfer = state.open_transfer_on_leg(call_sid)
    if transfer is None:
        return
    if transfer.state == "waiting":
        send_to_backup(transfer, "failsafe")
    elif transfer.mode == "callback":
        # The fail-safe answered the leg the line placed to them. Their answer (``connecting``):
        # nothing else moves a leg before it joins the room, so they are on the backup line, no
        # need to ask Twilio. A later request (``connected``: the room ended, their counselor
        # left): the same, unless the counselor-left redirect overtook the fail-safe's answer (a
        # rare race: they then hold for the new search that redirect starts; this attempt is over).
        on_the_backup_line(transfer, "failsafe")
    else:
        # Accepted, but a request of the caller's failed: they may be with the backup line and
        # their counselor alone in the room, or (a late hold turn's answer discarded by a redirect
        # to the room) joining them. Twilio is asked, off this request: the fail-safe's answer
        # must not wait on it. Unsure, they are left alone: the counselor leaving asks again.
        transfer_id = transfer.id
        record_event(transfer, FAILSAFE_WHILE_ACCEPTED, f"transfer:{transfer_id}:failsafe")  # for the minute's repair
        db.session.commit()
        start_soon(f"backup-check:{transfer_id}", partial(_settle_if_on_the_backup_line, transfer_id))


# The fail-safe answered a caller a counselor had accepted: the minute's repair asks Twilio
# where they are until the transfer ends (``transfer.reconcile``), should the checks below miss it.
FAILSAFE_WHILE_ACCEPTED = "transfer.failsafe_while_accepted"


# When to ask Twilio, after the fail-safe answered, whether the caller's backup ``<Dial>`` has
# begun (it starts only once Twilio has read the answer and spoken its first sentence).
BACKUP_CHECKS_AFTER_SECONDS = (1.0, 3.0, 6.0)


def _settle_if_on_the_backup_line(transfer_id: int) -> None:
    waited = 0.0
    for at in BACKUP_CHECKS_AFTER_SECONDS:
        time.sleep(at - waited)
        waited = at
        db.session.rollback()  # a fresh look at the transfer each time
        transfer = db.session.get(Transfer, transfer_id)
        if transfer is None or settle_if_on_the_backup_line(transfer) is not None:
            return


def settle_if_on_the_backup_line(transfer: Transfer) -> bool | None:
    """An accepted caller the fail-safe answered: if Twilio says they are on the backup line,
    the transfer ends there and their counselor is told (True). None while it cannot tell."""
    if transfer.state not in ("connecting", "connected"):
        return False
    off = caller_is_off_our_line(transfer)
    if off:
        on_the_backup_line(transfer, "failsafe")
    return True if off else None


def on_the_backup_line(transfer: Transfer, reason: str) -> bool:
    """A connecting or connected caller is found on the backup line (the fail-safe took them
    there): the transfer ends there, and a counselor still in the room is told where the caller
    went (off the request thread). True if this ended it."""
    if not state.move_transfer(transfer.id, ("connecting", "connected"), "to_backup", end_reason=reason):
        db.session.commit()
        return False
    if transfer.mode == "live":
        record_event(transfer, "transfer.to_backup", f"transfer:{transfer.id}:backup", reason=reason)
    else:  # a callback's attempt: the callbacks feature records the callback's outcome
        callback_on_backup.send(transfer)
    db.session.commit()
    active = active_routing()
    told = active.document.staff_prompt("caller_on_backup") if active is not None else ""
    for offer in state.staff_on_call(transfer.id):
        if state.finish_offer(offer, "caller_on_backup", from_states=("accepted",)):
            db.session.commit()
            if offer.call_sid and told:
                start_soon(f"tell:{offer.call_sid}", partial(dispatch.tell_responder, offer.call_sid, told))
    stop_ringing(transfer)
    return True


def _callback_requested_at(transfer: Transfer) -> datetime | None:
    callback = db.session.get(Callback, transfer.callback_id) if transfer.callback_id else None
    return callback.requested_at if callback else None


def _invite_back(call: Call, waited_seconds: int) -> None:
    """A caller who hung up after waiting long enough gets one text inviting them back."""
    active = active_routing()
    threshold = active.document.followups.missed_contact_after_seconds if active else 0
    if threshold and waited_seconds >= threshold and call.sealed_caller:
        try:
            schedule("missed_contact", f"missed:{call.id}", state.now(), call_id=call.id)
        except Exception as error:  # never let a follow-up break the hang-up handling
            log.error("missed-contact text not scheduled: %s", type(error).__name__)
            db.session.rollback()
