"""Typed SQLAlchemy 2 models. Personal values are stored sealed (see ``privacy``), never plain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, ColumnElement, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func, text
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crisisline.db import Model, UTCDateTime

# An offer in one of these states holds its responder: their phone rings, or they are deciding.
ACTIVE_OFFER_STATES = ("placing", "ringing", "answered")


def utcnow() -> datetime:
    return datetime.now(UTC)


class RoutingVersion(Model):
    """One published routing document. The highest id is the active one; nothing is edited.

    The source text is sealed because it names counselors and their phone numbers.
    """

    __tablename__ = "routing_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    sealed_source: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_by: Mapped[str] = mapped_column(String(120))
    note: Mapped[str | None] = mapped_column(String(500))


class Call(Model):
    """One inbound call and its path through the menus. ``call_sid`` makes webhooks idempotent."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    caller_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    sealed_caller: Mapped[str | None] = mapped_column(Text)
    routing_version_id: Mapped[int | None] = mapped_column(ForeignKey("routing_versions.id"))
    # The line's own Twilio number that was called (not personal): the caller ID for offers.
    line_number: Mapped[str | None] = mapped_column(String(20))
    language: Mapped[str | None] = mapped_column(String(16))
    need: Mapped[str | None] = mapped_column(String(64))
    language_attempts: Mapped[int] = mapped_column(Integer, default=0)
    need_attempts: Mapped[int] = mapped_column(Integer, default=0)
    route: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20), default="ringing")
    status_sequence: Mapped[int] = mapped_column(Integer, default=-1)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    menu_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    personal_data_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    events: Mapped[list[CallEvent]] = relationship(
        back_populates="call", order_by="CallEvent.id", cascade="all, delete-orphan"
    )


class CallEvent(Model):
    """An append-only record of what happened on a call; metrics are computed from these.

    ``dedupe_key`` is unique per call, so a duplicated Twilio request records nothing twice.
    ``detail`` never holds personal data; a speech transcript goes to ``sealed_detail``.
    """

    __tablename__ = "call_events"
    __table_args__ = (UniqueConstraint("call_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    dedupe_key: Mapped[str] = mapped_column(String(160))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sealed_detail: Mapped[str | None] = mapped_column(Text)

    call: Mapped[Call] = relationship(back_populates="events")


class BlockedNumber(Model):
    """A number that gets a polite message and the backup line, found by keyed hash only."""

    __tablename__ = "blocked_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    number_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Staff's words, which may name the person: blanked by the purge after the calls' window.
    reason: Mapped[str | None] = mapped_column(String(200))
    added_by: Mapped[str] = mapped_column(String(120))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ResponderState(Model):
    """Live availability of a counselor or co-responder unit (identified by its config id).

    ``engaged_offer_id`` is the responder's claim: set atomically when they are offered a
    contact and kept while they are with the caller, so nobody is ever offered two at once.
    """

    __tablename__ = "responder_states"

    responder_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    engaged_offer_id: Mapped[int | None] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(default=False)
    paused_reason: Mapped[str | None] = mapped_column(String(32))
    missed_in_a_row: Mapped[int] = mapped_column(Integer, default=0)
    last_offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Transfer(Model):
    """One search for a human for one caller: offers, acceptance, and the conference.

    ``state`` moves only forward: waiting → connecting → connected → ended, or waiting →
    abandoned / to_backup. Acceptance is a single conditional UPDATE (one winner).
    """

    __tablename__ = "transfers"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    caller_call_sid: Mapped[str] = mapped_column(String(64), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    language: Mapped[str] = mapped_column(String(16))
    need: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="waiting", index=True)
    language_matched: Mapped[bool] = mapped_column(default=True)
    # The caller and "nobody who speaks your language is available": None (nothing to say),
    # "due" (someone who does not speak it was rung for them; their next hold turn says so) or
    # "said" (heard already, as they were put on hold or on a hold turn).
    language_notice: Mapped[str | None] = mapped_column(String(8))
    accepted_offer_id: Mapped[int | None] = mapped_column(Integer)
    dispatch_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Each hold turn of the caller touches this: proof they are still in our hold loop.
    last_hold_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(32))
    # "live": the caller holds in our loop. "callback": nobody is on the line yet; the person
    # is dialled (``caller_call_sid`` set then) only after a responder accepts.
    mode: Mapped[str] = mapped_column(String(12), default="live", server_default="live")
    callback_id: Mapped[int | None] = mapped_column(ForeignKey("callbacks.id", ondelete="SET NULL"), index=True)
    # The person's place in the one queue (``line_queue``): the need's priority, then since
    # when they have been waiting (kept across a callback, and after a responder dropped them).
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    queued_since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("call_id", "round"),
        Index("ix_transfers_queue_order", "state", "priority", "queued_since"),
    )

    @property
    def conference_name(self) -> str:
        return f"transfer-{self.id}"


class Offer(Model):
    """One attempt to reach one responder for a transfer (a counselor leg), and its outcome."""

    __tablename__ = "offers"

    id: Mapped[int] = mapped_column(primary_key=True)
    transfer_id: Mapped[int] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"), index=True)
    responder_id: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(16), default="answer")  # or "join" (three-way)
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="placing", index=True)
    outcome: Mapped[str | None] = mapped_column(String(24))
    status_sequence: Mapped[int] = mapped_column(Integer, default=-1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Texter(Model):
    """Someone who texts the line, known only by keyed hash (plus their sealed number, to reply).

    ``opted_out`` is the STOP status: while set, the line sends them nothing at all.
    ``opt_changed_at``: when the person sent the opt-out or opt-in now in force (a STOP or
    START's arrival; for Twilio's 21610, when the refused text was sent). One sent before it,
    handled late (kept through an outage, a repeated callback), changes nothing: the latest by
    the time it was sent wins, as with Twilio's own block.
    """

    __tablename__ = "texters"

    id: Mapped[int] = mapped_column(primary_key=True)
    number_hash: Mapped[str] = mapped_column(String(64), unique=True)
    sealed_number: Mapped[str | None] = mapped_column(Text)
    opted_out: Mapped[bool] = mapped_column(default=False)
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opt_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Conversation(Model):
    """One text conversation (a case): menus, queue, the counselor who took it, its close.

    ``state``: language → need → queued ⇄ offered → active → closed. The tag staff see is
    ``#<id>``. Assignment is one conditional UPDATE, so two counselors cannot both take it.
    """

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    texter_id: Mapped[int] = mapped_column(ForeignKey("texters.id", ondelete="CASCADE"), index=True)
    previous_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="language", index=True)
    language: Mapped[str | None] = mapped_column(String(16))
    need: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    menu_attempts: Mapped[int] = mapped_column(Integer, default=0)
    counselor_id: Mapped[str | None] = mapped_column(String(64), index=True)
    line_number: Mapped[str | None] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_texter_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_counselor_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    backup_offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    close_reason: Mapped[str | None] = mapped_column(String(24))

    # One open conversation per texter, enforced by the database (texts arrive in bursts,
    # handled by several processes at once).
    __table_args__ = (
        Index("ix_conversations_queue_order", "state", "priority", "queued_at"),
        Index(
            "uq_conversations_open_per_texter",
            "texter_id",
            unique=True,
            postgresql_where=text("state != 'closed'"),
            sqlite_where=text("state != 'closed'"),
        ),
    )

    @property
    def tag(self) -> str:
        return str(self.id)


class ConversationOffer(Model):
    """A text conversation offered to one counselor, open until taken, passed or timed out."""

    __tablename__ = "conversation_offers"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    responder_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open|taken|passed|expired|closed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # At most one open offer per conversation, whoever runs the sweep.
    __table_args__ = (
        Index(
            "uq_conversation_offers_one_open",
            "conversation_id",
            unique=True,
            postgresql_where=text("state = 'open'"),
            sqlite_where=text("state = 'open'"),
        ),
    )


# Texts sent that did not reach their phone, or may not have gone out (``sms.delivery``).
NOT_DELIVERED_ROWS = (
    "direction = 'out' AND status IN ('claimed', 'failed', 'undelivered', 'canceled', 'partially_delivered')"
)

# Texts Twilio refused for now, waiting for the text sweep's next try (``sms.outbox``).
RETRYING_ROWS = "status = 'retrying'"


class Message(Model):
    """One text in or out. Inbound rows are unique by Twilio's ``MessageSid`` (dedupe); outbound
    rows by ``idempotency_key``, claimed before the send so a retry can never send twice."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # in | out
    party: Mapped[str] = mapped_column(String(16))  # texter | counselor | supervisor | line
    message_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    # A counselor's or unit's config id; on a supervisor's own inbound text, the supervisor's.
    responder_id: Mapped[str | None] = mapped_column(String(64))
    texter_id: Mapped[int | None] = mapped_column(ForeignKey("texters.id", ondelete="SET NULL"))
    line_number: Mapped[str | None] = mapped_column(String(20))  # the line's own number, not personal
    num_media: Mapped[int] = mapped_column(Integer, default=0)
    # Inbound only: Twilio's ``OptOutType`` (STOP, START or HELP), sent only with Advanced
    # Opt-Out, whose own keywords (a Messaging Service's "PARAR") Twilio has already applied;
    # "" for any other text through a Messaging Service (``sms.inbound._opt_out_type``).
    opt_out_type: Mapped[str | None] = mapped_column(String(8))
    # Inbound only: set once the text was fully handled; the sweep retries any left unset.
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Inbound only: when the sweep last texted the supervisors that this text could not be
    # handled (first escalation, then each alert round no supervisor got: ``sms.conversations``).
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Inbound only: the line could not answer this text (its sender had texted STOP, or is
    # blocked with their carrier), so a person must see to it (``sms.conversations``).
    person_needed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sealed_body: Mapped[str | None] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16))
    status_rank: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Inbound only, and only for a text kept in Redis through a database outage (``sms.unstored``):
    # when it arrived. Its ``created_at`` is when the clock stored it, which the sweep's retry
    # and escalation windows count from; its retention counts from this (the purge).
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # The clock's every-minute retry and escalation, and the board, look for inbound texts not
    # yet handled: a handful, among every text the line has kept. The board also lists texts
    # sent that did not reach their phone (``sms.delivery``), polling every few seconds.
    __table_args__ = (
        Index(
            "ix_messages_unhandled",
            "created_at",
            postgresql_where=text("direction = 'in' AND handled_at IS NULL"),
            sqlite_where=text("direction = 'in' AND handled_at IS NULL"),
        ),
        Index(
            "ix_messages_person_needed",
            "person_needed_at",
            postgresql_where=text("direction = 'in' AND person_needed_at IS NOT NULL"),
            sqlite_where=text("direction = 'in' AND person_needed_at IS NOT NULL"),
        ),
        Index(
            "ix_messages_not_delivered",
            "created_at",
            postgresql_where=text(NOT_DELIVERED_ROWS),
            sqlite_where=text(NOT_DELIVERED_ROWS),
        ),
        # Texts Twilio refused for now (``sms.outbox.RETRYING``), which the minute's sweep tries
        # again: a handful at most, among every text the line has kept.
        Index(
            "ix_messages_retrying",
            "id",
            postgresql_where=text(RETRYING_ROWS),
            sqlite_where=text(RETRYING_ROWS),
        ),
        # The supervisors' alerts (a few a day), which the board and the sweep look up by time.
        Index(
            "ix_messages_supervisor_alerts",
            "created_at",
            postgresql_where=text("party = 'supervisor'"),
            sqlite_where=text("party = 'supervisor'"),
        ),
    )


class ScheduledContact(Model):
    """Something the line must do later for a person (a missed-contact text, a check-in, a
    callback). It lives here first and in Redis second: a lost Redis is rebuilt from these rows.

    ``state``: pending → sending (claimed by one worker) → sent | failed | canceled; a claim
    that never finishes (a killed worker) becomes ``needs_human``, never a second send, and
    ``taken_over`` once a supervisor says a person has it.
    """

    __tablename__ = "scheduled_contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))
    dedupe_key: Mapped[str] = mapped_column(String(120), unique=True)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    callback_id: Mapped[int | None] = mapped_column(ForeignKey("callbacks.id", ondelete="CASCADE"))
    checkin_id: Mapped[int | None] = mapped_column(ForeignKey("checkins.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def job_id(self) -> str:
        return f"contact-{self.id}"


class Callback(Model):
    """A person's request to be called back instead of holding (a key on hold, or ``CALL`` by text).

    ``state``: waiting (searching for a counselor) → calling (one accepted; the person's phone
    rings) → connected; or → retry_wait (no answer; the next attempt is a scheduled contact)
    → … → gave_up (texted how to reach us) / canceled. ``queue_since`` is the person's place in
    the queue: when they first started waiting, so asking for a callback never costs it.
    Its transfers (one per attempt) hang on ``call_id``; a text-born callback gets its own Call row.
    """

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(120), unique=True)
    origin: Mapped[str] = mapped_column(String(8))  # call | text | checkin (a "2, I'd like to talk")
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    language: Mapped[str] = mapped_column(String(16))
    need: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="waiting", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queue_since: Mapped[datetime] = mapped_column(UTCDateTime)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # first asked (metrics)
    # Asked again while it was still to be made (the one callback reused): the latest promise,
    # which the give-up and "reached since" clocks count from (``promised_since``).
    promised_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(32))

    @hybrid_property
    def promised_since(self) -> datetime:
        """When the person was last promised this callback (in a query too)."""
        return self.promised_at or self.requested_at

    @promised_since.inplace.expression
    @classmethod
    def _promised_since_expression(cls) -> ColumnElement[datetime]:
        return func.coalesce(cls.promised_at, cls.requested_at)


class CheckIn(Model):
    """A follow-up check-in the person agreed to, at the end of a call or a text conversation.

    ``state``: asked → consented (scheduled) → sent → second_sent → flagged (no reply: a
    supervisor is told), or → answered (``reply``: ok | talk | text), declined, opted_out.
    ``texter_id`` is whom to text: their sealed number and their STOP status live there.
    """

    __tablename__ = "checkins"

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(120), unique=True)  # call:<id> | text:<id>
    origin: Mapped[str] = mapped_column(String(8))  # call | text
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    texter_id: Mapped[int | None] = mapped_column(ForeignKey("texters.id", ondelete="CASCADE"), index=True)
    language: Mapped[str] = mapped_column(String(16))
    need: Mapped[str | None] = mapped_column(String(64))
    line_number: Mapped[str | None] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(16), default="asked", index=True)
    asked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    consented_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    second_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reply: Mapped[str | None] = mapped_column(String(8))
    sealed_reply: Mapped[str | None] = mapped_column(Text)
    flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    flag_reason: Mapped[str | None] = mapped_column(String(32))


class SurveyResponse(Model):
    """A one-question rating after a consented contact. Anonymous once answered or expired:
    ``texter_id`` only links the question to its asker while an answer is awaited."""

    __tablename__ = "survey_responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(120), unique=True)
    origin: Mapped[str] = mapped_column(String(8))
    need: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(16))
    texter_id: Mapped[int | None] = mapped_column(ForeignKey("texters.id", ondelete="SET NULL"), index=True)
    asked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rating: Mapped[int | None] = mapped_column(Integer)


class MetricFact(Model):
    """The metrics rollup (``metrics.rollup``): one narrow row per contact (a call or a text
    conversation), callback request, agreed check-in or survey rating, derived from the event
    log and rows so a year of a busy line is aggregated in SQL, not in Python.

    Aggregates only: no number, no words, no hash. ``source_id`` names the row it was derived
    from (a call, conversation, callback, check-in or survey id) so a change is written over
    the same fact; it has no foreign key, so a purge or a deletion never removes a fact.
    ``local_*`` are in the line's time zone (``metric_rollup_state.timezone``).
    """

    __tablename__ = "metric_facts"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(12))  # call | conversation | callback | checkin | survey
    source_id: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UTCDateTime)  # started, requested, due or answered
    local_day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD
    local_hour: Mapped[int] = mapped_column(Integer)
    local_weekday: Mapped[int] = mapped_column(Integer)  # 0 = Monday
    language: Mapped[str | None] = mapped_column(String(16))
    need: Mapped[str | None] = mapped_column(String(64))
    offered: Mapped[bool] = mapped_column(default=False)
    outcome: Mapped[str] = mapped_column(String(12))
    answered_by: Mapped[str | None] = mapped_column(String(16))
    speed_to_answer_seconds: Mapped[float | None] = mapped_column()
    waited_seconds: Mapped[float | None] = mapped_column()
    rollovers: Mapped[int] = mapped_column(Integer, default=0)
    co_responder_involved: Mapped[bool] = mapped_column(default=False)
    first_response_seconds: Mapped[float | None] = mapped_column()
    seconds_to_callback: Mapped[float | None] = mapped_column()
    sent: Mapped[bool] = mapped_column(default=False)
    reached: Mapped[bool] = mapped_column(default=False)
    escalated: Mapped[bool] = mapped_column(default=False)
    rating: Mapped[int | None] = mapped_column(Integer)
    # False while its source may still change without a new event (an open text conversation).
    settled: Mapped[bool] = mapped_column(default=True)

    __table_args__ = (
        UniqueConstraint("source", "source_id"),
        Index("ix_metric_facts_source_at", "source", "at"),
        Index("ix_metric_facts_source_settled", "source", "settled"),
    )


class MetricRollupState(Model):
    """The rollup's progress (one row, id 1): the line's time zone it was built in, a lease
    (one refresh at a time), and per source the checkpoints and the pass in progress."""

    __tablename__ = "metric_rollup_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    timezone: Mapped[str | None] = mapped_column(String(64))
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    marks: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TwilioRecord(Model):
    """A record Twilio keeps of a contact whose personal data the line has purged: a call (the
    caller's, a responder's leg, a callback's) or a text, in or out. Twilio's copy holds the
    number (and a text's body) until the line deletes it (``workers.twilio_records``).

    ``kind`` texts: the texts between one of the line's numbers and a texter's, sent before
    ``sent_before``, found by listing them at Twilio (the replies a webhook's TwiML carried,
    whose SIDs the line never learns); ``sid`` is then the row's own key, not a SID. The
    texter's number is kept sealed (as numbers are at rest) only until the row goes.

    Noted by the purge in its own transaction, so nothing is deleted at Twilio before the line's
    own copy is gone. ``state``: pending (to delete from ``due_at``) → deleting (claimed by one
    run until ``due_at``, when an unfinished claim lapses) → the row itself is removed, SID and
    all, once Twilio says the record is gone (204, or 404: already gone).
    """

    __tablename__ = "twilio_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # call | message | texts
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(12), default="pending")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    claim: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Why the last try failed: Twilio's error code or the exception's class (never its message,
    # which may quote a number).
    last_error: Mapped[str | None] = mapped_column(String(40))
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Kind texts only: the texter's number (sealed), the line's own, and the purge's cutoff.
    sealed_number: Mapped[str | None] = mapped_column(Text)
    line_number: Mapped[str | None] = mapped_column(String(20))
    sent_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
