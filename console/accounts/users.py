"""Accounts as plain functions, shared by the web pages and ``flask users``. Each change is
written to the audit log in the same transaction; the caller commits."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select

from console.accounts import throttle
from console.accounts.passwords import hash_password, needs_rehash, rehash, verify_password
from console.audit.log import record
from console.models import ADMIN, COUNSELOR, ROLES, AuditEntry, User
from crisisline.db import db, hold_lock
from routing.store import active_routing

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
LAST_ADMIN = "This is the last active administrator; add another one first."


class AccountError(ValueError):
    """A request about an account that cannot be done; the message says why, for the user."""


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def find(username: str) -> User | None:
    """The account named ``username``; None for a name no account can have (a NUL in it, say,
    which PostgreSQL would refuse with an error rather than find nothing)."""
    username = username.strip().lower()
    if not USERNAME.match(username):
        return None
    return db.session.scalars(select(User).where(User.username == username)).first()


def responder_ids() -> set[str]:
    """Responder ids of the active routing config (what a counselor account may link to)."""
    active = active_routing()
    return {responder.id for responder in active.document.responders} if active else set()


def create_user(
    username: str, password: str, *, role: str, actor: User | str, display_name: str | None = None,
    responder_id: str | None = None,
) -> User:  # fmt: skip
    """A new account. A counselor must be linked to a responder of the active routing."""
    username = username.strip().lower()
    if not USERNAME.match(username):
        raise AccountError("A username is 2-64 lowercase letters, digits, dots, dashes or underscores.")
    if role not in ROLES:
        raise AccountError(f"The role must be one of: {', '.join(ROLES)}.")
    responder_id = (responder_id or "").strip() or None
    if role == COUNSELOR and responder_id is None:
        raise AccountError("A counselor account must be linked to a responder id from the routing config.")
    if responder_id is not None and responder_id not in responder_ids():
        raise AccountError(f"No responder {responder_id!r} in the active routing config.")
    if find(username) is not None:
        raise AccountError(f"There is already an account named {username!r}.")
    user = User(
        username=username,
        display_name=(display_name or "").strip() or username,
        role=role,
        responder_id=responder_id,
        password_hash=hash_password(password),
        session_token=new_session_token(),
        active=True,
    )
    db.session.add(user)
    db.session.flush()
    record("user_created", actor=actor, target=f"user:{user.username}", role=role, responder_id=responder_id)
    return user


def count_admins() -> int:
    return db.session.scalar(select(func.count(User.id)).where(User.role == ADMIN, User.active.is_(True))) or 0


def _refuse_closing_the_last_admin(user: User) -> None:
    """Refuse a change that would leave no active administrator, checked under a lock held
    until the caller commits or rolls back (PostgreSQL: an advisory lock; SQLite: its one write
    lock), with ``user`` read again under it: two administrators closing each other at once
    cannot both pass on a count read before the other's change was committed."""
    hold_lock("console:admins")
    db.session.refresh(user)
    if user.role == ADMIN and user.active and count_admins() <= 1:
        raise AccountError(LAST_ADMIN)


def deactivate(user: User, *, actor: User | str) -> None:
    """Close an account: its sessions end at once. The last active admin cannot be closed."""
    _refuse_closing_the_last_admin(user)
    user.active = False
    user.session_token = new_session_token()
    record("user_deactivated", actor=actor, target=f"user:{user.username}")


def set_role(user: User, role: str, *, actor: User | str, responder_id: str | None = None) -> None:
    """Change what an account may do; its sessions end, so the new role applies at once."""
    if role not in ROLES:
        raise AccountError(f"The role must be one of: {', '.join(ROLES)}.")
    responder_id = (responder_id or "").strip() or (user.responder_id if role == COUNSELOR else None)
    if role == COUNSELOR and responder_id is None:
        raise AccountError("A counselor account must be linked to a responder id from the routing config.")
    if responder_id is not None and responder_id not in responder_ids():
        raise AccountError(f"No responder {responder_id!r} in the active routing config.")
    if role != ADMIN:
        _refuse_closing_the_last_admin(user)
    before = (user.role, user.responder_id)
    user.role, user.responder_id = role, responder_id
    user.session_token = new_session_token()
    record(
        "user_role_changed", actor=actor, target=f"user:{user.username}",
        role=role, responder_id=responder_id, was_role=before[0], was_responder_id=before[1],
    )  # fmt: skip


def set_password(user: User, password: str, *, actor: User | str) -> None:
    user.password_hash = hash_password(password)
    user.password_changed_at = datetime.now(UTC)
    user.session_token = new_session_token()
    record("password_changed", actor=actor, target=f"user:{user.username}")


@dataclass(frozen=True)
class SignIn:
    user: User | None
    refusal: str | None  # what to tell the person when ``user`` is None
    status: int = 200


WRONG = "That username and password do not match an active account."


def sign_in(username: str, password: str, address: str | None) -> SignIn:
    """Check a sign-in under the rate limits; counts the attempt and audits it. Commits."""
    user = find(username)
    claimed = throttle.claim(username, address)  # counted as a failure before the password is checked
    if isinstance(claimed, throttle.Lockout):
        if not _locked_recently(_target(user)):  # one entry per lock, however hard someone hammers
            record("sign_in_locked", actor=user or "unknown account", target=_target(user), scope=claimed.scope)
            db.session.commit()
        return SignIn(None, claimed.message, 429)
    matches = verify_password(user.password_hash if user else None, password)
    if user is None or not matches or not user.active:
        record("sign_in_failed", actor=user or "unknown account", target=_target(user))
        db.session.commit()
        return SignIn(None, WRONG, 200)
    throttle.succeeded(claimed)
    if needs_rehash(user.password_hash):
        user.password_hash = rehash(password)
    user.last_sign_in_at = datetime.now(UTC)
    record("sign_in", actor=user, target=_target(user))
    db.session.commit()
    return SignIn(user, None)


def sign_out(user: User) -> None:
    """End this account's sessions everywhere (a copied cookie stops working too). Commits."""
    user.session_token = new_session_token()
    record("sign_out", actor=user, target=_target(user))
    db.session.commit()


def _locked_recently(target: str | None) -> bool:
    since = datetime.now(UTC) - throttle.WINDOW
    same_target = AuditEntry.target.is_(None) if target is None else AuditEntry.target == target
    return db.session.scalar(
        select(AuditEntry.id).where(AuditEntry.action == "sign_in_locked", same_target, AuditEntry.occurred_at > since)
        .limit(1)
    ) is not None  # fmt: skip


def _target(user: User | None) -> str | None:
    return f"user:{user.username}" if user else None
