"""The counselor page (phone-sized), its JSON, the availability switch, the SMS inbox
(threads, replies, END/PASS/YES), wrap-ups after a contact, the button that brings the
co-responder unit into a live call, and referrals texted from the line's directory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from console.access import allow, count_as_activity, current_user, signed_in
from console.accounts.forms import ConfirmForm
from console.board.live import language_name, need_label
from console.desk import calls, referrals, texts, wrapups
from console.desk.forms import KeyedForm, ReferralForm, ReplyForm, WrapUpForm
from console.desk.now import Desk, desk, handed_on_words, set_available, still_holding
from console.line_state import current_line_down_message
from console.models import COUNSELOR
from crisisline.models import Conversation
from routing.document import Responder, RoutingDocument
from routing.store import active_routing

bp = Blueprint("desk", __name__)
REFRESH_SECONDS = 5
REPLY_SENT = "reply-sent"  # a flash category: "<account id>:<conversation id>", read by drafts.js
FOLLOWUP_WORDS = {
    "scheduled": "A check-in is scheduled.",
    "checkins_off": "No check-in: this line does not run check-ins.",
    "no_number": "No check-in: the line has no number to text them at.",
    "opted_out": "No check-in: they opted out of texts (STOP).",
    "not_scheduled": "No check-in could be scheduled (they declined or it was already settled).",
}
# Why the line paused them (``ResponderState.paused_reason``), in their words on the desk.
PAUSED_WORDS = {
    "self": "You paused yourself (here, or by texting OFF to the line).",
    "missed_offers": "Paused after {missed} missed calls in a row.",
    "sms_blocked": "Your phone is blocking the line's texts: text START to the line, then take contacts again.",
    "sms_unblocked": "Your phone takes the line's texts again: take contacts again when you are ready.",
    "account_closed": "Your account was closed: only an administrator can have the line offer you contacts again.",
}


class AvailabilityForm(ConfirmForm):
    """The switch: "available" or "paused" travels in the button's name, the token in the form."""


def _mine() -> tuple[RoutingDocument, Responder] | None:
    active = active_routing()
    if active is None or current_user.responder_id is None:
        return None
    responder = active.document.responder(current_user.responder_id)
    return (active.document, responder) if responder else None


def _mine_or_404() -> tuple[RoutingDocument, Responder]:
    mine = _mine()
    if mine is None:
        abort(404)
    return mine


def _inbox(document: RoutingDocument, responder: Responder, moment: datetime) -> list[dict[str, Any]]:
    return [_card(document, conversation, moment) for conversation in texts.open_conversations(responder.id)]


def _signature(document: RoutingDocument, responder: Responder, moment: datetime, now: Desk) -> str:
    """What makes the open page reload (see desk.js): the inbox, the live call's state, and
    whether (and why) they are paused, which the switch shows: a pause made elsewhere (their OFF
    text, missed calls, their phone blocking the line) redraws it. ``moment``: the page's own,
    so a note the page lacks is never already counted here."""
    live = calls.live_call(document, responder)
    inbox = texts.inbox_signature(responder.id, moment)
    signature = f"{inbox}|{live.signature}" if live else inbox
    return f"{signature}|paused:{now.paused_reason or ''}" if now.paused else signature


def paused_words(document: RoutingDocument, now: Desk) -> str:
    """Why they are paused, in plain words ("" when not paused, or for no reason known)."""
    if not now.paused or now.paused_reason not in PAUSED_WORDS:
        return ""
    return PAUSED_WORDS[now.paused_reason].format(missed=document.transfer.pause_after_missed)


def _card(document: RoutingDocument, conversation: Conversation, moment: datetime) -> dict[str, Any]:
    since = conversation.queued_at or conversation.started_at
    return {
        "id": conversation.id,
        "tag": f"#{conversation.tag}",
        "language": language_name(document, conversation.language or document.menu.default_language),
        "need": need_label(document, conversation.need or document.menu.default_need),
        "waited": max(0, int(((conversation.assigned_at or moment) - since).total_seconds())),
        "lines": texts.thread(conversation, moment),
    }


def _on_a_call_is_activity(now: Desk | None, moment: datetime) -> None:
    """A counselor talking with a caller for half an hour is not away from the desk: its own
    refresh keeps them signed in while the call lasts (the line knows the call, not the page),
    if they used this desk shortly before the call began."""
    seconds = now.on_a_call_for if now is not None else None
    if seconds is not None:
        count_as_activity(since=moment - timedelta(seconds=seconds))


@bp.get("/me")
@allow(COUNSELOR)
def page() -> str:
    mine = _mine()
    moment = datetime.now(UTC)
    now = desk(*mine, moment) if mine else None
    _on_a_call_is_activity(now, moment)
    live = calls.live_call(*mine) if mine else None
    return render_template(
        "console/desk.html", desk=now, form=AvailabilityForm(), refresh_seconds=REFRESH_SECONDS,
        inbox=_inbox(*mine, moment) if mine else [], reply_form=ReplyForm, command_form=KeyedForm,
        wrap_ups=wrapups.pending(mine[1].id) if mine else [],
        inbox_signature=_signature(*mine, moment, now) if mine and now else "",
        paused_words=paused_words(mine[0], now) if mine and now else "",
        live=live, unit_form=ConfirmForm(),
        live_recipient=referrals.find(mine[1].id, "voice", live.transfer_id) if mine and live else None,
        need_of=(lambda key: need_label(mine[0], key or mine[0].menu.default_need)) if mine else str,
    )  # fmt: skip


@bp.get("/me.json")
@allow(COUNSELOR)
def data() -> dict[str, Any]:
    mine = _mine()
    if mine is None:
        return {"error": "not linked to a responder of the routing config"}
    moment = datetime.now(UTC)
    now = desk(*mine, moment)
    _on_a_call_is_activity(now, moment)
    return {
        **now.as_json(),
        "inbox": _signature(*mine, moment, now),
        "line_down": current_line_down_message(),
    }


@bp.post("/me/availability")
@allow(COUNSELOR)
def availability() -> Response:
    form = AvailabilityForm()
    mine = _mine()
    if form.validate_on_submit() and mine is not None:
        available = request.form.get("available") == "1"
        switched = set_available(signed_in(), mine[1], available)
        if switched.refused in PAUSED_WORDS:
            why = PAUSED_WORDS[switched.refused].format(missed=mine[0].transfer.pause_after_missed)
            flash(f"You are still paused. {why}", "error")
        elif available:
            flash("You are available: the line will offer you contacts.", "info")
        else:
            held = still_holding([f"#{c.tag}" for c in texts.open_conversations(mine[1].id)])
            words = ["You are paused: the line will not offer you contacts.", handed_on_words(switched.handed_on), held]
            flash(" ".join(word for word in words if word), "info")
    return redirect(url_for("console.desk.page"))


# --- the SMS inbox ------------------------------------------------------------------------------


@bp.get("/me/texts/<id:conversation_id>")
@allow(COUNSELOR)
def conversation(conversation_id: int) -> str:
    """One of the counselor's open conversations, whole. Anyone else's: 404."""
    document, responder = _mine_or_404()
    held = texts.mine(responder.id, conversation_id)
    if held is None:
        abort(404)
    return _thread_page(document, held, ReplyForm)


def _thread_page(document: RoutingDocument, held: Conversation, reply_form: Callable[[], ReplyForm]) -> str:
    """The thread's page; its END and PASS forms are new (with keys of their own) even when it
    answers a POST, which they must not read their keys from."""
    return render_template(
        "console/conversation.html", card=_card(document, held, datetime.now(UTC)), reply_form=reply_form,
        command_form=lambda: KeyedForm(formdata=None), refresh_seconds=REFRESH_SECONDS,
    )  # fmt: skip


@bp.get("/me/texts/<id:conversation_id>.json")
@allow(COUNSELOR)
def conversation_data(conversation_id: int) -> dict[str, Any]:
    """The open thread page's messages, redrawn in place by thread.js (its reply box is left
    alone). No longer theirs: why (as a reply would be told), and no messages."""
    _document, responder = _mine_or_404()
    held = texts.mine(responder.id, conversation_id)
    if held is None:
        return {"gone": texts.why_not_yours(responder.id, conversation_id), "lines": []}
    return {"gone": "", "lines": [line.as_json() for line in texts.thread(held)]}


NOT_DONE = {"reply": "Your reply to #{tag} was not sent", "end": "#{tag} was not ended",
            "pass": "#{tag} was not passed back"}  # fmt: skip


def _not_sent(responder: Responder, conversation_id: int, what: str, words: str = "") -> tuple[str, int]:
    """The conversation is not this counselor's (any more): nothing was sent or done, and why,
    with their words shown (read-only, to copy) rather than lost. 409: the conversation changed."""
    return render_template(
        "console/not_sent.html", headline=NOT_DONE[what].format(tag=conversation_id),
        why=texts.why_not_yours(responder.id, conversation_id), words=words,
    ), 409  # fmt: skip


def _back(conversation_id: int) -> Response:
    target = request.form.get("back")
    if target == "thread":
        return redirect(url_for("console.desk.conversation", conversation_id=conversation_id))
    return redirect(url_for("console.desk.page") + f"#text-{conversation_id}")


def _said(sent: texts.Sent, done: str) -> None:
    if not sent.handled:
        flash("Already done: this form was sent before (nothing was sent twice).", "info")
    else:
        flash(sent.answer or done, "error" if sent.refused else "info")


@bp.post("/me/texts/<id:conversation_id>/reply")
@allow(COUNSELOR)
def reply(conversation_id: int) -> Response | tuple[str, int]:
    """Words for the texter, relayed from the line's number as a text of theirs would be.

    Refused, the words are never lost, nor put in a flash or the session (a cookie): a reply
    the form refuses (too long, say) comes back in the reply box of the thread's page (400); one
    to a conversation no longer theirs, on a page that says why (409)."""
    document, responder = _mine_or_404()
    form = ReplyForm()
    words = form.body.data or ""
    held = texts.mine(responder.id, conversation_id)
    if held is None:
        return _not_sent(responder, conversation_id, "reply", words)
    if not form.validate_on_submit():
        again = ReplyForm(formdata=None, body=words)  # a new key: nothing was stored under the old one
        again.body.errors = list(form.body.errors) or ["Not sent: the form could not be accepted; send it again."]
        return _thread_page(document, held, lambda: again), 400
    sent = texts.reply(signed_in(), document, responder, held, form.key.data, words)
    if sent.refused:  # passed on, or closed, between the check above and the relay
        return _not_sent(responder, conversation_id, "reply", words)
    _said(sent, f"Sent to #{held.tag}.")
    # For the page after it: the copy of the words this tab kept (drafts.js) may go. Ids only.
    flash(f"{signed_in().id}:{conversation_id}", REPLY_SENT)
    return _back(conversation_id)


@bp.post("/me/texts/<id:conversation_id>/<any(end, pass, take):command>")
@allow(COUNSELOR)
def command(conversation_id: int, command: str) -> Response | tuple[str, int]:
    """END (close; the texter gets the closing text), PASS (back to the queue) or, for a
    conversation offered to them, YES (take it): as the same words by text would. END or PASS
    for a conversation no longer theirs: a page says why nothing was done (409)."""
    document, responder = _mine_or_404()
    if command == "take":
        return _take(document, responder, conversation_id)
    target = texts.mine(responder.id, conversation_id)
    if target is None:
        return _not_sent(responder, conversation_id, command)
    form = KeyedForm()
    if not form.validate_on_submit():
        abort(400)
    sent = texts.command(signed_in(), document, responder, target, form.key.data, command)
    if sent.refused:
        return _not_sent(responder, conversation_id, command)
    _said(sent, "Done.")
    return redirect(url_for("console.desk.page"))


def _take(document: RoutingDocument, responder: Responder, conversation_id: int) -> Response | tuple[str, int]:
    """YES from the page. An offer no longer open (taken by another counselor, handed on, or
    the texter gone) is a page saying so (409), an id no conversation has a 404; one the
    counselor holds already (taken from their phone, or the form sent twice) is simply theirs."""
    offered = texts.offered_to(responder.id, conversation_id)
    if offered is None:
        return _not_taken(responder, conversation_id)
    form = KeyedForm()
    if not form.validate_on_submit():
        abort(400)
    sent = texts.command(signed_in(), document, responder, offered, form.key.data, "take")
    if sent.refused and texts.offered_to(responder.id, conversation_id) is None:
        return _not_taken(responder, conversation_id)  # another counselor's YES came between
    _said(sent, "Done.")  # refused, still offered to them: at their limit of conversations, say
    return redirect(url_for("console.desk.page") + f"#text-{conversation_id}")


def _not_taken(responder: Responder, conversation_id: int) -> Response | tuple[str, int]:
    if texts.mine(responder.id, conversation_id) is not None:
        flash(f"#{conversation_id} is yours already.", "info")
        return redirect(url_for("console.desk.page") + f"#text-{conversation_id}")
    why = texts.why_not_taken(responder.id, conversation_id)
    if why is None:
        abort(404)
    return render_template(
        "console/not_sent.html", title="Not taken", headline=f"#{conversation_id} was not taken", why=why,
    ), 409  # fmt: skip


# --- wrap-ups -----------------------------------------------------------------------------------


def _ended_or_404(channel: str, contact_id: int) -> tuple[RoutingDocument, wrapups.EndedContact]:
    document, responder = _mine_or_404()
    contact = wrapups.find(responder.id, channel, contact_id)
    if contact is None:
        abort(404)
    return document, contact


def _wrap_up_page(document: RoutingDocument, contact: wrapups.EndedContact, form: WrapUpForm) -> str:
    return render_template(
        "console/wrap_up.html", contact=contact, form=form, done=wrapups.wrapped_up(contact),
        unit_joined=wrapups.unit_joined(contact),
        language=language_name(document, contact.language or document.menu.default_language),
        need=need_label(document, contact.need or document.menu.default_need),
    )  # fmt: skip


@bp.get("/me/wrap-up/<any(voice, text):channel>/<id:contact_id>")
@allow(COUNSELOR)
def wrap_up(channel: str, contact_id: int) -> str:
    document, contact = _ended_or_404(channel, contact_id)
    form = WrapUpForm()
    if wrapups.unit_joined(contact):
        form.outcome.data = "co_responder_dispatched"  # a suggestion: the counselor may change it
    return _wrap_up_page(document, contact, form)


@bp.post("/me/wrap-up/<any(voice, text):channel>/<id:contact_id>")
@allow(COUNSELOR)
def wrap_up_save(channel: str, contact_id: int) -> Response | tuple[str, int]:
    document, contact = _ended_or_404(channel, contact_id)
    form = WrapUpForm()
    if not form.validate_on_submit():
        return _wrap_up_page(document, contact, form), 400
    saved = wrapups.save(
        signed_in(), document, current_user.responder_id, contact, outcome=form.outcome.data,
        consent=bool(form.consent.data), note=form.note.data or "",
    )  # fmt: skip
    if saved is None:
        flash(f"The {contact.label} already has a wrap-up.", "info")
    else:
        followup = FOLLOWUP_WORDS.get(saved.followup or "", "") if saved.followup_consent else ""
        flash(f"Wrap-up saved for the {contact.label}. {followup}".strip(), "info")
    return redirect(url_for("console.desk.page"))


# --- on a live call: bring in the co-responder unit ----------------------------------------------


@bp.post("/me/calls/<id:contact_id>/unit")
@allow(COUNSELOR)
def bring_unit(contact_id: int) -> Response:
    """Ask the line to ring the co-responder unit into this counselor's live call (once)."""
    document, responder = _mine_or_404()
    if not ConfirmForm().validate_on_submit():
        abort(400)
    asked, words = calls.bring_in_unit(signed_in(), document, responder, contact_id)
    flash(words, "info" if asked else "error")
    return redirect(url_for("console.desk.page") + "#live-call")


# --- referrals from the line's directory, by text ------------------------------------------------


def _recipient_or_404(channel: str, contact_id: int) -> tuple[RoutingDocument, Responder, referrals.Recipient]:
    document, responder = _mine_or_404()
    recipient = referrals.find(responder.id, channel, contact_id)
    if recipient is None:
        abort(404)
    return document, responder, recipient


@bp.get("/me/referral/<any(voice, text):channel>/<id:contact_id>")
@allow(COUNSELOR)
def referral(channel: str, contact_id: int) -> str:
    """Choose services (a GET form: nothing changes), then preview the text and send it."""
    document, _responder, recipient = _recipient_or_404(channel, contact_id)
    every_need = request.args.get("every") == "1"
    offered = referrals.services_for(document, recipient, every_need=every_need)
    picked_ids = request.args.getlist("service")
    picked = referrals.chosen(document, picked_ids) if picked_ids else None
    body = referrals.compose(document, picked) if picked else ""
    return render_template(
        "console/desk_referral.html", recipient=recipient, services=offered, every_need=every_need,
        picked=picked, picked_ids=set(picked_ids), body=body, segments=referrals.segments(body) if body else 0,
        problem=bool(picked_ids) and picked is None, max_services=referrals.MAX_SERVICES,
        form=ReferralForm(), earlier=referrals.earlier(recipient),
        names={service.id: service.name for service in document.services},
        language=language_name(document, recipient.language or document.menu.default_language),
        need=need_label(document, recipient.need or document.menu.default_need),
    )  # fmt: skip


@bp.post("/me/referral/<any(voice, text):channel>/<id:contact_id>/send")
@allow(COUNSELOR)
def referral_send(channel: str, contact_id: int) -> Response:
    """Text the chosen services to the person, once for this contact and set of services."""
    document, responder, recipient = _recipient_or_404(channel, contact_id)
    form = ReferralForm()
    if not form.validate_on_submit():
        abort(400)
    back = url_for("console.desk.referral", channel=channel, contact_id=contact_id)
    picked = referrals.chosen(document, request.form.getlist("service"))
    if picked is None:
        flash(f"Nothing sent: choose between 1 and {referrals.MAX_SERVICES} services of the directory.", "error")
        return redirect(back)
    outcome = referrals.send(signed_in(), recipient, picked, responder.id)
    names = ", ".join(service.name for service in picked)
    flash(
        *{
            referrals.SENT: (f"Referral sent to the {recipient.label}: {names}.", "info"),
            referrals.SENDING: (f"Sending the referral to the {recipient.label}: {names}.", "info"),
            referrals.ALREADY: ("Already sent: this referral went to them before (nothing was sent twice).", "info"),
            referrals.UNSURE: (
                "The referral may not have been sent: Twilio could not be reached. Give them the numbers by voice.",
                "error",
            ),
            referrals.CANNOT_TEXT: (f"Not sent: {recipient.reason_text}", "error"),
        }.get(outcome, ("The referral could not be sent. Give them the numbers by voice.", "error"))
    )
    return redirect(back)
