"""The counselor page (phone-sized), its JSON, and the availability switch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from console.access import allow, current_user, signed_in
from console.accounts.forms import ConfirmForm
from console.desk.now import desk, set_available
from console.models import COUNSELOR
from routing.document import Responder, RoutingDocument
from routing.store import active_routing

bp = Blueprint("desk", __name__)
REFRESH_SECONDS = 5


class AvailabilityForm(ConfirmForm):
    """The switch: "available" or "paused" travels in the button's name, the token in the form."""


def _mine() -> tuple[RoutingDocument, Responder] | None:
    active = active_routing()
    if active is None or current_user.responder_id is None:
        return None
    responder = active.document.responder(current_user.responder_id)
    return (active.document, responder) if responder else None


@bp.get("/me")
@allow(COUNSELOR)
def page() -> str:
    mine = _mine()
    now = desk(*mine, datetime.now(UTC)) if mine else None
    return render_template("console/desk.html", desk=now, form=AvailabilityForm(), refresh_seconds=REFRESH_SECONDS)


@bp.get("/me.json")
@allow(COUNSELOR)
def data() -> dict[str, Any]:
    mine = _mine()
    if mine is None:
        return {"error": "not linked to a responder of the routing config"}
    return desk(*mine, datetime.now(UTC)).as_json()


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
