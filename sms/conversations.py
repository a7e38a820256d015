"""Text conversations: open, queue, offer, take, pass, close, and the timed sweep.

Every state change is a conditional UPDATE (one winner); every text sent has a key (once).
"""

from __future__ import annotations

import logging
import re
import statistics
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import ColumnElement, Insert, Select, Update, and_, bindparam, case, func, or_, select, update

import line_queue
from crisisline import events
from crisisline.background import start_soon
from crisisline.db import commit_keeping_loaded, constant, db, hold_lock, insert_ignoring_duplicates, inserted_row
from crisisline.models import Conversation, ConversationOffer, Message, ResponderState, Texter
from line_queue.responders import ensure_responder_state, expire_offer, is_closed, still_rung
from routing.document import Responder, RoutingDocument
from routing.store import active_routing
from sms import delivery, outbox

log = logging.getLogger(__name__)
OPEN_STATES = ("language", "need", "queued", "offered", "active")
WAITING_STATES = ("queued", "offered")
DEFAULT_WAIT_SECONDS = 180


def now() -> datetime:
    return datetime.now(UTC)


def texter_number(texter: Texter) -> str:
    return outbox.vault().open(texter.sealed_number or "", context="phone")


def find_or_create_texter(number: str, number_hash: str) -> Texter:
    """The texter with this number (looked up by its keyed hash), created and committed once."""
    known = {"number_hash": number_hash}
    texter = db.session.scalars(_TEXTER_BY_HASH, known).first()
    if texter is None:
        values = {
            "number_hash": number_hash,
            "sealed_number": outbox.vault().seal(number, context="phone"),
            "opted_out": False,
            "created_at": now(),
        }
        created = inserted_row(Texter, values)
        texter = created or db.session.scalars(_TEXTER_BY_HASH, known).one()  # or a concurrent first text's
    elif texter.sealed_number is None:
        # Someone who sent STOP keeps their row past the purge (so STOP holds) but not their
        # number; they are writing again, so the line needs it to answer them.
        texter.sealed_number = outbox.vault().seal(number, context="phone")
    commit_keeping_loaded()
    return texter


def open_conversation(texter: Texter) -> Conversation | None:
    return db.session.scalars(_OPEN_CONVERSATION, {"texter": texter.id}).first()


# Every text runs these: built once (``crisisline.db``, "Statements built once").
_TEXTER_BY_HASH = select(Texter).where(Texter.number_hash == bindparam("number_hash"))
_OPEN_CONVERSATION = (
    select(Conversation)
    .where(Conversation.texter_id == bindparam("texter"), Conversation.state.in_(OPEN_STATES))
    .order_by(Conversation.id.desc())
)


def open_or_start_conversation(texter: Texter, line_number: str | None) -> Conversation:
    """The texter's open conversation, or a new one. Two processes handling two texts of one
    burst cannot open two: a unique index allows one open conversation per texter."""
    return open_conversation(texter) or start_conversation(texter, line_number)


def start_conversation(
    texter: Texter, line_number: str | None, *, queued_as: Mapping[str, object] | None = None,
    with_text: int | None = None,
) -> Conversation:  # fmt: skip
    """A new conversation for a texter who had none open a moment ago (or the one a concurrent
    text of theirs opened meanwhile: the unique index lets one insert through).

    ``queued_as``: already sorted (language, need, priority), so it starts in the queue, never
    at the menus (a check-in's answer: ``followups``). ``with_text``: the id of their inbound
    text that opened it, linked in the same transaction (never a conversation without it)."""
    moment = now()
    values: dict[str, object] = {
        "texter_id": texter.id,
        "previous_of": texter.id,
        "state": "language",
        "line_number": line_number,
        "started_at": moment,
        "last_activity_at": moment,
        "last_texter_at": moment,  # a texter's text starts every conversation
        "priority": 0,
        "menu_attempts": 0,
    }
    if queued_as is not None:
        values.update(queued_as, state="queued", queued_at=moment)
    dialect = db.session.get_bind().dialect.name
    statement = _new_conversation(dialect, tuple(sorted(values)))
    conversation = None
    for _ in range(3):
        created = db.session.scalars(statement, values).first()
        # Or the one a concurrent text (or START) opened: confirmed open by a conditional
        # UPDATE that locks it until this commits. It may have closed since the insert met
        # it (START's ``close_unused``, an END): then a new one is inserted.
        conversation = created or still_open(open_conversation(texter))
        if conversation is not None:
            break
    if conversation is not None and with_text is not None:
        db.session.execute(update(Message).where(Message.id == with_text).values(conversation_id=conversation.id))
    commit_keeping_loaded()
    assert conversation is not None
    return conversation


def _touched_at(conversation: Conversation) -> datetime:
    """The ``last_activity_at`` a text joining this conversation sets: now, and never the value
    it holds (a clock behind another process's), so ``close_unused`` sees the row changed."""
    return max(now(), conversation.last_activity_at + timedelta(microseconds=1))


def still_open(conversation: Conversation | None) -> Conversation | None:
    """``conversation`` as it is now, if it is still open: a text of theirs is joining it
    (``last_activity_at``, ``last_texter_at``); None if it closed since it was read. The row,
    locked until the commit, comes back from its UPDATE."""
    if conversation is None:
        return None
    return db.session.scalars(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state.in_(OPEN_STATES))
        .values(last_activity_at=_touched_at(conversation), last_texter_at=now())
        .returning(Conversation)
        .execution_options(populate_existing=True)
    ).one_or_none()


@cache
def _new_conversation(dialect: str, keys: tuple[str, ...]) -> Insert:
    """``start_conversation``'s INSERT, built once per shape (every new texter runs it): each
    value bound under its column's name, and ``previous_id``, their newest conversation before
    this one, read in the same statement (bound as ``previous_of``, the texter's id)."""
    previous = select(func.max(Conversation.id)).where(Conversation.texter_id == bindparam("previous_of"))
    columns: dict[str, object] = {key: bindparam(key) for key in keys if key != "previous_of"}
    columns["previous_id"] = previous.scalar_subquery()
    # "orm": the returned row is loaded as a Conversation (the mode a params dict would pick is "bulk").
    return (
        insert_ignoring_duplicates(Conversation, columns).returning(Conversation).execution_options(dml_strategy="orm")
    )


def text_key(conversation: Conversation, key: str) -> str:
    """The idempotency key of a text this conversation sends (one per ``key``)."""
    return f"c{conversation.id}:{key}"


def to_texter(conversation: Conversation, key: str, body: str) -> bool:
    texter = db.session.get(Texter, conversation.texter_id)
    if texter is None or not conversation.line_number:
        return False
    return outbox.send_text(
        key=text_key(conversation, key), to_number=texter_number(texter), from_number=conversation.line_number,
        body=body, party="texter", conversation_id=conversation.id, texter=texter, retry_refused=True,
    )  # fmt: skip


def to_counselor(
    conversation: Conversation, responder: Responder, key: str, body: str, *, texters_words: bool = False
) -> bool:
    """``texters_words``: the text carries what the texter wrote, so it goes over REST, never
    in the counselor's own webhook's answer (``outbox.send_text(in_twiml=False)``): its SID is
    kept, and Twilio's copy is deleted by it after the purge."""
    return outbox.send_text(
        key=text_key(conversation, key), to_number=responder.phone,
        from_number=conversation.line_number or "", body=body, party="counselor",
        conversation_id=conversation.id, responder_id=responder.id, retry_refused=True,
        in_twiml=not texters_words,
    )  # fmt: skip


def relay_to_counselor(
    conversation: Conversation, responder: Responder, document: RoutingDocument, message_id: int, body: str,
    *, pictures: int = 0,
) -> bool:  # fmt: skip
    """A texter's words (their inbound text ``message_id``) to the counselor with them, tagged;
    one key per text and counselor, so live relays, the backlog and retries never send it
    twice, and a counselor taking a passed or requeued conversation still gets it all. A
    picture is never passed on (the line keeps none), but the counselor is told one came."""
    words = body.strip()
    if pictures:
        note = document.staff_prompt("sms_picture", tag=conversation.tag)
        words = f"{words}\n{note}" if words else note
    if not words:
        return False
    prompt = document.staff_prompt("sms_relay", tag=conversation.tag, body=words)
    return to_counselor(conversation, responder, f"relay:{message_id}:{responder.id}", prompt, texters_words=True)


def relay_or_hand_back(
    conversation: Conversation, responder: Responder, document: RoutingDocument, message_id: int, body: str,
    *, pictures: int = 0,
) -> bool:  # fmt: skip
    """A texter's new words to the counselor holding their conversation, unless that
    counselor's console account was closed: then the conversation goes back to the queue as
    their PASS would, and the next counselor to take it gets these words with the backlog.
    The closing hands conversations back itself; this covers a text handled while it did, or
    a closing whose hand-back never ran. One small read per relay, never on a first text."""
    if is_closed(responder.id):
        pass_back(conversation, responder, document)
        return False
    return relay_to_counselor(conversation, responder, document, message_id, body, pictures=pictures)


def estimate_wait_minutes(conversation: Conversation, document: RoutingDocument) -> int:
    """An honest guess: recent time-to-answer of texts, times the texters ahead in line plus one."""
    recent = db.session.execute(
        select(Conversation.queued_at, Conversation.assigned_at)
        .where(Conversation.assigned_at.is_not(None), Conversation.queued_at.is_not(None))
        .order_by(Conversation.assigned_at.desc())
        .limit(20)
    ).all()
    waits = [(assigned - queued).total_seconds() for queued, assigned in recent if assigned and queued]
    typical = statistics.median(waits) if waits else DEFAULT_WAIT_SECONDS
    place = line_queue.position(
        document, "text", conversation.priority, conversation.queued_at or now(), conversation.id
    )
    return max(1, round(typical * place / 60))


def need_values(need: str, priority: int) -> dict[str, object]:
    """The chosen need; the priority only ever rises (risk words in another text of theirs,
    handled side by side, may have raised it: compared in the database, not here)."""
    return {"need": need, "priority": case((Conversation.priority > priority, Conversation.priority), else_=priority)}


def set_need(conversation: Conversation, need: str, priority: int) -> None:
    db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id)
        .values(need_values(need, priority))
        .execution_options(synchronize_session=False)
    )
    commit_keeping_loaded()
    db.session.expire(conversation, ["need", "priority"])  # read again only if used


def queue(conversation: Conversation, document: RoutingDocument, *, welcome: str = "",
          need: tuple[str, int] | None = None, language_code: str | None = None) -> None:  # fmt: skip
    """Put a sorted conversation in the one queue, tell the texter the wait; the queue offers
    it to a free counselor at once if it is first in line for one.

    ``welcome``: the line's first words to a new texter, sent in the same text as the wait
    (two texts may arrive in either order). The wait is told once per conversation, so when
    another text of theirs queued it first, that text's handling tells them, not this one.
    ``need``: (need, priority) chosen by the texter, and ``language_code``, their language, stored
    in the same statement (so neither overwrites what another text that queued them chose)."""
    bound: dict[str, object] = {"conversation": conversation.id, "new_queued_at": now()}
    if need:
        bound.update(new_need=need[0], new_priority=need[1])
    if language_code:
        bound["new_language"] = language_code
    statement = _queue_statement(with_need=bool(need), with_language=bool(language_code))
    moved = db.session.execute(statement, bound).rowcount  # type: ignore[attr-defined]
    commit_keeping_loaded()  # the conversation is refreshed below, after the queue's pass
    if not moved:
        if need:  # another text of theirs queued it meanwhile: their choice still counts
            set_need(conversation, *need)
        db.session.refresh(conversation)
        return
    line_queue.fill_soon(document, joined="text")
    db.session.refresh(conversation)
    wait = wait_text(conversation, document)
    # Under the wait's own key, never the menu's ("welcome"): a menu sent for another first
    # text of theirs must not stop the wait going out. The welcome may then come twice.
    to_texter(conversation, "queued", f"{welcome}\n\n{wait}" if welcome else wait)


def wait_text(conversation: Conversation, document: RoutingDocument) -> str:
    """What a texter just queued is told: an honest wait; or, when no counselor on shift could
    ever take them (nobody on call with their need and language, all paused, the line down,
    a need meant for the backup line), the backup line's text at once, not a wait that would
    never end (the sweep would say it only after ``max_wait_seconds``). They stay in line for
    whoever comes on shift."""
    language = document.language(conversation.language)
    if not anyone_can_text(conversation, document):
        claim_backup_offer(conversation)
        return language.text("backup")
    key = "queued" if conversation.state in ("offered", "active") else "nobody_free"
    return language.text(key, minutes=estimate_wait_minutes(conversation, document))


def anyone_can_text(conversation: Conversation, document: RoutingDocument) -> bool:
    """Is a counselor on shift, not paused, who could take this texter, even if busy now?"""
    language = conversation.language or document.menu.default_language
    need = conversation.need or document.menu.default_need
    return line_queue.anyone_can_take(document, language, need, channel="text")


def claim_backup_offer(conversation: Conversation) -> bool:
    """Note, once, that this texter is being told of the backup line (committed): True for the
    one who should tell them."""
    claimed = db.session.execute(
        update(Conversation).where(Conversation.id == conversation.id, Conversation.backup_offered_at.is_(None))
        .values(backup_offered_at=now())
    ).rowcount  # type: ignore[attr-defined]  # fmt: skip
    commit_keeping_loaded()
    return bool(claimed)


@cache
def _queue_statement(*, with_need: bool, with_language: bool) -> Update:
    """``queue``'s UPDATE, built once per shape (every text that sorts a conversation runs it).
    The priority only ever rises, as in ``need_values``: compared in the database."""
    values: dict[str, object] = {"state": "queued", "queued_at": bindparam("new_queued_at")}
    if with_need:
        chosen: Any = bindparam("new_priority")
        values.update(need=bindparam("new_need"),
                      priority=case((Conversation.priority > chosen, Conversation.priority), else_=chosen))  # fmt: skip
    if with_language:
        values.update(language=bindparam("new_language"), menu_attempts=0)
    return (
        update(Conversation)
        .where(Conversation.id == bindparam("conversation"), Conversation.state.in_(("language", "need")))
        .values(values)
        .execution_options(synchronize_session=False)
    )


# A wait told late (below) is told only this long after the queueing, so it never races the
# handling that queued the conversation and is about to tell the wait (with its welcome).
WAIT_TOLD_LATE_AFTER = timedelta(seconds=10)


def tell_wait_if_never_told(conversation: Conversation, document: RoutingDocument) -> bool:
    """A texter writing while waiting who was never told the wait hears it now, once (with
    the welcome if that never went out either). So it is when the process handling the text
    that queued them died between the queueing and the telling (the clock's retry of that
    text comes here). Whoever queues a conversation with other words than the wait sends them
    under the same key (``queued``: a check-in's answer does). True if sent."""
    queued_at = conversation.queued_at
    if queued_at is None or queued_at > now() - WAIT_TOLD_LATE_AFTER:
        return False
    wait_key, welcome_key = text_key(conversation, "queued"), text_key(conversation, "welcome")
    sent = set(
        db.session.scalars(select(Message.idempotency_key).where(Message.idempotency_key.in_((wait_key, welcome_key))))
    )
    if wait_key in sent:
        return False
    language = document.language(conversation.language)
    wait = wait_text(conversation, document)
    return to_texter(conversation, "queued", wait if welcome_key in sent else f"{language.text('welcome')}\n\n{wait}")


# A waiting texter who writes again is answered at most this often: a burst of "hello?" gets
# one reply, and someone still writing minutes later hears again that they are not forgotten.
STILL_WAITING_EVERY = timedelta(minutes=2)


def tell_still_waiting(conversation: Conversation, document: RoutingDocument) -> bool:
    """A texter in line who writes again ("hello?", "is anyone there") is told their words are
    kept for the counselor and they are still in line; not within ``STILL_WAITING_EVERY`` of the
    last text the line sent them (the wait just told, the last such reply), nor once they are
    no longer waiting (a counselor took them meanwhile). Keyed by that last text: texts handled
    side by side, in two processes, read the same one and send one reply. A config without the
    text (written before it) sends nothing. True if sent."""
    language = document.language(conversation.language)
    queued_at, moment = conversation.queued_at, now()
    if "still_waiting" not in language.sms or queued_at is None or queued_at > moment - WAIT_TOLD_LATE_AFTER:
        return False  # the handling that queued them may still be telling the wait
    last_told = db.session.execute(_LAST_TOLD_WHILE_WAITING, {"conversation": conversation.id}).first()
    if last_told is None or last_told.created_at > moment - STILL_WAITING_EVERY:
        return False
    return to_texter(conversation, f"still-waiting:after:{last_told.id}", language.text("still_waiting"))


# The last text the line sent a conversation's texter, while the conversation still waits.
_LAST_TOLD_WHILE_WAITING = (
    select(Message.id, Message.created_at)
    .join(Conversation, Conversation.id == Message.conversation_id)
    .where(
        Message.conversation_id == bindparam("conversation"), Message.direction == "out",
        Message.party == "texter", Conversation.state.in_(WAITING_STATES),
    )
    .order_by(Message.id.desc())
    .limit(1)
)  # fmt: skip


def counselor_load(responder_id: str) -> int:
    return (
        db.session.scalar(
            select(func.count(Conversation.id)).where(
                Conversation.counselor_id == responder_id, Conversation.state == "active"
            )
        )
        or 0
    )


@line_queue.offers_for("text")
def offer_conversation(conversation_id: int, counselors: Sequence[Responder], document: RoutingDocument) -> int:
    """The queue chose ``counselors[0]`` for this waiting conversation: offer it by text.

    The queued → offered UPDATE is the claim: of two processes offering at once, one offers.
    The claim, the offer and the counselor's stamp commit together: an "offered" conversation
    always has the offer whose expiry hands it back (a crash between them left it offered to
    nobody, for good).

    The stamp is taken only while the counselor is not paused: the queue chose them from a
    read made earlier, and a pause (their ``OFF``, the desk's switch) that committed since
    would otherwise leave the texter on an offer nobody will read until it expires. Then the
    claim is undone in the same transaction (the conversation stays queued, nothing is sent)
    and 0 is returned: the queue's next pass offers it to someone free. A pause committed
    after the stamp waits for this commit and then hands the offer on (``hand_on_offers``).
    """
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None or not counselors:
        return 0
    claimed = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state == "queued")
        .values(state="offered")
    ).rowcount  # type: ignore[attr-defined]
    if not claimed:
        db.session.commit()
        return 0
    counselor = counselors[0]
    # Stamp the offer on the responder, so offers rotate (least recently offered first): as
    # a call's claim does, only while they are not paused (an account closed is paused too).
    ensure_responder_state(counselor.id)
    stamped = db.session.execute(
        update(ResponderState)
        .where(ResponderState.responder_id == counselor.id, ResponderState.paused.is_(False))
        .values(last_offered_at=now())
    ).rowcount  # type: ignore[attr-defined]
    if not stamped:
        db.session.execute(
            update(Conversation)
            .where(Conversation.id == conversation.id, Conversation.state == "offered")
            .values(state="queued")
        )
        db.session.commit()
        return 0
    offer = ConversationOffer(
        conversation_id=conversation.id, responder_id=counselor.id, state="open", created_at=now(),
        expires_at=now() + timedelta(seconds=document.sms.offer_timeout_seconds),
    )  # fmt: skip
    db.session.add(offer)
    db.session.commit()
    db.session.refresh(conversation)
    need = document.need(conversation.need) or document.need(document.menu.default_need) or document.needs[-1]
    language = document.language(conversation.language)
    waited = max(1, round((now() - (conversation.queued_at or now())).total_seconds() / 60))
    label = need.labels.get(document.menu.default_language, need.key)
    to_counselor(
        conversation, counselor, f"offer:{offer.id}",
        document.staff_prompt("sms_offer", tag=conversation.tag, language=language.staff_name,
                              need=label, wait=f"{waited} min"),
    )  # fmt: skip
    return 1


def take(conversation: Conversation, responder: Responder, document: RoutingDocument) -> bool:
    """A counselor takes a waiting conversation: exactly one can (conditional UPDATE), and never
    one whose console account was closed (``line_queue.responders.stop_ringing``).

    Theirs already (their YES handled again after a failure part way, or sent twice): True,
    and the backlog is relayed again, which sends only what did not go out (the same keys)."""
    if conversation.state == "active" and conversation.counselor_id == responder.id:
        relay_backlog(conversation, responder)
        return True
    if responder.kind != "counselor":
        return False
    # Her load is read and raised under her lock: two "take"s at once (two tabs, a text and
    # the page) cannot both pass the limit on a count read before the other's commit.
    hold_lock(f"counselor-load:{responder.id}")
    if counselor_load(responder.id) >= document.sms.max_conversations_per_counselor:
        db.session.commit()  # releases the lock
        return False
    # Never a responder whose console account was closed (their phone may still text "YES 12"):
    # checked in the claim itself, so it costs no statement and a closing cannot slip between.
    won = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state.in_(WAITING_STATES), still_rung(responder.id))
        .values(state="active", counselor_id=responder.id, assigned_at=now(), last_activity_at=now())
    ).rowcount  # type: ignore[attr-defined]
    if won:
        db.session.execute(
            update(ConversationOffer)
            .where(ConversationOffer.conversation_id == conversation.id, ConversationOffer.state == "open")
            .values(state="closed", decided_at=now())
        )
        db.session.execute(
            update(ConversationOffer)
            .where(ConversationOffer.conversation_id == conversation.id,
                   ConversationOffer.responder_id == responder.id)
            .values(state="taken")
        )  # fmt: skip
    db.session.commit()
    if won:
        if document.queue.channels == "shared":
            # On one shared line her open text offer kept her phone from ringing; now that it
            # is taken she may take a call too (up to her conversation limit).
            events.note_responder_freed(responder.id)
        db.session.refresh(conversation)
        relay_backlog(conversation, responder)
    return bool(won)


def relay_backlog(conversation: Conversation, responder: Responder) -> None:
    """Everything the texter wrote before being taken (their first words included), to the
    counselor who took them, in order. Each uses the same key as a live relay of that text,
    so nothing is ever sent twice (a counselor taking a passed conversation sees it all)."""
    active = active_routing()
    if active is None:
        return
    backlog = db.session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation.id, Message.direction == "in", Message.party == "texter")
        .order_by(Message.id)
    ).all()
    for message in backlog:
        body = outbox.vault().open(message.sealed_body, context=outbox.BODY_CONTEXT) if message.sealed_body else ""
        relay_to_counselor(conversation, responder, active.document, message.id, body, pictures=message.num_media)


def pass_back(conversation: Conversation, responder: Responder, document: RoutingDocument) -> bool:
    """The assigned counselor hands the conversation back; it is offered to someone else (and
    to them again only after the queue's re-offer cooldown)."""
    moved = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state == "active",
               Conversation.counselor_id == responder.id)
        .values(state="queued", counselor_id=None, assigned_at=None)
    ).rowcount  # type: ignore[attr-defined]  # fmt: skip
    if moved:
        db.session.execute(
            update(ConversationOffer)
            .where(ConversationOffer.conversation_id == conversation.id, ConversationOffer.responder_id == responder.id,
                   ConversationOffer.state == "taken")
            .values(state="passed", decided_at=now())
        )  # fmt: skip
        events.note_responder_freed(responder.id)
    db.session.commit()
    if moved:
        line_queue.fill_soon(document)
    return bool(moved)


@outbox.relay_to_texter_failed.connect
def _tell_the_counselor_their_words_did_not_arrive(
    message_id: int, *, conversation_id: int, error_code: int | None, **_: object
) -> None:
    """A counselor's words to their texter were refused or not delivered (a carrier filter,
    their phone off): the counselor is told once, with why, and may say it another way. A
    texter's STOP (21610) is told by the conversation's close instead."""
    conversation = db.session.get(Conversation, conversation_id)
    message = db.session.get(Message, message_id)
    active = active_routing()
    if error_code == outbox.OPTED_OUT or conversation is None or message is None or active is None:
        return
    db.session.refresh(conversation)
    if (
        not (conversation.state == "active" or ended_by_its_counselor(conversation))
        or conversation.assigned_at is None
        or message.created_at < conversation.assigned_at
    ):
        return  # closed otherwise, or words from an earlier counselor's stint
    responder = active.document.responder(conversation.counselor_id or "")
    if responder is None:
        return
    reason = delivery.FAILURE_REASONS.get(error_code or 0) or "Twilio could not deliver it"
    note = active.document.staff_prompt("sms_not_delivered", tag=conversation.tag, reason=reason)
    to_counselor(conversation, responder, f"not-delivered:{message_id}", note)


def reopen_closed_for(conversation: Conversation, document: RoutingDocument, reason: str, state_before: str) -> bool:
    """Open again a conversation this handling closed for ``reason`` when what it closed it for
    then failed (a callback not stored): as it was, a waiting one back in line (the offers the
    close ended are made again by the queue). True if reopened (committed)."""
    state = "queued" if state_before in WAITING_STATES else state_before
    reopened = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state == "closed", Conversation.close_reason == reason)
        .values(state=state, closed_at=None, close_reason=None)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if reopened and state == "queued":
        line_queue.fill_soon(document)
    return bool(reopened)


def close(
    conversation: Conversation, document: RoutingDocument, reason: str, *, tell_texter: str | None,
    quiet_since: datetime | None = None, holder: str | None = None, unless_texter_unhandled: bool = False,
    unless_taken: bool = False,
) -> bool:  # fmt: skip
    """Close once; tell the texter (``tell_texter`` is a prompt key) and the counselor.

    ``quiet_since``: close only if nobody has written since then (an idle close read before a
    text arrived must not close the conversation that text just woke).

    ``unless_texter_unhandled``: close only if no text of the texter's is still to be handled
    (stored, its handling failed, the clock retries it): an idle close must not land between
    their words and the retry that brings them to the conversation.

    ``holder``: close only while this responder holds it (a counselor's END): checked in the
    UPDATE, so an END read before they passed it on, and another counselor took it, closes
    nothing of the new counselor's.

    ``unless_taken``: close only while no counselor has it (a texter's CALL must not close the
    conversation a counselor's YES took a moment before)."""
    closing = update(Conversation).where(Conversation.id == conversation.id, Conversation.state.in_(OPEN_STATES))
    if quiet_since is not None:
        closing = closing.where(Conversation.last_activity_at <= quiet_since)
    if holder is not None:
        closing = closing.where(Conversation.state == "active", Conversation.counselor_id == holder)
    if unless_texter_unhandled:
        closing = closing.where(~_texter_has_unhandled_text(now()))
    if unless_taken:
        closing = closing.where(Conversation.state != "active")
    closed = db.session.execute(closing.values(state="closed", closed_at=now(), close_reason=reason)).rowcount  # type: ignore[attr-defined]
    if not closed and (quiet_since is not None or holder is not None or unless_texter_unhandled or unless_taken):
        db.session.commit()
        return False  # written in since (or a text of theirs awaits its retry), or no longer theirs: still open
    holders = set(
        db.session.scalars(
            select(ConversationOffer.responder_id).where(
                ConversationOffer.conversation_id == conversation.id, ConversationOffer.state == "open"
            )
        )
    )
    db.session.execute(
        update(ConversationOffer)
        .where(ConversationOffer.conversation_id == conversation.id, ConversationOffer.state == "open")
        .values(state="closed", decided_at=now())
    )
    db.session.commit()
    if not closed:
        return False
    # Their conversation slot (or the offer they were holding) is free: the queue may offer
    # them the next texter once this unit of work is over.
    for responder_id in holders | ({conversation.counselor_id} if conversation.counselor_id else set()):
        events.note_responder_freed(responder_id)
    if tell_texter:
        to_texter(conversation, "closed", document.language(conversation.language).text(tell_texter))
    if reason == "counselor_ended":
        _ask_for_checkin(conversation, document)
    if conversation.counselor_id and reason != "counselor_ended":
        responder = document.responder(conversation.counselor_id)
        if responder:
            to_counselor(
                conversation,
                responder,
                "texter-left",
                document.staff_prompt("sms_texter_left", tag=conversation.tag),
            )
    return True


def _texter_has_unhandled_text(moment: datetime) -> ColumnElement[bool]:
    """The conversation's texter has an inbound text the clock still retries
    (``_retry_unhandled``'s window; ``ix_messages_unhandled`` finds the few)."""
    return (
        select(Message.id)
        .where(
            Message.direction == "in",
            Message.handled_at.is_(None),
            Message.created_at >= moment - GIVE_UP_AFTER,
            Message.texter_id == Conversation.texter_id,
        )
        .exists()
    )


def close_unused(conversation: Conversation) -> bool:
    """Close, quietly, a conversation opened only to carry the line's reply to START: unless a
    text of theirs joined it meanwhile (one winner: a text that read it open and links to it
    after this finds it closed, and opens a new one, as after any close). Nothing stays open to
    be idle-closed an hour later with "We have not heard from you".

    A text joining it changes the row itself (``last_activity_at``, in the UPDATE that links
    it): PostgreSQL re-checks a waiting UPDATE's WHERE on the row as committed, but a subquery
    on the messages with the snapshot it began with, which may not see the text."""
    joined = select(Message.id).where(Message.conversation_id == Conversation.id, Message.direction == "in").exists()
    closed = db.session.execute(
        update(Conversation)
        .where(
            Conversation.id == conversation.id,
            Conversation.state == "language",
            Conversation.last_activity_at == conversation.last_activity_at,
            ~joined,
        )
        .values(state="closed", closed_at=now(), close_reason="opted_in")
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    return bool(closed)


def _ask_for_checkin(conversation: Conversation, document: RoutingDocument) -> None:
    """A counselor ended this conversation: whoever reacts does now (``followups`` asks for
    consent to a check-in). A reaction's failure never affects the close."""
    try:
        events.conversation_ended_by_counselor.send(conversation, document=document)
    except Exception as error:
        log.error("a reaction to #%s ending failed: %s", conversation.id, type(error).__name__)
        db.session.rollback()


def sweep(document: RoutingDocument) -> dict[str, int]:
    """Timed work, safe to run anywhere any number of times: expired offers are re-offered,
    long waits get the backup option once, unanswered texters go back to the queue, idle
    conversations are closed with a note. One broken conversation never stops the others."""
    counts = {"retried": 0, "resent": 0, "escalated": 0, "realerted": 0, "reoffered": 0, "backup": 0, "idle_closed": 0,
              "requeued": 0, "stopped": 0, "after_stop": 0, "after_stop_realerted": 0}  # fmt: skip
    steps = (_retry_unhandled, _retry_refused, _escalate_stuck, _alert_again, _expire_offers, _offer_queued,
             _backup_option, _requeue_unanswered, _close_idle, _close_stopped, _tell_of_texts_after_stop,
             _alert_again_after_stop)  # fmt: skip
    for step in steps:
        try:
            step(document, counts)
        except Exception as error:  # class name only: exception text may hold personal data
            log.error("text sweep step %s failed: %s", step.__name__, type(error).__name__)
            db.session.rollback()
    return counts


RETRY_AFTER = timedelta(seconds=30)
GIVE_UP_AFTER = timedelta(hours=6)
# Unhandled texts retried per sweep (the next minute's sweep takes the rest).
RETRY_BATCH = 100
# A text the retries have not handled by then is a person's to deal with: the supervisors are
# told and the board lists it (for ``STUCK_LISTED_FOR``) until it is handled or taken over.
ESCALATE_AFTER = timedelta(minutes=3)
STUCK_LISTED_FOR = timedelta(hours=24)
# How a stored inbound text is handled (document, text, body). ``sms.inbound`` registers it:
# it sits above this module (it hands texts to ``sms.texting`` and ``sms.staff``, which use
# this one), so the retry below reaches it without importing upwards.
InboundHandler = Callable[[RoutingDocument, Message, str], None]
_INBOUND_HANDLERS: list[InboundHandler] = []
_Handler = TypeVar("_Handler", bound=InboundHandler)


def handles_inbound(handler: _Handler) -> _Handler:
    """Register the handler the sweep retries unhandled inbound texts with (one: a later
    registration replaces it)."""
    _INBOUND_HANDLERS[:] = [handler]
    return handler


def _retry_unhandled(document: RoutingDocument, counts: dict[str, int]) -> None:
    """Inbound texts stored but never fully handled (a crash, a dead dependency) are handled
    again: nothing a texter writes is lost. Each is retried on its own, for ``GIVE_UP_AFTER``;
    after ``ESCALATE_AFTER`` the supervisors also know (``_escalate_stuck``)."""
    if not _INBOUND_HANDLERS:
        # Loud (the sweep logs the step's failure): texts would wait unhandled otherwise.
        raise RuntimeError("no inbound text handler registered: import sms.inbound")
    handle_inbound = _INBOUND_HANDLERS[-1]
    moment = now()
    for message in db.session.scalars(
        select(Message)
        .where(
            Message.direction == "in",
            Message.handled_at.is_(None),
            Message.created_at <= moment - RETRY_AFTER,
            Message.created_at >= moment - GIVE_UP_AFTER,
        )
        # Texts already escalated (failing for minutes: a person is told) after fresh ones, so
        # a batch of always-failing texts never holds newer texts back.
        .order_by(case((Message.escalated_at.is_(None), 0), else_=1), Message.id)
        .limit(RETRY_BATCH)
    ).all():
        try:
            body = outbox.vault().open(message.sealed_body, context=outbox.BODY_CONTEXT) if message.sealed_body else ""
            handle_inbound(document, message, body)
            counts["retried"] += 1
        except Exception as error:
            log.error("retry of inbound text %s failed: %s", message.id, type(error).__name__)
            db.session.rollback()


# A conversation's text Twilio refused for now (``outbox.REFUSED_FOR_NOW``: it created nothing)
# is tried again by each minute's sweep for this long; the try after that is its last, and if
# Twilio refuses that too the text fails as any refusal does (``_requeue_unanswered``).
REFUSED_RETRIED_FOR = timedelta(minutes=5)


@outbox.texts_held_for_time.connect
def _send_held_texts_soon(conversation_id: int, **_: object) -> None:
    """Noted, and sent by one run at a time per process (``start_soon`` runs of one key never
    overlap): held texts, each a REST request to a perhaps slow Twilio, never take more than one
    of the threads that also run the queue's passes, which ring counselors for callers."""
    held: HeldTexts = current_app.extensions.setdefault("sms.held_texts", HeldTexts())
    held.note(conversation_id)
    start_soon("held-texts", partial(_send_noted_held_texts, held))


class HeldTexts:
    """The conversations with texts held for want of time in this process, not yet sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conversations: set[int] = set()

    def note(self, conversation_id: int) -> None:
        with self._lock:
            self._conversations.add(conversation_id)

    def take(self) -> int | None:
        with self._lock:
            return self._conversations.pop() if self._conversations else None


def _send_noted_held_texts(held: HeldTexts) -> None:
    while (conversation_id := held.take()) is not None:
        send_held_texts(conversation_id)


def send_held_texts(conversation_id: int) -> None:
    """A conversation's texts a webhook held for want of time (``outbox.texts_held_for_time``),
    sent now, in order, as the sweep would; any that another process is sending is left to it."""
    active = active_routing()
    if active is not None:
        _retry_refused(active.document, {"resent": 0}, conversation_id=conversation_id)


def _retry_refused(document: RoutingDocument, counts: dict[str, int], *, conversation_id: int | None = None) -> None:
    """Texts Twilio refused for now (busy, failing) are sent again, oldest first, one try each
    per sweep under their own claimed rows: a texter's words to their counselor are not lost to
    one 503. The recipient is found again as it was sent (``to_texter``, ``to_counselor``). A
    text refused again holds back the later ones to the same person, so they arrive in order.
    Also sends texts held only for order or for want of time (no error code). ``conversation_id``:
    that conversation's only."""
    moment = now()
    held_back: set[tuple[int | None, str, str | None]] = set()
    waiting = refused_texts()
    if conversation_id is not None:
        waiting = waiting.where(Message.conversation_id == conversation_id)
    for message in db.session.scalars(waiting.limit(100)).all():
        recipient = (message.conversation_id, message.party, message.responder_id)
        if recipient in held_back:
            continue
        conversation = db.session.get(Conversation, message.conversation_id) if message.conversation_id else None
        to_number, texter = _recipient_of(message, conversation, document)
        if to_number is None or conversation is None or not conversation.line_number:
            outbox.give_up_refused(message.id)
            continue
        # A text held back only for order (``outbox``: RETRYING with no error code) was never
        # refused by Twilio itself: its first try is never its last.
        last_try = message.error_code is not None and message.created_at <= moment - REFUSED_RETRIED_FOR
        outcome = outbox.retry_refused(message.id, to_number, conversation.line_number,
                                       responder_id=message.responder_id, texter=texter, last_try=last_try)  # fmt: skip
        if outcome == "sent":
            counts["resent"] += 1
        elif outcome == "unreachable":
            # Each next try would wait out the REST timeout too: the rest wait for the next sweep.
            log.error("Twilio unreachable retrying refused texts: the rest wait for the next sweep")
            return
        else:
            held_back.add(recipient)


def refused_texts() -> Select[Message]:
    """Texts Twilio refused for now, waiting for another try, oldest first. The status is
    written in, so SQLite sees that ``ix_messages_retrying`` applies (``constant``)."""
    return select(Message).where(Message.status == constant(outbox.RETRYING)).order_by(Message.id)


def _recipient_of(
    message: Message, conversation: Conversation | None, document: RoutingDocument
) -> tuple[str | None, Texter | None]:
    """(number, texter) a refused text is still for, or (None, None) if nobody now: a texter
    who has since opted out, a counselor gone from the routing, or the texter's words to a
    counselor who no longer has them (the counselor who has them now got them as backlog)."""
    if conversation is None:
        return None, None
    if message.party == "texter":
        texter = db.session.get(Texter, conversation.texter_id)
        if texter is None or texter.opted_out or not texter.sealed_number:
            return None, None
        if not _still_with_the_writer(message, conversation):
            return None, None
        return texter_number(texter), texter
    responder = document.responder(message.responder_id or "") if message.party == "counselor" else None
    if responder is None:
        return None, None
    relayed = ":relay:" in (message.idempotency_key or "")
    if relayed and (conversation.state != "active" or conversation.counselor_id != responder.id):
        return None, None
    return responder.phone, None


def _still_with_the_writer(message: Message, conversation: Conversation) -> bool:
    """A counselor's words to their texter (``c<id>:relay:<their text's id>``) are sent again
    only while that counselor still has the conversation, as when they wrote them
    (``sms.staff._relay``), or after they ended it themselves: their last words ("call 988
    tonight") still go, before the closing text, which waits behind them (``outbox``). Not
    after they passed it on (another counselor has the texter now). Any other text: True."""
    _, relayed, rest = (message.idempotency_key or "").partition(":relay:")
    if not relayed:
        return True
    written = rest.split(":", 1)[0]
    source = db.session.get(Message, int(written)) if written.isdecimal() else None
    writer = source.responder_id if source is not None else None
    holding = conversation.state == "active" or ended_by_its_counselor(conversation)
    return holding and writer is not None and conversation.counselor_id == writer


def ended_by_its_counselor(conversation: Conversation) -> bool:
    """Closed by the END of the counselor it names (``counselor_id`` stays on a closed
    conversation), and the texter has not written since: a new conversation of theirs (with
    another counselor, maybe) is not to get the last one's words."""
    if conversation.state != "closed" or conversation.close_reason != "counselor_ended":
        return False
    newer = select(Conversation.id).where(
        Conversation.texter_id == conversation.texter_id, Conversation.id > conversation.id
    )
    return db.session.scalar(newer.limit(1)) is None


STUCK_ALERT_KEY = "text-stuck"
# An alert no supervisor got (Twilio refused it, or could not be reached) is sent again this
# long after the last try, in rounds, at most this many in all: half an hour of Twilio away.
REALERT_EVERY = timedelta(minutes=5)
MAX_ALERT_ROUNDS = 6
REALERT_WINDOW = ESCALATE_AFTER + (MAX_ALERT_ROUNDS + 1) * REALERT_EVERY
# More stuck texts than this alerted by one step of one sweep (a bug that fails every text, a
# dependency down) and each supervisor gets one summary (``texts_stuck_sms``: how many, the
# first cases) instead of a text per text, which would bury the alert and cost the line. The
# board lists them all. At most this many keep the alert per text.
SUMMARY_ABOVE = 3
SUMMARY_NAMES = 3  # the cases a summary names, the oldest first
STUCK_SUMMARY_KEY = f"{STUCK_ALERT_KEY}:all"


def stuck_alert_key(message_id: int, round_number: int = 0) -> str:
    """The outbound key of a stuck text's alert in a round (0: the first), before
    ``:<supervisor id>``."""
    base = f"{STUCK_ALERT_KEY}:{message_id}"
    return base if round_number == 0 else f"{base}:again{round_number}"


def stuck_alert_keys(message_ids: Iterable[int], supervisor_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Every key the alerts of these stuck texts may have, each to its (text id, round)."""
    supervisors = list(supervisor_ids)
    return {
        f"{stuck_alert_key(message_id, number)}:{supervisor}": (message_id, number)
        for message_id in message_ids
        for number in range(MAX_ALERT_ROUNDS)
        for supervisor in supervisors
    }


def stuck_summary_key(at: datetime, round_number: int = 0) -> str:
    """The outbound key of a summary alert in a round, before ``:<supervisor id>``, about the
    stuck texts claimed together at ``at``. Each keeps ``at`` as its ``escalated_at`` until its
    next round: that is how a text finds the summary that told of it (``stuck_alerts``)."""
    return f"{STUCK_SUMMARY_KEY}:{at.astimezone(UTC):%Y%m%d%H%M%S%f}:r{round_number}"


@dataclass(frozen=True)
class StuckAlerts:
    """What the supervisors' alerts about one stuck text came to: its last round (-1: none
    yet), how many alerts were tried, and how many Twilio took."""

    last_round: int = -1
    tried: int = 0
    taken: int = 0


def stuck_alerts(messages: Sequence[Message], supervisor_ids: Iterable[str]) -> dict[int, StuckAlerts]:
    """Per stuck text, its alerts to the supervisors listed now: its own (every round), and the
    summary of the texts claimed with it in its latest round (the one its ``escalated_at``
    names). Two sweeps claiming in the same microsecond would share a summary: each text is
    still covered by an alert that went out, which points to the board."""
    supervisors = list(supervisor_ids)
    keys: dict[str, tuple[list[int], int]] = {
        key: ([message_id], number)
        for key, (message_id, number) in stuck_alert_keys((message.id for message in messages), supervisors).items()
    }
    claimed_together: dict[datetime, list[int]] = {}
    for message in messages:
        if message.escalated_at is not None:
            claimed_together.setdefault(message.escalated_at, []).append(message.id)
    for at, message_ids in claimed_together.items():
        for number in range(MAX_ALERT_ROUNDS):
            for supervisor in supervisors:
                keys[f"{stuck_summary_key(at, number)}:{supervisor}"] = (message_ids, number)
    last_round = {message.id: -1 for message in messages}
    tried = dict.fromkeys(last_round, 0)
    taken = dict.fromkeys(last_round, 0)
    if keys:
        for key, status in db.session.execute(
            select(Message.idempotency_key, Message.status).where(Message.idempotency_key.in_(keys))
        ):
            message_ids, number = keys[str(key)]
            for message_id in message_ids:
                last_round[message_id] = max(last_round[message_id], number)
                tried[message_id] += 1
                taken[message_id] += int(delivery.taken(status))
    return {message_id: StuckAlerts(last_round[message_id], tried[message_id], taken[message_id])
            for message_id in last_round}  # fmt: skip


def stuck_case(message_id: int) -> str:
    """How staff name a text that could not be handled: its id, never who sent it or what."""
    return f"T{message_id}"


# Texts the line cannot answer: their sender had texted STOP, or is blocked with their carrier
# (Twilio then refuses every text to them, 21610, until they text START). A person must see to
# them: the supervisors are told once per sender per hour, for texts marked in the last
# ``AFTER_STOP_ALERT_WINDOW`` (a clock that was down does not wake them for old ones), and the
# emergency unmask page lists the senders for ``STUCK_LISTED_FOR``, so a supervisor can call
# someone who may be at risk.
AFTER_STOP_KEY = "text-after-stop"
AFTER_STOP_ALERT_WINDOW = timedelta(minutes=10)


def needs_a_person(message_id: int) -> None:
    """The line cannot answer this inbound text: the sweep tells the supervisors. Committed."""
    db.session.execute(
        update(Message)
        .where(Message.id == message_id, Message.person_needed_at.is_(None))
        .values(person_needed_at=now())
    )
    db.session.commit()


def texts_after_stop(moment: datetime) -> Select[Message]:
    """Handled texts the line could not answer, from senders still opted out, marked in the
    last ``STUCK_LISTED_FOR``, newest first."""
    return (
        select(Message)
        .join(Texter, Texter.id == Message.texter_id)
        .where(
            Message.direction == "in",
            Message.person_needed_at >= moment - STUCK_LISTED_FOR,
            Message.handled_at.is_not(None),
            Texter.opted_out.is_(True),
            # Written since this opt-out: someone who texted START, talked, then STOP again was
            # helped; what they wrote under the earlier STOP is no one's to see to now.
            Message.person_needed_at >= Texter.opted_out_at,
        )
        .order_by(Message.person_needed_at.desc(), Message.id.desc())
    )


def latest_texts_after_stop(moment: datetime, limit: int = 200) -> list[Message]:
    """Each opted-out sender's latest text the line could not answer (one per person), the
    newest people first: what the board and the emergency unmask page list."""
    newest_per_person = (
        texts_after_stop(moment)
        .with_only_columns(func.max(Message.id))
        .group_by(Message.texter_id)
        .order_by(None)
        .order_by(func.max(Message.person_needed_at).desc())
        .limit(limit)
    )
    chosen = select(Message).where(Message.id.in_(newest_per_person.scalar_subquery()))
    latest = list(db.session.scalars(chosen))
    latest.sort(key=lambda message: (message.person_needed_at or moment, message.id), reverse=True)
    return latest


def _tell_of_texts_after_stop(document: RoutingDocument, counts: dict[str, int]) -> None:
    """Supervisors hear of the texts the line could not answer (the case only), once per
    sender per hour: the keys are claimed like every text, so two sweeps send it once. An
    alert no supervisor got is sent again (``_alert_again_after_stop``)."""
    if not document.supervisors:
        return
    moment = now()
    recent = texts_after_stop(moment).where(Message.person_needed_at >= moment - AFTER_STOP_ALERT_WINDOW)
    newest_per_hour: dict[str, Message] = {}
    for message in db.session.scalars(recent.limit(200)):
        marked = message.person_needed_at or moment
        newest_per_hour.setdefault(f"{AFTER_STOP_KEY}:{message.texter_id}:{marked:%Y%m%d%H}", message)
    for key, message in newest_per_hour.items():
        body = document.staff_prompt("text_after_stop_sms", case=stuck_case(message.id))
        counts["after_stop"] += outbox.tell_supervisors(document, key=key, body=body, from_number=_line_of(message))


# ``<AFTER_STOP_KEY>:<texter>:<hour>[:r<round>]:<supervisor>``; a long alert split in parts
# adds ``:<part>`` to its later parts' keys, which do not match (the first part counts).
_AFTER_STOP_ALERT_KEY = re.compile(
    rf"^{AFTER_STOP_KEY}:(?P<texter>\d+):(?P<hour>\d{{10}}):(?:r(?P<round>\d+):)?(?P<supervisor>[a-z][a-z0-9_-]*)$"
)


@dataclass(frozen=True)
class AfterStopAlert:
    """One supervisor's alert text about someone the line cannot text back."""

    texter_id: int
    hour: str  # the hour the text was marked, "%Y%m%d%H": one series of rounds per hour
    round: int
    supervisor: str
    status: str
    sent_at: datetime


def after_stop_alerts(since: datetime) -> list[AfterStopAlert]:
    """The alerts about people after STOP since ``since``, newest first (at most 2,000), read
    through the partial index of supervisors' texts, which are few."""
    rows = db.session.execute(
        select(Message.idempotency_key, Message.status, Message.created_at)
        .where(Message.party == "supervisor", Message.created_at >= since,
               Message.idempotency_key.like(f"{AFTER_STOP_KEY}:%"))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(2000)
    )  # fmt: skip
    alerts = []
    for key, status, sent_at in rows:
        found = _AFTER_STOP_ALERT_KEY.match(str(key))
        if found is not None:
            alerts.append(
                AfterStopAlert(int(found["texter"]), found["hour"], int(found["round"] or 0), found["supervisor"],
                               str(status), sent_at)
            )  # fmt: skip
    return alerts


def _alert_again_after_stop(document: RoutingDocument, counts: dict[str, int]) -> None:
    """People the line cannot text back about whom no supervisor got an alert (Twilio refused
    them, or could not be reached): their latest series is texted again, as stuck texts are, a
    round every ``REALERT_EVERY``, ``MAX_ALERT_ROUNDS`` in all, within ``REALERT_WINDOW``. Per
    person, not per hour: someone who wrote either side of the hour gets one series. Not once
    they text START. A round's keys are claimed like every text: two sweeps send it once, and
    one still being sent (``claimed``) is too recent to follow."""
    if not document.supervisors:
        return
    moment = now()
    by_person: dict[int, list[AfterStopAlert]] = {}
    for alert in after_stop_alerts(moment - REALERT_WINDOW):
        by_person.setdefault(alert.texter_id, []).append(alert)
    for texter_id, alerts in by_person.items():
        if any(delivery.taken(alert.status) for alert in alerts):
            continue  # a supervisor has it
        if max(alert.sent_at for alert in alerts) > moment - REALERT_EVERY:
            continue
        hour = max(alert.hour for alert in alerts)
        rounds = 1 + max(alert.round for alert in alerts if alert.hour == hour)
        if rounds >= MAX_ALERT_ROUNDS:
            continue
        still_stopped = texts_after_stop(moment).where(Message.texter_id == texter_id).limit(1)
        message = db.session.scalars(still_stopped).first()
        if message is None:
            continue  # they texted START: the line can answer them again
        body = document.staff_prompt("text_after_stop_sms", case=stuck_case(message.id))
        key = f"{AFTER_STOP_KEY}:{texter_id}:{hour}:r{rounds}"
        outbox.tell_supervisors(document, key=key, body=body, from_number=_line_of(message))
        counts["after_stop_realerted"] += 1


def _line_of(message: Message) -> str:
    """The line's number a text came in on (the configured one if not recorded): what the
    supervisors' alerts about it are sent from."""
    return message.line_number or current_app.extensions["crisisline.settings"].line_phone_number or ""


def stuck_texts(moment: datetime) -> Select[Message]:
    """Inbound texts not handled, escalated or not, from the last ``STUCK_LISTED_FOR``, oldest first."""
    return (
        select(Message)
        .where(Message.direction == "in", Message.handled_at.is_(None), Message.created_at >= moment - STUCK_LISTED_FOR)
        .order_by(Message.created_at, Message.id)
    )


def take_over_stuck(message_id: int) -> bool:
    """A person has the sender of a text the line could not handle: the text is marked handled
    (the retries stop) if it still was not. Not committed: the caller audits it in the same
    transaction. False if it was handled meanwhile (by a retry or by someone else), or is not
    one the board lists (too new to be stuck: the webhook may be handling it now)."""
    moment = now()
    taken = db.session.execute(
        update(Message)
        .where(
            Message.id == message_id,
            Message.direction == "in",
            Message.handled_at.is_(None),
            Message.created_at <= moment - RETRY_AFTER,
            Message.created_at >= moment - STUCK_LISTED_FOR,
        )
        .values(handled_at=moment)
    ).rowcount  # type: ignore[attr-defined]
    return bool(taken)


def _escalate_stuck(document: RoutingDocument, counts: dict[str, int]) -> None:
    """Texts the retries have not handled in ``ESCALATE_AFTER`` (a bug that fails every time,
    a dependency down for long): the supervisors are told once, by a text naming the case
    only, or by one summary for them all when more than ``SUMMARY_ABOVE`` are. The sender was
    already pointed to the backup line by the webhook's fail-safe reply; this puts a person on
    it. One winner per text, whoever runs the sweep: each is claimed first, then the alerts go.
    Whether each supervisor was told is on the outbound texts (keys
    ``text-stuck:<id>:<supervisor>``, or the summary's, ``stuck_summary_key``); if none was,
    ``_alert_again`` tries again in rounds, and the board shows how it went."""
    moment = now()
    waiting = stuck_texts(moment).where(Message.escalated_at.is_(None), Message.created_at <= moment - ESCALATE_AFTER)
    claimed = []
    for message in db.session.scalars(waiting.limit(100)).all():
        won = db.session.execute(
            update(Message)
            .where(Message.id == message.id, Message.escalated_at.is_(None), Message.handled_at.is_(None))
            .values(escalated_at=moment)
        ).rowcount  # type: ignore[attr-defined]
        db.session.commit()
        if won:
            claimed.append(message)
    counts["escalated"] += len(claimed)
    if not document.supervisors:
        for message in claimed:
            log.error("text %s could not be handled and no supervisor is configured to be told", message.id)
        return
    _tell_of_stuck(document, [(0, moment, claimed)])


def _tell_of_stuck(document: RoutingDocument, rounds: Sequence[tuple[int, datetime, Sequence[Message]]]) -> None:
    """Alert the supervisors of the texts one step claimed, per (round, the moment they were
    claimed at, texts): each text on its own, or, past ``SUMMARY_ABOVE`` texts in all, one
    summary per round (their texts are claimed at a moment of their own; a round of one text
    keeps its own alert, which names it)."""
    summary = sum(len(texts) for _, _, texts in rounds) > SUMMARY_ABOVE
    for round_number, at, texts in rounds:
        if summary and len(texts) > 1:
            if not _alert_summary(document, texts, at, round_number):
                log.error("%d texts from %s on could not be handled and no supervisor could be told (alert round"
                          " %d): the board lists them", len(texts), stuck_case(texts[0].id), round_number)  # fmt: skip
            continue
        for message in texts:
            if _alert_supervisors(document, message, at, round_number):
                continue
            if round_number == 0:
                log.error("text %s could not be handled and no supervisor could be told: the board lists it",
                          message.id)  # fmt: skip
            else:
                log.error("text %s: still no supervisor could be told (alert round %d)", message.id, round_number)


def _alert_supervisors(document: RoutingDocument, message: Message, moment: datetime, round_number: int) -> int:
    """Text every supervisor that ``message`` is stuck (its case only), once for this round;
    how many Twilio took."""
    minutes = max(1, int((moment - message.created_at).total_seconds() // 60))
    body = document.staff_prompt("text_stuck_sms", case=stuck_case(message.id), minutes=minutes)
    key = stuck_alert_key(message.id, round_number)
    return outbox.tell_supervisors(document, key=key, body=body, from_number=_line_of(message))


def _alert_summary(document: RoutingDocument, texts: Sequence[Message], at: datetime, round_number: int) -> int:
    """Text every supervisor once that ``texts``, claimed at ``at``, are stuck: how many, and
    the first cases (the board lists them all), once for this round; how many Twilio took."""
    cases = ", ".join(stuck_case(message.id) for message in texts[:SUMMARY_NAMES])
    body = document.staff_prompt("texts_stuck_sms", count=len(texts), cases=cases)
    key = stuck_summary_key(at, round_number)
    return outbox.tell_supervisors(document, key=key, body=body, from_number=_line_of(texts[0]))


def _alert_again(document: RoutingDocument, counts: dict[str, int]) -> None:
    """Stuck texts whose alerts reached none of the supervisors listed now (Twilio refused them,
    or could not be reached, or nobody was listed then): they are all texted again, a round
    every ``REALERT_EVERY``, ``MAX_ALERT_ROUNDS`` in all, for texts from the last
    ``REALERT_WINDOW`` only (older ones are the board's). A summary a supervisor got counts for
    every text it covered; past ``SUMMARY_ABOVE`` texts a round goes as a summary again. One
    winner per round: it moves the text's ``escalated_at`` on, conditionally, before sending,
    and a round's keys are claimed like every text. An alert left unsent may have gone out: a
    supervisor may get it twice, never not at all. The board says how it went."""
    if not document.supervisors:
        return
    moment = now()
    due = stuck_texts(moment).where(
        Message.escalated_at <= moment - REALERT_EVERY, Message.created_at >= moment - REALERT_WINDOW
    )
    messages = db.session.scalars(due.limit(100)).all()
    if not messages:
        return
    alerts = stuck_alerts(messages, (supervisor.id for supervisor in document.supervisors))
    by_round: dict[int, list[Message]] = {}
    for message in messages:
        alert = alerts[message.id]
        if alert.taken or alert.last_round + 1 >= MAX_ALERT_ROUNDS:
            continue
        by_round.setdefault(alert.last_round + 1, []).append(message)
    rounds = []
    for position, round_number in enumerate(sorted(by_round)):
        # Texts escalated together stay together (one round); texts of another round (a clock
        # that was away) get a moment of their own, which their summary is known by.
        at = moment + timedelta(microseconds=position)
        claimed = []
        for message in by_round[round_number]:
            won = db.session.execute(
                update(Message)
                .where(Message.id == message.id, Message.escalated_at <= moment - REALERT_EVERY,
                       Message.handled_at.is_(None))
                .values(escalated_at=at)
            ).rowcount  # type: ignore[attr-defined]  # fmt: skip
            db.session.commit()
            if won:  # else another sweep has this round, or a person took the text over
                claimed.append(message)
        counts["realerted"] += len(claimed)
        rounds.append((round_number, at, claimed))
    _tell_of_stuck(document, rounds)


def _expire_offers(document: RoutingDocument, counts: dict[str, int]) -> None:
    moment = now()
    for responder_id, conversation_id in db.session.execute(
        select(ConversationOffer.responder_id, ConversationOffer.conversation_id).where(
            ConversationOffer.state == "open", ConversationOffer.expires_at <= moment
        )
    ).all():
        expire_offer(responder_id, conversation_id)
        db.session.commit()
    counts["reoffered"] += line_queue.fill_soon(document)


def _offer_queued(document: RoutingDocument, counts: dict[str, int]) -> None:
    """The clock's safety net: free counselors are offered the first texters in line."""
    counts["reoffered"] += line_queue.fill_soon(document)


def _backup_option(document: RoutingDocument, counts: dict[str, int]) -> None:
    moment = now()
    for conversation in db.session.scalars(
        select(Conversation).where(
            Conversation.state.in_(WAITING_STATES),
            Conversation.backup_offered_at.is_(None),
            Conversation.queued_at <= moment - timedelta(seconds=document.sms.max_wait_seconds),
        )
    ).all():
        if claim_backup_offer(conversation):
            to_texter(conversation, "backup", document.language(conversation.language).text("backup"))
            counts["backup"] += 1


def _requeue_unanswered(document: RoutingDocument, counts: dict[str, int]) -> None:
    """A texter who wrote last and got no reply for the idle time goes back to the queue. The
    time runs from their first text since the counselor last wrote (asking "are you there?"
    again must not keep them with a counselor who has gone), and never from before the current
    counselor took them (one who took over from a silent counselor gets the whole idle time).

    Sooner, ``COUNSELOR_UNREACHABLE_FOR`` after a text to their counselor failed in a way that
    says their phone cannot get the line's texts (``UNREACHABLE_PHONE``: off, out of signal, a
    landline, their own STOP), or that Twilio kept refusing for now (busy, failing) through all
    of ``_retry_refused``'s tries, unless the counselor has written since (from the console,
    say): the texter believes someone is reading."""
    moment = now()
    before = moment - timedelta(minutes=document.sms.idle_close_minutes)
    # Refused by Twilio for now (busy, failing) and still refused after ``_retry_refused``'s
    # tries: Twilio created nothing (no SID), so the counselor never got it.
    refused = and_(Message.status == "failed", Message.message_sid.is_(None),
                   Message.error_code.in_(outbox.REFUSED_FOR_NOW))  # fmt: skip
    unreachable = (
        select(Message.id)
        .where(
            Message.conversation_id == Conversation.id, Message.party == "counselor",
            Message.responder_id == Conversation.counselor_id, or_(Message.error_code.in_(UNREACHABLE_PHONE), refused),
            Message.created_at > Conversation.assigned_at, Message.created_at <= moment - COUNSELOR_UNREACHABLE_FOR,
            or_(Conversation.last_counselor_at.is_(None), Message.created_at > Conversation.last_counselor_at),
        )
        .exists()
    )  # fmt: skip
    # Taking a conversation is no reply: only what a counselor wrote answers the texter.
    unanswered = or_(Conversation.last_counselor_at.is_(None), Message.created_at > Conversation.last_counselor_at)
    first_unanswered = (
        select(func.min(Message.created_at))
        .where(Message.conversation_id == Conversation.id, Message.direction == "in", Message.party == "texter",
               unanswered)
        .scalar_subquery()
    )  # fmt: skip
    # A text stored before the counselor wrote and handled after: timed from its handling.
    waiting_since = func.coalesce(first_unanswered, Conversation.last_texter_at)
    timed_from = case((Conversation.assigned_at > waiting_since, Conversation.assigned_at), else_=waiting_since)
    for conversation in db.session.scalars(
        select(Conversation).where(
            Conversation.state == "active",
            Conversation.last_texter_at.is_not(None),
            or_(Conversation.last_counselor_at.is_(None), Conversation.last_texter_at > Conversation.last_counselor_at),
            or_(timed_from <= before, unreachable),
        )
    ).all():
        if not texter_waits_on_us(conversation):
            continue  # the counselor wrote meanwhile
        responder = document.responder(conversation.counselor_id or "")
        if responder is None:
            requeue_orphan(conversation, document)
            counts["requeued"] += 1
        elif pass_back(conversation, responder, document):
            key = f"requeued:{conversation.last_texter_at}:{responder.id}"
            to_counselor(conversation, responder, key, document.staff_prompt("sms_requeued", tag=conversation.tag))
            counts["requeued"] += 1


# Twilio's answers that say a counselor's phone cannot get the line's texts (not a filter of
# what was said, 30007, nor Twilio busy or failing): their STOP, not a mobile or not a number,
# off or out of signal, unknown to the carrier, a landline.
UNREACHABLE_PHONE = (21610, 21211, 21614, 30003, 30005, 30006)
COUNSELOR_UNREACHABLE_FOR = timedelta(minutes=5)


def texter_waits_on_us(conversation: Conversation) -> bool:
    """The texter wrote last: nothing a counselor wrote answers them yet (taking it is no answer)."""
    texter, counselor = conversation.last_texter_at, conversation.last_counselor_at
    return texter is not None and (counselor is None or texter > counselor)


def requeue_orphan(conversation: Conversation, document: RoutingDocument) -> None:
    """The assigned counselor is no longer in the routing config: back to the queue."""
    moved = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state == "active")
        .values(state="queued", counselor_id=None, assigned_at=None)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if moved:
        line_queue.fill_soon(document)


def _close_idle(document: RoutingDocument, counts: dict[str, int]) -> None:
    """Conversations waiting on the texter (menus, or the counselor wrote last) close when idle.
    A texter waiting on us is never closed: see _requeue_unanswered and _backup_option."""
    before = now() - timedelta(minutes=document.sms.idle_close_minutes)
    for conversation in db.session.scalars(
        select(Conversation).where(
            Conversation.state.in_(("language", "need", "active")), Conversation.last_activity_at <= before
        )
    ).all():
        if conversation.state == "active" and texter_waits_on_us(conversation):
            continue  # waiting on us: ``_requeue_unanswered`` hands them on, never an idle close
        closed = close(conversation, document, "idle", tell_texter="idle_closed", quiet_since=before,
                       unless_texter_unhandled=True)  # fmt: skip
        counts["idle_closed"] += int(closed)


def _close_stopped(document: RoutingDocument, counts: dict[str, int]) -> None:
    """Texters Twilio reports as opted out (error 21610): close their threads, send nothing."""
    for conversation in db.session.scalars(
        select(Conversation)
        .join(Texter, Texter.id == Conversation.texter_id)
        .where(Conversation.state.in_(OPEN_STATES), Texter.opted_out.is_(True))
    ).all():
        counts["stopped"] += int(close(conversation, document, "stopped", tell_texter=None))
        refused = select(Message.id).where(
            Message.conversation_id == conversation.id,
            Message.direction == "out",
            Message.responder_id.is_(None),
            Message.error_code == outbox.OPTED_OUT,
        )
        if db.session.scalar(refused.limit(1)) is None:
            continue  # they texted STOP themselves (``_opt_out`` closes the thread a moment later)
        # Blocked with their carrier: the line learnt it when Twilio refused a text to them
        # (21610). Whatever they wrote last, a person must see to it.
        last = db.session.scalar(
            select(Message.id)
            .where(Message.conversation_id == conversation.id, Message.direction == "in")
            .order_by(Message.id.desc())
            .limit(1)
        )
        if last is not None:
            needs_a_person(last)
