"""Check-ins and the survey: consent, the scheduled texts, escalation to a supervisor.

A check-in is something the person agreed to at the end of a call (key 1) or a text
conversation (YES): a text some hours later asking how they are. No reply → one more text →
flagged for the supervisors. Every text goes through ``sms.outbox`` under its own key (at most
once), every state change is a conditional UPDATE, and a texter who sent STOP gets nothing.

The senders below run as scheduled contacts (``workers.contacts``): each returns "sent",
"not_needed" (answered or canceled meanwhile), "opted_out" or "no_number", "postponed" (a
later contact carries it on: the person is in a conversation, or it is the line's quiet hours
as it falls to be sent), or a failure.
Texts tell us what they need through ``crisisline.events``: a STOP cancels pending check-ins,
a conversation a counselor ended asks for consent (the receivers at the end of this module).
"""

from __future__ import annotations

import logging
import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from flask import current_app
from sqlalchemy import and_, bindparam, func, or_, select, union_all, update

import line_queue
from crisisline import events
from crisisline.db import db, insert_once
from crisisline.models import (
    Call,
    CheckIn,
    Conversation,
    Message,
    ScheduledContact,
    SurveyResponse,
    Texter,
    Transfer,
    TwilioRecord,
)
from ivr.call_log import PHONE_CONTEXT, phone_hash
from routing.document import RoutingDocument
from routing.schedule import after_quiet_hours
from routing.store import active_routing
from sms import conversations as convo
from sms import delivery, outbox
from workers.contacts import contact_needs_a_human, schedule, sends

log = logging.getLogger(__name__)

# A YES to the consent question counts for this long after it was asked.
CONSENT_WINDOW = timedelta(hours=2)
# What counts as yes, in any of the line's languages (accents and case ignored: "sí" = "SI").
CONSENT_WORDS = frozenset({"YES", "Y", "YEAH", "YEP", "SI", "S", "CLARO", "OUI", "JA"})
# A survey question awaits its 1-5 answer for this long; then it becomes anonymous unanswered.
SURVEY_ANSWER_WINDOW = timedelta(hours=24)
# Check-ins in these states may still send something: STOP cancels them.
PENDING_STATES = ("asked", "consented", "sent", "second_sent")
AWAITING_REPLY = ("sent", "second_sent")
# A reply this soon after the supervisors were told "no reply" still answers the check-in
# (and they are told it came): a "2" then is the person asking to talk, not a menu answer.
REPLY_AFTER_FLAG = timedelta(hours=24)
# Twilio refused a check-in text (certainly not sent): tried again after these waits, then
# the supervisors are told it could not be sent. The same for a flag nobody could be told.
SEND_RETRIES = (timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=30), timedelta(hours=1))
# While the person has a conversation open, a check-in text waits this long at a time, for up
# to ``POSTPONED_AT_MOST`` past when it was first due: then it is never sent into that
# conversation, and the supervisors are told instead (a conversation left queued never closes).
WHILE_IN_CONTACT = timedelta(hours=1)
POSTPONED_AT_MOST = timedelta(hours=24)
# A check-in under way (the retention purge leaves whom to text alone) and the longest one
# can be: due after up to 14 days, the second text and the flag up to 3 days later each, a
# day for a reply after the flag, a margin for retries, and a day for each of the two texts to
# wait out the quiet hours.
RUNNING_CHECKIN_STATES = ("consented", "sent", "second_sent", "flagged")
LONGEST_CHECKIN = timedelta(days=14 + 3 + 3 + 1 + 1 + 2)
# How long after an answer its handling may still need whom it came from, whenever the check-in
# was asked: the clock's retry of the text that carried it (6 h), and a "2" whose callback gives
# up (``callbacks.give_up_after_minutes``, a day at most, and its retries) is flagged unless
# they have talked with someone since; the clock looks for those this far back
# (``followups.replies``). The retention purge keeps the link that long, and while a callback
# carrying the "2" is open.
ANSWER_HANDLED_WITHIN = timedelta(days=2)
# Conversations (and callbacks) opened by a check-in reply are answered before ordinary ones.
CHECKIN_PRIORITY = line_queue.CHECKIN_PRIORITY
REPLY_CONTEXT = "checkin-reply"
# A survey's dedupe key is this + its check-in's (the purge finds the check-in by it), while
# it is linked to its asker; once answered or unlinked, a random one (``unlinked_survey_key``).
SURVEY_KEY_PREFIX = "survey:"
UNLINKED_SURVEY_KEY_PREFIX = "unlinked:"
# The thanks for a rating is keyed by the text that carried it (``followups.replies``).
SURVEY_THANKS_KEY_PREFIX = "survey-thanks:"
FLAG_REASON_TEXT = {
    "no_reply": "no reply to two check-in texts",
    "send_failed": "the check-in text could not be sent",
    "in_conversation": "the check-in text waited a day for a conversation of theirs to close",
    "send_uncertain": "the line failed while sending a check-in text, which may not have gone out",
    "talk_nobody_free": "asked to talk in reply to a check-in, and no counselor was free to call them back",
    "talk_no_answer": "asked to talk in reply to a check-in, and did not answer our calls back",
    "talk_line_failed": "asked to talk in reply to a check-in, and the line failed to call them back",
    "talk_number_refused": "asked to talk in reply to a check-in, and our phone service will not call their number",
}
# A check-in answered "2, I'd like to talk" (``talk_by: call``) whose callback gave up: the
# callback's outcome, and the flag it raises.
TALK_NOT_REACHED = {
    "nobody_free": "talk_nobody_free", "no_answer": "talk_no_answer", "line_failed": "talk_line_failed",
    "number_invalid": "talk_number_refused", "number_not_callable": "talk_number_refused",
}  # fmt: skip
TALK_FLAGS = frozenset(TALK_NOT_REACHED.values())
# A talk flag may follow an earlier flag of the same check-in (its text's run interrupted, a
# reply within a day of a "no reply" flag): its contacts and alerts have keys of their own.
TALK_FLAG_ATTEMPT = 4


def now() -> datetime:
    return datetime.now(UTC)


def _document() -> RoutingDocument | None:
    active = active_routing()
    return active.document if active else None


# --- consent --------------------------------------------------------------------------------


def ask_after_text(conversation: Conversation, document: RoutingDocument) -> bool:
    """A counselor ended the conversation: ask whether we may check in later (once per
    conversation). True if the question went out now."""
    if not document.followups.checkins or not conversation.line_number:
        return False
    texter = db.session.get(Texter, conversation.texter_id, populate_existing=True)  # a STOP a moment ago counts
    if texter is None or texter.opted_out:
        return False
    created = insert_once(
        CheckIn,
        {"dedupe_key": f"text:{conversation.id}", "origin": "text", "conversation_id": conversation.id,
         "texter_id": texter.id, "language": document.language(conversation.language).code,
         "need": conversation.need, "line_number": conversation.line_number, "state": "asked", "asked_at": now()},
    )  # fmt: skip
    db.session.commit()
    if not created:
        return False
    question = document.language(conversation.language).text("checkin_question")
    return convo.to_texter(conversation, "checkin-question", question)


def is_consent(keyword: str) -> bool:
    return _plain(keyword) in CONSENT_WORDS


def _plain(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word.strip().strip(".!¡").upper())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# A first text asks all three of these (a consent, a check-in answer, a rating?): built once
# (``crisisline.db``, "Statements built once"). A question texted after a conversation that a
# counselor's wrap-up (or an earlier YES) consented to already: a YES within the window
# answers it, as it would have.
_CONSENTED_BY_TEXT = and_(CheckIn.state == "consented", CheckIn.origin == "text")
_CONSENT_QUESTION = (
    select(CheckIn)
    .where(
        CheckIn.texter_id == bindparam("texter"),
        or_(CheckIn.state == "asked", _CONSENTED_BY_TEXT),
        CheckIn.asked_at >= bindparam("since"),
    )
    .order_by(CheckIn.id.desc())
)


def consent_question(texter: Texter) -> CheckIn | None:
    """The texter's most recent consent question a YES answers now: still open (``asked``), or
    consented already (their YES is then an answer to it, not a first text)."""
    return db.session.scalars(_CONSENT_QUESTION, {"texter": texter.id, "since": now() - CONSENT_WINDOW}).first()


def consent(checkin: CheckIn, document: RoutingDocument, *, at: datetime | None = None) -> bool:
    """Record consent once and schedule the check-in (and the survey, if the line runs one).

    ``at``: when the person agreed, if not now (a wrap-up that recorded it before the request
    died): the check-in is due the need's hours after that, as it was promised."""
    moment = at or now()
    # Never in the past (quiet hours are judged at the moment it would go, not at a passed one).
    due = after_quiet_hours(
        document, max(moment + timedelta(hours=document.followups.checkin_hours(checkin.need)), now())
    )
    if checkin.state != "asked":
        return False
    # Scheduled first: a crash before the consent is stored leaves the question open, and the
    # clock's retry of their YES consents again (the contact is kept once, by its key). The
    # other way round, a crash in between left a consent with nothing scheduled, for good.
    schedule("checkin", f"checkin:{checkin.id}:1", due, checkin_id=checkin.id, attempt=1)
    moved = db.session.execute(
        update(CheckIn)
        .where(CheckIn.id == checkin.id, CheckIn.state == "asked")
        .values(state="consented", consented_at=moment, due_at=due)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if not moved:
        return False
    if document.followups.survey:
        insert_once(
            SurveyResponse,
            {"dedupe_key": SURVEY_KEY_PREFIX + checkin.dedupe_key, "origin": checkin.origin, "need": checkin.need,
             "language": checkin.language, "texter_id": checkin.texter_id},
        )  # fmt: skip
        db.session.commit()
        after = timedelta(minutes=document.followups.survey_after_minutes)
        survey_at = after_quiet_hours(document, max(moment + after, now()))
        schedule("survey", f"survey:{checkin.id}", survey_at, checkin_id=checkin.id)
    return True


def consent_from_call(
    call: Call, language: str, need: str | None, document: RoutingDocument, *, at: datetime | None = None
) -> CheckIn | None:
    """A caller pressed 1 for a check-in (or agreed to one with a counselor ``at``: see
    ``consent``). Idempotent: a repeated webhook finds the same one."""
    texter = texter_for_call(call)
    line_number = call.line_number or _settings_line_number()
    if texter is None or texter.opted_out or not line_number:
        return None
    values: dict[str, Any] = {
        "dedupe_key": f"call:{call.id}", "origin": "call", "call_id": call.id, "texter_id": texter.id,
        "language": document.language(language).code, "need": need, "line_number": line_number,
        "state": "asked", "asked_at": now(),
    }  # fmt: skip
    insert_once(CheckIn, values)
    db.session.commit()
    checkin = db.session.scalars(select(CheckIn).where(CheckIn.dedupe_key == f"call:{call.id}")).one()
    consent(checkin, document, at=at)
    db.session.refresh(checkin)
    return checkin


def texter_for_call(call: Call, *, create: bool = True) -> Texter | None:
    """The caller as someone we can text (their STOP status lives there), from the sealed number."""
    if not call.sealed_caller:
        return None
    number = current_app.extensions["crisisline.vault"].open(call.sealed_caller, context=PHONE_CONTEXT)
    known = db.session.scalars(select(Texter).where(Texter.number_hash == phone_hash(number))).first()
    if known is not None or not create:
        return known
    return convo.find_or_create_texter(number, phone_hash(number))


def _settings_line_number() -> str | None:
    number: str | None = current_app.extensions["crisisline.settings"].line_phone_number
    return number


# --- STOP and replies ------------------------------------------------------------------------


def cancel_for_texter(texter: Texter) -> int:
    """STOP: every pending check-in of this texter is over and nothing scheduled goes out."""
    ids = list(
        db.session.scalars(select(CheckIn.id).where(CheckIn.texter_id == texter.id, CheckIn.state.in_(PENDING_STATES)))
    )
    if ids:
        db.session.execute(
            update(CheckIn).where(CheckIn.id.in_(ids), CheckIn.state.in_(PENDING_STATES)).values(state="opted_out")
        )
        _cancel_contacts(ids, "opted_out", kinds=None)
    db.session.commit()
    return len(ids)


def _cancel_contacts(checkin_ids: list[int], outcome: str, *, kinds: tuple[str, ...] | None) -> None:
    where = [ScheduledContact.checkin_id.in_(checkin_ids), ScheduledContact.state == "pending"]
    if kinds:
        where.append(ScheduledContact.kind.in_(kinds))
    db.session.execute(
        update(ScheduledContact).where(*where).values(state="canceled", outcome=outcome, finished_at=now())
    )


def nothing_pending(texter: Texter, inbound: Message) -> bool:
    """No check-in or survey of theirs could take ``inbound`` as its answer (a consent question,
    a check-in awaiting a reply or answered by this very text, an unanswered survey): so for
    nearly every first text. One query for the three it otherwise takes (a superset of theirs,
    without their time windows: a match only means those three run; a consent already given
    counts only within its window, or a consented check-in would run them for days)."""
    bound = {
        "texter": texter.id, "answered_at": inbound.created_at, "flagged_since": now() - REPLY_AFTER_FLAG,
        "asked_since": now() - CONSENT_WINDOW,
    }  # fmt: skip
    return db.session.execute(_ANY_PENDING, bound).first() is None


def _awaits_reply() -> Any:
    """A check-in whose reply still counts: sent, sent twice, or flagged a moment ago after a
    text of it went out (not one the line could never send)."""
    return or_(
        CheckIn.state.in_(AWAITING_REPLY),
        # Not one flagged after it was answered (its "2, I'd like to talk" not reached by phone):
        # a later text of theirs is a new contact, never taken as a second answer to it.
        and_(
            CheckIn.state == "flagged",
            CheckIn.flagged_at >= bindparam("flagged_since"),
            CheckIn.sent_at.is_not(None),
            CheckIn.reply.is_(None),
        ),
    )


_ANY_PENDING = union_all(
    select(CheckIn.id).where(
        CheckIn.texter_id == bindparam("texter"),
        or_(
            CheckIn.state == "asked",
            and_(_CONSENTED_BY_TEXT, CheckIn.asked_at >= bindparam("asked_since")),
            _awaits_reply(),
            and_(CheckIn.state == "answered", CheckIn.replied_at == bindparam("answered_at")),
        ),
    ),
    select(SurveyResponse.id).where(
        SurveyResponse.texter_id == bindparam("texter"), SurveyResponse.answered_at.is_(None)
    ),
).limit(1)


def awaiting_reply(texter: Texter, inbound: Message | None = None) -> CheckIn | None:
    """The texter's check-in still waiting for their reply, or the one ``inbound`` answered
    already (state ``answered``): so it is when the handling of that text died after
    ``record_reply`` and the clock's sweep hands the same text back. A later text of theirs
    was stored later, so it never matches (``replied_at`` is the answering text's
    ``created_at``, to the microsecond). One query either way: it runs for every first text."""
    flagged_since = now() - REPLY_AFTER_FLAG
    if inbound is None:
        return db.session.scalars(_AWAITING_REPLY, {"texter": texter.id, "flagged_since": flagged_since}).first()
    bound = {"texter": texter.id, "answered_at": inbound.created_at, "flagged_since": flagged_since}
    return db.session.scalars(_AWAITING_OR_ANSWERED_BY, bound).first()


_AWAITING_REPLY = (
    select(CheckIn).where(CheckIn.texter_id == bindparam("texter"), _awaits_reply()).order_by(CheckIn.id.desc())
)
_AWAITING_OR_ANSWERED_BY = (
    select(CheckIn)
    .where(
        CheckIn.texter_id == bindparam("texter"),
        or_(_awaits_reply(), and_(CheckIn.state == "answered", CheckIn.replied_at == bindparam("answered_at"))),
    )
    .order_by(CheckIn.id.desc())
)


def record_reply(checkin: CheckIn, reply: str, words: str | None = None, *, at: datetime | None = None) -> bool:
    """The person answered: ok | talk | text. Once; what is still scheduled is canceled.

    ``at``: when their answer reached us (the inbound text's ``created_at``). Stored as
    ``replied_at``, it is also what ties the answer to that text (``awaiting_reply``).

    Their other check-ins still awaiting a reply (two conversations a few hours apart, each
    with its own check-in) are answered by the same text: one reply is how they are, and
    without it the older one would text them again and flag a person who did reply. ``checkin``
    (the newest) alone carries their words and what the answer promises; the others have
    lower ids, so a retry of this text still finds ``checkin`` first."""
    replied_at = at or now()
    values: dict[str, Any] = {"state": "answered", "reply": reply, "replied_at": replied_at}
    if words:
        values["sealed_reply"] = current_app.extensions["crisisline.vault"].seal(words, context=REPLY_CONTEXT)
    since = {"flagged_since": now() - REPLY_AFTER_FLAG}
    was_flagged = checkin.state == "flagged"
    moved = db.session.execute(
        update(CheckIn).where(CheckIn.id == checkin.id, _awaits_reply()).values(**values), since
    ).rowcount  # type: ignore[attr-defined]
    if moved:
        answered = [checkin.id]
        if checkin.texter_id is not None:
            answered += db.session.scalars(
                update(CheckIn)
                .where(CheckIn.texter_id == checkin.texter_id, CheckIn.id < checkin.id, _awaits_reply())
                .values(state="answered", reply=reply, replied_at=replied_at)
                .returning(CheckIn.id),
                since,
            ).all()
        _cancel_contacts(answered, "answered", kinds=("checkin", "checkin_escalate"))
    db.session.commit()
    if moved and was_flagged:
        # By a worker: never on the webhook that carries out what the person asked for.
        schedule("checkin_answered", f"checkin:{checkin.id}:answered", now(), checkin_id=checkin.id, attempt=4)
    return bool(moved)


@sends("checkin_answered")
def tell_supervisors_it_was_answered(contact: ScheduledContact) -> str:
    """They were told "no reply"; now there is one, and the person is being looked after."""
    checkin = db.session.get(CheckIn, contact.checkin_id) if contact.checkin_id else None
    document = _document()
    if checkin is None or document is None:
        return "not_needed"
    if not document.supervisors:
        return "no_supervisors"
    body = document.staff_prompt("checkin_answered_sms", case=f"C{checkin.id}")
    from_number = checkin.line_number or _settings_line_number() or ""
    told = outbox.tell_supervisors(document, key=f"checkin-answered:{checkin.id}", body=body, from_number=from_number)
    return "sent" if told else "send_failed"


def awaiting_survey(texter: Texter) -> SurveyResponse | None:
    return db.session.scalars(_AWAITING_SURVEY, {"texter": texter.id, "since": now() - SURVEY_ANSWER_WINDOW}).first()


_AWAITING_SURVEY = (
    select(SurveyResponse)
    .where(
        SurveyResponse.texter_id == bindparam("texter"),
        SurveyResponse.asked_at >= bindparam("since"),
        SurveyResponse.answered_at.is_(None),
    )
    .order_by(SurveyResponse.id.desc())
)


def unlinked_survey_key() -> str:
    """A survey's key once it has no link to its asker: random, so it names no check-in (and so
    no call or conversation). Its check-in's key is no longer needed: the survey is sent once
    (its scheduled contact) and answered once (``answered_at``)."""
    return UNLINKED_SURVEY_KEY_PREFIX + secrets.token_hex(16)


def record_rating(survey: SurveyResponse, rating: int, inbound: Message, zone: tzinfo) -> bool:
    """Store the rating and drop every link to the person, in one transaction, once: their
    texter and the key naming the check-in it followed (the survey's and its scheduled
    contact's), and the text that carried the rating (its texter and its body, which is the
    rating). Its times are kept to the hour (``coarse_time``), so no timestamp matches the
    texts around it to the second. The answer is anonymous from now on."""
    checkin_key = survey.dedupe_key.removeprefix(SURVEY_KEY_PREFIX) if survey.dedupe_key.startswith(
        SURVEY_KEY_PREFIX) else None  # fmt: skip
    asked_at = coarse_time(survey.asked_at, zone) if survey.asked_at else None
    moved = db.session.execute(
        update(SurveyResponse)
        .where(SurveyResponse.id == survey.id, SurveyResponse.answered_at.is_(None))
        .values(rating=rating, asked_at=asked_at, answered_at=coarse_time(now(), zone), texter_id=None,
                dedupe_key=unlinked_survey_key())
    ).rowcount  # type: ignore[attr-defined]  # fmt: skip
    if not moved:
        db.session.commit()
        return False
    if checkin_key is not None:
        its_checkin = select(CheckIn.id).where(CheckIn.dedupe_key == checkin_key).scalar_subquery()
        contacts = db.session.scalars(
            select(ScheduledContact.id).where(ScheduledContact.kind == "survey",
                                              ScheduledContact.checkin_id == its_checkin)
        ).all()  # fmt: skip
        unlink_survey_contacts(contacts)
    unlink_ratings([inbound.id])
    db.session.commit()
    return True


def coarse_time(at: datetime, zone: tzinfo) -> datetime:
    """``at`` down to the hour in the line's time zone (so a metric's local day and hour stay
    right in a zone whose offset is not whole hours): how an answered survey's times are kept."""
    return at.astimezone(zone).replace(minute=0, second=0, microsecond=0).astimezone(UTC)


def unlink_survey_contacts(contact_ids: Sequence[int]) -> None:
    """These survey questions' scheduled contacts (their survey answered, or no longer linked
    to its asker) lose their check-in and their key naming it: a random key instead. Nothing
    reads a contact's check-in once its survey has been answered (``send_survey`` then finds
    nothing to send) or once it finished, and a survey is scheduled once, with its consent."""
    if contact_ids:
        db.session.execute(
            update(ScheduledContact),
            [{"id": each, "checkin_id": None, "dedupe_key": unlinked_survey_key()} for each in contact_ids],
        )


def unlink_ratings(message_ids: Sequence[int]) -> None:
    """These inbound texts carried a survey's rating: they lose their texter and their body (the
    rating itself), so only the anonymous survey row keeps it. Their ``MessageSid`` stays (a
    repeated webhook is still recognised); Twilio's own record of each, which holds the number,
    is noted for deletion now (``workers.twilio_records``), as the purge notes every text whose
    body it scrubs (it can no longer find this one by its body)."""
    if not message_ids:
        return
    sids = db.session.scalars(
        select(Message.message_sid).where(Message.id.in_(message_ids), Message.sealed_body.is_not(None))
    ).all()
    for sid in sids:
        if sid and sid[:2] in ("SM", "MM"):
            insert_once(TwilioRecord, {"kind": "message", "sid": sid, "state": "pending", "due_at": now(),
                                       "attempts": 0, "queued_at": now()})  # fmt: skip
    db.session.execute(
        update(Message)
        .where(Message.id.in_(message_ids), Message.direction == "in")
        .values(texter_id=None, sealed_body=None)
        .execution_options(synchronize_session=False)
    )


# --- the scheduled senders ---------------------------------------------------------------------


def _text(checkin: CheckIn, texter: Texter, key: str, body: str) -> bool:
    if not texter.sealed_number or not checkin.line_number:
        return False
    return outbox.send_text(
        key=key, to_number=convo.texter_number(texter), from_number=checkin.line_number, body=body,
        party="texter", texter=texter,
    )  # fmt: skip


def _recipient(checkin: CheckIn) -> tuple[Texter | None, str | None]:
    """The texter to write to, or why not (an outcome that cancels the contact)."""
    texter = db.session.get(Texter, checkin.texter_id) if checkin.texter_id else None
    if texter is None or not texter.sealed_number or not checkin.line_number:
        return None, "no_number"
    if texter.opted_out:
        db.session.execute(
            update(CheckIn).where(CheckIn.id == checkin.id, CheckIn.state.in_(PENDING_STATES)).values(state="opted_out")
        )
        db.session.commit()
        return None, "opted_out"
    return texter, None


@sends("checkin", one_text=True)
def send_checkin(contact: ScheduledContact) -> str:
    """Attempt 1 (``checkin``) or 2 (``checkin_second``); each schedules what follows silence."""
    checkin = db.session.get(CheckIn, contact.checkin_id) if contact.checkin_id else None
    document = _document()
    first = contact.attempt == 1
    if checkin is None or document is None:
        return "not_needed"
    if checkin.state != ("consented" if first else "sent"):
        return "not_needed"  # answered, opted out or canceled meanwhile
    texter, refusal = _recipient(checkin)
    if texter is None:
        return refusal or "no_number"
    if first and _answered_another_since_consent(checkin):
        return "not_needed"
    if not first and _answered_by_contact(checkin, "sent"):
        return "not_needed"  # they texted or called the line after the first check-in text
    if _in_conversation(texter):
        # "How are you? Reply 1 or 2" in the middle of a conversation would be read as part of
        # it (their "2" reaching their counselor, and a "no reply" flag for someone in touch).
        if _postponed_since(contact) <= now() - POSTPONED_AT_MOST:
            _flag(checkin, document, "in_conversation")  # never silently kept waiting for good
            return "not_needed"
        _again_later(contact, "later", WHILE_IN_CONTACT, document=document)
        return POSTPONED
    if _quiet_now(contact, document):
        return POSTPONED
    # A newer question supersedes an unanswered survey: a "1" is then about the check-in.
    db.session.execute(
        update(SurveyResponse)
        .where(SurveyResponse.texter_id == texter.id, SurveyResponse.answered_at.is_(None),
               SurveyResponse.asked_at.is_not(None))
        .values(texter_id=None)
    )  # fmt: skip
    db.session.commit()
    language = document.language(checkin.language)
    sent = _text(checkin, texter, f"contact:{contact.id}", language.text("checkin" if first else "checkin_second"))
    db.session.refresh(texter)
    if texter.opted_out:
        return "opted_out"
    if not sent and _refused(f"contact:{contact.id}"):
        if not _again_later(contact, "retry", *SEND_RETRIES, document=document):
            _flag(checkin, document, "send_failed")
        return "send_failed"
    # Sent, or perhaps (Twilio's answer was lost): carried on as sent, so a reply is taken as
    # the answer, and silence leads to the second text and the flag as usual.
    moment = now()
    if first:
        values: dict[str, Any] = {"state": "sent", "sent_at": moment}
        follow = ("checkin", f"checkin:{checkin.id}:2", document.followups.second_attempt_after_hours, 2)
    else:
        values = {"state": "second_sent", "second_sent_at": moment}
        follow = ("checkin_escalate", f"checkin:{checkin.id}:escalate", document.followups.escalate_after_hours, 3)
    moved = db.session.execute(
        update(CheckIn).where(CheckIn.id == checkin.id, CheckIn.state == ("consented" if first else "sent"))
        .values(**values)
    ).rowcount  # type: ignore[attr-defined]  # fmt: skip
    db.session.commit()
    if moved:
        kind, key, hours, attempt = follow
        due = moment + timedelta(hours=hours)
        # The second text keeps the quiet hours; the flag (to supervisors on call) need not.
        schedule(kind, key, after_quiet_hours(document, due) if first else due, checkin_id=checkin.id,
                 attempt=attempt)  # fmt: skip
    return "sent"


@sends("checkin_escalate")
def escalate_checkin(contact: ScheduledContact) -> str:
    """No reply to either text: flag the case and tell every supervisor (case and reason only)."""
    checkin = db.session.get(CheckIn, contact.checkin_id) if contact.checkin_id else None
    document = _document()
    if checkin is None or document is None:
        return "not_needed"
    round_ = _round(contact)
    if round_:
        # Nobody could be told last time: this flag again, under this round's own keys.
        if checkin.state != "flagged":
            return "not_needed"  # answered meanwhile
        return _notify_or_retry(checkin, document, checkin.flag_reason or "no_reply", contact)
    if _answered_by_contact(checkin, "second_sent"):
        return "not_needed"  # they texted or called the line after the check-in: not "no reply"
    moved = db.session.execute(
        update(CheckIn)
        .where(CheckIn.id == checkin.id, CheckIn.state == "second_sent")
        .values(state="flagged", flagged_at=now(), flag_reason="no_reply")
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if not moved:
        return "not_needed"
    return _notify_or_retry(checkin, document, "no_reply", contact)


ANSWERED_ANOTHER_WITHIN = timedelta(hours=24)


def _answered_another_since_consent(checkin: CheckIn) -> bool:
    """They told an earlier check-in how they are after agreeing to this one (two conversations
    a few hours apart, each with a check-in): this one is answered by it, as ``record_reply``
    answers those awaiting a reply then, and sends nothing (committed). Before, they were asked
    again an hour after saying they were OK, and flagged "no reply" after that."""
    if checkin.texter_id is None or checkin.consented_at is None:
        return False
    # Only an answer near this one's time says how they are now: not one from days before it.
    since = max(checkin.consented_at, (checkin.due_at or checkin.consented_at) - ANSWERED_ANOTHER_WITHIN)
    answered = db.session.scalar(
        select(CheckIn.replied_at)
        .where(CheckIn.texter_id == checkin.texter_id, CheckIn.id != checkin.id, CheckIn.state == "answered",
               CheckIn.replied_at > since)
        .order_by(CheckIn.replied_at.desc())
        .limit(1)
    )  # fmt: skip
    if answered is None:
        return False
    # "in_touch", as for someone in a conversation when it fell due: their answer (ok, talk)
    # is counted once, on the check-in it answered.
    db.session.execute(
        update(CheckIn).where(CheckIn.id == checkin.id, CheckIn.state == "consented")
        .values(state="answered", reply="in_touch", replied_at=answered)
    )  # fmt: skip
    db.session.commit()
    return True


@contact_needs_a_human.connect
def _flag_an_interrupted_checkin(contact_id: int, **_: object) -> None:
    """A check-in's text or flag whose run stopped part way (``workers.contacts.interrupted``):
    the check-in is flagged, so supervisors are told and the board lists it, rather than left
    waiting for a step that will never come."""
    contact = db.session.get(ScheduledContact, contact_id)
    # Only the check-in's own steps: a survey or an "answered" notice that stopped part way
    # says nothing about the check-in, which still goes (or went) as agreed.
    if contact is None or contact.kind not in ("checkin", "checkin_escalate") or not contact.checkin_id:
        return
    checkin = db.session.get(CheckIn, contact.checkin_id)
    document = _document()
    if checkin is None or document is None:
        return
    if contact.kind != "checkin_escalate":
        _flag(checkin, document, "send_uncertain")
    elif not _flag(checkin, document, "no_reply") and _still_flagged(checkin.id):
        # It stopped after its flag was raised, while telling the supervisors: they are told
        # in its next round (one who has it already is not texted again: ``notify_supervisors``).
        _again_later(contact, "later", timedelta(0))
        db.session.commit()


def _still_flagged(checkin_id: int) -> bool:
    return db.session.scalar(select(CheckIn.state).where(CheckIn.id == checkin_id)) == "flagged"


def _flag(checkin: CheckIn, document: RoutingDocument, reason: str) -> bool:
    """Flag a check-in the line could not carry out and tell the supervisors (retried). False
    if it was not waiting on the line (answered, or flagged already)."""
    moved = db.session.execute(
        update(CheckIn)
        .where(CheckIn.id == checkin.id, CheckIn.state.in_(("consented", "sent", "second_sent")))
        .values(state="flagged", flagged_at=now(), flag_reason=reason)
    ).rowcount  # type: ignore[attr-defined]
    _tell_supervisors_of_the_flag(checkin.id, reason, flagged=bool(moved))
    return bool(moved)


def flag_talk_not_reached(checkin_id: int, outcome: str) -> bool:
    """Their "2, I'd like to talk" asked for a callback that gave up (``outcome``: nobody free
    in time, or no answer to the last try): they got only the "we tried" text. A person who
    said they want to talk and was never reached is flagged, so supervisors are told and the
    board lists them; not one who has talked with a counselor since (they texted in and were
    taken). Once (the answered check-in moves to flagged once). True if flagged."""
    reason = TALK_NOT_REACHED.get(outcome)
    checkin = db.session.get(CheckIn, checkin_id)
    if reason is None or checkin is None or (checkin.state, checkin.reply) != ("answered", "talk"):
        return False
    if _in_touch_since(checkin, checkin.replied_at or checkin.sent_at or now()):
        return False
    moved = db.session.execute(
        update(CheckIn)
        .where(CheckIn.id == checkin_id, CheckIn.state == "answered", CheckIn.reply == "talk")
        .values(state="flagged", flagged_at=now(), flag_reason=reason)
    ).rowcount  # type: ignore[attr-defined]
    _tell_supervisors_of_the_flag(checkin_id, reason, flagged=bool(moved))
    return bool(moved)


def _tell_supervisors_of_the_flag(checkin_id: int, reason: str, *, flagged: bool) -> None:
    """Commit the flag just written (``flagged``) with the contact that tells the supervisors
    of it, by a worker (``escalate_checkin``'s round 1: a flag already raised, told and
    retried): a process dying between the two never leaves a flag nobody is told of."""
    if not flagged:
        db.session.commit()
        return
    if reason in TALK_FLAGS:
        schedule("checkin_escalate", f"checkin:{checkin_id}:talk:escalate:again:1", now(), checkin_id=checkin_id,
                 attempt=TALK_FLAG_ATTEMPT)  # fmt: skip
    else:
        schedule("checkin_escalate", f"checkin:{checkin_id}:escalate:again:1", now(), checkin_id=checkin_id, attempt=3)


def flag_alert_key(checkin_id: int, reason: str) -> str:
    """The key (before the round and the supervisor) of the supervisors' texts about this flag."""
    return f"checkin-flag:{checkin_id}" + (":talk" if reason in TALK_FLAGS else "")


def _notify_or_retry(checkin: CheckIn, document: RoutingDocument, reason: str, contact: ScheduledContact) -> str:
    told = notify_supervisors(checkin, document, reason, round_=_round(contact))
    if told == "send_failed" and not _again_later(contact, "retry", *SEND_RETRIES):
        log.error("check-in %s is flagged and no supervisor could be told (Twilio refused every try)", checkin.id)
    return told


def notify_supervisors(checkin: CheckIn, document: RoutingDocument, reason: str, *, round_: int = 0) -> str:
    if not document.supervisors:
        log.error("check-in %s is flagged but no supervisor is configured to be told", checkin.id)
        return "no_supervisors"
    from_number = checkin.line_number or _settings_line_number() or ""
    body = document.staff_prompt("checkin_flag_sms", case=f"C{checkin.id}", reason=FLAG_REASON_TEXT.get(reason, reason))
    # Each round under its own keys; a supervisor who has it under an earlier round's is not
    # texted again, and one Twilio refused is texted in the next (as callbacks' alert does).
    keys = [flag_alert_key(checkin.id, reason) + (f":r{n}" if n else "") for n in range(round_ + 1)]
    outbox.tell_supervisors(document, key=keys[-1], earlier=keys[:-1], body=body, from_number=from_number)
    have_it = len(outbox.supervisors_told(document, keys))
    return "sent" if have_it == len(document.supervisors) else "send_failed"


# --- sent again later --------------------------------------------------------------------------

POSTPONED = "postponed"
_AGAIN = re.compile(r"^(?P<base>.+?):again:(?P<round>\d+)$")


def _round(contact: ScheduledContact) -> int:
    """0 for a contact as first scheduled; n for the n-th time it was scheduled again."""
    found = _AGAIN.match(contact.dedupe_key)
    return int(found["round"]) if found else 0


def _again_later(
    contact: ScheduledContact, why: str, *waits: timedelta, document: RoutingDocument | None = None
) -> bool:
    """Schedule this contact once more (same kind, check-in and attempt) after the next of
    ``waits``: ``retry`` (Twilio refused it) counts its earlier refusals and is False once
    ``waits`` are used up; ``later`` (the person was in conversation, or it is their quiet
    hours) waits ``waits[0]`` for as long as it takes. Given the line's ``document``, a text
    to the person keeps its quiet hours. Once per round: run again, this contact schedules the
    same next one (its key), never a second."""
    found = _AGAIN.match(contact.dedupe_key)
    base = found["base"] if found else contact.dedupe_key
    wait = waits[0]
    if why == "retry":
        refused = db.session.scalar(
            select(func.count(ScheduledContact.id)).where(
                ScheduledContact.checkin_id == contact.checkin_id, ScheduledContact.kind == contact.kind,
                ScheduledContact.attempt == contact.attempt, ScheduledContact.outcome == "send_failed",
            )
        ) or 0  # fmt: skip
        # This contact is not marked yet: it is the (refused + 1)-th refusal.
        if refused >= len(waits):
            return False
        wait = waits[refused]
    next_round = _round(contact) + 1
    due = now() + wait
    if document is not None:
        due = after_quiet_hours(document, due)
    schedule(contact.kind, f"{base}:again:{next_round}", due, checkin_id=contact.checkin_id,
             attempt=contact.attempt)  # fmt: skip
    return True


def _quiet_now(contact: ScheduledContact, document: RoutingDocument) -> bool:
    """The line's quiet hours are on now (by its live routing): this text to the person waits
    for their end, carried on by the next contact of its kind (``_again_later``), and True.
    Judged as it goes, not only when it was scheduled: one due before the quiet hours that no
    worker ran in time (workers down, behind), or quiet hours an administrator set since,
    would otherwise wake them at night."""
    moment = now()
    if after_quiet_hours(document, moment) <= moment:
        return False
    _again_later(contact, "later", timedelta(0), document=document)
    return True


def _postponed_since(contact: ScheduledContact) -> datetime:
    """When this text (its check-in's attempt) was first due: its first contact's due time."""
    first = db.session.scalar(
        select(func.min(ScheduledContact.due_at)).where(
            ScheduledContact.checkin_id == contact.checkin_id, ScheduledContact.kind == contact.kind,
            ScheduledContact.attempt == contact.attempt,
        )
    )  # fmt: skip
    return first or contact.due_at


def _refused(key: str) -> bool:
    """Twilio refused the text sent under ``key`` with a 4xx (its code, e.g. 20429, 21211):
    certainly not sent. Not a 5xx (Twilio may have taken it before failing) nor a lost answer:
    those are carried on as sent rather than risk sending the person the same text twice."""
    found = db.session.execute(select(Message.status, Message.error_code).where(Message.idempotency_key == key)).first()
    if found is None or found.status != "failed" or found.error_code is None:
        return False
    return not 20500 <= found.error_code < 20600


def _in_conversation(texter: Texter) -> bool:
    return (
        db.session.scalar(
            select(Conversation.id).where(Conversation.texter_id == texter.id, Conversation.state != "closed").limit(1)
        )
        is not None
    )


def _answered_by_contact(checkin: CheckIn, from_state: str) -> bool:
    """If the person has texted or called the line since the check-in was sent (their "2"
    may have gone into a conversation), it is answered (``in_touch``): True."""
    if checkin.sent_at is None or not _in_touch_since(checkin, checkin.sent_at):
        return False
    answered = db.session.execute(
        update(CheckIn)
        .where(CheckIn.id == checkin.id, CheckIn.state == from_state)
        .values(state="answered", reply="in_touch", replied_at=now())
    ).rowcount  # type: ignore[attr-defined]
    if answered:
        _cancel_contacts([checkin.id], "answered", kinds=("checkin", "checkin_escalate"))
    db.session.commit()
    return bool(answered)


def _in_touch_since(checkin: CheckIn, since: datetime) -> bool:
    """The person has talked with someone at the line since ``since``: a text conversation a
    counselor took, or a call a counselor joined. Calling and hanging up at the menu, or a text
    nobody answered, is no answer: the flag is for exactly the person who tried and gave up."""
    texter = db.session.get(Texter, checkin.texter_id) if checkin.texter_id else None
    if texter is None:
        return False
    texted = select(Conversation.id).where(
        Conversation.texter_id == texter.id, Conversation.started_at >= since, Conversation.assigned_at.is_not(None)
    )
    called = (
        select(Call.id)
        .join(Transfer, Transfer.call_id == Call.id)
        .where(Call.caller_hash == texter.number_hash, Call.started_at >= since, Transfer.connected_at.is_not(None))
    )
    return db.session.execute(union_all(texted, called).limit(1)).first() is not None


@sends("survey", one_text=True)  # its one text is keyed ``contact:<id>``
def send_survey(contact: ScheduledContact) -> str:
    checkin = db.session.get(CheckIn, contact.checkin_id) if contact.checkin_id else None
    survey_key = SURVEY_KEY_PREFIX + checkin.dedupe_key if checkin else None
    survey = (
        db.session.scalars(select(SurveyResponse).where(SurveyResponse.dedupe_key == survey_key)).first()
        if survey_key else None
    )  # fmt: skip
    document = _document()
    if checkin is None or survey is None or document is None or survey.asked_at or survey.texter_id is None:
        return "not_needed"
    texter = db.session.get(Texter, survey.texter_id)
    refusal = None
    if texter is None or not texter.sealed_number or not checkin.line_number:
        refusal = "no_number"
    elif texter.opted_out:
        refusal = "opted_out"
    if refusal or texter is None:
        _forget_asker(survey)
        return refusal or "no_number"
    if _quiet_now(contact, document):
        return POSTPONED
    body = document.language(survey.language).text("survey")
    sent = _text(checkin, texter, f"contact:{contact.id}", body)
    db.session.refresh(texter)
    if texter.opted_out:
        _forget_asker(survey)
        return "opted_out"
    if not sent:
        return "send_failed"
    db.session.execute(update(SurveyResponse).where(SurveyResponse.id == survey.id).values(asked_at=now()))
    db.session.commit()
    return "sent"


def _forget_asker(survey: SurveyResponse) -> None:
    db.session.execute(update(SurveyResponse).where(SurveyResponse.id == survey.id).values(texter_id=None))
    db.session.commit()


# --- flagged check-ins, for the supervisors' board --------------------------------------------

# Listed until someone marks them followed up, or for a month (flags from before the board
# listed them are not all brought back at once).
FLAGGED_LISTED_FOR = timedelta(days=30)


@dataclass(frozen=True)
class FlaggedCheckIn:
    """A check-in that needs a person (no reply, or its text could not be sent): its case and
    why, never whom. ``tried``/``told``: supervisors texted about it, and those Twilio took."""

    checkin_id: int
    case: str
    reason: str
    flagged_at: datetime
    tried: int
    told: int


def flagged_checkins(moment: datetime, *, limit: int) -> list[FlaggedCheckIn]:
    """Flagged in the last month and not yet marked followed up, oldest first."""
    rows = db.session.execute(
        select(CheckIn.id, CheckIn.flag_reason, CheckIn.flagged_at)
        .where(CheckIn.state == "flagged", CheckIn.flagged_at >= moment - FLAGGED_LISTED_FOR)
        .order_by(CheckIn.flagged_at, CheckIn.id)
        .limit(limit)
    ).all()
    if not rows:
        return []
    alerts = db.session.execute(
        select(Message.idempotency_key, Message.status).where(
            Message.party == "supervisor",
            or_(*(Message.idempotency_key.like(f"checkin-flag:{checkin_id}:%") for checkin_id, _, _ in rows)),
        )
    ).all()
    # Keys: checkin-flag:<id>:<supervisor> and, sent again, checkin-flag:<id>:r<n>:<supervisor>;
    # a talk flag's with ":talk" after the id. Only the alerts about the flag listed count.
    by_flag: dict[tuple[str, bool], list[tuple[str, str]]] = {}
    for key, status in alerts:
        parts = (key or "").split(":")
        if len(parts) > 2:
            by_flag.setdefault((parts[1], parts[2] == "talk"), []).append((parts[-1], status))
    result = []
    for checkin_id, reason, flagged_at in rows:
        about = by_flag.get((str(checkin_id), reason in TALK_FLAGS), [])
        tried = {supervisor for supervisor, _ in about}
        told = {supervisor for supervisor, status in about if delivery.taken(status)}
        reason_text = FLAG_REASON_TEXT.get(reason or "", reason or "")
        result.append(
            FlaggedCheckIn(checkin_id, f"C{checkin_id}", reason_text, flagged_at or moment, len(tried), len(told))
        )
    return result


def mark_followed_up(checkin_id: int) -> bool:
    """A supervisor has followed a flagged check-in up: off the board. Once (False after)."""
    moved = db.session.execute(
        update(CheckIn).where(CheckIn.id == checkin_id, CheckIn.state == "flagged").values(state="followed_up")
    ).rowcount  # type: ignore[attr-defined]
    return bool(moved)


# --- reactions to texts (connected when this module is imported) -------------------------------


@events.texter_opted_out.connect
def _cancel_on_stop(texter: Texter, **_: object) -> None:
    cancel_for_texter(texter)


@events.conversation_ended_by_counselor.connect
def _ask_on_end(conversation: Conversation, *, document: RoutingDocument, **_: object) -> None:
    ask_after_text(conversation, document)
