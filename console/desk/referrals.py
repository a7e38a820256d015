"""Referrals: services from the line's directory (routing ``services:``), texted to the person
from the line's number during or after a call or text conversation with them.

The text goes through the line's outbox (``sms.outbox.send_text``): stored sealed before it is
sent, once per key. The key is the contact and the set of services, so a double submit or a
second tab sends nothing more. The sending runs off the request thread
(``crisisline.background``) and is handed ids only; it opens the person's number itself and
never logs it or the text. Recorded: a ``referral.sent`` call event (voice) and an audit entry,
both with service ids only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from console.audit.log import record
from console.models import AuditEntry, User
from crisisline.background import within_budget
from crisisline.db import db, insert_once
from crisisline.models import Call, CallEvent, Conversation, Message, Offer, Texter, Transfer, utcnow
from crisisline.privacy import Vault
from crisisline.settings import Settings
from crisisline.sms_segments import segment_count
from crisisline.telephony import REST_TIMEOUT_SECONDS
from ivr.call_log import PHONE_CONTEXT
from routing.document import RoutingDocument, Service
from routing.store import active_routing
from sms import outbox
from sms.conversations import find_or_create_texter
from transfer.dispatch import rest_client

WINDOW = timedelta(days=7)  # as for wrap-ups: contacts of the last week
MAX_SERVICES = 5
SENT, ALREADY, FAILED, CANNOT_TEXT, SENDING = "sent", "already", "failed", "cannot_text", "sending"
# The text was claimed but Twilio never said it took it (unreachable, or our request lost): it
# may or may not have gone out, and it is never sent again blindly. While the claim is younger
# than the send's REST timeout, Twilio may still answer: it is reported as being sent (SENDING).
UNSURE = "unsure"
REASONS = {
    "withheld": "Their number was withheld or is not a number that can be texted.",
    "opted_out": "They opted out of texts from the line (STOP).",
    "no_line_number": "The line has no number to text from.",
}


@dataclass(frozen=True)
class Recipient:
    """A contact of this counselor's that a referral can go to (or say why not)."""

    channel: str  # voice | text
    id: int  # a transfer id (voice) or a conversation id (text), as for wrap-ups
    language: str | None
    need: str | None
    reason: str  # a ``REASONS`` key: why they cannot be texted ("": they can)

    @property
    def key(self) -> str:
        return f"{'call' if self.channel == 'voice' else 'text'}:{self.id}"

    @property
    def label(self) -> str:
        return f"call {self.id}" if self.channel == "voice" else f"text #{self.id}"

    @property
    def reason_text(self) -> str:
        return REASONS.get(self.reason, "")


@dataclass(frozen=True)
class Earlier:
    at: datetime
    services: list[str]


def _vault() -> Vault:
    vault: Vault = current_app.extensions["crisisline.vault"]
    return vault


def _line_number(call: Call) -> str | None:
    settings: Settings = current_app.extensions["crisisline.settings"]
    return call.line_number or settings.line_phone_number


def find(responder_id: str, channel: str, contact_id: int) -> Recipient | None:
    """This counselor's call (connected, now or in the last ``WINDOW``) or text conversation
    (taken by them, open or closed in the last ``WINDOW``); None if it is not theirs."""
    since = utcnow() - WINDOW
    if channel == "voice":
        transfer = db.session.scalars(
            select(Transfer)
            .join(Offer, Offer.id == Transfer.accepted_offer_id)
            .where(Transfer.id == contact_id, Offer.responder_id == responder_id,
                   Transfer.connected_at.is_not(None), Transfer.connected_at >= since)
        ).first()  # fmt: skip
        if transfer is None:
            return None
        call = db.session.get(Call, transfer.call_id)
        reason = ""
        if call is None or not call.sealed_caller:
            reason = "withheld"
        elif _opted_out(call.caller_hash):
            reason = "opted_out"
        elif not _line_number(call):
            reason = "no_line_number"
        return Recipient("voice", transfer.id, transfer.language, transfer.need, reason)
    conversation = db.session.get(Conversation, contact_id)
    if (
        conversation is None
        or conversation.counselor_id != responder_id
        or conversation.assigned_at is None
        or conversation.state not in ("active", "closed")
        or (conversation.state == "closed" and (conversation.closed_at or since) < since)
    ):
        return None
    texter = db.session.get(Texter, conversation.texter_id)
    reason = ""
    if texter is None or not texter.sealed_number:
        reason = "withheld"
    elif texter.opted_out:
        reason = "opted_out"
    elif not conversation.line_number:
        reason = "no_line_number"
    return Recipient("text", conversation.id, conversation.language, conversation.need, reason)


def _opted_out(person_hash: str | None) -> bool:
    if not person_hash:
        return False
    return bool(db.session.scalar(select(Texter.opted_out).where(Texter.number_hash == person_hash)))


def services_for(document: RoutingDocument, recipient: Recipient, *, every_need: bool = False) -> tuple[Service, ...]:
    """The directory's services in the person's language, for their need unless ``every_need``."""
    language = document.language(recipient.language).code
    need = None if every_need else (recipient.need or document.menu.default_need)
    return document.referrals(language, need)


def chosen(document: RoutingDocument, service_ids: list[str]) -> list[Service] | None:
    """The services named (in directory order), or None if any is unknown or none/too many."""
    wanted = set(service_ids)
    found = [service for service in document.services if service.id in wanted]
    if not found or len(found) != len(wanted) or len(found) > MAX_SERVICES:
        return None
    return found


def compose(document: RoutingDocument, services: list[Service]) -> str:
    """The text: the line's name, then one line per service (name, number, description)."""
    lines = [f"{document.line_name}:"]
    for service in services:
        line = f"{service.name}: {service.phone}"
        lines.append(f"{line} - {service.description}" if service.description else line)
    return "\n".join(lines)


def segments(body: str) -> int:
    return segment_count(body)


def referral_key(recipient: Recipient, services: list[Service]) -> str:
    digest = hashlib.sha256(",".join(sorted(service.id for service in services)).encode()).hexdigest()[:16]
    return f"referral:{recipient.key}:{digest}"


def earlier(recipient: Recipient) -> list[Earlier]:
    """Referrals already sent for this contact (from the audit log: service ids only)."""
    entries = db.session.scalars(
        select(AuditEntry)
        .where(AuditEntry.action == "referral_sent", AuditEntry.target == recipient.key)
        .order_by(AuditEntry.id)
    )
    return [Earlier(entry.occurred_at, list(entry.detail.get("services", []))) for entry in entries]


def send(user: User, recipient: Recipient, services: list[Service], responder_id: str) -> str:
    """Text ``services`` to the person once: ``sent``, ``already`` (this referral went out
    before), ``failed``, ``unsure`` (Twilio never said it took it), ``cannot_text`` (see
    ``recipient.reason``) or ``sending`` (still under way off the request; it will be sent once)."""
    if recipient.reason:
        return CANNOT_TEXT
    key = referral_key(recipient, services)
    stored = _stored(key)
    if stored is not None:  # once per key, whatever became of it (a failed text is not retried blindly)
        return _outcome_of(stored, maybe_in_flight=True)
    settings: Settings = current_app.extensions["crisisline.settings"]
    ids = [service.id for service in services]
    channel, contact_id, user_id = recipient.channel, recipient.id, user.id
    outcome = within_budget(
        f"console.referral:{key}",
        lambda: deliver(user_id, responder_id, channel, contact_id, ids, key),
        settings.voice_deadline_seconds / 2,
    )
    return outcome or SENDING


def _stored(key: str) -> Message | None:
    return db.session.scalars(select(Message).where(Message.idempotency_key == key)).first()


def _outcome_of(stored: Message, *, maybe_in_flight: bool = False) -> str:
    """What became of a referral text claimed before: only one Twilio took is "already" sent.

    ``maybe_in_flight``: the send may still be waiting for Twilio (asked by a second click, not
    by the send itself): a claim younger than the send's REST timeout is still being sent."""
    if stored.status in ("failed", "undelivered"):
        return FAILED
    if stored.status == "claimed":
        if maybe_in_flight and stored.created_at > utcnow() - _send_timeout():
            return SENDING
        return UNSURE
    return ALREADY


def _send_timeout() -> timedelta:
    """How long a text's send waits for Twilio's answer: the REST client's timeout."""
    http_client = rest_client().client.http_client
    timeout = getattr(http_client, "timeout", None)
    return timedelta(seconds=timeout if isinstance(timeout, int | float) else REST_TIMEOUT_SECONDS)


def deliver(user_id: int, responder_id: str, channel: str, contact_id: int, service_ids: list[str], key: str) -> str:
    """Send the referral ``key`` (ids only: this runs off the request thread), then record it."""
    active = active_routing()
    recipient = find(responder_id, channel, contact_id)
    services = chosen(active.document, service_ids) if active else None
    if recipient is None or services is None or active is None:
        return FAILED
    if recipient.reason:
        return CANNOT_TEXT
    to_number, from_number, texter, conversation_id = _addresses(recipient)
    if not to_number or not from_number:
        return CANNOT_TEXT
    sent = outbox.send_text(
        key=key, to_number=to_number, from_number=from_number, body=compose(active.document, services),
        party="texter", conversation_id=conversation_id, texter=texter,
    )  # fmt: skip
    if not sent:
        stored = _stored(key)
        return _outcome_of(stored) if stored is not None else FAILED
    ids = [service.id for service in services]
    if channel == "voice":
        transfer = db.session.get(Transfer, contact_id)
        if transfer is not None:
            insert_once(
                CallEvent,
                {"call_id": transfer.call_id, "kind": "referral.sent", "dedupe_key": key, "occurred_at": utcnow(),
                 "detail": {"transfer": transfer.id, "services": ids}},
            )  # fmt: skip
    user = db.session.get(User, user_id)
    record("referral_sent", actor=user or "system", target=recipient.key, services=ids)
    db.session.commit()
    return SENT


def _addresses(recipient: Recipient) -> tuple[str | None, str | None, Texter | None, int | None]:
    """(to, from, texter, conversation id) for the text; numbers opened here, never logged."""
    if recipient.channel == "text":
        conversation = db.session.get(Conversation, recipient.id)
        texter = db.session.get(Texter, conversation.texter_id) if conversation else None
        if conversation is None or texter is None or not texter.sealed_number:
            return None, None, None, None
        number = _vault().open(texter.sealed_number, context=PHONE_CONTEXT)
        return number, conversation.line_number, texter, conversation.id
    transfer = db.session.get(Transfer, recipient.id)
    call = db.session.get(Call, transfer.call_id) if transfer else None
    if call is None or not call.sealed_caller or not call.caller_hash:
        return None, None, None, None
    number = _vault().open(call.sealed_caller, context=PHONE_CONTEXT)
    # As the missed-call text does: a STOP from this number later reaches the same texter.
    texter = db.session.scalars(select(Texter).where(Texter.number_hash == call.caller_hash)).first()
    return number, _line_number(call), texter or find_or_create_texter(number, call.caller_hash), None
