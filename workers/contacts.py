"""Scheduled contacts: things the line must do later for a person, never lost, never doubled.

Every contact is a database row first (unique by ``dedupe_key``, so a duplicated webhook
cannot schedule two) and an RQ job second (``contact-<id>``, so enqueuing twice is harmless).
``rebuild_schedule`` re-enqueues from the database whatever Redis lost. A job claims its row
(pending → sending) before sending and marks it after; a worker killed in between leaves
``sending``, which ``rebuild_schedule`` turns into ``needs_human`` rather than a second send,
unless nothing can have gone out (``interrupted``): then the contact is simply run again.
A person who then takes a ``needs_human`` contact on marks it ``taken_over`` (``take_over_contact``).
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from functools import partial

from blinker import Namespace
from flask import current_app
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import bindparam, select, update

from crisisline import events
from crisisline.app import rq
from crisisline.background import start_soon
from crisisline.db import db, insert_once
from crisisline.models import Call, Callback, Message, ScheduledContact, Texter
from crisisline.privacy import Vault
from ivr.call_log import PHONE_CONTEXT, phone_hash
from line_queue.reached import HOLDING, REACHED, reached_since
from routing.store import active_routing
from sms import outbox
from sms.conversations import find_or_create_texter

log = logging.getLogger(__name__)
# Queues named by purpose (``crisisline.app.QUEUES``, which a worker takes in order). Routine
# contacts (check-ins, surveys, missed-call texts…) go to ``followups``; a contact a person is
# waiting on for a human (a callback's attempt) or that tells supervisors of someone the line
# could not reach (a callback given up on, a check-in with no reply) goes to ``calls``, taken
# first, so it never waits in line behind a batch of texts (every check-in due at night falls
# due as the quiet hours end). ``queue_for`` decides, for every enqueue (a retry, the rebuild
# after a flush); the clock running due contacts itself takes ``AHEAD_KINDS`` first too.
QUEUE = "followups"
AHEAD_QUEUE = "calls"
AHEAD_KINDS = frozenset({"callback", "callback_unreached", "checkin_escalate"})
CONTACT_QUEUES = (AHEAD_QUEUE, QUEUE)  # every queue a contact's job may be on, first taken first
JOB_TIMEOUT_SECONDS = 60
FAILURE_TTL_SECONDS = 24 * 3600  # failed jobs must not keep even ids for RQ's default year
# A claim older than the job timeout plus a margin belongs to a dead worker (RQ kills a job at
# its timeout). The clock's rebuild runs every minute, so it is found within 3 minutes.
STUCK_AFTER = timedelta(seconds=JOB_TIMEOUT_SECONDS + 60)

# A sender does the contact's one action and returns an outcome: "sent" (done), one of
# CANCELED_OUTCOMES (nothing to do any more: opted out, already answered…), or a failure.
Sender = Callable[[ScheduledContact], str]
SENDERS: dict[str, Sender] = {}
# Modules whose senders register themselves with ``@sends(kind)``; imported before a job runs.
SENDER_MODULES = ("workers.contacts", "callbacks.attempts", "followups.checkins")
# "postponed": a later contact of the same kind carries it on.
CANCELED_OUTCOMES = frozenset({"opted_out", "no_number", "not_needed", "postponed"})
# Kinds whose action is idempotent (safe to run twice): a claim left by a killed worker is
# run again rather than handed to a human. A text is never among them.
RETRY_SAFE_KINDS: set[str] = set()
# Kinds whose one message is a text claimed under ``contact:<id>`` before it goes to Twilio
# (``outbox.send_text``): an interrupted run that claimed none sent nothing, and is run again.
ONE_TEXT_KINDS: set[str] = set()
# How often an interrupted run that sent nothing is run again (a minute apart, or at the
# clock's next rebuild) before a human is asked: a sender that fails every time is a bug.
RERUNS_AFTER_INTERRUPTION = 3
RERUN_AFTER = timedelta(minutes=1)
# A one-text contact's text Twilio refused for now (``outbox.REFUSED_FOR_NOW``: busy, or
# failing before it created anything), so certainly not sent: tried again as a new contact of
# the same kind after each of these waits (its own text key), then failed. A sender opts in by
# returning ``text_outcome``'s "refused_for_now".
REFUSED_TEXT_RETRY_WAITS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15))
REFUSED_FOR_NOW = "refused_for_now"
_REFUSED_ROUND = re.compile(r"^(?P<base>.+?):refused:(?P<round>\d+)$")
# A text that would tell someone nobody answered them ("we missed your call", "we tried to
# call you back"), weighed while they are on the line again, holding for a counselor: weighed
# again a minute or two later (the same contact, queued again by the clock's rebuild), rather
# than dropped (they may hang up again unheard) or sent (telling someone on hold nobody
# answered). At most this many times: a hold longer than any routing allows is a stale record.
RECHECK_WHILE_HOLDING = timedelta(minutes=1)
HOLDING_RECHECKS = 31
WHILE_HOLDING = "holding"
INTERRUPTED = "interrupted"
TALLIED = (WHILE_HOLDING, INTERRUPTED)
# Sent with the contact's id as sender once it is ``needs_human``: a feature whose promise it
# carried (a check-in) makes it seen by a person (``followups.checkins``).
contact_needs_a_human = Namespace().signal("contact-needs-a-human")


def sends(kind: str, *, retry_safe: bool = False, one_text: bool = False) -> Callable[[Sender], Sender]:
    """Register the sender for contacts of ``kind`` (``retry_safe``: running it twice is harmless;
    ``one_text``: its one message is a text under ``contact:<id>``, see ``ONE_TEXT_KINDS``)."""

    def register(function: Sender) -> Sender:
        SENDERS[kind] = function
        if retry_safe:
            RETRY_SAFE_KINDS.add(kind)
        if one_text:
            ONE_TEXT_KINDS.add(kind)
        return function

    return register


def sender_for(kind: str) -> Sender | None:
    for module in SENDER_MODULES:
        importlib.import_module(module)
    return SENDERS.get(kind)


def now() -> datetime:
    return datetime.now(UTC)


def schedule(
    kind: str, dedupe_key: str, due_at: datetime, *, call_id: int | None = None,
    conversation_id: int | None = None, callback_id: int | None = None, checkin_id: int | None = None,
    attempt: int = 1, enqueue_off_this_thread: bool = False,
) -> bool:  # fmt: skip
    """Record a contact (once per ``dedupe_key``) and queue its job. True if newly scheduled.

    Redis being down does not lose it: the row is committed first, and the clock's
    ``rebuild_schedule`` enqueues it once Redis is back. ``enqueue_off_this_thread``: the job is
    queued off a webhook's thread (``crisisline.background.start_soon``), so a hung Redis holds
    no caller's answer.
    """
    created = insert_once(
        ScheduledContact,
        {"kind": kind, "dedupe_key": dedupe_key, "call_id": call_id, "conversation_id": conversation_id,
         "callback_id": callback_id, "checkin_id": checkin_id, "attempt": attempt, "due_at": due_at,
         "state": "pending", "created_at": now()},
    )  # fmt: skip
    db.session.commit()
    if created:
        contact_id = db.session.scalar(select(ScheduledContact.id).where(ScheduledContact.dedupe_key == dedupe_key))
        assert contact_id is not None
        if enqueue_off_this_thread:
            start_soon(f"enqueue-contact:{contact_id}", partial(enqueue_or_leave_to_the_clock, contact_id))
        else:
            enqueue_or_leave_to_the_clock(contact_id)
    return created


def enqueue_or_leave_to_the_clock(contact_id: int) -> None:
    """Queue a committed contact's job now; Redis down, the clock's ``rebuild_schedule`` will."""
    contact = db.session.get(ScheduledContact, contact_id)
    if contact is None:
        return
    try:
        enqueue(contact)
    except Exception as error:  # Redis down: the database copy is the one that counts
        log.warning("contact %s not queued yet (%s); the clock will queue it", contact.id, type(error).__name__)


def queue_for(kind: str) -> str:
    """The queue a contact of ``kind`` goes to: ``AHEAD_QUEUE`` for a person waiting on a human or
    someone not reached (``AHEAD_KINDS``), else ``QUEUE``."""
    return AHEAD_QUEUE if kind in AHEAD_KINDS else QUEUE


def enqueue(contact: ScheduledContact) -> None:
    queue = rq.get_queue(queue_for(contact.kind))
    options = {"job_id": contact.job_id, "job_timeout": JOB_TIMEOUT_SECONDS, "failure_ttl": FAILURE_TTL_SECONDS}
    if contact.due_at <= now():
        queue.enqueue(run_scheduled_contact, contact.id, **options)
    else:
        queue.enqueue_at(contact.due_at, run_scheduled_contact, contact.id, **options)


def run_scheduled_contact(contact_id: int) -> str:
    """The RQ job. Idempotent: only the worker that moves the row from pending to sending acts."""
    claimed = db.session.execute(
        update(ScheduledContact)
        .where(ScheduledContact.id == contact_id, ScheduledContact.state == "pending")
        .values(state="sending", claimed_at=now())
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if not claimed:
        return "not pending"
    contact = db.session.get(ScheduledContact, contact_id)
    assert contact is not None
    this_claim = contact.claimed_at  # as stored: the final UPDATE is for this run's claim only
    sender = sender_for(contact.kind)
    try:
        outcome = sender(contact) if sender else "unknown_kind"
    except Exception:
        # A database blip, a bug: RQ records the job failed. The row must not stay claimed
        # for good, the promise silently dropped: run again, or seen by a person.
        db.session.rollback()
        interrupted(contact_id, rerun_at=now() + RERUN_AFTER)
        raise
    if outcome == REFUSED_FOR_NOW:
        outcome = "postponed" if _again_after_refusal(contact) else "send_failed"
    final = "sent" if outcome == "sent" else ("canceled" if outcome in CANCELED_OUTCOMES else "failed")
    db.session.execute(
        update(ScheduledContact)
        # This run's claim only: a sender may have put the row back to pending (``WHILE_HOLDING``)
        # and another copy of the job claimed it since.
        .where(ScheduledContact.id == contact_id, ScheduledContact.state == "sending",
               ScheduledContact.claimed_at == this_claim)
        .values(state=final, outcome=outcome, finished_at=now())
    )  # fmt: skip
    db.session.commit()
    events.publish_pending()  # e.g. a callback search freed a responder: the queue offers them
    return outcome


def text_outcome(contact: ScheduledContact, sent: bool) -> str:
    """A one-text sender's outcome: "sent"; ``REFUSED_FOR_NOW`` when Twilio refused its text
    (``contact:<id>``) for now, which the runner schedules again; else "send_failed"."""
    if sent:
        return "sent"
    found = db.session.execute(
        select(Message.status, Message.error_code).where(Message.idempotency_key == f"contact:{contact.id}")
    ).first()
    if found is not None and found.status == "failed" and found.error_code in outbox.REFUSED_FOR_NOW:
        return REFUSED_FOR_NOW
    return "send_failed"


def tallies(outcome: str | None) -> dict[str, int]:
    """The counts a pending contact carries in ``outcome`` ("holding:3 interrupted:1"): how
    often it was weighed again while its person held, and rerun after its run stopped. Kept
    side by side, so neither resets the other and both bounds hold whatever alternates."""
    counts = {}
    for part in (outcome or "").split():
        name, _, count = part.partition(":")
        if name in TALLIED and count.isdecimal():
            counts[name] = int(count)
    return counts


def tallied(outcome: str | None, name: str, count: int) -> str:
    """``outcome`` with ``name``'s count set to ``count``, the other counts kept."""
    counts = tallies(outcome) | {name: count}
    return " ".join(f"{each}:{counts[each]}" for each in TALLIED if counts.get(each))


def again_once_not_holding(contact: ScheduledContact) -> bool:
    """``RECHECK_WHILE_HOLDING``: this claimed contact goes back to pending, due a minute later
    (its sender then returns ``WHILE_HOLDING``). False once ``HOLDING_RECHECKS`` are used up,
    or if this run no longer holds the claim: the sender then carries on as if not holding."""
    rounds = tallies(contact.outcome).get(WHILE_HOLDING, 0)
    if rounds >= HOLDING_RECHECKS:
        return False
    moved = db.session.execute(
        update(ScheduledContact)
        .where(ScheduledContact.id == contact.id, ScheduledContact.state == "sending",
               ScheduledContact.claimed_at == contact.claimed_at)
        .values(state="pending", claimed_at=None, due_at=now() + RECHECK_WHILE_HOLDING,
                outcome=tallied(contact.outcome, WHILE_HOLDING, rounds + 1))
    ).rowcount  # type: ignore[attr-defined]  # fmt: skip
    db.session.commit()
    return bool(moved)  # queued again by the clock's rebuild (not from inside its own job)


def _again_after_refusal(contact: ScheduledContact) -> bool:
    """Schedule a refused one-text contact once more after its next wait (a new contact, so a
    new text key), or False once ``REFUSED_TEXT_RETRY_WAITS`` are used up."""
    found = _REFUSED_ROUND.match(contact.dedupe_key)
    base, tries = (found["base"], int(found["round"])) if found else (contact.dedupe_key, 0)
    if tries >= len(REFUSED_TEXT_RETRY_WAITS):
        return False
    schedule(
        contact.kind, f"{base}:refused:{tries + 1}", now() + REFUSED_TEXT_RETRY_WAITS[tries], call_id=contact.call_id,
        conversation_id=contact.conversation_id, callback_id=contact.callback_id, checkin_id=contact.checkin_id,
        attempt=contact.attempt,
    )  # fmt: skip
    log.warning("scheduled contact %s (%s): its text was refused for now; tried again later", contact.id, contact.kind)
    return True


def interrupted(contact_id: int, *, rerun_at: datetime) -> str:
    """A claimed contact whose run did not finish (its sender raised, its worker died). Run
    again at ``rerun_at`` ("rerun") if that is safe: a kind whose one text was never claimed,
    so nothing went out (``ONE_TEXT_KINDS``), or one safe to run twice, up to
    ``RERUNS_AFTER_INTERRUPTION`` times. Else ``needs_human`` ("needs_human"), never a second
    send, once ``contact_needs_a_human`` has been sent: its receivers (a check-in's flag) run
    first, so a failure among them leaves the claim for the next rebuild to try again. "gone":
    it was no longer this claim (finished, or claimed afresh by a rerun meanwhile)."""
    contact = db.session.get(ScheduledContact, contact_id)
    if contact is None or contact.state != "sending":
        return "gone"
    reruns = tallies(contact.outcome).get(INTERRUPTED, 0)
    # The text's first part is claimed first, under the key itself: one indexed lookup.
    its_text = select(Message.id).where(Message.idempotency_key == f"contact:{contact.id}")
    safe = contact.kind in RETRY_SAFE_KINDS or (
        contact.kind in ONE_TEXT_KINDS and db.session.scalar(its_text.limit(1)) is None
    )
    # This very claim: a stale call (two rebuilds at once) never acts on a rerun's new claim.
    this_claim = (
        ScheduledContact.id == contact_id, ScheduledContact.state == "sending",
        ScheduledContact.claimed_at == contact.claimed_at,
    )  # fmt: skip
    if safe and reruns < RERUNS_AFTER_INTERRUPTION:
        moved = db.session.execute(
            update(ScheduledContact).where(*this_claim)
            .values(state="pending", claimed_at=None, due_at=rerun_at,
                    outcome=tallied(contact.outcome, INTERRUPTED, reruns + 1))
        ).rowcount  # type: ignore[attr-defined]  # fmt: skip
        db.session.commit()
        return "rerun" if moved else "gone"
    db.session.commit()  # not idle in a transaction while the receivers work
    contact_needs_a_human.send(contact_id)
    moved = db.session.execute(
        update(ScheduledContact).where(*this_claim)
        .values(state="needs_human", outcome="worker_died_mid_send", finished_at=now())
    ).rowcount  # type: ignore[attr-defined]  # fmt: skip
    db.session.commit()
    if not moved:
        return "gone"
    log.error("scheduled contact %s (%s) needs a human: its run stopped part way", contact_id, contact.kind)
    return "needs_human"


# How long the console lists a contact the line gave up running for a person to reach; its
# person's number is kept that long, however short the retention window.
NEEDS_HUMAN_LISTED_FOR = timedelta(days=1)


def take_over_contact(contact_id: int, *, kinds: Collection[str], finished_since: datetime) -> bool:
    """A person has taken on a contact the line gave up running (``needs_human``, of one of
    ``kinds``, given up since ``finished_since``): it becomes ``taken_over``. Once: False if it
    is not such a contact, or someone took it first. Not committed: the caller audits it in the
    same transaction."""
    moved = db.session.execute(
        update(ScheduledContact)
        .where(ScheduledContact.id == contact_id, ScheduledContact.state == "needs_human",
               ScheduledContact.kind.in_(kinds), ScheduledContact.finished_at >= finished_since)
        .values(state="taken_over")
    ).rowcount  # type: ignore[attr-defined]  # fmt: skip
    return bool(moved)


# What says it better, of the same person's, since a "call or text us" text was due: another
# call's own missed-call text, or a callback they asked for since (the text would cross it).
_A_LATER_MISSED_CALL = (
    select(ScheduledContact.id)
    .join(Call, Call.id == ScheduledContact.call_id)
    .where(
        ScheduledContact.kind == "missed_contact",
        Call.caller_hash == bindparam("caller_hash"),
        ScheduledContact.created_at > bindparam("since"),
        ScheduledContact.call_id != bindparam("this_call"),
    )
    .limit(1)
)
_A_CALLBACK_ASKED_SINCE = (
    select(Callback.id)
    .join(Call, Call.id == Callback.call_id)
    .where(
        Call.caller_hash == bindparam("caller_hash"),
        Callback.requested_at > bindparam("since"),
        Callback.id != bindparam("this_callback"),
    )
    .limit(1)
)


def superseded_since(
    caller_hash: str | None, since: datetime, *, this_call: int | None = None, this_callback: int | None = None
) -> bool:
    """Is a "call or text us" text due since ``since`` overtaken by something of theirs since
    (``_A_LATER_MISSED_CALL``, ``_A_CALLBACK_ASKED_SINCE``; the call and callback the text is
    about left out)? Two such texts a minute apart, or one after a new promise of a call, would
    only confuse someone in crisis."""
    if not caller_hash:
        return False
    bound = {
        "caller_hash": caller_hash,
        "since": since,
        "this_call": this_call or 0,
        "this_callback": this_callback or 0,
    }
    return bool(db.session.scalar(_A_LATER_MISSED_CALL, bound) or db.session.scalar(_A_CALLBACK_ASKED_SINCE, bound))


def held_back(
    contact: ScheduledContact, reached: str | None, caller_hash: str | None, since: datetime, *,
    this_call: int, this_callback: int | None = None,
) -> str | None:  # fmt: skip
    """Why a "call or text us" text ("we missed your call", "we tried to call you back") does
    not go now, as its sender's outcome, or None to send it. ``reached``: ``reached_since``'s
    answer for the person; ``since``, ``this_call``, ``this_callback``: ``superseded_since``'s."""
    if reached == REACHED:
        return "not_needed"  # a counselor has had them since: it would say nobody answered
    if reached == HOLDING and again_once_not_holding(contact):
        return WHILE_HOLDING
    if superseded_since(caller_hash, since, this_call=this_call, this_callback=this_callback):
        return "not_needed"  # a later missed call's own text, or a callback asked for since, says it
    return None


@sends("missed_contact", one_text=True)
def _send_missed_contact(contact: ScheduledContact) -> str:
    call = db.session.get(Call, contact.call_id) if contact.call_id else None
    active = active_routing()
    if call is None or call.sealed_caller is None or active is None or not call.line_number:
        return "no_number"
    reached = reached_since(call.caller_hash, call.started_at, promised_on_call=call.id)
    if (waits := held_back(contact, reached, call.caller_hash, call.started_at, this_call=call.id)) is not None:
        return waits
    vault: Vault = current_app.extensions["crisisline.vault"]
    number = vault.open(call.sealed_caller, context=PHONE_CONTEXT)
    known = db.session.scalars(select(Texter).where(Texter.number_hash == phone_hash(number))).first()
    if known is not None and known.opted_out:
        return "opted_out"  # STOP covers everything the line sends, follow-ups included
    texter = known or find_or_create_texter(number, phone_hash(number))
    language = active.document.language(call.language)
    sent = outbox.send_text(
        key=f"contact:{contact.id}", to_number=number, from_number=call.line_number,
        body=language.text("missed_call"), party="texter", texter=texter,
    )  # fmt: skip
    db.session.refresh(texter)
    if texter.opted_out:
        return "opted_out"
    return text_outcome(contact, sent)


def _waiting_in_redis(job_id: str, connection: Redis) -> bool:
    """Is this job queued or scheduled? A job a killed worker had already taken off the queue
    (started, failed) will not run again by itself, though it still exists: re-queue it. A
    job that is in fact running now is harmless to queue again: its claim makes it run once."""
    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status == JobStatus.QUEUED:
        # Still marked queued, but a worker may have popped it and died before starting it.
        # Looked for on the queue it was put on (one queued before ``queue_for`` moved its kind
        # is still there, and still runs).
        return job.get_position() is not None
    return status in (JobStatus.SCHEDULED, JobStatus.DEFERRED)


def rebuild_schedule() -> dict[str, int]:
    """Re-queue pending contacts whose job Redis lost, and settle stuck claims
    (``interrupted``: run again if safe, a few times, else handed to a human).

    Idempotent: a contact whose job exists is left alone, and ``enqueue`` reuses its job id.
    """
    counts = {"requeued": 0, "needs_human": 0, "retried": 0}
    connection = rq.get_queue(QUEUE).connection
    sender_for("")  # load every sender module, so RETRY_SAFE_KINDS is complete
    # A stopped run of any kind goes through ``interrupted``: counted, on its own claim only.
    rerun: set[int] = set()
    stuck = db.session.scalars(
        select(ScheduledContact.id).where(
            ScheduledContact.state == "sending", ScheduledContact.claimed_at < now() - STUCK_AFTER
        )
    ).all()
    for contact_id in stuck:
        try:
            outcome = interrupted(contact_id, rerun_at=now())
        except Exception as error:  # one contact's trouble must not keep the rest from repair
            db.session.rollback()
            log.error("scheduled contact %s: could not settle its stopped run (%s)", contact_id, type(error).__name__)
            continue
        if outcome == "rerun":
            rerun.add(contact_id)  # queued again just below
        counts["needs_human"] += outcome == "needs_human"
    counts["retried"] = len(rerun)
    for contact in db.session.scalars(select(ScheduledContact).where(ScheduledContact.state == "pending")).all():
        if not _waiting_in_redis(contact.job_id, connection):
            enqueue(contact)
            counts["requeued"] += contact.id not in rerun
    return counts
