"""Wrap-ups: after a call or a text conversation a counselor handled, what came of it (an
outcome), whether the person agreed to a check-in (scheduled through ``followups``), and a
short note sealed with the Vault. One per contact; offered on the counselor's page for their
contacts of the last ``WINDOW`` that ended without one.

The consent is stored before the check-in is scheduled: a request that dies in between leaves
the promise stored and not kept. Sending the form again keeps it, and so does the clock, every
minute (``keep_promised_checkins``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import ColumnElement, String, cast, exists, literal, select, update
from sqlalchemy.orm import InstrumentedAttribute

from console.audit.log import record
from console.models import NOTE_CONTEXT, OUTCOMES, User, WrapUp
from crisisline import events
from crisisline.db import db, insert_once
from crisisline.models import Call, CheckIn, Conversation, Offer, Texter, Transfer, utcnow
from crisisline.privacy import Vault
from followups import checkins
from routing.document import RoutingDocument
from routing.store import active_routing
from transfer.state import OPEN_TRANSFER_STATES

log = logging.getLogger(__name__)
WINDOW = timedelta(days=7)
LIMIT = 20
MAX_NOTE = 2000
# The clock leaves a wrap-up this young to the request that stored it (it may be scheduling
# the check-in right now), and keeps at most this many promises a run.
PROMISE_GRACE = timedelta(minutes=2)
PROMISES_PER_RUN = 100


@dataclass(frozen=True)
class EndedContact:
    channel: str  # voice | text
    id: int  # a transfer id (voice) or a conversation id (text)
    language: str | None
    need: str | None
    ended_at: datetime | None

    @property
    def key(self) -> str:
        return f"{'call' if self.channel == 'voice' else 'text'}:{self.id}"

    @property
    def label(self) -> str:
        return f"call {self.id}" if self.channel == "voice" else f"text #{self.id}"


def _vault() -> Vault:
    vault: Vault = current_app.extensions["crisisline.vault"]
    return vault


def _not_wrapped_up(
    key_prefix: str, contact_id: ColumnElement[int] | InstrumentedAttribute[int]
) -> ColumnElement[bool]:
    """No wrap-up for this contact: filtered before ``LIMIT``, so a counselor's 20 newest
    contacts, all wrapped up, never hide an older one that still needs a wrap-up."""
    key = literal(key_prefix).concat(cast(contact_id, String))
    return ~exists().where(WrapUp.contact_key == key)


def _calls(
    responder_id: str, since: datetime, transfer_id: int | None = None, *, unwrapped_only: bool = False
) -> list[EndedContact]:
    query = (
        select(Transfer)
        .join(Offer, Offer.id == Transfer.accepted_offer_id)
        .where(Offer.responder_id == responder_id, Transfer.connected_at.is_not(None),
               Transfer.state.not_in(OPEN_TRANSFER_STATES), Transfer.connected_at >= since)
        .order_by(Transfer.connected_at.desc())
        .limit(LIMIT)
    )  # fmt: skip
    if transfer_id is not None:
        query = query.where(Transfer.id == transfer_id)
    if unwrapped_only:
        query = query.where(_not_wrapped_up("call:", Transfer.id))
    return [
        EndedContact("voice", t.id, t.language, t.need, t.ended_at or t.connected_at) for t in db.session.scalars(query)
    ]


def _texts(
    responder_id: str, since: datetime, conversation_id: int | None = None, *, unwrapped_only: bool = False
) -> list[EndedContact]:
    query = (
        select(Conversation)
        .where(Conversation.counselor_id == responder_id, Conversation.state == "closed",
               Conversation.assigned_at.is_not(None), Conversation.closed_at >= since)
        .order_by(Conversation.closed_at.desc())
        .limit(LIMIT)
    )  # fmt: skip
    if conversation_id is not None:
        query = query.where(Conversation.id == conversation_id)
    if unwrapped_only:
        query = query.where(_not_wrapped_up("text:", Conversation.id))
    return [EndedContact("text", c.id, c.language, c.need, c.closed_at) for c in db.session.scalars(query)]


def _done(keys: list[str]) -> set[str]:
    if not keys:
        return set()
    return set(db.session.scalars(select(WrapUp.contact_key).where(WrapUp.contact_key.in_(keys))))


def pending(responder_id: str) -> list[EndedContact]:
    """This counselor's contacts of the last ``WINDOW`` that ended without a wrap-up, newest first."""
    since = utcnow() - WINDOW
    left = _calls(responder_id, since, unwrapped_only=True) + _texts(responder_id, since, unwrapped_only=True)
    return sorted(left, key=lambda contact: contact.ended_at or since, reverse=True)


def find(responder_id: str, channel: str, contact_id: int) -> EndedContact | None:
    """One ended contact of this counselor (wrapped up or not), or None."""
    since = utcnow() - WINDOW
    found = _calls(responder_id, since, contact_id) if channel == "voice" else _texts(responder_id, since, contact_id)
    return found[0] if found else None


def wrapped_up(contact: EndedContact) -> bool:
    return bool(_done([contact.key]))


def unit_joined(contact: EndedContact) -> bool:
    """Did a co-responder unit join this call (its join offer was accepted)? The wrap-up then
    suggests "co-responder dispatched"."""
    if contact.channel != "voice":
        return False
    joined = select(Offer.id).where(
        Offer.transfer_id == contact.id, Offer.purpose == "join", Offer.decided_at.is_not(None)
    )
    return db.session.scalar(joined.limit(1)) is not None


def save(
    user: User, document: RoutingDocument, responder_id: str, contact: EndedContact, *, outcome: str,
    consent: bool, note: str,
) -> WrapUp | None:  # fmt: skip
    """Record the wrap-up once (None if the contact has one already), then schedule the
    check-in the person agreed to. Audited (outcome and follow-up; never the note). Commits."""
    if outcome not in OUTCOMES:
        raise ValueError("unknown outcome")
    note = note.strip()[:MAX_NOTE]
    transfer = db.session.get(Transfer, contact.id) if contact.channel == "voice" else None
    inserted = insert_once(
        WrapUp,
        {
            "contact_key": contact.key, "channel": contact.channel,
            "call_id": transfer.call_id if transfer else None, "transfer_id": transfer.id if transfer else None,
            "conversation_id": contact.id if contact.channel == "text" else None,
            "responder_id": responder_id, "user_id": user.id, "language": contact.language, "need": contact.need,
            "outcome": outcome, "followup_consent": consent,
            "sealed_note": _vault().seal(note, context=NOTE_CONTEXT) if note else None,
            "created_at": utcnow(),
        },
    )  # fmt: skip
    db.session.commit()
    if not inserted:
        _schedule_promised_checkin(document, contact)
        return None
    followup = schedule_checkin(document, contact) if consent else None
    wrap_up = db.session.scalars(select(WrapUp).where(WrapUp.contact_key == contact.key)).one()
    if followup is not None:
        db.session.execute(update(WrapUp).where(WrapUp.id == wrap_up.id).values(followup=followup))
    record("wrap_up", actor=user, target=contact.key, outcome=outcome, consent=consent, followup=followup)
    db.session.commit()
    db.session.refresh(wrap_up)
    return wrap_up


def _schedule_promised_checkin(document: RoutingDocument, contact: EndedContact) -> None:
    """The contact has a wrap-up already. If it records the person's consent to a check-in but
    no follow-up (the request that stored it failed before scheduling it), schedule it now: the
    counselor sending the form again must not find the promise stored and never kept.
    Scheduling is idempotent (one check-in per contact), so a double submission is harmless."""
    wrap_up = db.session.scalars(select(WrapUp).where(WrapUp.contact_key == contact.key)).one()
    if not wrap_up.followup_consent or wrap_up.followup is not None:
        return
    _keep(document, wrap_up, contact)


def _keep(document: RoutingDocument, wrap_up: WrapUp, contact: EndedContact) -> bool:
    """Schedule the check-in ``wrap_up`` promised, due as it was promised (the need's hours
    after the wrap-up), and record what came of it once. True if this call recorded it.
    One whose promised time has passed (the form sent again days later) is due the need's
    hours from now instead: never sent at once, out of the blue (the clock leaves those)."""
    promised_due = wrap_up.created_at + timedelta(hours=document.followups.checkin_hours(wrap_up.need))
    at = wrap_up.created_at if promised_due > utcnow() else None
    followup = schedule_checkin(document, contact, at=at)
    recorded = db.session.execute(
        update(WrapUp).where(WrapUp.id == wrap_up.id, WrapUp.followup.is_(None)).values(followup=followup)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    return bool(recorded)


@events.stored_promises_due.connect
def keep_promised_checkins(_sender: object = None, **_kwargs: object) -> tuple[str, int]:
    """The clock, every minute: a wrap-up that records the person's consent to a check-in and no
    follow-up (the request that stored it died before scheduling it, and the form was not sent
    again) has its check-in scheduled now, due when it was promised.

    Only once the request had ``PROMISE_GRACE`` to do it itself, and only until the check-in
    would have been due (the need's ``checkin_after_hours`` after the wrap-up): later, a text
    out of the blue is not the check-in they agreed to. Idempotent with the form sent again and
    with a second clock: one check-in per contact (its key), one scheduled contact (its key),
    the follow-up recorded once (a conditional UPDATE)."""
    active = active_routing()
    if active is None:
        return "wrap_up_checkins", 0
    document = active.document
    moment = utcnow()
    # The longest wait of any need (24 hours for a need the config leaves out and no default).
    longest = timedelta(hours=max([24.0, *document.followups.checkin_after_hours.values()]))
    unkept = db.session.scalars(
        select(WrapUp)
        .where(WrapUp.followup_consent.is_(True), WrapUp.followup.is_(None),
               WrapUp.created_at <= moment - PROMISE_GRACE, WrapUp.created_at > moment - longest)
        .order_by(WrapUp.created_at)
        .limit(PROMISES_PER_RUN)
    ).all()  # fmt: skip
    db.session.commit()  # no transaction held open while the check-ins are scheduled
    kept = 0
    for wrap_up in unkept:
        if wrap_up.created_at + timedelta(hours=document.followups.checkin_hours(wrap_up.need)) <= moment:
            continue  # its check-in would have gone already: too late to be the one agreed to
        contact_id = wrap_up.transfer_id if wrap_up.channel == "voice" else wrap_up.conversation_id
        if contact_id is None:  # its call or conversation is gone: nobody to check in with
            continue
        contact = EndedContact(wrap_up.channel, contact_id, wrap_up.language, wrap_up.need, None)
        try:
            recorded = _keep(document, wrap_up, contact)
        except Exception as error:  # one failing must not keep the others: the next run tries again
            log.error("wrap-up %s: check-in not scheduled yet (%s)", wrap_up.id, type(error).__name__)
            db.session.rollback()
            continue
        if recorded:  # not by the form sent again, or another clock, meanwhile
            kept += 1
            log.warning("wrap-up %s: the check-in agreed to was kept by the clock", wrap_up.id)
    return "wrap_up_checkins", kept


def schedule_checkin(document: RoutingDocument, contact: EndedContact, *, at: datetime | None = None) -> str:
    """Schedule the check-in through ``followups`` (consent, as a caller's 1 or a texter's
    YES records it, given ``at``: now if None): "scheduled", or why not ("checkins_off",
    "no_number", "opted_out")."""
    if not document.followups.checkins:
        return "checkins_off"
    if contact.channel == "voice":
        transfer = db.session.get(Transfer, contact.id)
        call = db.session.get(Call, transfer.call_id) if transfer else None
        if transfer is None or call is None or not call.sealed_caller:
            return "no_number"
        known = checkins.texter_for_call(call, create=False)
        if known is not None and known.opted_out:
            return "opted_out"
        checkin = checkins.consent_from_call(call, transfer.language, transfer.need, document, at=at)
        if checkin is None:
            return "no_number"
        # A question settled before (declined, answered): nothing new, but not for want of a number.
        return "scheduled" if checkin.consented_at else "not_scheduled"
    conversation = db.session.get(Conversation, contact.id)
    # Whom a question sent at END asked: the purge may have unlinked the conversation from them
    # since (a texts window shorter than the wrap-up's week), while that check-in keeps them.
    asked = db.session.scalar(select(CheckIn.texter_id).where(CheckIn.dedupe_key == f"text:{contact.id}"))
    texter_id = asked or (conversation.texter_id if conversation else None)
    texter = db.session.get(Texter, texter_id) if texter_id else None
    if conversation is None or texter is None or not texter.sealed_number or not conversation.line_number:
        return "no_number"
    if texter.opted_out:
        return "opted_out"
    # The question may have gone out when the conversation was ended (END): consent to it.
    # Otherwise (closed another way) the consent given to the counselor opens the same record.
    insert_once(
        CheckIn,
        {"dedupe_key": f"text:{conversation.id}", "origin": "text", "conversation_id": conversation.id,
         "texter_id": texter.id, "language": document.language(conversation.language).code,
         "need": conversation.need, "line_number": conversation.line_number, "state": "asked",
         "asked_at": utcnow()},
    )  # fmt: skip
    db.session.commit()
    checkin = db.session.scalars(select(CheckIn).where(CheckIn.dedupe_key == f"text:{conversation.id}")).one()
    checkins.consent(checkin, document, at=at)
    db.session.refresh(checkin)
    return "scheduled" if checkin.consented_at else "not_scheduled"
