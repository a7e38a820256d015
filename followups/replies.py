"""Texts that answer a follow-up question: a survey rating, a check-in reply, a YES to consent.

Called (``sms.texting.text_between_conversations``) for every inbound text from a texter who
is not opted out and has no open conversation (with one, their words belong to that
conversation). Returns True when the text was an answer and has been handled; otherwise the
ordinary texting flow takes it.
"""

from __future__ import annotations

from sqlalchemy import update

from callbacks.requests import request_from_checkin
from crisisline.db import db
from crisisline.models import CheckIn, Conversation, Message, Texter
from followups import checkins
from routing.document import RoutingDocument
from sms import conversations as convo
from sms import outbox
from sms.texting import text_between_conversations


@text_between_conversations.connect
def _answer(
    texter: Texter, *, document: RoutingDocument, inbound: Message, body: str, line_number: str | None, **_: object
) -> bool:
    return handle_reply(document, texter, inbound, body, line_number)


def handle_reply(
    document: RoutingDocument, texter: Texter, inbound: Message, body: str, line_number: str | None
) -> bool:
    text = body.strip()
    survey = checkins.awaiting_survey(texter)
    if survey is not None and text.strip(".!") in {"1", "2", "3", "4", "5"}:
        if checkins.record_rating(survey, int(text.strip(".!"))):
            thanks = document.language(survey.language).text("survey_thanks")
            _to_texter(texter, line_number or "", f"survey-thanks:{inbound.id}", thanks)
        return True
    checkin = checkins.awaiting_reply(texter)
    if checkin is not None and text:
        return _checkin_reply(document, texter, checkin, inbound, text)
    asked = checkins.asked_checkin(texter)
    if asked is not None and checkins.is_consent(text):
        if checkins.consent(asked, document):
            _to_texter(texter, asked.line_number or line_number or "", f"checkin-consent:{inbound.id}",
                       document.language(asked.language).text("checkin_ok"))  # fmt: skip
        return True
    return False


def _checkin_reply(document: RoutingDocument, texter: Texter, checkin: CheckIn, inbound: Message, text: str) -> bool:
    language = document.language(checkin.language)
    line_number = checkin.line_number or inbound.line_number or ""
    answer = text.strip(".!")
    if answer == "1":
        if checkins.record_reply(checkin, "ok"):
            _to_texter(texter, line_number, f"checkin-ok:{inbound.id}", language.text("checkin_ok"))
        return True
    if answer == "2":
        if not checkins.record_reply(checkin, "talk"):
            return True
        _to_texter(texter, line_number, f"checkin-talk:{inbound.id}", language.text("checkin_talk"))
        if document.followups.talk_by == "call" and _request_call(checkin):
            return True
        open_prioritised(document, texter, checkin, line_number, relay=None)
        return True
    if not checkins.record_reply(checkin, "text", words=text or None):
        return True
    _to_texter(texter, line_number, f"checkin-noted:{inbound.id}", language.text("checkin_noted"))
    open_prioritised(document, texter, checkin, line_number, relay=inbound)
    return True


def _request_call(checkin: CheckIn) -> bool:
    """``talk_by: call``: a callback (counselor first, then them). If callbacks are off or
    their number is gone, the person gets a prioritised text conversation instead."""
    return request_from_checkin(checkin)


def open_prioritised(
    document: RoutingDocument, texter: Texter, checkin: CheckIn, line_number: str, *, relay: Message | None
) -> Conversation:
    """A text conversation ahead of ordinary ones, already sorted (language and need from the
    check-in), queued and offered. ``relay`` (their reply) reaches whoever takes it."""
    conversation = convo.open_or_start_conversation(texter, line_number or None)
    need = document.need(checkin.need)
    priority = max(checkins.CHECKIN_PRIORITY, need.priority if need else 0)
    if conversation.state in ("language", "need"):
        db.session.execute(
            update(Conversation)
            .where(Conversation.id == conversation.id, Conversation.state.in_(("language", "need")))
            .values(language=checkin.language, need=checkin.need or document.menu.default_need,
                    priority=priority, last_texter_at=convo.now(), last_activity_at=convo.now())
        )  # fmt: skip
    if relay is not None:
        db.session.execute(update(Message).where(Message.id == relay.id).values(conversation_id=conversation.id))
    db.session.commit()
    db.session.refresh(conversation)
    convo.queue(conversation, document, tell_texter=False)
    return conversation


def _to_texter(texter: Texter, line_number: str, key: str, body: str) -> None:
    if not line_number or not texter.sealed_number:
        return
    outbox.send_text(
        key=key, to_number=convo.texter_number(texter), from_number=line_number, body=body, party="texter",
        texter=texter,
    )  # fmt: skip
