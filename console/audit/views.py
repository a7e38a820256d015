"""The audit log page (admins and supervisors)."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from console.access import allow
from console.audit.log import recent
from console.board.unmask import opened_reason
from console.inputs import has_control_characters
from console.models import ADMIN, SUPERVISOR

bp = Blueprint("audit", __name__)


@bp.get("/audit")
@allow(ADMIN, SUPERVISOR)
def log() -> str | tuple[str, int]:
    action = request.args.get("action") or None
    problem = None
    if action is not None and has_control_characters(action):
        problem, action = "An action is a name like sign_in_failed: the filter was not applied.", None
    entries = recent(action=action)
    # An unmask's reason is sealed; admins and supervisors read it here (never in a log).
    reasons = {entry.id: opened_reason(entry.sealed_detail) for entry in entries if entry.sealed_detail}
    page = render_template("console/audit.html", entries=entries, action=action, reasons=reasons, problem=problem)
    return (page, 400) if problem else page
