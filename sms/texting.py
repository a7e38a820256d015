"""Where a texter's message is handled: keywords, language, need, queue, relay."""

from __future__ import annotations

import re
from datetime import datetime

from blinker import Namespace
from sqlalchemy import update

from crisisline import events
from crisisline.db import commit_keeping_loaded, db
from crisisline.models import Conversation, Message, Texter
from ivr.menu import MenuInput, choose_language, choose_need
from routing.document import RoutingDocument
from sms import conversations as convo
from sms.language import detect
from sms.outbox import mark_opted_in, mark_opted_out

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
CALL_WORDS = frozenset({"CALL", "CALL ME", "PHONE ME", "LLAMAR", "LLAMADA", "LLAMEME", "LLÁMEME", "LLAMENME"})

# Hooks for the features above texts (they connect when imported; see ``crisisline.events``).
signals = Namespace()
# A texter (not opted out) wrote while no conversation of theirs is open, and not INFO (a HELP
# may answer a check-in: someone asked how they are who writes "help" is asking to talk). Sender:
# the Texter; ``document``, ``inbound`` (the Message), ``body``, ``line_number``, ``late``. A
# receiver that recognises an answer to something the line sent (``followups``: a survey
# rating, a check-in reply, a YES to the check-in question) handles it and returns True: then
# the text goes to no conversation. ``late``: a conversation of theirs is open now, begun after
# this text was written (a retry, a burst): only an answer already recorded for this very text
# may be finished; anything else is left to that conversation.
text_between_conversations = signals.signal("text-between-conversations")
# A texter asked to be called (CALL, LLAMAR…) while not yet with a counselor, on a line with
# callbacks and a number to call. Sender: the Conversation, closed for the callback a moment
# before (unless a counselor took it first); ``texter``, ``document``. A receiver that
# arranged the callback (``callbacks``) returns True.
call_requested = signals.signal("call-requested")


def keyword_of(body: str) -> str:
    return body.strip().strip(".!").upper()


def _help_text(document: RoutingDocument, texter: Texter, inbound: Message) -> None:
    """The HELP keyword's answer (who this is, how to call), in the conversation of theirs that
    is open now; none when the line will call them (its text says so)."""
    conversation = convo.open_conversation(texter)
    if conversation is not None:
        language = document.language(conversation.language)
        help_text = language.text("help", line=document.line_name, voice_number=conversation.line_number or "")
        convo.to_texter(conversation, f"help:{inbound.id}", help_text)


def handle_texter_message(
    document: RoutingDocument, texter: Texter, inbound: Message, body: str, num_media: int,
    line_number: str | None,
) -> None:  # fmt: skip
    """Handle one inbound text (already deduplicated by MessageSid). A keyword of the line's
    Messaging Service (Advanced Opt-Out: "PARAR", "COMENZAR") arrives with Twilio's
    ``OptOutType``: Twilio has applied it already, and the line takes it as Twilio did. With
    ``sms.advanced_opt_out``, a text through the service (``opt_out_type`` "" or a type) opts
    in or out only by it: a word its list left out ("CANCEL") is blocked by nothing, and is
    words. On a long code, Twilio's default keywords: the line's word lists."""
    keyword = inbound.opt_out_type or keyword_of(body)
    service_decides = document.sms.advanced_opt_out and inbound.opt_out_type is not None
    opting = inbound.opt_out_type if service_decides else keyword
    # When the person sent it (a text kept through an outage is stored, and handled, later): a
    # STOP or START sent before their latest change applies nothing, as with Twilio's own block.
    sent_at = inbound.received_at or inbound.created_at
    if opting in STOP_WORDS:
        _opt_out(document, texter, sent_at)
        return
    if opting in START_WORDS or (opting == "YES" and texter.opted_out):
        was_opted_out = texter.opted_out
        applied = mark_opted_in(texter, at=sent_at)  # its time recorded all the same (the order)
        db.session.commit()
        if not applied:
            return  # they opted out (or in) since: that stands; this text is kept, unanswered
        if was_opted_out or convo.open_conversation(texter) is None:
            conversation = convo.open_or_start_conversation(texter, line_number)
            convo.to_texter(conversation, f"start:{inbound.id}", document.default_language.text("started"))
            # Opened only to carry that reply (none of their texts in it; a retry of this START
            # finds it so too): closed quietly, so nothing idles an hour and then texts them.
            convo.close_unused(conversation)
            return
        # Not opted out, in a conversation (with a counselor, say): nothing to start again, so
        # "Start" is their words to it, linked and passed on as any text of theirs.
    if texter.opted_out:
        # Twilio would refuse any reply (21610): the message is kept, nothing is sent, and a
        # person is told (the sweep texts the supervisors; the unmask page lists the sender).
        # Not a text written before their STOP and handled after it (a retry, a burst, a text
        # kept through an outage: stored after the STOP, written before it).
        if texter.opted_out_at is None or sent_at >= texter.opted_out_at:
            convo.needs_a_person(inbound.id)
        return
    current = convo.open_conversation(texter)
    # Written before their open conversation began: the clock's retry of a text whose handling
    # died, or one of a burst handled out of order. Offered ``late``: then only an answer the
    # line recorded for this very text is finished (matched exactly, never by comparing two
    # processes' clocks, as this test does); anything else belongs to the open conversation.
    late = current is not None and inbound.created_at < current.started_at
    # INFO by its words: with Advanced Opt-Out it arrives as ``OptOutType`` HELP too.
    if keyword_of(body) != "INFO" and (current is None or late):
        answered = text_between_conversations.send(
            texter, document=document, inbound=inbound, body=body, line_number=line_number, late=late
        )
        if any(handled for _receiver, handled in answered):
            if keyword in HELP_WORDS:
                _help_text(document, texter, inbound)  # the keyword's answer too, in what it opened
            return
    if current is None:
        # Read or written a moment ago (stamped with this text's time when it is ours).
        conversation = convo.start_conversation(texter, line_number, with_text=inbound.id)
    else:
        db.session.execute(update(Message).where(Message.id == inbound.id).values(conversation_id=current.id))
        # The row comes back from its UPDATE (which locks it until the commit): its state, as a
        # counselor or the queue may have left it, without reading it again.
        still_open = convo.still_open(current)
        if still_open is None:
            # Closed since it was read (the counselor's END, an idle close committed meanwhile):
            # this text opens a new conversation, as it would have a moment later. Never dropped.
            conversation = convo.start_conversation(texter, line_number, with_text=inbound.id)
        else:
            conversation = still_open
            commit_keeping_loaded()
    language = document.language(conversation.language)
    if conversation.state == "active":
        handle_step(document, conversation, inbound, body)  # with a counselor, every word goes to them
        if num_media:
            convo.to_texter(conversation, f"mms:{inbound.id}", language.text("mms"))
        return
    if keyword in CALL_WORDS and conversation.state != "active":
        _call_me_back(document, conversation, texter, inbound, body)
        return
    if keyword in HELP_WORDS:
        voice = conversation.line_number or ""
        convo.to_texter(
            conversation,
            f"help:{inbound.id}",
            language.text("help", line=document.line_name, voice_number=voice),
        )
        # At the menus "help" may be a cry, not the keyword: after the help text it counts as an
        # answer the menu did not take (asked again, then the default route), so someone who can
        # only write "help" still reaches a counselor. With the line down, past the menus now.
        if _line_down_at_the_menus(document, conversation):
            _past_the_menus_to_the_backup_line(document, conversation, body)
        elif conversation.state == "language":
            if not _count_attempt(conversation):
                # A text beside this one counted (and asks, or routes) or moved it on: at the
                # need menu a language question would have its "1" read as a need.
                return
            if conversation.menu_attempts <= document.menu.retries:
                convo.to_texter(conversation, f"language-ask:{inbound.id}", _language_question(document))
            else:
                _language_step(document, conversation, inbound, body)  # their words' language, or the default
        elif conversation.state == "need":
            _need_step(document, conversation, inbound, body)
        return
    if num_media:
        convo.to_texter(conversation, f"mms:{inbound.id}", language.text("mms"))
        # A picture and its caption often arrive as two texts, handled side by side: the other
        # may have moved the conversation on during the Twilio request just made.
        db.session.refresh(conversation)
        if not body.strip():
            # A picture alone: ask which language, so they know what next (unless a text beside
            # it counted first: that one asks). With the line down, past the menus now.
            if _line_down_at_the_menus(document, conversation):
                _past_the_menus_to_the_backup_line(document, conversation, body)
            elif conversation.state == "language" and conversation.menu_attempts == 0 and _count_attempt(conversation):
                convo.to_texter(conversation, f"language-ask:{inbound.id}", _language_question(document))
            return
    handle_step(document, conversation, inbound, body)


def _call_me_back(
    document: RoutingDocument, conversation: Conversation, texter: Texter, inbound: Message, body: str
) -> None:
    """``CALL``: the texter would rather talk. A callback takes over their place in the queue."""
    language = document.language(conversation.language)
    if not (document.callbacks.enabled and texter.sealed_number):
        # "A counselor will text you back here": so they must be in the queue (at the menus
        # they were not), with what they chose so far and the defaults for the rest.
        if conversation.state in ("language", "need"):
            need = document.need(conversation.need or "") or document.need(document.menu.default_need)
            chosen = (need.key, need.priority) if need else None
            convo.queue(conversation, document, need=chosen, language_code=language.code)
        convo.to_texter(conversation, f"callback-impossible:{inbound.id}", language.text("callback_impossible"))
        return
    state_before = conversation.state
    if not _closed_for_the_callback(document, conversation, inbound, body):
        return  # a counselor's YES took it a moment ago: they have them, and read the CALL
    try:
        arranged = call_requested.send(conversation, texter=texter, document=document)
        if not any(done for _receiver, done in arranged):
            raise RuntimeError(f"conversation {conversation.id}: CALL not arranged")
    except Exception:
        # Closed for a callback that was not stored: never left so. Open again as it was
        # (their language, need and place), so the clock's retry of this text finds it.
        db.session.rollback()
        convo.reopen_closed_for(conversation, document, "callback", state_before)
        raise
    convo.to_texter(conversation, f"callback:{inbound.id}", language.text("callback_confirmed"))
    if not convo.anyone_can_text(conversation, document) and convo.claim_backup_offer(conversation):
        # Nobody on shift could call them yet: the callback waits for someone, and they are
        # told of the backup line now, as a texter left waiting is.
        convo.to_texter(conversation, "backup", language.text("backup"))


def _closed_for_the_callback(
    document: RoutingDocument, conversation: Conversation, inbound: Message, body: str
) -> bool:
    """Close the conversation for the callback before it is arranged, only while no counselor
    has it (checked in the UPDATE): a YES that took it a moment before the CALL wins, the
    counselor reads the CALL, and no callback is made (one would cross them). True: closed
    (or closed meanwhile: they asked to be called all the same), the callback goes ahead."""
    for _ in range(2):  # again once a conversation held by a counselor who is gone is handed back
        if convo.close(conversation, document, "callback", tell_texter=None, unless_taken=True):
            return True
        db.session.refresh(conversation)
        if conversation.state != "active":
            return True
        responder = document.responder(conversation.counselor_id) if conversation.counselor_id else None
        if responder is None:
            convo.requeue_orphan(conversation, document)  # their counselor left the rota
        else:
            # To them unless their YES's backlog carried it already; handed back if their
            # account was closed.
            convo.relay_or_hand_back(conversation, responder, document, inbound.id, body)
        db.session.refresh(conversation)
        if conversation.state == "active":
            return False
    return False  # taken again at once: the counselor who has them gets the CALL with the backlog


def _line_down_at_the_menus(document: RoutingDocument, conversation: Conversation) -> bool:
    return document.mode == "system_down" and conversation.state in ("language", "need")


def handle_step(document: RoutingDocument, conversation: Conversation, inbound: Message, body: str) -> None:
    if _line_down_at_the_menus(document, conversation):
        _past_the_menus_to_the_backup_line(document, conversation, body)
    elif conversation.state == "language":
        _language_step(document, conversation, inbound, body)
    elif conversation.state == "need":
        _need_step(document, conversation, inbound, body)
    elif conversation.state in convo.WAITING_STATES:
        _raise_priority(document, conversation, body)
        if not convo.tell_wait_if_never_told(conversation, document):
            convo.tell_still_waiting(conversation, document)
    elif conversation.state == "active" and conversation.counselor_id:
        responder = document.responder(conversation.counselor_id)
        if responder is None:
            convo.requeue_orphan(conversation, document)  # their counselor left the rota
        else:
            convo.relay_or_hand_back(conversation, responder, document, inbound.id, body, pictures=inbound.num_media)


def _language_step(document: RoutingDocument, conversation: Conversation, inbound: Message, body: str) -> None:
    chosen = None
    text = body.strip()
    if conversation.menu_attempts > 0 and _menu_digit(text):
        chosen = next((lang for lang in document.languages if str(lang.digit) == text[:1]), None)
    if chosen is None:
        detected, confidence = detect(document, text)
        if detected is not None and confidence >= document.sms.language_confidence:
            chosen = detected
    if chosen is None and conversation.menu_attempts > document.menu.retries:
        chosen = document.default_language
    if chosen is None:
        if _count_attempt(conversation):
            convo.to_texter(conversation, f"language-ask:{inbound.id}", _language_question(document))
        return
    # Their words may name a need whatever they begin with ("2 days now and I want to die").
    need = choose_need(document, chosen, MenuInput(speech=text)) if not _menu_digit(text) else None
    if need is not None and need.key == document.menu.default_need:
        need = None  # "talk to someone" is not a choice; show the menu so they can pick
    if need is not None:
        convo.queue(conversation, document, welcome=chosen.text("welcome"), need=(need.key, need.priority),
                    language_code=chosen.code)  # fmt: skip
        return
    # Conditional: a text of theirs handled beside this one may have queued them meanwhile,
    # and must not be put back to the menu (committed with the menu's claim). The row comes
    # back from the UPDATE only if it moved; the session's copy is left alone otherwise.
    moved = db.session.scalars(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state == "language")
        .values(state="need", language=chosen.code, menu_attempts=0)
        .returning(Conversation)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).first()
    if moved is None:
        db.session.commit()
        return
    # The welcome and the menu in one text: two texts may arrive in either order, and the menu
    # must not come before the welcome. Sent once per conversation, as the welcome alone was.
    _send_welcome_and_need_menu(document, conversation, chosen.text("welcome"))


def _past_the_menus_to_the_backup_line(document: RoutingDocument, conversation: Conversation, body: str) -> None:
    """The line is down (``mode: system_down``): as a caller goes straight to the backup line, a
    texter is told it at once, without the menus (``convo.wait_text``). They stay in line, in
    their language if their words show it, for when the line is back up."""
    welcome = ""
    if conversation.state == "language":
        detected, confidence = detect(document, body.strip())
        sure = detected is not None and confidence >= document.sms.language_confidence
        language = detected if sure and detected is not None else document.default_language
        welcome = language.text("welcome")
    else:
        language = document.language(conversation.language)
    need = document.need(document.menu.default_need) or document.needs[-1]
    convo.queue(conversation, document, welcome=welcome, need=(need.key, need.priority), language_code=language.code)


def _menu_digit(text: str) -> bool:
    """A menu answer by number ("2", "2.", "2!"), not words that begin with one ("2 days now...")
    nor a number of two digits ("12" is not the need of its first digit: it is asked again).
    A digit as ``isdecimal`` reads one: "²" is words; other scripts' digits count, as before."""
    return re.fullmatch(r"\d[.!]?", text) is not None


def _language_question(document: RoutingDocument) -> str:
    return " / ".join(lang.text("language_option", digit=lang.digit) for lang in document.languages)


def _send_welcome_and_need_menu(
    document: RoutingDocument, conversation: Conversation, welcome: str, key: str = "welcome"
) -> None:
    language = document.language(conversation.language)
    lines = [welcome, "", language.text("need_menu")] + [
        language.text("need_option", digit=need.digit, label=need.labels.get(language.code, need.key))
        for need in document.needs
    ]
    convo.to_texter(conversation, key, "\n".join(lines))


def _need_step(document: RoutingDocument, conversation: Conversation, inbound: Message, body: str) -> None:
    language = document.language(conversation.language)
    text = body.strip()
    given = MenuInput(digits=text[:1]) if _menu_digit(text) else MenuInput(speech=text)
    need = choose_need(document, language, given)
    if need is None and given.speech and _switch_language(document, conversation, inbound, given):
        return
    if need is None:
        if not _count_attempt(conversation):
            return  # a text beside this one counted (it asks again, or routes) or sorted them
        if conversation.menu_attempts <= document.menu.retries:
            convo.to_texter(conversation, f"need-retry:{inbound.id}", language.text("need_retry"))
            return
        need = document.need(document.menu.default_need) or document.needs[-1]
    convo.queue(conversation, document, need=(need.key, need.priority))


def _switch_language(document: RoutingDocument, conversation: Conversation, inbound: Message, given: MenuInput) -> bool:
    """At the need menu, "English please": their language was guessed wrong from their first
    words ("I'm Sofia" reads as Spanish). The menu again, in the language they named."""
    named = choose_language(document, MenuInput(speech=given.speech))
    if named is None or named.code == conversation.language:
        return False
    moved = db.session.scalars(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state == "need")
        .values(language=named.code, menu_attempts=0)
        .returning(Conversation)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).first()
    db.session.commit()
    if moved is not None:
        _send_welcome_and_need_menu(document, moved, named.text("welcome"), key=f"language-switch:{inbound.id}")
    return True


def _count_attempt(conversation: Conversation) -> bool:
    """Count a menu answer not taken, if nobody counted one or moved the menu on since this text
    read the row: texts handled at once count one try between them, and only the one that
    counted asks again or takes the default route (a burst is asked once, and never skips to
    the default). The loser stays silent: the winner's question or route is what they get, and
    the clock retries the winner's handling until it is done. The row is read again either way."""
    counted = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.state == conversation.state,
               Conversation.menu_attempts == conversation.menu_attempts)
        .values(menu_attempts=Conversation.menu_attempts + 1)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]  # fmt: skip
    db.session.commit()
    db.session.refresh(conversation)
    return bool(counted)


def _raise_priority(document: RoutingDocument, conversation: Conversation, body: str) -> None:
    """Risk words while waiting (e.g. "I took the pills") move the texter up the queue."""
    language = document.language(conversation.language)
    need = choose_need(document, language, MenuInput(speech=body))
    if need is not None and need.priority > conversation.priority:
        # Conditional: a text handled beside this one may have raised it higher already.
        db.session.execute(
            update(Conversation)
            .where(Conversation.id == conversation.id, Conversation.priority < need.priority)
            .values(priority=need.priority)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()


def _opt_out(document: RoutingDocument, texter: Texter, sent_at: datetime) -> None:
    """STOP: nothing more is sent to this number (follow-ups included); open threads close.
    Not if they opted in since it was sent: their START stands, and so does their conversation.
    An opt-out recorded since (a 21610 for a text sent after this STOP) is this STOP's news:
    closing and its reactions are idempotent, so they run as for a STOP applied now."""
    applied = mark_opted_out(texter, at=sent_at)
    db.session.commit()
    if not applied:
        db.session.refresh(texter)  # the later change, as committed: its row was not returned
        if not texter.opted_out:
            return
    events.texter_opted_out.send(texter)  # e.g. pending check-ins are canceled
    conversation = convo.open_conversation(texter)
    if conversation is not None:
        convo.close(conversation, document, "stopped", tell_texter=None)
