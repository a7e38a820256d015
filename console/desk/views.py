"""The counselor page (phone-sized), its JSON, the availability switch, the SMS inbox
(threads, replies, END/PASS/YES), and wrap-ups after a contact."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from console.access import allow, current_user, signed_in
from console.accounts.forms import ConfirmForm
from console.board.live import language_name, need_label
from console.desk import texts, wrapups
from console.desk.forms import KeyedForm, ReplyForm, WrapUpForm
from console.desk.now import desk, set_available
from console.models import COUNSELOR
from crisisline.models import Conversation
from routing.document import Responder, RoutingDocument
from routing.store import active_routing

bp = Blueprint("desk", __name__)
REFRESH_SECONDS = 5
FOLLOWUP_WORDS = {
    "scheduled": "A check-in is scheduled.",
    "checkins_off": "No check-in: this line does not run check-ins.",
    "no_number": "No check-in: the line has no number to text them at.",
    "opted_out": "No check-in: they opted out of texts (STOP).",
    "not_scheduled": "No check-in could be scheduled (they declined or it was already settled).",
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


def _card(document: RoutingDocument, conversation: Conversation, moment: datetime) -> dict[str, Any]:
    since = conversation.queued_at or conversation.started_at
    return {
        "id": conversation.id,
        "tag": f"#{conversation.tag}",
        "language": language_name(document, conversation.language or document.menu.default_language),
        "need": need_label(document, conversation.need or document.menu.default_need),
        "waited": max(0, int(((conversation.assigned_at or moment) - since).total_seconds())),
        "lines": texts.thread(conversation),
    }


@bp.get("/me")
@allow(COUNSELOR)
def page() -> str:
    mine = _mine()
    moment = datetime.now(UTC)
    now = desk(*mine, moment) if mine else None
    return render_template(
        "console/desk.html", desk=now, form=AvailabilityForm(), refresh_seconds=REFRESH_SECONDS,
        inbox=_inbox(*mine, moment) if mine else [], reply_form=ReplyForm, command_form=KeyedForm,
        wrap_ups=wrapups.pending(mine[1].id) if mine else [],
        inbox_signature=texts.inbox_signature(mine[1].id) if mine else "",
        need_of=(lambda key: need_label(mine[0], key or mine[0].menu.default_need)) if mine else str,
    )  # fmt: skip


@bp.get("/me.json")
@allow(COUNSELOR)
def data() -> dict[str, Any]:
    mine = _mine()
    if mine is None:
        return {"error": "not linked to a responder of the routing config"}
    return {**desk(*mine, datetime.now(UTC)).as_json(), "inbox": texts.inbox_signature(mine[1].id)}


@bp.post("/me/availability")
@allow(COUNSELOR)
def availability() -> Response:
    form = AvailabilityForm()
    mine = _mine()
    if form.validate_on_submit() and mine is not None:
        available = request.form.get("available") == "1"
        set_available(signed_in(), mine[1], available)
        flash("You are available: the line will offer you contacts." if available
              else "You are paused: the line will not offer you contacts.", "info")  # fmt: skip
    return redirect(url_for("console.desk.page"))


# --- the SMS inbox ------------------------------------------------------------------------------


@bp.get("/me/texts/<int:conversation_id>")
@allow(COUNSELOR)
def conversation(conversation_id: int) -> str:
    """One of the counselor's open conversations, whole. Anyone else's: 404."""
    document, responder = _mine_or_404()
    held = texts.mine(responder.id, conversation_id)
    if held is None:
        abort(404)
    return render_template(
        "console/conversation.html", card=_card(document, held, datetime.now(UTC)), reply_form=ReplyForm,
        command_form=KeyedForm,
    )  # fmt: skip


def _back(conversation_id: int) -> Response:
    target = request.form.get("back")
    if target == "thread":
        return redirect(url_for("console.desk.conversation", conversation_id=conversation_id))
    return redirect(url_for("console.desk.page") + f"#text-{conversation_id}")


def _said(sent: texts.Sent, done: str) -> None:
    if not sent.handled:
        flash("Already done: this form was sent before (nothing was sent twice).", "info")
    else:
        flash(sent.answer or done, "info")


@bp.post("/me/texts/<int:conversation_id>/reply")
@allow(COUNSELOR)
def reply(conversation_id: int) -> Response:
    """Words for the texter, relayed from the line's number as a text of theirs would be."""
    document, responder = _mine_or_404()
    held = texts.mine(responder.id, conversation_id)
    if held is None:
        abort(404)
    form = ReplyForm()
    if not form.validate_on_submit() or not (form.body.data or "").strip():
        flash("Nothing sent: write a reply first (at most 1600 characters).", "error")
        return _back(conversation_id)
    sent = texts.reply(signed_in(), document, responder, held, form.key.data, form.body.data)
    _said(sent, f"Sent to #{held.tag}.")
    return _back(conversation_id)


@bp.post("/me/texts/<int:conversation_id>/<any(end, pass, take):command>")
@allow(COUNSELOR)
def command(conversation_id: int, command: str) -> Response:
    """END (close; the texter gets the closing text), PASS (back to the queue) or, for a
    conversation offered to them, YES (take it): as the same words by text would."""
    document, responder = _mine_or_404()
    if command == "take":
        target = texts.offered_to(responder.id, conversation_id)
    else:
        target = texts.mine(responder.id, conversation_id)
    if target is None:
        abort(404)
    form = KeyedForm()
    if not form.validate_on_submit():
        abort(400)
    sent = texts.command(signed_in(), document, responder, target, form.key.data, command)
    _said(sent, "Done.")
    if command == "take":
        return redirect(url_for("console.desk.page") + f"#text-{conversation_id}")
    return redirect(url_for("console.desk.page"))


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
        language=language_name(document, contact.language or document.menu.default_language),
        need=need_label(document, contact.need or document.menu.default_need),
    )  # fmt: skip


@bp.get("/me/wrap-up/<any(voice, text):channel>/<int:contact_id>")
@allow(COUNSELOR)
def wrap_up(channel: str, contact_id: int) -> str:
    document, contact = _ended_or_404(channel, contact_id)
    return _wrap_up_page(document, contact, WrapUpForm())


@bp.post("/me/wrap-up/<any(voice, text):channel>/<int:contact_id>")
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
