"""The audit log page (admins and supervisors)."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from console.access import allow
from console.audit.log import recent
from console.board.unmask import opened_reason
from console.models import ADMIN, SUPERVISOR

bp = Blueprint("audit", __name__)


@bp.get("/audit")
@allow(ADMIN, SUPERVISOR)
def log() -> str:
    action = request.args.get("action") or None
    entries = recent(action=action)
    # An unmask's reason is sealed; admins and supervisors read it here (never in a log).
    reasons = {entry.id: opened_reason(entry.sealed_detail) for entry in entries if entry.sealed_detail}
    return render_template("console/audit.html", entries=entries, action=action, reasons=reasons)
