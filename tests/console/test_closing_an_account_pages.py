"""Closing an account in the console: the administrator is told, before and after, what
happens to the calls of its responder and what is left to do in the routing; the warning
stays on the routing editor, the live board and the accounts page until it is dealt with."""

from __future__ import annotations

import html
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.accounts import users
from console.models import COUNSELOR, AuditEntry, User
from crisisline.db import db
from line_queue import responders
from tests.console.conftest import Account, MakeUser, csrf_token, sign_in
from tests.console.test_closing_an_account import BEN_ENTRY, close, last_audit_detail


def page(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return html.unescape(response.get_data(as_text=True))


def test_the_admin_is_told_before_and_after_closing_and_the_warning_stays_on_the_routing_and_board(
    app: Flask, client: FlaskClient, admin: Account, make_user: MakeUser
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    sign_in(client, admin)

    before = page(client, f"/console/users/{ben.id}/close")
    assert "Close the account ben" in before
    assert f"The line no longer rings ben-carter ({BEN_ENTRY})" in before
    assert "en / suicide: Mon 16:00–22:00" in before
    assert 'id="close-stop"' in before and 'id="close-keep"' in before
    assert 'href="/console/routing"' in before
    with app.app_context():  # looking writes nothing
        assert db.session.get_one(User, ben.id).active and responders.closed_responder_ids() == set()

    closed = client.post(
        f"/console/users/{ben.id}/deactivate",
        data={"csrf_token": csrf_token(client, f"/console/users/{ben.id}/close"), "ringing": "stop"},
    )

    assert closed.status_code == 302 and closed.headers["Location"] == f"/console/users/{ben.id}/close"
    after = page(client, closed.headers["Location"])
    assert "The account ben is closed" in after and "its sessions have ended" in after
    assert f"The line no longer rings ben-carter ({BEN_ENTRY})" in after
    assert 'id="close-stop"' not in after
    warning = f"{BEN_ENTRY}, ben-carter: not rung, because the console account linked to it was closed."
    assert warning in page(client, "/console/routing")
    assert warning in page(client, "/console/board")
    assert "not rung; still in the routing" in page(client, "/console/users")
    assert last_audit_detail(app, "user_deactivated")["ringing"] == users.STOPPED


def test_the_routing_warning_goes_once_the_entry_is_removed(
    app: Flask, client: FlaskClient, admin: Account, make_user: MakeUser, publish_routing: Any
) -> None:
    close(app, make_user(COUNSELOR, "ben", responder_id="ben-carter").id)
    sign_in(client, admin)
    assert "not rung, because" in page(client, "/console/routing")

    publish_routing(
        lambda document: document.update(counselors=[c for c in document["counselors"] if c["id"] != "ben-carter"])
    )

    assert "not rung, because" not in page(client, "/console/routing")
    assert "not rung, because" not in page(client, "/console/board")


def test_a_closed_account_still_rung_is_marked_and_its_phone_can_be_stopped_later(
    app: Flask, client: FlaskClient, admin: Account, make_user: MakeUser
) -> None:
    """Kept ringing at closing (or closed before closing stopped the ringing): the accounts
    page says so, and the account's page stops it in one step, audited."""
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    close(app, ben.id, keep_ringing=True)
    sign_in(client, admin)
    assert "closed, but still rung" in page(client, "/console/users")
    kept = page(client, f"/console/users/{ben.id}/close")
    assert f"The line still rings ben-carter ({BEN_ENTRY})" in kept and 'id="stop-ringing"' in kept

    stopped = client.post(
        f"/console/users/{ben.id}/stop-ringing",
        data={"csrf_token": csrf_token(client, f"/console/users/{ben.id}/close")},
    )

    assert stopped.status_code == 302
    after = page(client, stopped.headers["Location"])
    assert "The line no longer rings ben-carter." in after
    assert f"The line no longer rings ben-carter ({BEN_ENTRY})" in after
    assert "not rung; still in the routing" in page(client, "/console/users")
    with app.app_context():
        assert responders.closed_responder_ids() == {"ben-carter"}
    assert last_audit_detail(app, "responder_not_rung")["routing_entries"] == [BEN_ENTRY]


def test_closing_an_account_twice_is_refused_with_no_second_audit_entry_or_change_to_the_phone(
    app: Flask, client: FlaskClient, admin: Account, make_user: MakeUser
) -> None:
    """The form sent twice (a double click, a second tab, two administrators): the first
    closing stands, the administrator's choice to keep the phone ringing included."""
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    sign_in(client, admin)
    token = csrf_token(client, f"/console/users/{ben.id}/close")
    client.post(f"/console/users/{ben.id}/deactivate", data={"csrf_token": token, "ringing": "keep"})

    again = client.post(f"/console/users/{ben.id}/deactivate", data={"csrf_token": token, "ringing": "stop"})

    assert again.status_code == 302 and again.headers["Location"] == f"/console/users/{ben.id}/close"
    assert "ben is closed already: nothing was changed." in page(client, again.headers["Location"])
    with app.app_context():
        closings = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "user_deactivated")).all()
        assert [entry.detail["ringing"] for entry in closings] == [users.KEPT]
        assert responders.closed_responder_ids() == set()
