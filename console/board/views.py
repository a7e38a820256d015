"""The live board page, the JSON its script polls, and the emergency unmask (supervisors and admins)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from console.access import allow, signed_in, typed_in_the_form
from console.accounts.users import not_rung
from console.audit import log as audit
from console.board import unmask
from console.board.forms import TakeOverForm, UnmaskForm
from console.board.live import UNFINISHED_KINDS, UNFINISHED_LISTED_FOR, snapshot
from console.line_state import current_line_down_message
from console.models import ADMIN, SUPERVISOR
from crisisline.db import db
from followups.checkins import mark_followed_up
from routing.store import active_routing
from sms.conversations import stuck_case, take_over_stuck
from workers.contacts import take_over_contact

bp = Blueprint("board", __name__)
REFRESH_SECONDS = 5


@bp.get("/board")
@allow(ADMIN, SUPERVISOR)
def page() -> str:
    active = active_routing()
    board = snapshot(active.document, datetime.now(UTC)) if active else None
    return render_template(
        "console/board.html",
        board=board, refresh_seconds=REFRESH_SECONDS, not_rung=not_rung(active.document if active else None),
    )  # fmt: skip


@bp.get("/board.json")
@allow(ADMIN, SUPERVISOR)
def data() -> dict[str, Any]:
    active = active_routing()
    if active is None:
        return {"error": "no routing published", "waiting": [], "responders": []}
    return snapshot(active.document, datetime.now(UTC)).as_json() | {"line_down": current_line_down_message()}


@bp.post("/board/stuck-texts/<id:message_id>/taken")
@allow(ADMIN, SUPERVISOR)
def take_over(message_id: int) -> Response:
    """A supervisor has a person on a text the line could not handle: its retries stop, audited."""
    _form_sent()
    case = stuck_case(message_id)
    return _marked(
        take_over_stuck(message_id), "stuck_text_taken_over", f"message:{message_id}",
        done=f"Text {case} is marked as taken over by a person. The line stops retrying it.",
        not_done=f"Text {case} is not one to take over: handled or taken over already, or not on the board.",
        case=case,
    )  # fmt: skip


@bp.post("/board/check-ins/<id:checkin_id>/followed-up")
@allow(ADMIN, SUPERVISOR)
def checkin_followed_up(checkin_id: int) -> Response:
    """A supervisor has followed up a flagged check-in (called them, or decided): off the board, audited."""
    _form_sent()
    return _marked(
        mark_followed_up(checkin_id), "checkin_followed_up", f"checkin:{checkin_id}",
        done=f"Check-in C{checkin_id} is marked as followed up.",
        not_done=f"Check-in C{checkin_id} is not one to follow up: answered, or marked already.",
        case=f"C{checkin_id}",
    )  # fmt: skip


@bp.post("/board/follow-ups/<id:contact_id>/taken")
@allow(ADMIN, SUPERVISOR)
def follow_up_taken(contact_id: int) -> Response:
    """A supervisor has a person on a follow-up the line could not finish: off the board, audited."""
    _form_sent()
    since = datetime.now(UTC) - UNFINISHED_LISTED_FOR
    return _marked(
        take_over_contact(contact_id, kinds=UNFINISHED_KINDS, finished_since=since),
        "follow_up_taken_over", f"contact:{contact_id}",
        done=f"Follow-up {contact_id} is marked as taken over by a person.",
        not_done=f"Follow-up {contact_id} is not one to take over: taken over already, or not on the board.",
    )  # fmt: skip


def _form_sent() -> None:
    """A board action's form (its CSRF token is its only field), or 400."""
    if not TakeOverForm().validate_on_submit():
        abort(400)


def _marked(changed: bool, action: str, target: str, *, done: str, not_done: str, **detail: Any) -> Response:
    """A board action's end: audited in the same transaction as its change, or rolled back and
    said to be nothing to do; back to the board either way."""
    if changed:
        audit.record(action, actor=signed_in(), target=target, **detail)
        db.session.commit()
        flash(done, "success")
    else:
        db.session.rollback()
        flash(not_done, "info")
    return redirect(url_for("console.board.page"))


# --- emergency unmask ---------------------------------------------------------------------------


@bp.get("/board/unmask")
@allow(ADMIN, SUPERVISOR)
def unmask_list() -> str:
    """Everyone in contact now, each with the unmask form (a reason is required)."""
    active = active_routing()
    contacts = unmask.live_contacts(active.document) if active else []
    return render_template("console/unmask.html", contacts=contacts, form=UnmaskForm(), revealed=None, chosen=None)


@bp.post("/board/unmask/<any(voice, text, stuck, after_stop, checkin, followup, callback):channel>/<id:contact_id>")
@allow(ADMIN, SUPERVISOR)
def unmask_reveal(channel: str, contact_id: int) -> tuple[str, int] | str:
    """The number, shown once in this response (never stored, logged or cached), audited."""
    active = active_routing()
    contact = unmask.find_live(active.document, channel, contact_id) if active else None
    if active is None or contact is None:
        # Ended past the grace period, or off the board: said on a page, the reason typed given back.
        gone = unmask.why_not_listed(channel, contact_id)
        page = render_template("console/unmask_gone.html", gone=gone, typed=typed_in_the_form())
        return page, 404
    form = UnmaskForm()
    if not form.validate_on_submit():
        contacts = unmask.live_contacts(active.document)
        page = render_template("console/unmask.html", contacts=contacts, form=form, revealed=None, chosen=contact)
        return page, 400
    number = unmask.reveal(signed_in(), contact, form.reason.data or "")
    return render_template("console/unmask.html", contacts=[], form=None, revealed=number or "", chosen=contact)
