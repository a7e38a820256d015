"""Reading the facts of a period from the database: the call event log for voice, callbacks'
``callback.*`` events, and the conversation, check-in and survey rows for texts and follow-ups.

Only what a metric needs is read; nothing personal (numbers, transcripts, bodies) is selected.
Each rule is written in ``docs/metrics.md``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session, scoped_session

from crisisline.models import (
    Call,
    Callback,
    CallEvent,
    CheckIn,
    Conversation,
    ConversationOffer,
    Message,
    SurveyResponse,
    Transfer,
)
from metrics.facts import (
    ABANDONED,
    ANSWERED,
    BACKUP,
    CALLBACK,
    OTHER,
    WAITING,
    CallbackRequest,
    Contact,
    Facts,
    FollowUp,
    Period,
    SurveyAnswer,
)
from routing.document import RoutingDocument

VOICE_KINDS = (
    "call.started",
    "route.decided",
    "backup.dialled",
    "transfer.started",
    "transfer.to_backup",
    "transfer.abandoned",
    "callback.requested",
    "offer.accepted",
    "offer.missed",
    "offer.passed",
    "offer.ended",
)
CALLBACK_OUTCOMES = {"callback.connected": "connected", "callback.gave_up": "gave_up", "callback.canceled": "canceled"}
ROW_OUTCOMES = {"connected": "connected", "gave_up": "gave_up", "canceled": "canceled"}  # before the events existed
DbSession = Session | scoped_session[Any]  # Flask-SQLAlchemy's ``db.session`` or a plain session
# ``offer.ended`` outcomes after which the next person was rung, as after a miss or a pass.
ROLLOVER_ENDINGS = ("no_decision", "deadline_passed", "account_closed", "not_briefed")
TERMINAL_CALL_STATUSES = ("completed", "busy", "failed", "no-answer", "canceled")
CHANNEL_OF_ORIGIN = {"call": "voice", "checkin": "voice", "text": "sms"}


IdSet = Select[Any] | Collection[int]  # ids, or a query that selects them


def load_facts(session: DbSession, period: Period, document: RoutingDocument) -> Facts:
    """Every fact of ``period`` (local dates in the routing's time zone), derived in Python.

    The reference the rollup (``metrics.rollup``) is checked against, and the bench's baseline;
    the pages read the rollup instead, which derives each fact once with the same functions.
    """
    start, end = period.utc_bounds(document.timezone)
    kinds = responder_kinds(document)
    calls = select(Call.id).where(Call.started_at >= start, Call.started_at < end)
    texts = select(Conversation.id).where(Conversation.started_at >= start, Conversation.started_at < end)
    asked = select(Callback.id).where(Callback.requested_at >= start, Callback.requested_at < end)
    due = select(CheckIn.id).where(CheckIn.due_at >= start, CheckIn.due_at < end)
    rated = select(SurveyResponse.id).where(SurveyResponse.answered_at >= start, SurveyResponse.answered_at < end)
    return Facts(
        contacts=tuple(voice_contacts(session, calls, kinds).values()) + tuple(text_contacts(session, texts).values()),
        callbacks=tuple(callback_requests(session, asked).values()),
        followups=tuple(followups(session, due).values()),
        surveys=tuple(survey_answers(session, rated).values()),
        timezone=document.timezone,
    )


def responder_kinds(document: RoutingDocument) -> dict[str, str]:
    return {responder.id: responder.kind for responder in document.responders}


def voice_contacts(session: DbSession, call_ids: IdSet, responder_kinds: Mapping[str, str]) -> dict[int, Contact]:
    """The contacts of these calls, by call id (a record that is not an inbound call has none)."""
    calls = session.execute(
        select(Call.id, Call.started_at, Call.language, Call.need, Call.status).where(Call.id.in_(call_ids))
    ).all()
    if not calls:
        return {}
    events: dict[int, list[tuple[str, datetime, dict[str, Any]]]] = defaultdict(list)
    for call_id, kind, occurred_at, detail in session.execute(
        select(CallEvent.call_id, CallEvent.kind, CallEvent.occurred_at, CallEvent.detail)
        .where(CallEvent.call_id.in_(call_ids), CallEvent.kind.in_(VOICE_KINDS))
        .order_by(CallEvent.call_id, CallEvent.occurred_at, CallEvent.id)
    ):
        events[call_id].append((kind, occurred_at, detail or {}))
    callback_searches = set(
        session.scalars(select(Transfer.id).where(Transfer.call_id.in_(call_ids), Transfer.mode == "callback"))
    )
    contacts = {}
    for call_id, started_at, language, need, status in calls:
        contact = voice_contact(
            events.get(call_id, []), started_at, language, need, status, callback_searches, responder_kinds
        )
        if contact is not None:
            contacts[call_id] = contact
    return contacts


def voice_contact(
    events: list[tuple[str, datetime, dict[str, Any]]],
    started_at: datetime,
    language: str | None,
    need: str | None,
    status: str,
    callback_searches: set[int],
    responder_kinds: Mapping[str, str],
) -> Contact | None:
    """One call's contact from its events, in order; None for a record that is not an inbound
    call (a callback to someone who texted has no ``call.started``)."""
    if not any(kind == "call.started" for kind, _, _ in events):
        return None
    offered = any(
        kind == "route.decided" or (kind == "backup.dialled" and detail.get("attempt") == 1)
        for kind, _, detail in events
    )
    queued_at: datetime | None = None
    outcome, answered_by, speed, waited = "", None, None, None
    rollovers, co_responder = 0, False
    target = next((detail.get("target") for kind, _, detail in events if kind == "route.decided"), None)
    for kind, occurred_at, detail in events:
        live = detail.get("transfer") not in callback_searches
        if kind in ("route.decided", "transfer.started") and queued_at is None:
            queued_at = occurred_at  # the call joined the queue: the clock of speed to answer starts
        if not live:
            continue  # a callback's own searches: counted as callbacks, not as this contact
        if kind == "offer.accepted" and detail.get("purpose") == "join":
            co_responder = True  # a unit brought into the call by its counselor
        elif kind == "offer.accepted" and not outcome:
            outcome = ANSWERED
            answered_by = responder_kinds.get(str(detail.get("responder")))
            if answered_by is None:
                answered_by = "co_responder" if target == "co_responders" else "counselor"
            co_responder = co_responder or answered_by == "co_responder"
            speed = (occurred_at - (queued_at or started_at)).total_seconds()
        elif kind in ("offer.missed", "offer.passed") and not outcome:
            rollovers += 1
        elif kind == "offer.ended" and detail.get("outcome") in ROLLOVER_ENDINGS and not outcome:
            rollovers += (
                1  # answered, but not taken (no key in time, the line failing, an account closed): the next was rung
            )
        elif kind == "callback.requested" and not outcome:
            outcome, waited = CALLBACK, _seconds(detail, occurred_at, queued_at)
        elif kind == "transfer.to_backup" and not outcome:
            outcome, waited = BACKUP, _seconds(detail, occurred_at, queued_at)
        elif kind == "backup.dialled" and detail.get("attempt") == 1 and not outcome:
            outcome, waited = BACKUP, 0.0 if queued_at is None else (occurred_at - queued_at).total_seconds()
        elif kind == "transfer.abandoned" and not outcome:
            outcome, waited = ABANDONED, _seconds(detail, occurred_at, queued_at)
    if not outcome:
        outcome = OTHER if status in TERMINAL_CALL_STATUSES else WAITING
    return Contact(
        channel="voice",
        started_at=started_at,
        language=language,
        need=need,
        offered=offered,
        outcome=outcome,
        answered_by=answered_by,
        speed_to_answer_seconds=speed,
        waited_seconds=waited,
        rollovers=rollovers,
        co_responder_involved=co_responder,
    )


def _seconds(detail: dict[str, Any], occurred_at: datetime, queued_at: datetime | None) -> float | None:
    recorded = detail.get("waited_seconds")
    if isinstance(recorded, int | float):
        return float(recorded)
    return None if queued_at is None else (occurred_at - queued_at).total_seconds()


# A conversation opened only to carry the line's reply to START, and closed so at once
# (``sms.conversations.close_unused``): nobody reached out, so it is no contact.
NOT_A_CONTACT = "opted_in"


def text_contacts(session: DbSession, conversation_ids: IdSet) -> dict[int, Contact]:
    """The contacts of these text conversations, by conversation id (one that only carried the
    reply to a START has none)."""
    rows = session.execute(
        select(
            Conversation.id, Conversation.started_at, Conversation.language, Conversation.need,
            Conversation.queued_at, Conversation.assigned_at, Conversation.closed_at, Conversation.close_reason,
            Conversation.backup_offered_at, Conversation.state,
        ).where(
            Conversation.id.in_(conversation_ids),
            or_(Conversation.close_reason.is_(None), Conversation.close_reason != NOT_A_CONTACT),
        )
    ).all()  # fmt: skip
    if not rows:
        return {}
    offers: dict[int, list[tuple[str, datetime, datetime | None]]] = defaultdict(list)
    for conversation_id, state, created_at, decided_at in session.execute(
        select(
            ConversationOffer.conversation_id, ConversationOffer.state, ConversationOffer.created_at,
            ConversationOffer.decided_at,
        ).where(ConversationOffer.conversation_id.in_(conversation_ids))
    ):  # fmt: skip
        offers[conversation_id].append((state, created_at, decided_at))
    first_relay: dict[int, datetime] = {}
    for texted_conversation, created_at in session.execute(
        select(Message.conversation_id, Message.created_at).where(
            Message.conversation_id.in_(conversation_ids),
            Message.direction == "out",
            Message.party == "texter",
            Message.idempotency_key.like("c%:relay:%"),  # a counselor's words relayed (sms.staff)
        )
    ):
        if texted_conversation is not None and (
            texted_conversation not in first_relay or created_at < first_relay[texted_conversation]
        ):
            first_relay[texted_conversation] = created_at
    contacts = {}
    for cid, started_at, language, need, queued_at, assigned_at, closed_at, reason, backup_at, state in rows:
        taken = [decided for st, _, decided in offers.get(cid, []) if st in ("taken", "passed") and decided]
        answered_at = assigned_at or (min(taken) if taken else None) or first_relay.get(cid)
        if answered_at is not None:
            outcome = ANSWERED
        elif reason == "callback":
            outcome = CALLBACK
        elif backup_at is not None:
            outcome = BACKUP
        elif state == "closed":
            outcome = ABANDONED
        else:
            outcome = WAITING
        waited_until = {CALLBACK: closed_at, BACKUP: backup_at, ABANDONED: closed_at}.get(outcome)
        expired_before = [
            created
            for st, created, _ in offers.get(cid, [])
            if st == "expired" and (answered_at is None or created < answered_at)
        ]
        relay = first_relay.get(cid)
        contacts[cid] = Contact(
            channel="sms",
            started_at=started_at,
            language=language,
            need=need,
            offered=queued_at is not None,
            outcome=outcome,
            answered_by="counselor" if answered_at is not None else None,
            speed_to_answer_seconds=_between(queued_at, answered_at),
            waited_seconds=_between(queued_at, waited_until),
            rollovers=len(expired_before),
            first_response_seconds=_between(queued_at, relay),
        )
    return contacts


def _between(earlier: datetime | None, later: datetime | None) -> float | None:
    if earlier is None or later is None:
        return None
    return max(0.0, (later - earlier).total_seconds())


def callback_requests(session: DbSession, callback_ids: IdSet) -> dict[int, CallbackRequest]:
    """These callbacks' requests and how they ended, by callback id (never asked: none)."""
    rows = session.execute(
        select(
            Callback.id, Callback.origin, Callback.call_id, Callback.language, Callback.need, Callback.state,
            Callback.connected_at,
        ).where(Callback.id.in_(callback_ids))
    ).all()  # fmt: skip
    if not rows:
        return {}
    call_ids = {row.call_id for row in rows}
    requested: dict[str, datetime] = {}
    ended: dict[str, tuple[str, datetime]] = {}
    for kind, key, occurred_at in session.execute(
        select(CallEvent.kind, CallEvent.dedupe_key, CallEvent.occurred_at).where(
            CallEvent.call_id.in_(call_ids), CallEvent.kind.like("callback.%")
        )
    ):
        if kind == "callback.requested":
            requested[key] = occurred_at
        elif kind in CALLBACK_OUTCOMES:
            ended[key] = (CALLBACK_OUTCOMES[kind], occurred_at)
    found = {}
    for cid, origin, _call_id, language, need, state, connected_at in rows:
        asked = requested.get(f"callback:{cid}:requested")
        if asked is None:
            continue  # created and canceled in the same moment (a responder accepted): never asked
        outcome, at = ended.get(f"callback:{cid}:outcome", (ROW_OUTCOMES.get(state, "pending"), connected_at))
        seconds = _between(asked, at) if outcome == "connected" else None
        found[cid] = CallbackRequest(
            channel=CHANNEL_OF_ORIGIN.get(origin, "voice"),
            requested_at=asked,
            language=language,
            need=need,
            outcome=outcome,
            seconds_to_callback=seconds,
        )
    return found


def followups(session: DbSession, checkin_ids: IdSet) -> dict[int, FollowUp]:
    """These check-ins, by id, if the person agreed to them (the others are no follow-up)."""
    rows = session.execute(
        select(
            CheckIn.id, CheckIn.origin, CheckIn.due_at, CheckIn.language, CheckIn.need, CheckIn.sent_at,
            CheckIn.replied_at, CheckIn.flagged_at,
        ).where(CheckIn.id.in_(checkin_ids), CheckIn.consented_at.is_not(None), CheckIn.due_at.is_not(None))
    ).all()  # fmt: skip
    return {
        checkin_id: FollowUp(
            channel=CHANNEL_OF_ORIGIN.get(origin, "sms"),
            due_at=due_at,
            language=language,
            need=need,
            sent=sent_at is not None,
            reached=replied_at is not None,
            escalated=flagged_at is not None,
        )
        for checkin_id, origin, due_at, language, need, sent_at, replied_at, flagged_at in rows
        if due_at is not None
    }


def survey_answers(session: DbSession, survey_ids: IdSet) -> dict[int, SurveyAnswer]:
    """These survey questions' ratings, by id (unanswered: none)."""
    rows = session.execute(
        select(
            SurveyResponse.id, SurveyResponse.origin, SurveyResponse.answered_at, SurveyResponse.language,
            SurveyResponse.need, SurveyResponse.rating,
        ).where(
            SurveyResponse.id.in_(survey_ids), SurveyResponse.rating.is_not(None),
            SurveyResponse.answered_at.is_not(None),
        )
    ).all()  # fmt: skip
    return {
        survey_id: SurveyAnswer(CHANNEL_OF_ORIGIN.get(origin, "sms"), answered_at, language, need, rating)
        for survey_id, origin, answered_at, language, need, rating in rows
        if answered_at is not None and rating is not None
    }
