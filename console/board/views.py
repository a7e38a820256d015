"""The live board page and the JSON its script polls (supervisors and admins)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, render_template

from console.access import allow
from console.board.live import snapshot
from console.models import ADMIN, SUPERVISOR
from routing.store import active_routing

bp = Blueprint("board", __name__)
REFRESH_SECONDS = 5


@bp.get("/board")
@allow(ADMIN, SUPERVISOR)
def page() -> str:
    active = active_routing()
    board = snapshot(active.document, datetime.now(UTC)) if active else None
    return render_template("console/board.html", board=board, refresh_seconds=REFRESH_SECONDS)


@bp.get("/board.json")
@allow(ADMIN, SUPERVISOR)
def data() -> dict[str, Any]:
    active = active_routing()
    if active is None:
        return {"error": "no routing published", "waiting": [], "responders": []}
    return snapshot(active.document, datetime.now(UTC)).as_json()
