"""The audit log page (admins and supervisors)."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from console.access import allow
from console.audit.log import recent
from console.models import ADMIN, SUPERVISOR

bp = Blueprint("audit", __name__)


@bp.get("/audit")
@allow(ADMIN, SUPERVISOR)
def log() -> str:
    action = request.args.get("action") or None
    return render_template("console/audit.html", entries=recent(action=action), action=action)
