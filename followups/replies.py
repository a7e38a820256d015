"""Texts that answer a follow-up question: a survey rating, a check-in reply, a YES to consent.

Called (``sms.texting.text_between_conversations``) for every inbound text from a texter who
is not opted out and has no open conversation (with one, their words belong to that
conversation), and ``late`` for a text written before the conversation they have open began
(the clock's retry of a text whose handling died): then only a check-in answer recorded for
that very text is finished. Returns True when the text was an answer and has been handled;
otherwise the ordinary texting flow takes it.
"""

from __future__ import annotations

from sqlalchemy import select, update

import line_queue
from callbacks.attempts import callback_gave_up
from callbacks.requests import callback_carrying, checkins_carried_by, request_from_checkin
from crisisline import events
from crisisline.db import db
from crisisline.models import Callback, CheckIn, Conversation, Message, Texter
from followups import checkins
from routing.document import RoutingDocument
from sms import conversations as convo
from sms import outbox
from sms.texting import text_between_conversations


@text_between_conversations.connect
def _answer(
    texter: Texter, *, document: RoutingDocument, inbound: Message, body: str, line_number: str | None,
    late: bool = False, **_: object,
) -> bool:  # fmt: skip
    return handle_reply(document, texter, inbound, body, line_number, late=late)


@callback_gave_up.connect
def _talk_not_reached(callback: Callback, *, outcome: str, **_: object) -> None:
    """A check-in's "2, I'd like to talk" whose callback never reached them: flagged (the
    check-in that asked for it, or one whose "2" joined the callback they had asked for)."""
    for checkin_id in checkins_carried_by(callback):
        checkins.flag_talk_not_reached(checkin_id, outcome)


# How far back the clock looks for a "2" whose callback gave up with no flag raised.
TALK_FLAG_SWEEP_LOOKBACK = checkins.ANSWER_HANDLED_WITHIN


@events.stored_promises_due.connect
def flag_talks_not_reached(_sender: object = None, **_kwargs: object) -> tuple[str, int]:
    """The clock, every minute: a check-in answered "2" in the last two days whose callback
    gave up and which is not flagged (the process died between the give-up and its flag, or
    the flag met a database blip) is flagged now. Such check-ins are a handful."""
    asked_to_talk = db.session.scalars(
        select(CheckIn).where(
            CheckIn.state == "answered", CheckIn.reply == "talk",
            CheckIn.replied_at >= checkins.now() - TALK_FLAG_SWEEP_LOOKBACK,
        )
    ).all()  # fmt: skip
    flagged = 0
    for checkin in asked_to_talk:
        callback = callback_carrying(checkin)
        if callback is not None and callback.state == "gave_up":
            flagged += checkins.flag_talk_not_reached(checkin.id, callback.outcome or "")
    return "talk_flags", flagged


def handle_reply(
    document: RoutingDocument, texter: Texter, inbound: Message, body: str, line_number: str | None,
    *, late: bool = False,
) -> bool:  # fmt: skip
    if checkins.nothing_pending(texter, inbound):
        return False
    text = body.strip()
    checkin = checkins.awaiting_reply(texter, inbound)
    if checkin is not None and checkin.state == "answered":
        # The clock's retry of a check-in answer whose handling died after the answer was
        # recorded: the rest is carried out now (each step at most once).
        _carry_out(document, texter, checkin, inbound, body)
        return True
    if late:
        return False  # a conversation of theirs is open: their words belong to it
    if checkin is not None and _reply_kind(text) in ("ok", "talk"):
        # A check-in's "1"/"2" before a survey's rating: a "2" may be someone asking to talk.
        return _checkin_reply(document, texter, checkin, inbound, text)
    survey = checkins.awaiting_survey(texter)
    if survey is not None and text.strip(".!") in {"1", "2", "3", "4", "5"}:
        if checkins.record_rating(survey, int(text.strip(".!")), inbound, document.timezone):
            thanks = document.language(survey.language).text("survey_thanks")
            _to_texter(texter, line_number or "", f"{checkins.SURVEY_THANKS_KEY_PREFIX}{inbound.id}", thanks)
        return True
    if checkin is not None and text:
        return _checkin_reply(document, texter, checkin, inbound, text)
    asked = checkins.consent_question(texter) if checkins.is_consent(text) else None
    if asked is not None:
        # Asked: consent now. Consented already (a counselor's wrap-up recorded it, or a YES
        # before this one): this YES answers the same question, never a first text that opens
        # a conversation at the menus. Confirmed once per question, whichever YES comes first.
        if asked.state == "asked":
            checkins.consent(asked, document)
            db.session.refresh(asked)
        if asked.state == "consented":
            _to_texter(texter, asked.line_number or line_number or "", f"checkin-consented:{asked.id}",
                       document.language(asked.language).text("checkin_ok"))  # fmt: skip
        return True
    return False


def _reply_kind(text: str) -> str:
    """ok ("1") | talk ("2", or "help": asked how they are, they ask for help) | text
    (anything else: their words)."""
    answer = text.strip(".!")
    return {"1": "ok", "2": "talk", "HELP": "talk"}.get(answer.upper(), "text")


def _checkin_reply(document: RoutingDocument, texter: Texter, checkin: CheckIn, inbound: Message, text: str) -> bool:
    kind = _reply_kind(text)
    words = text if kind == "text" else None
    # Stamped with the text's own time: a retry of this text recognises its answer by it.
    if not checkins.record_reply(checkin, kind, words=words, at=inbound.created_at):
        db.session.refresh(checkin)
        if checkin.state == "answered" and checkin.replied_at == inbound.created_at:
            _carry_out(document, texter, checkin, inbound, text)  # this text's own handling, racing its retry
            return True
        return False  # another text of theirs answered it: this one is an ordinary text
    _carry_out(document, texter, checkin, inbound, text)
    return True


def _carry_out(document: RoutingDocument, texter: Texter, checkin: CheckIn, inbound: Message, body: str) -> None:
    """What an answer recorded for ``inbound`` promises, each step at most once however often
    this runs (it runs again when the handling died part-way): a callback (``talk_by: call``)
    or a prioritised conversation, stored before the words that promise it are sent; the
    words go under the conversation's own wait key, so a text while waiting does not tell
    the wait again (``sms.conversations.tell_wait_if_never_told``)."""
    language = document.language(checkin.language)
    line_number = checkin.line_number or inbound.line_number or ""
    if checkin.reply == "ok":
        _to_texter(texter, line_number, f"checkin-ok:{inbound.id}", language.text("checkin_ok"))
        return
    if checkin.reply == "talk" and document.followups.talk_by == "call" and _request_call(checkin):
        _to_texter(texter, line_number, f"checkin-talk:{inbound.id}", language.text("checkin_talk"))
        return  # idempotent: one callback per check-in
    if _its_conversation_ended(inbound):
        return  # its conversation was opened and is over already: never a second one
    conversation = open_prioritised(document, texter, checkin, line_number, answer=inbound)
    if conversation.line_number:
        words = language.text("checkin_talk" if checkin.reply == "talk" else "checkin_noted")
        convo.to_texter(conversation, "queued", words)
    counselor = document.responder(conversation.counselor_id or "") if conversation.state == "active" else None
    if checkin.reply == "text" and counselor is not None:
        # A retry that finds the conversation taken already (the backlog went to the counselor
        # before these words were linked): relayed under the key a live relay uses, so once.
        convo.relay_or_hand_back(conversation, counselor, document, inbound.id, body)
    line_queue.fill_soon(document)  # the clock's sweep offers it if this never runs


def _its_conversation_ended(answer: Message) -> bool:
    """The conversation this answer opened (its text is linked to it) is closed: a retry
    running late, after a counselor ended it. Read from the database, not the session: the
    text's own handling may be racing its retry. Only the answer's own conversation counts:
    one a later text of theirs opened and closed meanwhile never stands in for it."""
    state = db.session.scalars(
        select(Conversation.state)
        .join(Message, Message.conversation_id == Conversation.id)
        .where(Message.id == answer.id)
    ).first()
    return state == "closed"


def _request_call(checkin: CheckIn) -> bool:
    """``talk_by: call``: a callback (counselor first, then them). If callbacks are off or
    their number is gone, the person gets a prioritised text conversation instead."""
    return request_from_checkin(checkin)


def open_prioritised(
    document: RoutingDocument, texter: Texter, checkin: CheckIn, line_number: str, *, answer: Message
) -> Conversation:
    """A text conversation ahead of ordinary ones, already sorted (language and need from the
    check-in) and queued, with ``answer`` (their reply: a "2" or their words) linked to it in
    the same transaction, so it reaches whoever takes it and a retry knows the conversation as
    this answer's own. The queue's pass is the caller's to start.

    It starts in the queue, never at the language menu, where the clock's retry of their text
    would otherwise be read as a menu answer."""
    need = document.need(checkin.need)
    priority = max(checkins.CHECKIN_PRIORITY, need.priority if need else 0)
    sorted_as = {"language": checkin.language, "need": checkin.need or document.menu.default_need,
                 "priority": priority}  # fmt: skip
    conversation = convo.start_conversation(texter, line_number or None, queued_as=sorted_as, with_text=answer.id)
    # Or the one a text of theirs opened meanwhile (one open per texter): sorted and queued the
    # same way if still at the menus, given the check-in's priority if waiting (no-ops for ours).
    db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state.in_(("language", "need")))
        .values(state="queued", queued_at=convo.now(), **sorted_as)
    )
    db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state.in_(convo.WAITING_STATES),
               Conversation.priority < priority)
        .values(priority=priority)
    )  # fmt: skip
    db.session.commit()
    db.session.refresh(conversation)
    return conversation


def _to_texter(texter: Texter, line_number: str, key: str, body: str) -> None:
    if not line_number or not texter.sealed_number:
        return
    outbox.send_text(
        key=key, to_number=convo.texter_number(texter), from_number=line_number, body=body, party="texter",
        texter=texter,
    )  # fmt: skip
