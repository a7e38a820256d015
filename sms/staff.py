"""Where a responder's text to the line is handled: ON/OFF/STATUS, YES/END/PASS <tag>, replies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import select, update

from crisisline import events
from crisisline.db import db
from crisisline.models import Conversation, ConversationOffer, Message
from crisisline.retention import Cutoffs
from line_queue import responders as state  # pause/resume: shared with voice, below both
from routing.document import Responder, RoutingDocument
from sms import conversations as convo
from transfer.availability import availability

COMMANDS = ("ON", "OFF", "STATUS")
AMBIGUITY_WINDOW = timedelta(minutes=2)
# With several conversations, an untagged reply written this soon after the newest texter's
# words cannot be known to answer them: the counselor was most likely still typing to another
# texter, whose words would then go to the wrong person. They are asked for the tag.
JUST_WROTE = timedelta(seconds=60)
# How far two processes' clocks may differ (a conversation taken by one, a reply stored by
# another): a reply is never held to have come before a conversation taken this much after it.
CLOCKS_APART = timedelta(seconds=5)
NEVER_RELAYED = frozenset(
    {"YES", "END", "PASS", "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "QUIT", "REVOKE", "OPTOUT", "START",
     "UNSTOP", "HELP", "INFO"}
)  # fmt: skip  # two texters this close together: ask for the tag
# Twilio's opt-in words, alone in a text: a phone that blocked the line's texts (STOP) takes
# them again. YES is one only for a blocked phone; otherwise it is a counselor's command.
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES"})
_TAGGED = re.compile(r"^\s*(YES|END|PASS)\s*#?\s*(\d+)\s*[.!]?\s*$", re.IGNORECASE)
_RELAY = re.compile(r"^\s*#\s*(\d+)[\s:,-]*(.*)$", re.DOTALL)
# A command with something more ("END 12 thanks", "Yes, 13") naming a conversation of theirs:
# never words for a texter, and not carried out either (what the "more" meant cannot be known).
# "Yes, 24/7 someone is here" names none of theirs: words, as written.
_COMMAND_WITH_MORE = re.compile(r"^\s*(YES|END|PASS)\b[\s,.:;#-]*(\d+)", re.IGNORECASE)


def parse_command(body: str) -> str | None:
    """ON / OFF / STATUS ("on", " Status. " …), or None."""
    word = body.strip().strip(".!").upper()
    return word if word in COMMANDS else None


def run_command(document: RoutingDocument, responder: Responder, command: str) -> str:
    """Carry out ON / OFF / STATUS for ``responder``; returns the reply text. Idempotent.

    A responder whose console account was closed is told so (``not_rung_sms``) whatever they
    text: their ON lifts nothing (``state.set_paused``), and "available" or "Reply ON" would
    not be true."""
    if command == "ON":
        changed = state.set_paused(responder.id, False, None)
        db.session.commit()
        refused = None if changed else state.paused_reason(responder.id)
        if refused == state.ACCOUNT_CLOSED:
            return document.staff_prompt("not_rung_sms")
        if refused == state.TEXTS_BLOCKED:  # Twilio refuses this reply too, unless the block is gone
            return document.staff_prompt("sms_blocked_on")
        return document.staff_prompt("on_sms")
    if state.is_closed(responder.id):
        return document.staff_prompt("not_rung_sms")
    if command == "OFF":
        state.set_paused(responder.id, True, "self")
        state.hand_on_offers(responder.id)  # a texter offered to them goes to the next counselor
        db.session.commit()
        events.send_responder_paused(responder.id)  # a caller their phone rings for: the next person
        return document.staff_prompt("off_sms")
    return document.staff_prompt("status_sms", status=availability(document, responder, datetime.now(UTC)))


@dataclass(frozen=True)
class Reply:
    text: str
    conversation: Conversation | None = None
    refused: bool = False  # nothing was sent or done: not theirs (any more), or their account was closed


def handle_staff_message(document: RoutingDocument, responder: Responder, inbound: Message, body: str) -> Reply:
    """A responder's text: a command, or words for a texter (relayed from the line's number).
    A picture is never passed on: they are told, so they do not believe the texter has it."""
    if inbound.num_media and not body.strip():
        return Reply(document.staff_prompt("sms_staff_picture"), refused=True)
    reply = _handle_words(document, responder, inbound, body)
    if inbound.num_media and not reply.refused and not reply.text:
        return Reply(document.staff_prompt("sms_staff_picture"), reply.conversation)  # the words went
    return reply


def _handle_words(document: RoutingDocument, responder: Responder, inbound: Message, body: str) -> Reply:
    command = parse_command(body)
    if command is not None:
        return Reply(run_command(document, responder, command))
    tagged = _TAGGED.match(body)
    if tagged:
        verb, tag = tagged.group(1).upper(), tagged.group(2)
        conversation = _conversation(tag)
        if conversation is None:
            return _refused(document, responder, tag)
        return _tagged_command(document, responder, verb, conversation)
    relay = _RELAY.match(body)
    if relay:
        tag, words = relay.group(1), relay.group(2).strip()
        if not words:  # "#12" alone: nothing to send, and they must not believe something went
            return _nothing_to_send(document, responder, tag)
        return relay_to_tag(document, responder, inbound, tag, words)
    bare = body.strip().strip(".!").upper()
    if inbound.opt_out_type == "START" or bare in OPT_IN_WORDS:
        lifted = state.lift_text_block(responder.id)
        db.session.commit()
        if lifted or bare != "YES":
            status = availability(document, responder, datetime.now(UTC))
            return Reply(document.staff_prompt("sms_started", status=status))
    if bare in NEVER_RELAYED or inbound.opt_out_type:  # a keyword of the Messaging Service's too
        # "END" without a number must not reach a texter (and is an opt-out word to carriers).
        return Reply(document.staff_prompt("sms_needs_tag", command=bare))
    with_more = _COMMAND_WITH_MORE.match(body)
    if with_more and _one_of_theirs(responder, with_more.group(2)):
        return Reply(document.staff_prompt("sms_command_alone", command=with_more.group(1).upper()), refused=True)
    # Only conversations they had when they wrote: a text handled late (the clock's retry, or
    # one kept through a database outage, whose ``received_at`` says when it came) must not
    # reach a texter they took since. Late with several, who wrote last may have changed too:
    # they are asked for the tag rather than guessed for.
    sent_at = inbound.received_at or inbound.created_at
    written = sent_at + CLOCKS_APART  # another process's clock may run a little ahead
    mine = [c for c in _active_conversations(responder) if c.assigned_at is None or c.assigned_at <= written]
    if not mine:
        if state.is_closed(responder.id):  # one read, only when there is nothing to relay to
            return Reply(document.staff_prompt("not_rung_sms"), refused=True)
        return Reply(document.staff_prompt("sms_no_conversation"))
    late = convo.now() - sent_at > convo.RETRY_AFTER
    target = None if late and len(mine) > 1 else _untagged_target(mine, sent_at)
    if target is None:
        tags = ", ".join(f"#{c.tag}" for c in mine)
        return Reply(document.staff_prompt("sms_ambiguous", tags=tags))
    return _relay(target, responder, inbound, body.strip(), document)


def relay_to_tag(document: RoutingDocument, responder: Responder, inbound: Message, tag: str, words: str) -> Reply:
    """``words`` for the texter of conversation ``tag``, exactly as given, if it is still this
    responder's: a texted ``#12 words`` once parsed, or the console's reply box (which must not
    go through the parser: it strips a leading "-", ":" or "," as the tag's separator)."""
    conversation = _conversation(tag)
    if conversation is None or conversation.state != "active" or conversation.counselor_id != responder.id:
        return _refused(document, responder, tag)
    return _relay(conversation, responder, inbound, words, document)


def _nothing_to_send(document: RoutingDocument, responder: Responder, tag: str) -> Reply:
    """A tag with no words after it: told nothing was sent, unless ``#tag`` is not theirs or
    their account was closed (then they are told that, as for words to it)."""
    conversation = _conversation(tag)
    theirs = conversation is not None and conversation.state == "active" and conversation.counselor_id == responder.id
    if not theirs or state.is_closed(responder.id):
        return _refused(document, responder, tag)
    return Reply(document.staff_prompt("sms_empty_reply", tag=tag), conversation, refused=True)


def _refused(document: RoutingDocument, responder: Responder, tag: str) -> Reply:
    """Nothing done for ``#tag``: it is not this responder's (any more), or their console
    account was closed (``not_rung_sms``: one read, only on this refusal)."""
    if state.is_closed(responder.id):
        return Reply(document.staff_prompt("not_rung_sms"), refused=True)
    return Reply(document.staff_prompt("sms_too_late", tag=tag), refused=True)


def _yes_refused(document: RoutingDocument, responder: Responder, conversation: Conversation) -> Reply:
    """Their YES took nothing. At their conversation limit (one read, only on this refusal),
    they are told so, not that it was taken, and an offer of it open to them ends now: its
    texter goes to the next counselor rather than waiting out an offer they cannot take."""
    tag = str(conversation.tag)
    if state.is_closed(responder.id):
        return Reply(document.staff_prompt("not_rung_sms"), refused=True)
    limit = document.sms.max_conversations_per_counselor
    load = convo.counselor_load(responder.id) if responder.kind == "counselor" else 0
    if load < limit:
        return Reply(document.staff_prompt("sms_too_late", tag=tag), refused=True)
    state.expire_offer(responder.id, conversation.id)
    db.session.commit()
    return Reply(document.staff_prompt("sms_at_limit", tag=tag, count=load), refused=True)


def _texted_before_within_retention(conversation: Conversation) -> bool:
    """Their conversation before this one started within the texts' window, as the desk's
    history counts them (``console.desk.history``): an older one is no longer theirs to
    mention (the hourly purge unlinks it, ``workers.upkeep``; until it runs, this)."""
    if not conversation.previous_id:
        return False
    started = db.session.scalar(select(Conversation.started_at).where(Conversation.id == conversation.previous_id))
    cutoff = Cutoffs.at(convo.now(), current_app.extensions["crisisline.settings"]).texts
    return started is not None and started >= cutoff


def _tagged_command(document: RoutingDocument, responder: Responder, verb: str, conversation: Conversation) -> Reply:
    tag = conversation.tag
    holds_it = conversation.counselor_id == responder.id and conversation.state == "active"
    if verb == "YES":
        # Theirs already, ``take`` relays the backlog again: never to a closed account's phone
        # (one read, only for a YES to a conversation they hold).
        if holds_it and state.is_closed(responder.id):
            return _refused(document, responder, str(tag))
        if not convo.take(conversation, responder, document):
            return _yes_refused(document, responder, conversation)
        db.session.refresh(conversation)
        text = document.staff_prompt("sms_taken", tag=tag)
        if _texted_before_within_retention(conversation):
            text += " " + document.staff_prompt("sms_returning", tag=tag)
        return Reply(text, conversation)
    if not holds_it:
        return _refused(document, responder, str(tag))
    if state.is_closed(responder.id):  # one read per END or PASS: a closed account's phone ends nothing
        convo.pass_back(conversation, responder, document)  # its closing's hand-back has not run yet
        return _refused(document, responder, str(tag))
    # The checks above read the row; the change below checks again that it is still theirs (a
    # pass from another tab, or the sweep's, and another counselor's YES may come between).
    if verb == "END":
        # Closing frees a slot; the queue offers it to the next texter in line.
        if not convo.close(conversation, document, "counselor_ended", tell_texter="closed", holder=responder.id):
            return _refused(document, responder, str(tag))
        return Reply(document.staff_prompt("sms_ended", tag=tag))
    if not convo.pass_back(conversation, responder, document):
        return _refused(document, responder, str(tag))
    return Reply(document.staff_prompt("sms_passed", tag=tag))


# Conversation ids are 32-bit: a longer "tag" (a pasted phone number) is no conversation, and
# must not reach the database, which would refuse the number and leave the text unhandled.
MAX_TAG_DIGITS = 9


def _one_of_theirs(responder: Responder, tag: str) -> bool:
    """Does ``tag`` name a conversation ``responder`` holds, or was offered? (Reads only for a
    text that starts like a command with a number.)"""
    conversation = _conversation(tag)
    if conversation is None:
        return False
    if conversation.counselor_id == responder.id:
        return True
    offered = select(ConversationOffer.id).where(
        ConversationOffer.conversation_id == conversation.id, ConversationOffer.responder_id == responder.id
    )
    return db.session.scalar(offered.limit(1)) is not None


def _conversation(tag: str) -> Conversation | None:
    if len(tag) > MAX_TAG_DIGITS:
        return None
    return db.session.get(Conversation, int(tag))


def _relay(
    conversation: Conversation, responder: Responder, inbound: Message, words: str, document: RoutingDocument
) -> Reply:
    """Counselor → texter, from the line's number: neither ever sees the other's number.

    Sent only while the conversation is still this counselor's and their console account is
    not closed (``state.still_rung``), both checked in the UPDATE that stamps it: words written
    to a texter they passed on (from another tab, or by the sweep) never reach that texter once
    another counselor holds the conversation, and a closed account's phone reaches no texter.
    A conversation such a phone still holds (its closing's hand-back has not run yet) goes
    back to the queue now, as after their PASS: its texter is not left waiting on them."""
    if words:
        moment = convo.now()
        still_theirs = db.session.execute(
            update(Conversation)
            .where(Conversation.id == conversation.id, Conversation.state == "active",
                   Conversation.counselor_id == responder.id, state.still_rung(responder.id))
            .values(last_activity_at=moment, last_counselor_at=moment)
        ).rowcount  # type: ignore[attr-defined]  # fmt: skip
        db.session.commit()
        db.session.refresh(conversation)
        if not still_theirs and state.is_closed(responder.id):  # one read, only when refused
            convo.pass_back(conversation, responder, document)  # a no-op unless it is still theirs
            return Reply(document.staff_prompt("not_rung_sms"), conversation, refused=True)
        if not still_theirs and conversation.state == "closed":
            return Reply(f"#{conversation.tag} is closed; not sent.", conversation, refused=True)
        if not still_theirs:
            return Reply(f"#{conversation.tag} is no longer yours; not sent.", conversation, refused=True)
        convo.to_texter(conversation, f"relay:{inbound.id}", words)
    return Reply("", conversation)


def _active_conversations(responder: Responder) -> list[Conversation]:
    return list(
        db.session.scalars(
            select(Conversation)
            .where(Conversation.counselor_id == responder.id, Conversation.state == "active")
            .order_by(Conversation.last_texter_at.desc().nulls_last(), Conversation.id.desc())
        )
    )


def _words_reached_them(conversation: Conversation) -> datetime | None:
    """When a conversation's newest words reached the counselor's phone: when its texter wrote,
    or when the counselor took it, if later (taking it brings its backlog, however old)."""
    wrote, taken = conversation.last_texter_at, conversation.assigned_at
    return max(wrote, taken) if wrote is not None and taken is not None else wrote


def _untagged_target(mine: list[Conversation], written_at: datetime) -> Conversation | None:
    """The only conversation, or the one whose words reached the counselor last unless
    another's reached them just as recently, or they reached them just before the reply
    (``JUST_WROTE``)."""
    if len(mine) == 1:
        return mine[0]
    mine = sorted(mine, key=lambda c: _words_reached_them(c) or datetime.min.replace(tzinfo=UTC), reverse=True)
    latest, runner_up = _words_reached_them(mine[0]), _words_reached_them(mine[1])
    if latest is None or written_at - latest < JUST_WROTE:
        return None
    if runner_up is not None and latest - runner_up < AMBIGUITY_WINDOW:
        return None
    return mine[0]
