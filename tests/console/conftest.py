"""Console fixtures: factory fixtures for accounts of each role (Indico style), and a
browser-like client helper that signs in through the real form with its CSRF token."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.accounts import users
from console.audit.log import CLI
from console.models import ADMIN, COUNSELOR, SUPERVISOR, AuditEntry
from crisisline.db import db

PASSWORD = "correct horse battery staple"
COUNSELOR_RESPONDER = "ana-ruiz"  # in config/routing.example.yaml, as every test's routing
_TOKEN = re.compile(r'name="csrf[-_]token" (?:content|value)="([^"]+)"')


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    role: str
    password: str
    responder_id: str | None


MakeUser = Callable[..., Account]


@pytest.fixture
def make_user(app: Flask) -> MakeUser:
    """Factory: an account of ``role`` (a counselor is linked to Ana by default)."""
    made = 0

    def make(role: str, username: str | None = None, *, password: str = PASSWORD, **extra: str | None) -> Account:
        nonlocal made
        made += 1
        if role == COUNSELOR:
            extra.setdefault("responder_id", COUNSELOR_RESPONDER)
        with app.app_context():
            user = users.create_user(username or f"{role}-{made}", password, role=role, actor=CLI, **extra)
            db.session.commit()
            return Account(user.id, user.username, user.role, password, user.responder_id)

    return make


@pytest.fixture
def admin(make_user: MakeUser) -> Account:
    return make_user(ADMIN, "ada-admin")


@pytest.fixture
def supervisor(make_user: MakeUser) -> Account:
    return make_user(SUPERVISOR, "sue-supervisor")


@pytest.fixture
def counselor(make_user: MakeUser) -> Account:
    return make_user(COUNSELOR, "ana")


def csrf_token(client: FlaskClient, path: str = "/console/sign-in") -> str:
    """The CSRF token a page hands its forms (from its meta tag or a hidden field)."""
    page = client.get(path, follow_redirects=True)
    found = _TOKEN.search(page.get_data(as_text=True))
    assert found, f"no CSRF token on {path} ({page.status_code})"
    return found.group(1)


def sign_in(client: FlaskClient, account: Account, password: str | None = None, **environ: str) -> int:
    """Sign in through the real form; returns the response's status (302 on success)."""
    token = csrf_token(client)
    response = client.post(
        "/console/sign-in",
        data={"username": account.username, "password": password or account.password, "csrf_token": token},
        environ_base=environ,
    )
    return response.status_code


def audit_actions(app: Flask) -> list[tuple[str, str, str | None]]:
    """(actor, action, target) of every audit entry, oldest first."""
    with app.app_context():
        return [(e.actor, e.action, e.target) for e in db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
