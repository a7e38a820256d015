"""Repairs for what lost callbacks and crashes leave behind. Run every minute by the clock.

Twilio does not retry status callbacks. If one is lost, an offer can stay "ringing" or
"accepted" forever, keeping a responder engaged, or a caller can sit in a conference whose
responder has gone. Each repair asks Twilio for the truth and then runs the same flow the
callback would have run, so running this twice (or alongside the callback) is harmless.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select

from crisisline.db import commit_keeping_loaded, db
from crisisline.models import Call, CallEvent, Offer, Transfer
from routing.document import RoutingDocument
from transfer import dispatch, flow, state

log = logging.getLogger(__name__)
PLACING_GRACE = timedelta(seconds=60)
# How long after a lost REST answer Twilio could still be ringing the leg it placed.
LOST_LEG_WINDOW = timedelta(minutes=10)


def reconcile(document: RoutingDocument) -> dict[str, int]:
    """Close offers whose legs ended unseen, and move on callers left without a responder."""
    counts = {"offers_closed": 0, "callers_moved": 0, "stray_legs_cancelled": 0}
    moment = state.now()
    counts["stray_legs_cancelled"] = cancel_unneeded_lost_legs(document)
    ring_limit = timedelta(
        seconds=document.transfer.ring_timeout_seconds + document.transfer.accept_timeout_seconds + 60
    )
    for offer in db.session.scalars(
        select(Offer).where(Offer.state.in_(("placing", "ringing", "answered", "accepted")))
    ):
        transfer = db.session.get(Transfer, offer.transfer_id)
        if transfer is None:
            continue
        if offer.state == "placing":
            if moment - offer.created_at > PLACING_GRACE and state.finish_offer(offer, "error"):
                db.session.commit()
                dispatch.hang_up_call(offer.call_sid, answered=False)
                counts["offers_closed"] += 1
            continue
        if offer.state in ("ringing", "answered") and moment - offer.created_at < ring_limit:
            continue
        if not offer.call_sid:
            continue
        # The status its lost callback would have brought: a leg Twilio failed is not a miss.
        status = dispatch.call_status(offer.call_sid)
        if status in flow.TERMINAL_LEG_STATUSES:
            before = offer.state
            counts["callers_moved"] += int(flow.offer_leg_ended(offer, transfer, document, status))
            db.session.refresh(offer)
            counts["offers_closed"] += int(offer.state != before)
    for transfer in db.session.scalars(select(Transfer).where(Transfer.state == "connected")):
        if state.staff_on_call(transfer.id):
            continue
        caller = db.session.get(Call, transfer.call_id)
        if caller is None:
            continue
        if flow.caller_hung_up(transfer):
            # Their call's end was stored but the transfer never closed (the status callback
            # stores the call's end first, and failed after it): close it now.
            flow.leg_gone(transfer, caller)
            continue
        if transfer.mode == "live" and flow.caller_is_off_our_line(transfer):
            flow.on_the_backup_line(transfer, "caller_on_backup")  # talking there: left there
            continue
        outcome = flow.move_on_after_staff_left(transfer)  # once, with the leaving leg's own callback
        if outcome == dispatch.CALLER_GONE:
            flow.leg_gone(transfer, caller)
        counts["callers_moved"] += int(outcome == dispatch.REDIRECTED)
    db.session.commit()
    # Last: with Twilio slow, its requests must not hold up the repairs above.
    counts["callers_moved"] += settle_callers_off_the_hold_loop(document)
    counts["callers_moved"] += settle_accepted_callers_the_failsafe_answered()
    counts["callers_moved"] += bring_in_accepted_callers_left_on_hold()
    return counts


# Callers asked about per run: each costs Twilio requests, and a long hold-music clip can leave
# every waiting caller's turns stale at once (the rest are asked next minute).
QUIET_CALLERS_PER_RUN = 20


def settle_callers_off_the_hold_loop(document: RoutingDocument) -> int:
    """Waiting callers whose hold turns stopped: the search for them ends if their call has
    dialled out (the fail-safe sent them to the backup line while the database could not record
    it) or is over (its status callback was lost). Otherwise responders would go on being rung
    for them, and one who pressed 1 could be refused or, worse, pull them off the backup line.
    A caller whose hold turn is merely long (a long hold-music clip) is still ours and waits on,
    until they have waited ``max_hold_seconds``: then they are brought to their next hold turn,
    which keeps that limit (a callback offer or the backup line), rather than left in the clip."""
    moved = 0
    stale_before = state.now() - flow.HOLD_STALE_AFTER
    quiet = (
        select(Transfer)
        .where(
            Transfer.state == "waiting",
            Transfer.mode == "live",
            func.coalesce(Transfer.last_hold_at, Transfer.started_at) < stale_before,
        )
        .order_by(func.coalesce(Transfer.last_hold_at, Transfer.started_at), Transfer.id)  # quietest first
        .limit(QUIET_CALLERS_PER_RUN)
    )
    for transfer in list(db.session.scalars(quiet)):
        caller = db.session.get(Call, transfer.call_id)
        if caller is None:
            continue
        if flow.caller_hung_up(transfer):
            moved += int(flow.leg_gone(transfer, caller))
            continue
        commit_keeping_loaded()  # not idle in a transaction while Twilio answers
        dialled = dispatch.caller_dial_legs(transfer.caller_call_sid)
        if dialled:
            # On the backup line, or was and has finished: either way the line sent them there.
            moved += int(flow.send_to_backup(transfer, "caller_not_holding"))
        elif dialled == [] and dispatch.call_has_ended(transfer.caller_call_sid):
            moved += int(flow.leg_gone(transfer, caller))
        elif dialled == [] and flow.held_past_the_limit(transfer, document):
            db.session.refresh(transfer)  # as it is now, after Twilio's answers: still waiting?
            commit_keeping_loaded()
            if transfer.state == "waiting":
                moved += int(dispatch.redirect_caller(transfer, "transfer.hold") == dispatch.REDIRECTED)
    return moved


def cancel_unneeded_lost_legs(document: RoutingDocument) -> int:
    """Legs Twilio placed although our request for them timed out (``rest_lost`` offers):
    while their caller still waits they may ring on, and are adopted if answered; once the
    caller is connected, gone or elsewhere, they are cancelled so no phone rings for nothing."""
    cancelled = 0
    recent = state.now() - LOST_LEG_WINDOW
    lost = db.session.scalars(select(Offer).where(Offer.outcome == state.LOST_REST_ANSWER, Offer.created_at >= recent))
    for offer in list(lost):
        transfer = db.session.get(Transfer, offer.transfer_id)
        responder = document.responder(offer.responder_id)
        if transfer is None or responder is None or transfer.state == "waiting":
            continue
        cancelled += dispatch.cancel_stray_legs(offer, responder.phone, transfer)
    return cancelled


def settle_accepted_callers_the_failsafe_answered() -> int:
    """Callers a counselor had accepted when the fail-safe answered them (their join failed):
    found on the backup line, the transfer ends there and the counselor waiting in the room is
    told. Only these transfers are asked about (a Twilio request each), within the run's cap."""
    found = db.session.scalars(
        select(Transfer)
        .join(CallEvent, CallEvent.call_id == Transfer.call_id)
        .where(
            Transfer.state.in_(("connecting", "connected")),
            Transfer.mode == "live",
            CallEvent.kind == flow.FAILSAFE_WHILE_ACCEPTED,
            CallEvent.occurred_at >= Transfer.started_at,
        )
        .distinct()
        .limit(QUIET_CALLERS_PER_RUN)
    ).all()
    return sum(1 for transfer in found if flow.settle_if_on_the_backup_line(transfer))


# An accepted caller is brought into the room by the press of 1's redirect, or else by their
# next hold turn; past this, with neither, they are still in the hold loop's music.
ACCEPTED_NOT_JOINED_AFTER = flow.JOIN_REDIRECT_GRACE + timedelta(seconds=15)


def bring_in_accepted_callers_left_on_hold() -> int:
    """Callers a counselor accepted who never came into the room: the press of 1's redirect
    failed (a Twilio 5xx) or was lost, and a long hold-music clip keeps their next hold turn
    minutes away while the counselor waits alone. "connecting" means their call has fetched no
    join TwiML, so they are not in the room: they are brought to their hold turn now, which
    joins them (or tells them the counselor left). Gone, or on the backup line: settled so."""
    moved = 0
    stuck = db.session.scalars(
        select(Transfer)
        .where(
            Transfer.state == "connecting", Transfer.mode == "live",
            Transfer.accepted_at < state.now() - ACCEPTED_NOT_JOINED_AFTER,
        )
        .order_by(Transfer.accepted_at, Transfer.id)
        .limit(QUIET_CALLERS_PER_RUN)
    ).all()  # fmt: skip
    for transfer in stuck:
        caller = db.session.get(Call, transfer.call_id)
        if caller is None:
            continue
        if flow.caller_hung_up(transfer):
            moved += int(flow.leg_gone(transfer, caller))
            continue
        off = flow.caller_is_off_our_line(transfer)  # ends the read transaction before asking Twilio
        if off:
            moved += int(flow.on_the_backup_line(transfer, "caller_on_backup"))
            continue
        if off is None:
            continue  # Twilio cannot say: maybe talking on the backup line, never pulled off it
        db.session.refresh(transfer)  # as it is now, after Twilio's answer: their own turn may have joined them
        commit_keeping_loaded()
        if transfer.state != "connecting":
            continue
        outcome = dispatch.redirect_caller(transfer, "transfer.hold")
        if outcome == dispatch.CALLER_GONE:
            flow.leg_gone(transfer, caller)
        moved += int(outcome == dispatch.REDIRECTED)
    return moved
