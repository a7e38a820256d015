"""Transfer state in the database. Every change is one conditional UPDATE, so duplicated or
concurrent webhooks, several web processes and several workers cannot produce two winners,
ring a responder who is already engaged, or move a transfer backwards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Update, and_, bindparam, func, or_, select, update

from crisisline.db import bound_set, db, inserted_row, new_values
from crisisline.models import ACTIVE_OFFER_STATES, Call, Callback, Offer, Transfer

# Responders' availability is shared with texts, so it lives below both channels; these
# names stay importable from here for voice's callers.
from line_queue.responders import ACCOUNT_CLOSED as ACCOUNT_CLOSED
from line_queue.responders import MISSED_OUTCOMES as MISSED_OUTCOMES
from line_queue.responders import claim_responder as claim_responder
from line_queue.responders import count_missed as count_missed
from line_queue.responders import ensure_responder_state as ensure_responder_state
from line_queue.responders import is_closed as is_closed
from line_queue.responders import release_responder
from line_queue.responders import resume_after_a_pass as resume_after_a_pass
from line_queue.responders import set_paused as set_paused
from line_queue.responders import still_rung as still_rung
from line_queue.responders import unavailable_responder_ids as unavailable_responder_ids

OPEN_TRANSFER_STATES = ("waiting", "connecting", "connected")


def now() -> datetime:
    return datetime.now(UTC)


def open_transfer(call: Call) -> Transfer | None:
    """The caller's transfer that is still in progress, if any."""
    return db.session.scalars(_OPEN_TRANSFER, {"call": call.id}).first()


# Every status callback asks: built once (``crisisline.db``, "Statements built once").
_OPEN_TRANSFER = (
    select(Transfer)
    .where(Transfer.call_id == bindparam("call"), Transfer.state.in_(OPEN_TRANSFER_STATES))
    .order_by(Transfer.round.desc())
)


def open_transfer_on_leg(call_sid: str) -> Transfer | None:
    """The transfer in progress whose caller is on this call leg: a caller's own call, or the
    leg the line placed to a person it called back (their transfers hang on the call that asked)."""
    if not call_sid:
        return None  # a callback search nobody has been dialled for yet has no leg
    return db.session.scalars(_OPEN_TRANSFER_ON_LEG, {"leg": call_sid}).first()


_OPEN_TRANSFER_ON_LEG = (
    select(Transfer)
    .where(Transfer.caller_call_sid == bindparam("leg"), Transfer.state.in_(OPEN_TRANSFER_STATES))
    .order_by(Transfer.id.desc())
)


def start_transfer(
    call: Call, language: str, need: str, *, language_matched: bool, caller_call_sid: str | None = None,
    callback: Callback | None = None, priority: int = 0, queued_since: datetime | None = None,
    language_notice: str | None = None,
) -> Transfer:  # fmt: skip
    """Begin (or return the already begun) search for a human for this caller.

    Idempotent: a duplicated need-menu request finds the open transfer; two concurrent ones
    race on the unique (call, round) and one insert is ignored. The caller commits (with the
    events it records about the new transfer: one commit for the lot). With ``callback`` it is a
    callback search: nobody is on the line, and it queues from the person's first wait.
    ``priority`` and ``queued_since`` are the person's place in the one queue (default: now).
    ``language_notice``: "said" when the caller has heard that nobody who speaks their
    language is available (``Transfer.language_notice``).
    """
    # Every round of this call, as the database has them now (a copy this session holds may
    # predate an UPDATE that ended it): the open one if any, else the next round's number.
    earlier = list(db.session.scalars(_ROUNDS, {"call": call.id}))
    existing = next((transfer for transfer in earlier if transfer.state in OPEN_TRANSFER_STATES), None)
    if existing is not None:
        return existing
    next_round = (earlier[0].round if earlier else 0) + 1
    created = inserted_row(
        Transfer,
        {
            "call_id": call.id,
            "caller_call_sid": "" if callback else (caller_call_sid or call.call_sid),
            "round": next_round,
            "language": language,
            "need": need,
            "state": "waiting",
            "language_matched": language_matched,
            "language_notice": language_notice,
            "started_at": now(),
            "queued_since": callback.queue_since if callback else (queued_since or now()),
            "priority": priority,
            "last_hold_at": now(),
            "mode": "callback" if callback else "live",
            "callback_id": callback.id if callback else None,
        },
    )
    if created is not None:
        return created
    # A concurrent request inserted this round first: theirs is the caller's transfer.
    return db.session.scalars(select(Transfer).where(Transfer.call_id == call.id, Transfer.round == next_round)).one()


# Every round of a call, newest first: built once (every need answer reads it).
_ROUNDS = (
    select(Transfer)
    .where(Transfer.call_id == bindparam("call"))
    .order_by(Transfer.round.desc())
    .execution_options(populate_existing=True)
)


def _change(model: Any, where: list[Any], values: dict[str, Any]) -> bool:
    result = db.session.execute(
        update(model).where(*where).values(**values).execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def move_transfer(transfer_id: int, from_states: tuple[str, ...], to_state: str, **values: Any) -> bool:
    """Move a transfer forward only if it is still in one of ``from_states``."""
    changes = {"state": to_state, **values}
    if to_state in ("ended", "abandoned", "to_backup", "callback"):
        changes.setdefault("ended_at", now())
    statement = _move_statement(tuple(sorted(changes)))
    bound = {"transfer": transfer_id, "from_states": list(from_states), **new_values(changes)}
    result = db.session.execute(statement, bound)
    return bool(result.rowcount)  # type: ignore[attr-defined]


@cache
def _move_statement(columns: tuple[str, ...]) -> Update:
    """``move_transfer``'s UPDATE setting ``columns`` (bound as ``new_<column>``), built once
    per set of columns: every status callback and acceptance moves a transfer."""
    return (
        update(Transfer)
        .where(Transfer.id == bindparam("transfer"), Transfer.state.in_(bindparam("from_states", expanding=True)))
        .values(bound_set(columns))
        .execution_options(synchronize_session=False)
    )


def accept(transfer_id: int, offer_id: int) -> bool:
    """The one-winner step: of all responders pressing 1, exactly one gets True, and only with
    a leg still live: a press of 1 handled after the leg's end (they pressed and hung up, the
    callbacks crossed) is no acceptance; the transfer stays waiting, under this transaction's lock.
    Nor is a press of 1 from a responder whose console account was closed while their phone
    rang (``line_queue.responders.stop_ringing``): checked in the offer's UPDATE itself."""
    if not move_transfer(transfer_id, ("waiting",), "connecting", accepted_offer_id=offer_id, accepted_at=now()):
        return False
    live = [Offer.id == offer_id, Offer.state.in_(ACTIVE_OFFER_STATES), still_rung(Offer.responder_id)]
    if _change(Offer, live, {"state": "accepted", "decided_at": now()}):
        return True
    move_transfer(transfer_id, ("connecting",), "waiting", accepted_offer_id=None, accepted_at=None)
    return False


def withdraw_acceptance(transfer_id: int, offer: Offer, outcome: str, *, accepted_after: datetime) -> bool:
    """Undo ``offer``'s acceptance, made after ``accepted_after``, that its responder never
    acted on (they never got the room): the transfer back to waiting, the offer closed with
    ``outcome`` and its responder freed. False, and nothing changed, once the caller may have
    moved on (joined the room, gone, or accepted longer ago than that). Not committed.
    The transfer first: an offer closed under a caller already in the room would leave them
    there alone (nothing would notice the responder's leg end)."""
    withdrawn = _change(
        Transfer,
        [Transfer.id == transfer_id, Transfer.state == "connecting", Transfer.accepted_offer_id == offer.id,
         Transfer.accepted_at > accepted_after],
        {"state": "waiting", "accepted_offer_id": None, "accepted_at": None},
    )  # fmt: skip
    if withdrawn:
        finish_offer(offer, outcome, from_states=("accepted",))  # unless their leg's end closed it first
    return withdrawn


def accept_join(offer_id: int) -> bool:
    """A co-responder unit accepts joining a live call (several units may be invited); never
    one whose console account was closed while their phone rang (as :func:`accept`), nor once
    the call's round is over (its counselor left: the caller is being searched for again and
    the room is empty). The round is read in the acceptance's own UPDATE and, on PostgreSQL,
    held (``FOR SHARE``) until it commits, as :func:`accept` holds its transfer: a round's end
    committed first refuses it, and one committing meanwhile waits for it."""
    live = [Offer.id == offer_id, Offer.state.in_(ACTIVE_OFFER_STATES), still_rung(Offer.responder_id)]
    return _change(Offer, [*live, _ROUND_CONNECTED], {"state": "accepted", "decided_at": now()})


# The offer's transfer is still connected (``accept_join``): the row locked against a
# concurrent move until the acceptance commits (FOR SHARE on PostgreSQL; SQLite has one writer).
_ROUND_CONNECTED = (
    select(Transfer.id)
    .where(Transfer.id == Offer.transfer_id, Transfer.state == "connected")
    .with_for_update(read=True)
    .exists()
)


def send_unit_away(offer: Offer) -> bool:
    """A unit's acceptance of joining a round that ended since because nobody from the line was
    with the caller (``staff_left``: the caller was moved on before the unit reached the room):
    ended (``caller_gone``) and the unit freed. An acceptance commits before such an end can
    (``accept_join`` holds the round), so the end's own read finds it. False while the round
    goes on, or once the offer is closed. Not committed."""
    sent = _change(
        Offer,
        [Offer.id == offer.id, Offer.purpose == "join", Offer.state == "accepted", _ROUND_LEFT_BY_STAFF],
        {"state": "ended", "outcome": "caller_gone", "ended_at": now()},
    )
    if sent:
        release_responder(offer.responder_id, offer.id)
    return sent


# The offer's round ended with nobody from the line left with the caller (``send_unit_away``).
_ROUND_LEFT_BY_STAFF = (
    select(Transfer.id)
    .where(Transfer.id == Offer.transfer_id, Transfer.state == "ended", Transfer.end_reason == "staff_left")
    .exists()
)


def lease_dispatch(transfer_id: int, seconds: int = 20) -> Transfer | None:
    """Only one process rings for a transfer at a time; a crashed holder's lease expires.

    The transfer as leased (the UPDATE returns it, so it is not read again), or None when it
    is not waiting or another process holds the lease."""
    moment = now()
    bound = {"transfer": transfer_id, "now": moment, "until": moment + timedelta(seconds=seconds)}
    return db.session.scalars(_LEASE, bound).first()


# Every ring takes and gives back a lease: built once (``crisisline.db``, "Statements built once").
_LEASE = (
    update(Transfer)
    .where(
        Transfer.id == bindparam("transfer"),
        Transfer.state == "waiting",
        (Transfer.dispatch_lease_until.is_(None)) | (Transfer.dispatch_lease_until < bindparam("now")),
    )
    .values(dispatch_lease_until=bindparam("until"))
    .returning(Transfer)
    # Bound values: ORM "evaluate" synchronisation would see None in them; RETURNING and
    # ``populate_existing`` refresh the session's copy instead.
    .execution_options(populate_existing=True, synchronize_session=False)
)
_RELEASE_LEASE = (
    update(Transfer)
    .where(Transfer.id == bindparam("transfer"))
    .values(dispatch_lease_until=None)
    .execution_options(synchronize_session=False)
)


def language_notice_due(transfer_id: int) -> bool:
    """Someone who does not speak the caller's language is being rung for them: their next hold
    turn says so, unless they heard it already. Not committed."""
    return bool(db.session.execute(_NOTICE_DUE, {"transfer": transfer_id}).rowcount)  # type: ignore[attr-defined]


def claim_language_notice(transfer_id: int) -> bool:
    """The notice is due: this hold turn says it (True), once however many turns run at once.
    Not committed."""
    return bool(db.session.execute(_NOTICE_SAID, {"transfer": transfer_id}).rowcount)  # type: ignore[attr-defined]


# Built once, like every statement a ring or a hold turn may run.
_NOTICE_DUE = (
    update(Transfer)
    .where(Transfer.id == bindparam("transfer"), Transfer.language_notice.is_(None))
    .values(language_notice="due")
    .execution_options(synchronize_session=False)
)
_NOTICE_SAID = (
    update(Transfer)
    .where(Transfer.id == bindparam("transfer"), Transfer.language_notice == "due")
    .values(language_notice="said")
    .execution_options(synchronize_session=False)
)


# The heartbeat only needs to be fresher than ``flow.HOLD_STALE_AFTER`` (75 s): a hold turn
# within this long of the last beat writes nothing (measured in bench/queries.py: one UPDATE of
# the transfer row per turn, for every waiting caller, most of them saying nothing new).
HOLD_BEAT_EVERY = timedelta(seconds=30)


def touch_hold(transfer_id: int) -> None:
    """The caller took another hold turn: they are still with us."""
    moment = now()
    _change(
        Transfer,
        [
            Transfer.id == transfer_id,
            or_(Transfer.last_hold_at.is_(None), Transfer.last_hold_at < moment - HOLD_BEAT_EVERY),
        ],
        {"last_hold_at": moment},
    )


def release_dispatch(transfer_id: int) -> None:
    db.session.execute(_RELEASE_LEASE, {"transfer": transfer_id})


def finish_offer(offer: Offer, outcome: str, *, from_states: tuple[str, ...] = ACTIVE_OFFER_STATES) -> bool:
    """Close an offer with its outcome and free the responder. False if already closed."""
    return finish_offer_for_its_leg(offer, outcome, from_states=from_states) is not None


@dataclass(frozen=True)
class ClosedLeg:
    """An offer's leg as the close that ended the offer found it."""

    call_sid: str | None
    answered: bool  # picked up (the whisper ran): ended with words, not cancelled


def finish_offer_for_its_leg(
    offer: Offer, outcome: str, *, from_states: tuple[str, ...] = ACTIVE_OFFER_STATES
) -> ClosedLeg | None:
    """``finish_offer``, and its leg as the close found it: the ring's REST answer may have
    stored its SID (``dispatch._PLACED``), or its responder picked up, after ``offer`` was read,
    and then only this close is left to end that leg as it now is. None if already closed."""
    bound = {"offer": offer.id, "from_states": list(from_states), "outcome": outcome, "at": now()}
    closed = db.session.execute(_FINISH_OFFER, bound).first()
    if closed is None:
        return None
    release_responder(offer.responder_id, offer.id)
    return ClosedLeg(closed.call_sid, closed.answered_at is not None)


# Built once: every ended leg closes its offer (and says what its leg was then).
_FINISH_OFFER = (
    update(Offer)
    .where(Offer.id == bindparam("offer"), Offer.state.in_(bindparam("from_states", expanding=True)))
    .values(state="ended", outcome=bindparam("outcome"), ended_at=bindparam("at"))
    .returning(Offer.call_sid, Offer.answered_at)
    .execution_options(synchronize_session=False)
)

# A leg answered (``completed``) whose whisper never ran: the line's failure, or a hang-up
# handled first. Not the responder's miss (``MISSED_OUTCOMES``); a rollover in the metrics.
NOT_BRIEFED = "not_briefed"


def passed_after_all(offer_id: int) -> bool:
    """A press of 2 arriving after the leg's end closed the offer as ``no_decision`` (the two
    crossed): it becomes ``passed``. Once; False if it was closed otherwise."""
    return bool(
        db.session.execute(
            update(Offer)
            .where(Offer.id == offer_id, Offer.state == "ended", Offer.outcome == "no_decision")
            .values(outcome="passed")
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
    )


# Twilio may have placed a call whose REST answer we never got (a read timeout): the offer is
# closed with this outcome, and the leg, if it exists, is adopted or cancelled later.
LOST_REST_ANSWER = "rest_lost"


def revive_lost_offer(offer: Offer, call_sid: str) -> bool:
    """Make a ``rest_lost`` offer the ringing offer it was meant to be, now that its leg showed
    up (``call_sid``): only if its responder is still free. False otherwise."""
    if not claim_responder(offer.responder_id, offer.id):
        return False
    revived = _change(
        Offer,
        [Offer.id == offer.id, Offer.state == "ended", Offer.outcome == LOST_REST_ANSWER],
        {"state": "ringing", "outcome": None, "ended_at": None, "call_sid": call_sid},
    )
    if not revived:
        release_responder(offer.responder_id, offer.id)
    return revived


_ACTIVE_OFFERS = (
    select(Offer)
    .where(Offer.transfer_id == bindparam("transfer_id"), Offer.state.in_(ACTIVE_OFFER_STATES))
    .execution_options(populate_existing=True)
)


def active_offers(transfer_id: int) -> list[Offer]:
    """The transfer's offers still ringing, whispering or answered, as the database has them now
    (a copy the session kept from earlier in the request is overwritten: its leg's sid, say)."""
    return list(db.session.scalars(_ACTIVE_OFFERS, {"transfer_id": transfer_id}))


# What a round's end stops (``flow.stop_ringing``): the legs still ringing, whispering or
# answered, and the units that accepted joining it (``send_unit_away``), in the same read.
_OFFERS_TO_STOP = (
    select(Offer)
    .where(
        Offer.transfer_id == bindparam("transfer_id"),
        or_(Offer.state.in_(ACTIVE_OFFER_STATES), and_(Offer.purpose == "join", Offer.state == "accepted")),
    )
    .execution_options(populate_existing=True)
)


def offers_to_stop(transfer_id: int) -> list[Offer]:
    """``active_offers``, and the transfer's units that accepted joining it: as the database
    has them now."""
    return list(db.session.scalars(_OFFERS_TO_STOP, {"transfer_id": transfer_id}))


# A transfer as it stands, with how many of its legs are in progress, in one read.
_STANDING = (
    select(
        Transfer,
        select(func.count(Offer.id))
        .where(Offer.transfer_id == Transfer.id, Offer.state.in_(ACTIVE_OFFER_STATES))
        .scalar_subquery(),
    )
    .where(Transfer.id == bindparam("transfer_id"))
    .execution_options(populate_existing=True)
)


def where_it_stands(transfer_id: int) -> tuple[Transfer | None, int]:
    """The transfer as the database has it now (the session's copy is refreshed: someone may
    have accepted meanwhile) and the number of its offers still ringing, whispering or answered."""
    row = db.session.execute(_STANDING, {"transfer_id": transfer_id}).first()
    return (None, 0) if row is None else (row[0], int(row[1]))


def staff_on_call(transfer_id: int) -> list[Offer]:
    """Responders who accepted and whose leg has not ended: the people with the caller (as the
    database has them now, like ``active_offers``)."""
    return list(
        db.session.scalars(
            select(Offer)
            .where(Offer.transfer_id == transfer_id, Offer.state == "accepted")
            .execution_options(populate_existing=True)
        )
    )


def apply_offer_sequence(offer: Offer, sequence: int | None) -> bool:
    """Record a status callback's SequenceNumber; False for one older than already seen."""
    if sequence is None:
        return True
    return _change(Offer, [Offer.id == offer.id, Offer.status_sequence < sequence], {"status_sequence": sequence})
