"""Emergency unmask: a supervisor reveals a live caller's or texter's number, for imminent
risk (also for ``ENDED_CONTACT_UNMASKABLE_FOR`` after their call or conversation ended: they
may have hung up while the reason was typed), or the number of someone the board says a
person must reach (a flagged check-in, a follow-up the line could not finish), with a reason.
Every reveal is audited (who, when, which contact; the reason sealed with the Vault, never in
the entry's plain detail). The number is returned to the view once; nothing here logs or
stores it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import aliased

from callbacks.attempts import unreached_callbacks, unreached_reason
from console.audit.log import record
from console.board.live import UNFINISHED_KINDS, language_name, need_label, unfinished_contacts
from console.models import UNMASK_REASON_CONTEXT, User
from crisisline.db import db
from crisisline.models import Call, Callback, CheckIn, Conversation, Message, ScheduledContact, Texter, Transfer
from crisisline.privacy import DecryptionError, Vault
from crisisline.retention import ENDED_CONTACT_UNMASKABLE_FOR
from followups.checkins import FLAG_REASON_TEXT, FLAGGED_LISTED_FOR
from ivr.call_log import PHONE_CONTEXT
from routing.document import RoutingDocument
from sms.conversations import (
    OPEN_STATES,
    RETRY_AFTER,
    latest_texts_after_stop,
    stuck_case,
    stuck_texts,
    texts_after_stop,
)
from transfer.state import OPEN_TRANSFER_STATES

CHANNELS = ("voice", "text", "stuck", "after_stop", "checkin", "followup", "callback")
MIN_REASON = 5
MAX_REASON = 500


@dataclass(frozen=True)
class LiveContact:
    # voice | text | stuck (a text the line could not handle) | after_stop (a text it could not
    # answer: its sender had texted STOP) | checkin (flagged for a person) | followup (a
    # follow-up the line could not finish) | callback (given up without reaching its person)
    channel: str
    # transfer id (voice), conversation id (text), message id (stuck, after_stop), check-in id,
    # scheduled contact id (followup), or callback id
    id: int
    state: str
    language: str
    need: str
    since: datetime
    # voice and text: when the contact ended (listed for ``ENDED_CONTACT_UNMASKABLE_FOR`` after)
    ended_at: datetime | None = None

    @property
    def target(self) -> str:
        targets = {"voice": "call", "text": "text", "checkin": "checkin", "followup": "contact", "callback": "callback"}
        return f"{targets.get(self.channel, 'message')}:{self.id}"

    @property
    def label(self) -> str:
        labels = {"voice": f"call {self.id}", "text": f"text #{self.id}", "checkin": f"check-in C{self.id}",
                  "followup": f"follow-up {self.id}", "callback": f"callback CB{self.id}"}  # fmt: skip
        return labels.get(self.channel, f"text {stuck_case(self.id)}")


def _vault() -> Vault:
    vault: Vault = current_app.extensions["crisisline.vault"]
    return vault


def minutes_ago(moment: datetime, now: datetime) -> str:
    """ "3 minutes ago", "1 minute ago", "less than a minute ago"."""
    minutes = max(0, int((now - moment).total_seconds() // 60))
    if minutes == 0:
        return "less than a minute ago"
    return f"{minutes} minute{'s' if minutes != 1 else ''} ago"


def _ended(ended_at: datetime | None, state: str) -> str:
    return f"ended {minutes_ago(ended_at, datetime.now(UTC))}" if ended_at is not None else state


def _transfer_row(document: RoutingDocument, transfer: Transfer) -> LiveContact:
    ended_at = None if transfer.state in OPEN_TRANSFER_STATES else transfer.ended_at
    return LiveContact(
        "voice", transfer.id, _ended(ended_at, transfer.state), language_name(document, transfer.language),
        need_label(document, transfer.need), transfer.started_at, ended_at,
    )  # fmt: skip


def _conversation_row(document: RoutingDocument, conversation: Conversation) -> LiveContact:
    ended_at = None if conversation.state in OPEN_STATES else conversation.closed_at
    return LiveContact(
        "text", conversation.id, _ended(ended_at, conversation.state),
        language_name(document, conversation.language or document.menu.default_language),
        need_label(document, conversation.need or document.menu.default_need), conversation.started_at, ended_at,
    )  # fmt: skip


def _listed_transfers(moment: datetime) -> Select[Transfer]:
    """Calls the page lists: waiting or talking now, or ended within ``ENDED_CONTACT_UNMASKABLE_FOR``."""
    return select(Transfer).where(
        or_(Transfer.state.in_(OPEN_TRANSFER_STATES), Transfer.ended_at >= moment - ENDED_CONTACT_UNMASKABLE_FOR)
    )


def _listed_conversations(moment: datetime) -> Select[Conversation]:
    """Text conversations the page lists: open now, or closed within ``ENDED_CONTACT_UNMASKABLE_FOR``
    (not one that only carried the line's answer to a START: nobody reached out)."""
    return select(Conversation).where(
        or_(
            Conversation.state.in_(OPEN_STATES),
            and_(
                Conversation.closed_at >= moment - ENDED_CONTACT_UNMASKABLE_FOR,
                or_(Conversation.close_reason.is_(None), Conversation.close_reason != "opted_in"),
            ),
        )
    )


def _stuck_row(message: Message) -> LiveContact:
    unknown = "not known (the line could not handle the text)"
    return LiveContact("stuck", message.id, "could not be handled", unknown, unknown, message.created_at)


def _after_stop_row(message: Message) -> LiveContact:
    unknown = "not known (the line could not answer)"
    state = "wrote after texting STOP: the line cannot text them until they text START"
    return LiveContact("after_stop", message.id, state, unknown, unknown, message.created_at)


def _checkin_row(document: RoutingDocument, checkin: CheckIn) -> LiveContact:
    reason = FLAG_REASON_TEXT.get(checkin.flag_reason or "", checkin.flag_reason or "")
    return LiveContact(
        "checkin", checkin.id, f"check-in that needs a person: {reason}", language_name(document, checkin.language),
        need_label(document, checkin.need or document.menu.default_need), checkin.flagged_at or checkin.asked_at,
    )  # fmt: skip


def _followup_row(document: RoutingDocument, contact: ScheduledContact) -> LiveContact:
    call = db.session.get(Call, _call_id(contact))
    return LiveContact(
        "followup", contact.id, f"follow-up the line could not finish: {UNFINISHED_KINDS[contact.kind]}",
        language_name(document, (call.language if call else None) or document.menu.default_language),
        need_label(document, (call.need if call else None) or document.menu.default_need),
        contact.finished_at or contact.created_at,
    )  # fmt: skip


def _callback_row(document: RoutingDocument, callback: Callback) -> LiveContact:
    why = unreached_reason(callback.outcome)
    return LiveContact(
        "callback", callback.id, f"callback nobody reached: {why}", language_name(document, callback.language),
        need_label(document, callback.need), callback.finished_at or callback.requested_at,
    )  # fmt: skip


def _call_id(contact: ScheduledContact) -> int | None:
    """The call whose caller a follow-up is for: its own, or its callback's."""
    if contact.call_id is not None:
        return contact.call_id
    callback = db.session.get(Callback, contact.callback_id) if contact.callback_id else None
    return callback.call_id if callback else None


def _flagged_checkins(moment: datetime) -> Select[CheckIn]:
    return select(CheckIn).where(CheckIn.state == "flagged", CheckIn.flagged_at >= moment - FLAGGED_LISTED_FOR)


def _stuck_from_texters(moment: datetime) -> Select[Message]:
    """Texts the line could not handle whose sender is a texter (a counselor's number is in the routing)."""
    return stuck_texts(moment).where(Message.created_at <= moment - RETRY_AFTER, Message.texter_id.is_not(None))


def live_contacts(document: RoutingDocument) -> list[LiveContact]:
    """Everyone in contact with the line now: callers waiting or talking, open text threads, and
    texters whose text the line could not handle (they may have no thread); then the people the
    board says a person must reach (flagged check-ins, follow-ups the line could not finish)."""
    moment = datetime.now(UTC)
    # A call or conversation that ended just now is listed too, after those still on, unless
    # the same person's next one (a later round of the call, their next conversation) is.
    newer_round = aliased(Transfer)
    transfers = db.session.scalars(
        _listed_transfers(moment)
        .where(~select(newer_round.id).where(newer_round.call_id == Transfer.call_id,
                                             newer_round.id > Transfer.id).exists())
        .order_by(Transfer.ended_at.is_not(None), Transfer.started_at)
        .limit(200)
    )  # fmt: skip
    newer_conversation = aliased(Conversation)
    conversations = db.session.scalars(
        _listed_conversations(moment)
        # Listed once per texter (their newest), where a conversation opened only to carry the
        # reply to their START (closed at once, never listed itself) does not count as newer.
        .where(~select(newer_conversation.id).where(
            newer_conversation.texter_id == Conversation.texter_id, newer_conversation.id > Conversation.id,
            or_(newer_conversation.close_reason.is_(None), newer_conversation.close_reason != "opted_in"),
        ).exists())
        .order_by(Conversation.closed_at.is_not(None), Conversation.started_at)
        .limit(200)
    )  # fmt: skip
    stuck = db.session.scalars(_stuck_from_texters(moment).limit(200))
    flagged = db.session.scalars(_flagged_checkins(moment).order_by(CheckIn.flagged_at).limit(200))
    unfinished = db.session.scalars(unfinished_contacts(moment).order_by(ScheduledContact.finished_at).limit(200))
    unreached = db.session.scalars(unreached_callbacks(moment).order_by(Callback.finished_at).limit(200))
    return (
        [_transfer_row(document, t) for t in transfers]
        + [_conversation_row(document, c) for c in conversations]
        + [_stuck_row(m) for m in stuck]
        + [_after_stop_row(m) for m in latest_texts_after_stop(moment)]
        + [_checkin_row(document, c) for c in flagged]
        + [_followup_row(document, c) for c in unfinished]
        + [_callback_row(document, c) for c in unreached]
    )


def find_live(document: RoutingDocument, channel: str, contact_id: int) -> LiveContact | None:
    """The contact if the page lists it now (a call or conversation that ended within
    ``ENDED_CONTACT_UNMASKABLE_FOR`` included), else None."""
    if channel == "voice":
        transfer = db.session.scalar(_listed_transfers(datetime.now(UTC)).where(Transfer.id == contact_id))
        return _transfer_row(document, transfer) if transfer is not None else None
    if channel == "stuck":
        message = db.session.scalar(_stuck_from_texters(datetime.now(UTC)).where(Message.id == contact_id))
        return _stuck_row(message) if message is not None else None
    if channel == "after_stop":
        message = db.session.scalar(texts_after_stop(datetime.now(UTC)).where(Message.id == contact_id))
        return _after_stop_row(message) if message is not None else None
    if channel == "checkin":
        checkin = db.session.scalar(_flagged_checkins(datetime.now(UTC)).where(CheckIn.id == contact_id))
        return _checkin_row(document, checkin) if checkin is not None else None
    if channel == "followup":
        contact = db.session.scalar(unfinished_contacts(datetime.now(UTC)).where(ScheduledContact.id == contact_id))
        return _followup_row(document, contact) if contact is not None else None
    if channel == "callback":
        callback = db.session.scalar(unreached_callbacks(datetime.now(UTC)).where(Callback.id == contact_id))
        return _callback_row(document, callback) if callback is not None else None
    conversation = db.session.scalar(_listed_conversations(datetime.now(UTC)).where(Conversation.id == contact_id))
    return _conversation_row(document, conversation) if conversation is not None else None


def why_not_listed(channel: str, contact_id: int) -> str:
    """Why the page no longer lists this contact, in plain words, for the supervisor who typed
    a reason to unmask it (nothing of the person)."""
    moment = datetime.now(UTC)
    ended: datetime | None = None
    if channel == "voice":
        transfer = db.session.get(Transfer, contact_id)
        ended = transfer.ended_at if transfer is not None else None
    elif channel == "text":
        conversation = db.session.get(Conversation, contact_id)
        ended = conversation.closed_at if conversation is not None else None
    if ended is not None:
        person = "caller" if channel == "voice" else "texter"
        return (
            f"The {person}'s contact with the line ended {minutes_ago(ended, moment)}: their number can no longer be "
            f"shown here (it can for {int(ENDED_CONTACT_UNMASKABLE_FOR.total_seconds() // 60)} minutes after a "
            "contact ends)."
        )
    if channel in ("voice", "text"):
        return "This contact is not with the line now: its number cannot be shown here."
    return (
        "The board no longer lists this person (a person has it in hand, it was marked, or its time on the board is "
        "over): their number can no longer be shown here."
    )


def _sealed_number(contact: LiveContact) -> str | None:
    if contact.channel == "checkin":
        checkin = db.session.get(CheckIn, contact.id)
        texter = db.session.get(Texter, checkin.texter_id) if checkin and checkin.texter_id else None
        return texter.sealed_number if texter else None
    if contact.channel == "followup":
        scheduled = db.session.get(ScheduledContact, contact.id)
        call_id = _call_id(scheduled) if scheduled else None
        call = db.session.get(Call, call_id) if call_id else None
        return call.sealed_caller if call else None
    if contact.channel == "callback":
        callback = db.session.get(Callback, contact.id)
        call = db.session.get(Call, callback.call_id) if callback else None
        return call.sealed_caller if call else None
    if contact.channel == "voice":
        transfer = db.session.get(Transfer, contact.id)
        call = db.session.get(Call, transfer.call_id) if transfer else None
        return call.sealed_caller if call else None
    if contact.channel in ("stuck", "after_stop"):
        message = db.session.get(Message, contact.id)
        sender = db.session.get(Texter, message.texter_id) if message and message.texter_id else None
        return sender.sealed_number if sender else None
    conversation = db.session.get(Conversation, contact.id)
    texter = db.session.get(Texter, conversation.texter_id) if conversation else None
    return texter.sealed_number if texter else None


def reveal(user: User, contact: LiveContact, reason: str) -> str | None:
    """The contact's number (None if the line never had it, e.g. withheld). Audited, with the
    reason sealed, whether or not there was a number to show. Commits."""
    reason = reason.strip()
    if len(reason) < MIN_REASON:
        raise ValueError("a reason is required")
    sealed = _sealed_number(contact)
    number = _vault().open(sealed, context=PHONE_CONTEXT) if sealed else None
    entry = record("unmask", actor=user, target=contact.target, shown=number is not None)
    entry.sealed_detail = _vault().seal(reason[:MAX_REASON], context=UNMASK_REASON_CONTEXT)
    db.session.commit()
    return number


def opened_reason(sealed: str | None) -> str | None:
    """An unmask's reason, opened for the audit page (admins and supervisors)."""
    if not sealed:
        return None
    try:
        return _vault().open(sealed, context=UNMASK_REASON_CONTEXT)
    except DecryptionError:  # its key left the keyring
        return "(sealed with a key no longer in the keyring)"
