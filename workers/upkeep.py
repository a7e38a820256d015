"""Upkeep jobs: the retention purge. Periodic jobs are declared as data in ``PERIODIC_JOBS``."""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import ColumnElement, String, and_, cast, func, literal, or_, update
from sqlalchemy.orm import aliased

import sms.inbound  # noqa: F401 - registers the handler the text sweep retries unhandled texts with
from callbacks.attempts import UNREACHED_LISTED_FOR, tend
from callbacks.requests import (
    CHECKIN_CALL_SID_PREFIX,
    CHECKIN_KEY_PREFIX,
    OPEN_CALLBACK_STATES,
    TEXT_BORN_CALL_SID_PREFIXES,
)
from crisisline import events
from crisisline.app import rq
from crisisline.db import UTCDateTime, allow_bulk_statements, db, insert_ignoring_conflicts
from crisisline.models import (
    BlockedNumber,
    Call,
    Callback,
    CallEvent,
    CheckIn,
    Conversation,
    Message,
    MetricFact,
    ScheduledContact,
    SurveyResponse,
    Texter,
    Transfer,
)
from crisisline.phone import caller_number
from crisisline.retention import ENDED_CONTACT_UNMASKABLE_FOR, Cutoffs, registered_purges
from crisisline.settings import Settings
from followups.checkins import (
    ANSWER_HANDLED_WITHIN,
    FLAGGED_LISTED_FOR,
    LONGEST_CHECKIN,
    RUNNING_CHECKIN_STATES,
    SURVEY_ANSWER_WINDOW,
    SURVEY_KEY_PREFIX,
    SURVEY_THANKS_KEY_PREFIX,
    coarse_time,
    unlink_ratings,
    unlink_survey_contacts,
    unlinked_survey_key,
)
from metrics.rollup import refresh_metrics_rollup
from routing.document import RoutingDocument
from routing.store import active_routing
from sms import outbox, unstored
from sms.conversations import STUCK_LISTED_FOR, SUMMARY_NAMES, sweep
from sms.inbound import receive_kept
from transfer.reconcile import reconcile
from workers.contacts import NEEDS_HUMAN_LISTED_FOR, rebuild_schedule
from workers.twilio_records import delete_twilio_records, note_purged

log = logging.getLogger(__name__)
GIVE_UP_MINUTES = unstored.GIVE_UP_AFTER.total_seconds() // 60


def purge_personal_data(now_iso: str | None = None) -> dict[str, int]:
    """Irreversibly scrub personal data older than its retention window.

    Each kind has its own window (``RETENTION_DAYS_CALLS``, ``_TEXTS``, ``_FOLLOWUPS``, each
    defaulting to ``PERSONAL_DATA_RETENTION_DAYS``). Calls: the sealed caller number and keyed
    hash, sealed speech transcripts. Texts: sealed bodies, and texters' sealed numbers (not
    before the last of their own texts loses its body: Twilio's copies are found by it); a
    texter's keyed hash is replaced by a random one (the link to the person is gone) unless
    they opted out, because STOP must be honoured for as long as the line exists. A number one
    channel copied from the other (a texter's on a callback they asked for by text, a caller's
    on the texts the line sent them) goes by the shorter of the two windows. Follow-ups:
    check-ins' sealed replies and their link to the texter; survey answers lose their link
    once answered or unanswered for a day (one never asked, with its check-in's), and then
    their key naming the check-in. Blocklist: why a number was blocked (staff's words, which
    may name the person) by the calls' window; the block itself stays, as STOP does. Kept: the
    anonymous paths, states, ratings, needs and timings metrics need. Purges registered by
    higher packages (``crisisline.retention``: the console's wrap-up notes and unmask reasons)
    run in the same transaction. Twilio's own records of the calls and texts scrubbed are noted
    in it too, for ``workers.twilio_records`` to delete at Twilio.
    Idempotent: a second run finds nothing left to scrub.
    """
    settings: Settings = current_app.extensions["crisisline.settings"]
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    cutoffs = Cutoffs.at(now, settings)
    calls_cutoff, texts_cutoff, followups_cutoff = cutoffs.calls, cutoffs.texts, cutoffs.followups
    allow_bulk_statements()  # one transaction, committed at the end: a backlog takes its time
    # A callback asked for by text holds the texter's number on its call record: that goes by
    # the texts' window too, if shorter.
    from_a_text = or_(*(Call.call_sid.startswith(prefix, autoescape=True) for prefix in TEXT_BORN_CALL_SID_PREFIXES))
    # A follow-up the line could not finish keeps it while the board lists it for a person to
    # reach (the emergency unmask page gives its number), however short the window.
    unfinished = and_(
        ScheduledContact.state == "needs_human", ScheduledContact.finished_at >= now - NEEDS_HUMAN_LISTED_FOR
    )
    # A callback still to be made keeps the number it will call (however short the window)
    # until it ends (connected, given up, cancelled) and its "we tried" text has gone.
    callback_open = or_(
        db.select(Callback.id).where(Callback.call_id == Call.id, Callback.state.in_(OPEN_CALLBACK_STATES)).exists(),
        db.select(ScheduledContact.id)
        .where(
            ScheduledContact.call_id == Call.id,
            ScheduledContact.state.in_(("pending", "sending")),
            ScheduledContact.kind == "callback_missed",
        )
        .exists(),
        db.select(ScheduledContact.id).where(ScheduledContact.call_id == Call.id, unfinished).exists(),
        db.select(ScheduledContact.id)
        .join(Callback, Callback.id == ScheduledContact.callback_id)
        .where(Callback.call_id == Call.id, unfinished)
        .exists(),
        # Given up without reaching them: the unmask page lists it for the supervisors told.
        db.select(Callback.id)
        .where(
            Callback.call_id == Call.id, Callback.state == "gave_up", Callback.finished_at >= now - UNREACHED_LISTED_FOR
        )
        .exists(),
    )
    events = db.session.execute(
        update(CallEvent)
        .where(CallEvent.occurred_at < calls_cutoff, CallEvent.sealed_detail.is_not(None))
        .values(sealed_detail=None)
        .execution_options(synchronize_session=False)
    )
    # A call whose transfer just ended stays on the emergency unmask page for a while (the
    # caller hung up as a supervisor typed the reason): it keeps its number meanwhile.
    just_ended = (
        db.select(Transfer.id)
        .where(Transfer.call_id == Call.id, Transfer.ended_at >= now - ENDED_CONTACT_UNMASKABLE_FOR)
        .exists()
    )
    calls_due = and_(
        or_(Call.started_at < calls_cutoff, and_(from_a_text, Call.started_at < texts_cutoff)),
        or_(Call.sealed_caller.is_not(None), Call.caller_hash.is_not(None)),
        ~callback_open,
        ~just_ended,
    )
    # A text kept through an outage goes by when it arrived, not when it was stored.
    texts_due = and_(
        or_(Message.created_at < texts_cutoff, Message.received_at < texts_cutoff), Message.sealed_body.is_not(None)
    )
    # Twilio's own records of what is scrubbed now, to delete there too: noted in this
    # transaction, so never before the line's own copy is gone.
    note_purged(calls_due, texts_due, now, texts_cutoff)
    # One statement whatever the backlog: its conditions, never a list of ids (one bound
    # parameter each: past 32,766 on SQLite or 65,535 on PostgreSQL the purge fails whole).
    calls = db.session.execute(
        update(Call)
        .where(calls_due)
        .values(sealed_caller=None, caller_hash=None, personal_data_purged_at=now)
        .execution_options(synchronize_session=False)
    )
    texts = db.session.execute(
        update(Message).where(texts_due).values(sealed_body=None).execution_options(synchronize_session=False)
    )
    checkins_due = and_(
        CheckIn.asked_at < followups_cutoff,
        # A check-in still under way (due in up to 14 days, then its second text, the flag and
        # a day for a reply) keeps whom to text, however short the window, until it ends.
        or_(CheckIn.state.not_in(RUNNING_CHECKIN_STATES), CheckIn.asked_at < now - LONGEST_CHECKIN),
        # One flagged for a person keeps it while the board lists it (a month at most, or until
        # marked followed up): the emergency unmask page gives its number.
        ~and_(CheckIn.state == "flagged", CheckIn.flagged_at >= now - FLAGGED_LISTED_FOR),
    )
    # Their words in reply go with the window (nothing reads them once relayed), and whom it
    # came from too, but for one answered that is still being carried out (asked days ago,
    # answered a minute ago): the clock's retry of their text finds the check-in by them, and a
    # "2" whose callback gives up is flagged unless they have talked with someone since.
    replies = db.session.execute(
        update(CheckIn)
        .where(checkins_due, CheckIn.sealed_reply.is_not(None))
        .values(sealed_reply=None)
        .execution_options(synchronize_session=False)
    )
    being_carried_out = and_(
        CheckIn.state == "answered",
        CheckIn.replied_at.is_not(None),  # NULL-safe: NOT of an unknown would keep it for good
        or_(CheckIn.replied_at >= now - ANSWER_HANDLED_WITHIN, _talk_callback_open()),
    )
    checkins = db.session.execute(
        update(CheckIn)
        .where(checkins_due, CheckIn.texter_id.is_not(None), ~being_carried_out)
        .values(texter_id=None)
        .execution_options(synchronize_session=False)
    )
    survey_cutoff = max(followups_cutoff, now - SURVEY_ANSWER_WINDOW)
    # A survey never asked (they sent STOP first, the line stopped running surveys) has no
    # asked_at: it goes by the check-in it came with (``SURVEY_KEY_PREFIX`` + the check-in's key).
    its_checkin_is_old = (
        db.select(CheckIn.id)
        .where(CheckIn.dedupe_key == func.substr(SurveyResponse.dedupe_key, len(SURVEY_KEY_PREFIX) + 1))  # by its index
        .where(CheckIn.asked_at < followups_cutoff)
        .exists()
    )
    surveys = db.session.execute(
        update(SurveyResponse)
        .where(
            SurveyResponse.texter_id.is_not(None),
            or_(
                SurveyResponse.asked_at < survey_cutoff,
                and_(SurveyResponse.asked_at.is_(None), its_checkin_is_old),
            ),
        )
        .values(texter_id=None)
        .execution_options(synchronize_session=False)
    )
    _unlink_survey_keys()
    _unlink_survey_traces()
    # The blocklist is checked on calls only: its reasons go by the calls' window.
    block_reasons = db.session.execute(
        update(BlockedNumber)
        .where(BlockedNumber.added_at < calls_cutoff, BlockedNumber.reason.is_not(None))
        .values(reason=None)
        .execution_options(synchronize_session=False)
    )
    texters = _purge_texters(texts_cutoff, calls_cutoff, now)
    conversations_unlinked = _unlink_old_conversations(texts_cutoff, now)
    registered = {name: purge(cutoffs) for name, purge in registered_purges().items()}
    db.session.commit()
    return {
        "calls": calls.rowcount,  # type: ignore[attr-defined]
        "events": events.rowcount,  # type: ignore[attr-defined]
        "texts": texts.rowcount,  # type: ignore[attr-defined]
        "texters": texters,
        "conversations_unlinked": conversations_unlinked,  # from the number they came from
        "checkins": checkins.rowcount,  # type: ignore[attr-defined]  # whom it came from
        "checkin_replies": replies.rowcount,  # type: ignore[attr-defined]
        "surveys": surveys.rowcount,  # type: ignore[attr-defined]
        "block_reasons": block_reasons.rowcount,  # type: ignore[attr-defined]
        **registered,
    }


def _talk_callback_open() -> ColumnElement[bool]:
    """A callback carrying the check-in's "2" is still open (``callbacks.requests.callback_carrying``
    in SQL, for the purge's check-ins): its own, or the one they had asked for already, which
    their "2" joined (its call record ``checkin-callback-<id>`` then names the same caller)."""
    open_ = Callback.state.in_(OPEN_CALLBACK_STATES)
    its_own = db.select(Callback.id).where(
        Callback.dedupe_key == literal(CHECKIN_KEY_PREFIX) + cast(CheckIn.id, String), open_
    )
    asked, holder = aliased(Call), aliased(Call)
    joined = (
        db.select(Callback.id)
        .join(holder, holder.id == Callback.call_id)
        .join(asked, asked.caller_hash == holder.caller_hash)
        .where(
            asked.call_sid == literal(CHECKIN_CALL_SID_PREFIX) + cast(CheckIn.id, String),
            Callback.requested_at <= asked.started_at,
            open_,
        )
    )
    return or_(its_own.exists(), joined.exists())


def _unlink_survey_keys() -> None:
    """A survey no longer linked to its asker (unlinked above, superseded by a check-in, not
    sent after a STOP) loses its key naming its check-in too: a random one instead (an answered
    one already has, ``followups.checkins.record_rating``)."""
    unlinked = db.session.scalars(
        db.select(SurveyResponse.id).where(
            SurveyResponse.texter_id.is_(None),
            SurveyResponse.dedupe_key.startswith(SURVEY_KEY_PREFIX, autoescape=True),
        )
    ).all()
    if unlinked:
        db.session.execute(
            update(SurveyResponse), [{"id": survey_id, "dedupe_key": unlinked_survey_key()} for survey_id in unlinked]
        )


CHUNK = 1000  # ids per statement


def _unlink_survey_traces() -> None:
    """What ``followups.checkins.record_rating`` unlinks when a rating comes, for surveys
    answered before it did, and for questions no longer linked to their asker: their finished
    scheduled contacts lose the check-in and the key naming it, their times are kept to the hour
    (their metric facts' too), and the texts that carried a rating lose their texter and body."""
    its_survey_is_linked = (
        db.select(SurveyResponse.id)
        .join(CheckIn, SurveyResponse.dedupe_key == literal(SURVEY_KEY_PREFIX) + CheckIn.dedupe_key)
        .where(CheckIn.id == ScheduledContact.checkin_id)
        .exists()
    )
    contacts = db.session.scalars(
        db.select(ScheduledContact.id).where(
            ScheduledContact.kind == "survey", ScheduledContact.checkin_id.is_not(None),
            ScheduledContact.state.not_in(("pending", "sending")), ~its_survey_is_linked,
        )
    ).all()  # fmt: skip
    unlink_survey_contacts(contacts)
    active = active_routing()
    zone = active.document.timezone if active else UTC
    unlinked = db.session.execute(
        db.select(SurveyResponse.id, SurveyResponse.asked_at, SurveyResponse.answered_at).where(
            SurveyResponse.texter_id.is_(None),
            or_(SurveyResponse.asked_at.is_not(None), SurveyResponse.answered_at.is_not(None)),
        )
    ).all()
    coarser = [
        {"id": row.id, "asked_at": coarse_time(row.asked_at, zone) if row.asked_at else None,
         "answered_at": coarse_time(row.answered_at, zone) if row.answered_at else None}
        for row in unlinked
        if any(at is not None and coarse_time(at, zone) != at for at in (row.asked_at, row.answered_at))
    ]  # fmt: skip
    if coarser:
        db.session.execute(update(SurveyResponse), coarser)
        for each in coarser:
            if each["answered_at"] is not None:
                db.session.execute(
                    update(MetricFact)
                    .where(MetricFact.source == "survey", MetricFact.source_id == each["id"])
                    .values(at=each["answered_at"])
                    .execution_options(synchronize_session=False)
                )
    thanked = db.session.scalars(
        db.select(Message.idempotency_key).where(
            Message.idempotency_key.startswith(SURVEY_THANKS_KEY_PREFIX, autoescape=True)
        )
    ).all()
    ratings = [int(key[len(SURVEY_THANKS_KEY_PREFIX):]) for key in thanked if key and key[len(
        SURVEY_THANKS_KEY_PREFIX):].isdecimal()]  # fmt: skip
    for start in range(0, len(ratings), CHUNK):
        linked = db.session.scalars(
            db.select(Message.id).where(
                Message.id.in_(ratings[start : start + CHUNK]), Message.direction == "in",
                or_(Message.texter_id.is_not(None), Message.sealed_body.is_not(None)),
            )
        ).all()  # fmt: skip
        unlink_ratings(linked)


def _purge_texters(cutoff: datetime, calls_cutoff: datetime, now: datetime) -> int:
    # One just closed stays on the emergency unmask page for a while: it keeps the number too.
    recent = (
        db.select(Conversation.texter_id)
        .where(
            or_(
                Conversation.last_activity_at >= cutoff,
                Conversation.state != "closed",
                Conversation.closed_at >= now - ENDED_CONTACT_UNMASKABLE_FOR,
            )
        )
        .scalar_subquery()
    )
    # Every conversation starts with the texter's own text. A texter with none got their number
    # from a call (the missed-call text, the "we tried to call you back" text, a referral after a
    # call, a check-in agreed on a call), or only ever texted a keyword or a follow-up reply: it
    # goes by the shorter of the calls' and texts' windows. Once they text the line themselves
    # (a conversation), their number came by text too, and the texts' window applies.
    texted_us = db.select(Conversation.id).where(Conversation.texter_id == Texter.id).exists()
    old_enough = or_(Texter.created_at < cutoff, and_(Texter.created_at < calls_cutoff, ~texted_us))
    # Someone a follow-up may still text (or whose answer is awaited) keeps their number until
    # the follow-up's own window has passed.
    checked_in = db.select(CheckIn.texter_id).where(CheckIn.texter_id.is_not(None)).scalar_subquery()
    surveyed = db.select(SurveyResponse.texter_id).where(SurveyResponse.texter_id.is_not(None)).scalar_subquery()
    # Someone whose text the board lists for a person to reach keeps their number while it is
    # listed (the emergency unmask page gives it): a text after their STOP, which opens no
    # conversation, or one the line could not handle. Their old number went with the texts'
    # window and came back with this text.
    listed_since = now - STUCK_LISTED_FOR
    to_reach = (
        db.select(Message.texter_id)
        .where(
            Message.texter_id.is_not(None), Message.direction == "in",
            or_(Message.person_needed_at >= listed_since,
                and_(Message.handled_at.is_(None), Message.created_at >= listed_since)),
        )
        .scalar_subquery()
    )  # fmt: skip
    # Someone whose own text still has its body (a STOP, HELP or follow-up reply sent after their
    # last conversation) keeps their number until that body goes, by the texts' window: the run
    # that scrubs it notes their texts at Twilio by this number (``note_purged``), then drops it.
    # Dropped sooner, Twilio's copies (its own reply to STOP: no SID the line knows) would stay.
    still_worded = (
        db.select(Message.texter_id)
        .where(Message.texter_id.is_not(None), Message.direction == "in", Message.sealed_body.is_not(None))
        .scalar_subquery()
    )
    stale = db.session.scalars(
        db.select(Texter).where(
            old_enough, Texter.sealed_number.is_not(None), Texter.id.not_in(recent),
            Texter.id.not_in(checked_in), Texter.id.not_in(surveyed), Texter.id.not_in(to_reach),
            Texter.id.not_in(still_worded),
        )
    ).all()  # fmt: skip
    for texter in stale:
        texter.sealed_number = None
        if not texter.opted_out:
            texter.number_hash = "purged:" + secrets.token_hex(24)
    return len(stale)


# A conversation past the texts' window gets a texter row of its own, under this "hash" and
# its id: no keyed hash of a number is ever one, so nobody's next text finds it.
UNLINKED_CONVERSATION_PREFIX = "purged-conversation:"


def _unlink_old_conversations(cutoff: datetime, now: datetime) -> int:
    """Conversations past the texts' window (closed, their last activity before ``cutoff``) are
    moved, with their texts, to a texter row of their own holding nothing (no number, a hash no
    number has), and lose their links to and from the texter's other conversations
    (``previous_id``). Whoever keeps their hash (STOP is honoured for good; someone who texts
    every few weeks) keeps only their contacts within the window; the old ones stay, for
    metrics, anonymous and unlinked. Their texts sent outside any conversation lose their
    sender once past the window too, unless the board still lists them for a person to reach.
    Set-based: a few statements, whatever the backlog. Returns how many conversations moved."""
    old = and_(
        Conversation.state == "closed",
        Conversation.last_activity_at < cutoff,
        or_(Conversation.closed_at.is_(None), Conversation.closed_at < now - ENDED_CONTACT_UNMASKABLE_FOR),
    )
    anonymous = literal(UNLINKED_CONVERSATION_PREFIX) + cast(Conversation.id, String)
    still_linked = (
        db.select(Texter.id).where(Texter.id == Conversation.texter_id, Texter.number_hash == anonymous).exists()
    )
    due = db.select(Conversation.id).where(old, ~still_linked)
    columns = ["number_hash", "opted_out", "created_at"]
    rows = db.select(anonymous, literal(False), literal(now, UTCDateTime())).where(old, ~still_linked)
    db.session.execute(
        insert_ignoring_conflicts(Texter).from_select(columns, rows),
        execution_options={"synchronize_session": False},
    )
    moved = db.session.scalars(due).all()
    for start in range(0, len(moved), CHUNK):
        ids = moved[start : start + CHUNK]
        own = db.select(Texter.id).where(Texter.number_hash == anonymous).scalar_subquery()
        db.session.execute(
            update(Conversation)
            .where(Conversation.id.in_(ids))
            .values(texter_id=own, previous_id=None)
            .execution_options(synchronize_session=False)
        )
        its_texter = db.select(Conversation.texter_id).where(Conversation.id == Message.conversation_id)
        db.session.execute(
            update(Message)
            .where(Message.conversation_id.in_(ids), Message.texter_id.is_not(None))
            .values(texter_id=its_texter.scalar_subquery())
            .execution_options(synchronize_session=False)
        )
        db.session.execute(
            update(Conversation)
            .where(Conversation.previous_id.in_(ids))
            .values(previous_id=None)
            .execution_options(synchronize_session=False)
        )
    listed_since = now - STUCK_LISTED_FOR
    db.session.execute(
        update(Message)
        .where(
            Message.conversation_id.is_(None), Message.texter_id.is_not(None), Message.sealed_body.is_(None),
            Message.created_at < cutoff, or_(Message.received_at.is_(None), Message.received_at < cutoff),
            or_(Message.person_needed_at.is_(None), Message.person_needed_at < listed_since),
            or_(Message.handled_at.is_not(None), Message.created_at < listed_since),
        )
        .values(texter_id=None)
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    return len(moved)


def sweep_text_conversations() -> dict[str, int]:
    """Re-offer text offers that timed out, give long waits the backup option, close idle
    conversations, retry and escalate texts not handled, store texts kept in Redis while the
    database was away. The clock runs it every minute.
    Idempotent: each step is a conditional UPDATE, so overlapping runs do each thing once."""
    active = active_routing()
    try:
        counts = sweep(active.document) if active else {}
        if active is not None:
            counts["kept_stored"] = _store_kept_texts(active.document)
    finally:
        events.publish_pending()
    return counts


def _store_kept_texts(document: RoutingDocument) -> int:
    """Texts kept in Redis while the database was away are stored and handled now (their
    sender was pointed to the backup line meanwhile). A Redis that is away too waits a run.
    One never stored tells the supervisors, retried every run until the database takes the
    alert's rows (once each: its key)."""
    line_number = current_app.extensions["crisisline.settings"].line_phone_number

    def tell_a_person(message_sid: str, to_number: str | None) -> None:
        body = document.staff_prompt("text_stuck_sms", case=message_sid, minutes=int(GIVE_UP_MINUTES))
        from_number = caller_number(to_number) or line_number or ""
        outbox.tell_supervisors(document, key=f"text-dead:{message_sid}", body=body, from_number=from_number)

    def tell_of_many(message_sids: list[str], to_number: str | None) -> None:
        # Keyed by the texts it tells of: a run that failed part-way sends the same one again,
        # and each supervisor who got it is skipped (one dying later makes a new one).
        digest = hashlib.sha256(",".join(message_sids).encode()).hexdigest()[:16]
        cases = ", ".join(message_sids[:SUMMARY_NAMES])
        body = document.staff_prompt("texts_stuck_sms", count=len(message_sids), cases=cases)
        from_number = caller_number(to_number) or line_number or ""
        outbox.tell_supervisors(document, key=f"text-dead:all:{digest}", body=body, from_number=from_number)

    try:
        return unstored.store_kept(
            lambda kept: receive_kept(document, kept, line_number=line_number), on_dead=tell_a_person,
            on_many_dead=tell_of_many,
        )  # fmt: skip
    except Exception as error:  # never the sweep's or the events' loss: the next run tries again
        log.error("kept texts not stored this run: %s", type(error).__name__)
        db.session.rollback()
        return 0


def reconcile_transfers() -> dict[str, int]:
    """Repair transfers after lost Twilio callbacks (see ``transfer.reconcile``). Idempotent."""
    active = active_routing()
    counts = reconcile(active.document) if active else {}
    events.publish_pending()
    return counts


def tend_callbacks() -> dict[str, int]:
    """Ring for waiting callbacks in queue order, give up on ones nobody took in time, settle
    person legs whose last status callback was lost (see ``callbacks.attempts.tend``). Idempotent."""
    active = active_routing()
    counts = tend(active.document) if active else {}
    events.publish_pending()
    return counts


def keep_stored_promises() -> dict[str, int]:
    """Keep promises stored and not yet kept by features above the workers (a check-in the
    person agreed to in a counselor's wrap-up, the request dying before it was scheduled):
    they react to ``events.stored_promises_due``. Idempotent; counts by receiver."""
    counts: dict[str, int] = {}
    for _receiver, (name, kept) in events.stored_promises_due.send():
        counts[name] = counts.get(name, 0) + kept
    return counts


def rebuild_scheduled_contacts() -> dict[str, int]:
    """Re-queue scheduled contacts Redis lost; flag stuck sends for a human. Idempotent."""
    return rebuild_schedule()


# (job, cron schedule in UTC, queue). Enqueued by the Procfile's ``clock`` (``flask workers clock``).
PERIODIC_JOBS = [
    (purge_personal_data, "17 * * * *", "upkeep"),
    (sweep_text_conversations, "* * * * *", "messages"),
    (reconcile_transfers, "* * * * *", "calls"),
    (tend_callbacks, "* * * * *", "calls"),
    # On ``calls``: it re-queues lost callbacks and alerts, which must not wait behind check-ins.
    (rebuild_scheduled_contacts, "* * * * *", "calls"),
    (keep_stored_promises, "* * * * *", "followups"),
    (refresh_metrics_rollup, "*/5 * * * *", "upkeep"),
    # Twilio's records of purged contacts: a few seconds' worth each minute (``RUN_SECONDS``).
    (delete_twilio_records, "* * * * *", "upkeep"),
]

for job, schedule, queue in PERIODIC_JOBS:
    rq.cron_register(job, schedule, queue=queue, job_timeout=300, failure_ttl=86400)
