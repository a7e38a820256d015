"""The console's pages as an administrator uses them (accounts, with their audit rows), and
what every page is made of: assets served by the app itself, labelled form fields."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.models import User
from crisisline.db import db
from tests.console.conftest import PASSWORD, Account, audit_actions, csrf_token, sign_in


def test_an_admin_adds_accounts_with_clear_errors_and_closes_one(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    sign_in(client, admin)
    token = csrf_token(client, "/console/users")
    form = {"username": "bea", "display_name": "Bea", "role": "counselor", "password": PASSWORD, "csrf_token": token}

    unlinked = client.post("/console/users", data={**form, "responder_id": ""})
    unknown = client.post("/console/users", data={**form, "responder_id": "nobody"})
    short = client.post("/console/users", data={**form, "responder_id": "ben-carter", "password": "short"})
    added = client.post("/console/users", data={**form, "responder_id": "ben-carter"})

    assert unlinked.status_code == 400
    assert "must be linked to a responder id" in unlinked.get_data(as_text=True)
    assert "No responder &#39;nobody&#39;" in unknown.get_data(as_text=True)
    assert short.status_code == 400 and "at least 12" in short.get_data(as_text=True)
    assert added.status_code == 302
    with app.app_context():
        bea = db.session.scalars(select(User).where(User.username == "bea")).one()
        assert (bea.role, bea.responder_id, bea.active) == ("counselor", "ben-carter", True)
        bea_id = bea.id

    # Bea signs in elsewhere; the admin closes her account; her open session ends at once.
    elsewhere = app.test_client()
    assert sign_in(elsewhere, Account(bea_id, "bea", "counselor", PASSWORD, "ben-carter")) == 302
    assert elsewhere.get("/console/me").status_code == 200
    closed = client.post(
        f"/console/users/{bea_id}/deactivate", data={"csrf_token": csrf_token(client, "/console/users")}
    )
    assert closed.status_code == 302
    assert elsewhere.get("/console/me").status_code == 302
    assert "closed" in client.get("/console/users").get_data(as_text=True)
    assert [entry for entry in audit_actions(app) if entry[0] == "ada-admin"][-3:] == [
        ("ada-admin", "sign_in", "user:ada-admin"),
        ("ada-admin", "user_created", "user:bea"),
        ("ada-admin", "user_deactivated", "user:bea"),
    ]


def test_every_asset_is_served_by_the_app_and_every_field_has_a_label(
    app: Flask, client: FlaskClient, admin: Account, counselor: Account
) -> None:
    pages = [client.get("/console/sign-in").get_data(as_text=True)]
    sign_in(client, admin)
    pages += [
        client.get(path).get_data(as_text=True)
        for path in ("/console/board", "/console/users", "/console/audit", "/console/board/unmask")
    ]
    desk = app.test_client()
    sign_in(desk, counselor)
    pages.append(desk.get("/console/me").get_data(as_text=True))

    for page in pages:
        for url in re.findall(r'(?:src|href)="([^"]+)"', page):
            assert url.startswith(("/console/", "#")), url  # nothing from a CDN or elsewhere
        for asset in re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page):
            with client.get(asset) as response:  # a file response: closed when read
                assert response.status_code == 200, asset
                assert response.mimetype in ("text/css", "text/javascript", "application/javascript")
        labelled = set(re.findall(r'<label for="([^"]+)"', page))
        fields = set(re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', page))
        assert fields <= labelled, fields - labelled
