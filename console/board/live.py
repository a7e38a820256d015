"""What the live board shows, read from the one queue (``line_queue.waiting``) and each
responder's availability (``transfer.availability``): never a phone number, never words."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select

from callbacks.attempts import LINE_FAILED, unreached_callbacks, unreached_reason
from crisisline.db import db
from crisisline.models import (
    ACTIVE_OFFER_STATES,
    Call,
    Callback,
    Conversation,
    ConversationOffer,
    Message,
    Offer,
    ResponderState,
    ScheduledContact,
    Transfer,
)
from followups.checkins import flagged_checkins
from line_queue.waiting import TEXT_WAITING_STATES, WaitingContact, head
from routing.document import Responder, RoutingDocument
from routing.schedule import is_on_call, local_time
from sms.conversations import (
    AFTER_STOP_ALERT_WINDOW,
    OPEN_STATES,
    RETRY_AFTER,
    STUCK_LISTED_FOR,
    AfterStopAlert,
    after_stop_alerts,
    latest_texts_after_stop,
    stuck_alerts,
    stuck_case,
    stuck_texts,
)
from sms.delivery import delivery_of, not_delivered
from sms.delivery import taken as told_by
from sms.outbox import OPTED_OUT
from transfer.availability import ON_A_CALL, availability
from workers.contacts import NEEDS_HUMAN_LISTED_FOR

BOARD_LIMIT = 100  # the queue's head; the total is counted separately
UNDELIVERED_LISTED_FOR = timedelta(hours=1)
# A follow-up the line gave up running (``needs_human``): listed for a day. Check-ins have
# their own list (flagged); a survey is not a promise. What each left the person without:
UNFINISHED_LISTED_FOR = NEEDS_HUMAN_LISTED_FOR
UNFINISHED_KINDS = {
    "callback": "a callback we promised them could not be started (the line failed): check that someone reached them",
    "callback_missed": 'our "we tried to call you back" text may not have gone out',
    "missed_contact": 'our "we missed your call" text may not have gone out',
}
# A callback the line gave up without reaching its person (``callbacks.attempts``): listed among
# these for as long as the emergency unmask lists it (``UNREACHED_LISTED_FOR``, a day), by the
# case the supervisors were texted, and why in that text's words.
UNREACHED_WHAT = "a callback we promised them reached nobody: {reason}"
NOT_KNOWN = "not known"  # a follow-up's call that never chose a language or a need
RINGING = "ringing"
KIND_LABELS = {"call": "call", "callback": "callback", "text": "text"}


@dataclass(frozen=True)
class WaitingRow:
    place: int
    channel: str  # voice | text
    kind: str  # call | callback | text
    tag: str | None  # a text's "#12", which staff use in their replies; None for calls
    language: str
    need: str
    priority: int
    waiting_seconds: int
    being_offered: bool  # a phone rings, or a text offer is open, for it now


@dataclass(frozen=True)
class ResponderRow:
    id: str
    name: str
    kind: str  # counselor | co_responder
    languages: list[str]
    on_shift: bool
    status: str  # available | ringing | on a call | paused | off shift
    paused_reason: str | None
    texts: int  # text conversations they hold now
    text_offered: bool


@dataclass(frozen=True)
class StuckTextRow:
    """A text the line could not handle: a person must reach its sender."""

    message_id: int
    case: str  # "T12", as the supervisors' alert names it
    sender: str  # texter | counselor
    tag: str | None  # the texter's open conversation ("#12"), if they have one
    waiting_seconds: int
    escalated: bool  # the sweep has texted (or tried to text) the supervisors, after ``ESCALATE_AFTER``
    supervisors_told: int  # of those texts, how many Twilio took (not failed, not left unsent)
    alert: str  # the two above, as the board says them


@dataclass(frozen=True)
class UndeliveredRow:
    """A text to a texter, in the last ``UNDELIVERED_LISTED_FOR``, that did not reach their
    phone or may not have gone out: someone may need to reach them another way."""

    message_id: int
    tag: str | None  # the conversation it belongs to ("#12"); None for a check-in, say
    counselor: str | None  # who holds that conversation now (and sees it in their thread), if anyone
    seconds_ago: int
    what: str  # ``sms.delivery``'s words: why it did not arrive


@dataclass(frozen=True)
class AfterStopRow:
    """Someone who wrote after texting STOP (or whom Twilio reports blocked with their carrier):
    the line cannot text them back until they text START, so a person may need to call them."""

    message_id: int  # their latest such text
    case: str  # "T12", as the supervisors' alert names it
    seconds_ago: int  # since the line found it could not answer them
    ago: str  # the same, as the board says it ("3 h 05 min ago")
    alert: str  # whether the supervisors were texted about them, as the board says it


@dataclass(frozen=True)
class FlaggedCheckInRow:
    """A check-in that needs a person: no reply to two texts, or its text could not be sent."""

    checkin_id: int
    case: str  # "C12", as the supervisors' alert names it
    reason: str
    ago: str  # since it was flagged
    alert: str  # whether the supervisors were texted about it


@dataclass(frozen=True)
class UnfinishedRow:
    """A follow-up the line promised someone (a callback, a text after a missed call) whose
    runs kept failing part way, or a callback it gave up without reaching them (nobody free in
    time, no answer, a number our phone service will not call): the person may be left without
    what we promised, so a person should look."""

    # A follow-up's, as the worker's log and ``flask workers status`` name it (what "a person has
    # this" marks); None for a callback nobody reached, which leaves the board after its day.
    contact_id: int | None
    what: str
    ago: str  # since the line gave up on it
    case: str  # as the board names it: a follow-up's number ("34"); a callback's "CB12", as its alert did
    language: str  # as the queue shows them (``NOT_KNOWN`` for a call that never chose one)
    need: str


@dataclass(frozen=True)
class Board:
    at: datetime
    waiting: list[WaitingRow]  # the head of the queue, at most ``BOARD_LIMIT``
    responders: list[ResponderRow]
    waiting_by_channel: dict[str, int]  # everyone in the queue, however long it is
    stuck_texts: list[StuckTextRow] = field(default_factory=list)
    undelivered: list[UndeliveredRow] = field(default_factory=list)
    after_stop: list[AfterStopRow] = field(default_factory=list)
    flagged_checkins: list[FlaggedCheckInRow] = field(default_factory=list)
    unfinished: list[UnfinishedRow] = field(default_factory=list)

    @property
    def longest_wait_seconds(self) -> int:
        return max((row.waiting_seconds for row in self.waiting), default=0)

    def counts(self) -> dict[str, int]:
        statuses = [row.status for row in self.responders]
        return {
            "waiting": sum(self.waiting_by_channel.values()),
            "shown": len(self.waiting),
            "voice": self.waiting_by_channel.get("voice", 0),
            "text": self.waiting_by_channel.get("text", 0),
            "on_shift": sum(row.on_shift for row in self.responders),
            "available": statuses.count("available"),
            "ringing": statuses.count(RINGING),
            "on_a_call": statuses.count(ON_A_CALL),
            "paused": statuses.count("paused"),
            "stuck_texts": len(self.stuck_texts),
            "undelivered": len(self.undelivered),
            "after_stop": len(self.after_stop),
            "flagged_checkins": len(self.flagged_checkins),
            "unfinished": len(self.unfinished),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "longest_wait_seconds": self.longest_wait_seconds,
            "counts": self.counts(),
            "waiting": [asdict(row) for row in self.waiting],
            "responders": [asdict(row) for row in self.responders],
            "stuck_texts": [asdict(row) for row in self.stuck_texts],
            "undelivered": [asdict(row) for row in self.undelivered],
            "after_stop": [asdict(row) for row in self.after_stop],
            "flagged_checkins": [asdict(row) for row in self.flagged_checkins],
            "unfinished": [asdict(row) for row in self.unfinished],
        }


def language_name(document: RoutingDocument, code: str) -> str:
    return document.language(code).staff_name


def need_label(document: RoutingDocument, key: str) -> str:
    need = document.need(key)
    label = need.labels.get(document.menu.default_language) or next(iter(need.labels.values()), key) if need else key
    return label[:1].upper() + label[1:]  # labels are written to be spoken mid-sentence


def waiting_row(document: RoutingDocument, place: int, contact: WaitingContact, moment: datetime) -> WaitingRow:
    return WaitingRow(
        place=place,
        channel=contact.channel,
        kind=KIND_LABELS.get(contact.kind, contact.kind),
        tag=f"#{contact.id}" if contact.channel == "text" else None,
        language=language_name(document, contact.language),
        need=need_label(document, contact.need),
        priority=contact.priority,
        waiting_seconds=max(0, int((moment - contact.since).total_seconds())),
        being_offered=contact.active_offers > 0,
    )


def voice_status(document: RoutingDocument, responder: Responder, moment: datetime) -> str:
    """``availability``, with "on a call" split into ringing (offered, deciding) and on a call."""
    status = availability(document, responder, moment)
    if status != ON_A_CALL:
        return status
    state = db.session.get(ResponderState, responder.id)
    offer = db.session.get(Offer, state.engaged_offer_id) if state and state.engaged_offer_id else None
    return RINGING if offer is not None and offer.state in ACTIVE_OFFER_STATES else ON_A_CALL


def snapshot(document: RoutingDocument, moment: datetime) -> Board:
    """The board at ``moment``: the queue's head in order, then every responder in config order."""
    waiting = [
        waiting_row(document, place, contact, moment)
        for place, contact in enumerate(head(document, limit=BOARD_LIMIT), start=1)
    ]
    texts = dict(
        db.session.execute(
            select(Conversation.counselor_id, func.count(Conversation.id))
            .where(Conversation.state == "active", Conversation.counselor_id.is_not(None))
            .group_by(Conversation.counselor_id)
        ).all()
    )
    text_offered = set(
        db.session.scalars(select(ConversationOffer.responder_id).where(ConversationOffer.state == "open"))
    )
    states = {state.responder_id: state for state in db.session.scalars(select(ResponderState))}
    wall_clock = local_time(document, moment)
    responders = []
    for responder in document.responders:
        state = states.get(responder.id)
        responders.append(
            ResponderRow(
                id=responder.id,
                name=responder.name,
                kind=responder.kind,
                languages=[language_name(document, code) for code in responder.languages],
                on_shift=is_on_call(responder, wall_clock),
                status=voice_status(document, responder, moment),
                paused_reason=state.paused_reason if state is not None and state.paused else None,
                texts=int(texts.get(responder.id, 0)),
                text_offered=responder.id in text_offered,
            )
        )
    return Board(
        moment, waiting, responders, waiting_by_channel(), stuck_text_rows(document, moment),
        undelivered_rows(document, moment), after_stop_rows(document, moment), flagged_checkin_rows(document, moment),
        unfinished_rows(document, moment),
    )  # fmt: skip


def unfinished_contacts(moment: datetime) -> Select[ScheduledContact]:
    """The follow-ups the board lists as unfinished at ``moment`` (nobody has said a person has them)."""
    return select(ScheduledContact).where(
        ScheduledContact.state == "needs_human", ScheduledContact.kind.in_(UNFINISHED_KINDS),
        ScheduledContact.finished_at >= moment - UNFINISHED_LISTED_FOR,
    )  # fmt: skip


def unreached_on_the_board(moment: datetime) -> Select[Callback]:
    """The callbacks nobody reached that the board lists at ``moment``: those the emergency
    unmask lists, but one the line failed to make (``LINE_FAILED``), which is listed already as
    its follow-up (kind ``callback``) and leaves with it once a person has it."""
    return unreached_callbacks(moment).where(Callback.outcome.is_distinct_from(LINE_FAILED))


def unfinished_rows(document: RoutingDocument, moment: datetime) -> list[UnfinishedRow]:
    """Follow-ups the line gave up running, and callbacks it gave up without reaching their
    person, in the last day, newest first: one query each, at most ``BOARD_LIMIT`` rows in all."""
    followups = db.session.execute(
        unfinished_contacts(moment)
        .outerjoin(Call, Call.id == ScheduledContact.call_id)
        .with_only_columns(ScheduledContact.id, ScheduledContact.kind, ScheduledContact.finished_at, Call.language,
                           Call.need)
        .order_by(ScheduledContact.finished_at.desc(), ScheduledContact.id.desc())
        .limit(BOARD_LIMIT)
    ).all()  # fmt: skip
    callbacks = db.session.execute(
        unreached_on_the_board(moment)
        .with_only_columns(Callback.id, Callback.outcome, Callback.finished_at, Callback.language, Callback.need)
        .order_by(Callback.finished_at.desc(), Callback.id.desc())
        .limit(BOARD_LIMIT)
    ).all()  # fmt: skip

    def since(finished_at: datetime | None) -> str:
        return ago(max(0, int((moment - (finished_at or moment)).total_seconds())))

    rows = [
        (finished_at or moment, UnfinishedRow(
            contact_id, UNFINISHED_KINDS[kind], since(finished_at), str(contact_id),
            language_name(document, language) if language else NOT_KNOWN,
            need_label(document, need) if need else NOT_KNOWN,
        ))
        for contact_id, kind, finished_at, language, need in followups
    ] + [
        (finished_at or moment, UnfinishedRow(
            None, UNREACHED_WHAT.format(reason=unreached_reason(outcome)), since(finished_at), f"CB{callback_id}",
            language_name(document, language), need_label(document, need),
        ))
        for callback_id, outcome, finished_at, language, need in callbacks
    ]  # fmt: skip
    rows.sort(key=lambda when_row: when_row[0], reverse=True)  # stable: each list's own order kept on a tie
    return [row for _, row in rows[:BOARD_LIMIT]]


def flagged_checkin_rows(document: RoutingDocument, moment: datetime) -> list[FlaggedCheckInRow]:
    """Check-ins flagged in the last week that nobody has marked followed up, oldest first."""
    rows = []
    for flagged in flagged_checkins(moment, limit=BOARD_LIMIT):
        if flagged.tried:
            alert = alert_state(True, flagged.tried, flagged.told)
        else:
            alert = "no supervisor is listed to text" if not document.supervisors else "not yet"
        seconds_ago = max(0, int((moment - flagged.flagged_at).total_seconds()))
        rows.append(FlaggedCheckInRow(flagged.checkin_id, flagged.case, flagged.reason, ago(seconds_ago), alert))
    return rows


def undelivered_rows(document: RoutingDocument, moment: datetime) -> list[UndeliveredRow]:
    """Texts to texters in the last hour that did not reach them, newest first. Texts refused
    because the texter sent STOP are left out: they chose it, and nobody can text them."""
    found = db.session.execute(
        select(Message.id, Message.status, Message.error_code, Message.created_at, Conversation.id,
               Conversation.counselor_id, Conversation.state)
        .outerjoin(Conversation, Conversation.id == Message.conversation_id)
        # "line": a text to someone with no conversation, such as "we tried to call you back".
        .where(Message.party.in_(("texter", "line")), Message.created_at >= moment - UNDELIVERED_LISTED_FOR,
               not_delivered(moment), Message.error_code.is_distinct_from(OPTED_OUT))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(BOARD_LIMIT)
    ).all()  # fmt: skip
    rows = []
    for message_id, status, error_code, sent_at, conversation_id, counselor_id, state in found:
        delivery = delivery_of(status, error_code, sent_at, moment)
        # Only a counselor holding the conversation now sees it in their thread.
        counselor = document.responder(counselor_id) if counselor_id and state == "active" else None
        rows.append(
            UndeliveredRow(
                message_id=message_id,
                tag=f"#{conversation_id}" if conversation_id else None,
                counselor=counselor.name if counselor else None,
                seconds_ago=max(0, int((moment - sent_at).total_seconds())),
                what=delivery.text if delivery else status,
            )
        )
    return rows


def stuck_text_rows(document: RoutingDocument, moment: datetime) -> list[StuckTextRow]:
    """Texts not handled for longer than a retry takes, oldest first (at most ``BOARD_LIMIT``)."""
    older = stuck_texts(moment).where(Message.created_at <= moment - RETRY_AFTER).limit(BOARD_LIMIT)
    messages = db.session.scalars(older).all()
    tried, told = _alerts(document, [message for message in messages if message.escalated_at is not None])
    texter_ids = {message.texter_id for message in messages if message.texter_id is not None}
    open_by_texter = dict(
        db.session.execute(
            select(Conversation.texter_id, Conversation.id).where(
                Conversation.texter_id.in_(texter_ids), Conversation.state.in_(OPEN_STATES)
            )
        ).all()
    ) if texter_ids else {}  # fmt: skip
    return [
        StuckTextRow(
            message_id=message.id,
            case=stuck_case(message.id),
            sender="counselor" if message.responder_id else "texter",
            tag=f"#{open_by_texter[message.texter_id]}" if message.texter_id in open_by_texter else None,
            waiting_seconds=max(0, int((moment - message.created_at).total_seconds())),
            escalated=message.escalated_at is not None,
            supervisors_told=told.get(message.id, 0),
            alert=alert_state(message.escalated_at is not None, tried.get(message.id, 0), told.get(message.id, 0)),
        )
        for message in messages
    ]


def after_stop_rows(document: RoutingDocument, moment: datetime) -> list[AfterStopRow]:
    """The people the line cannot text back, newest first, one row each (their latest text),
    with how many supervisors were texted about it: alerts since the hour it was marked (one
    goes per person per hour, and is sent again while nobody got it), each supervisor once."""
    messages = latest_texts_after_stop(moment, limit=BOARD_LIMIT)
    if not messages:
        return []
    alerts: dict[int, list[AfterStopAlert]] = {}
    for alert in after_stop_alerts(moment - STUCK_LISTED_FOR):
        alerts.setdefault(alert.texter_id, []).append(alert)
    rows = []
    for message in messages:
        marked = message.person_needed_at or moment
        about_it = [a for a in alerts.get(message.texter_id or 0, []) if a.hour >= f"{marked:%Y%m%d%H}"]
        tried = {alert.supervisor for alert in about_it}
        told = {alert.supervisor for alert in about_it if told_by(alert.status)}
        if tried:
            alert_text = alert_state(True, len(tried), len(told))
        elif not document.supervisors:
            alert_text = "no supervisor is listed to text"
        else:
            alert_text = "not yet" if moment - marked < AFTER_STOP_ALERT_WINDOW else "no alert was sent"
        seconds_ago = max(0, int((moment - marked).total_seconds()))
        rows.append(AfterStopRow(message.id, stuck_case(message.id), seconds_ago, ago(seconds_ago), alert_text))
    return rows


def ago(seconds: int) -> str:
    """How long ago, for rows listed for a day: "just now", "7 min ago", "3 h 05 min ago"."""
    minutes = seconds // 60
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    return f"{minutes // 60} h {minutes % 60:02d} min ago"


def alert_state(escalated: bool, tried: int, told: int) -> str:
    if not escalated:
        return "not yet"
    if told:
        return f"yes ({told})"
    # Escalated with no alert tried: no supervisor listed, or left before alerts existed.
    return "no: the alert could not be sent" if tried else "no alert was sent"


def _alerts(document: RoutingDocument, messages: list[Message]) -> tuple[dict[int, int], dict[int, int]]:
    """Per stuck text, how many supervisor alerts were tried, and how many Twilio took: its own,
    and the summary that covered it when many were stuck at once (``sms.conversations``)."""
    alerts = stuck_alerts(messages, (s.id for s in document.supervisors))
    return {i: a.tried for i, a in alerts.items() if a.tried}, {i: a.taken for i, a in alerts.items() if a.taken}


def waiting_by_channel() -> dict[str, int]:
    """How many wait in all, per channel (two COUNTs over the queue-order indexes)."""
    voice = db.session.scalar(select(func.count(Transfer.id)).where(Transfer.state == "waiting")) or 0
    text = db.session.scalar(
        select(func.count(Conversation.id)).where(Conversation.state.in_(TEXT_WAITING_STATES))
    ) or 0  # fmt: skip
    return {"voice": voice, "text": text}
