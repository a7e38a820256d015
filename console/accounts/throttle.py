"""Sign-in rate limits, per account and per client address, kept in the database (so every
web process sees the same counts).

An account is locked after ``ACCOUNT_LIMIT`` failures within ``WINDOW`` (a success clears its
count); an address after ``ADDRESS_LIMIT``. A locked attempt is refused before the password
is looked at, and is not itself counted, so an attacker cannot extend the lock by trying more.
Names and addresses are stored as keyed hashes only, keyed with a key derived from
``SECRET_KEY`` for this purpose alone (:func:`hash_key`), never with ``SECRET_KEY`` itself
(which signs the session cookies). Changing ``SECRET_KEY`` forgets the counts.

An attempt is counted as a failure before its password is checked (``claim``), under one lock
shared by every process, and marked as a success afterwards if it was one: guesses sent all at
once cannot all pass the check before any of them is counted.

An administrator lifts an account's lock by setting a new password or with ``flask users
unlock`` (:func:`clear_account`): its failures stop counting against the account, and still
count against the addresses they came from.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from sqlalchemy import delete, func, select, update

from console.models import SignInAttempt
from crisisline.db import db, hold_lock

ACCOUNT_LIMIT = 5
ADDRESS_LIMIT = 20
WINDOW = timedelta(minutes=15)
KEEP = timedelta(days=1)


@dataclass(frozen=True)
class Lockout:
    scope: str  # "account" or "address"
    retry_after: timedelta

    @property
    def minutes(self) -> int:
        return max(1, -(-int(self.retry_after.total_seconds()) // 60))

    @property
    def message(self) -> str:
        whose = "this account" if self.scope == "account" else "your network address"
        return (
            f"Too many failed sign-ins for {whose}. For safety, signing in is paused: "
            f"try again in {self.minutes} minute{'s' if self.minutes != 1 else ''}, "
            "or ask an administrator to check the account."
        )


HASH_KEY_PURPOSE = b"crisisline/console-sign-in-throttle/v1"


def hash_key() -> bytes:
    """The key of the throttle's hashes: HKDF-SHA256 of ``SECRET_KEY`` for this purpose only,
    so the session secret is never used for a second thing and a hash reveals nothing of it."""
    return _derive(current_app.config["SECRET_KEY"].encode())


@functools.lru_cache(maxsize=4)
def _derive(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HASH_KEY_PURPOSE).derive(secret)


def _key(kind: str, value: str) -> str:
    return hmac.new(hash_key(), f"console-sign-in:{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def account_key(username: str) -> str:
    return _key("account", username.strip().lower())


def address_key(address: str | None) -> str:
    return _key("address", address or "unknown")


def _now() -> datetime:
    return datetime.now(UTC)


def lockout(username: str, address: str | None) -> Lockout | None:
    """The lock that refuses a sign-in now, if any."""
    now = _now()
    since = now - WINDOW
    account = account_key(username)
    last_success = db.session.scalar(
        select(func.max(SignInAttempt.attempted_at)).where(
            SignInAttempt.account_key == account, SignInAttempt.succeeded.is_(True)
        )
    )
    account_since = max(since, last_success) if last_success else since
    for scope, where, limit in (
        ("account", [SignInAttempt.account_key == account, SignInAttempt.attempted_at > account_since], ACCOUNT_LIMIT),
        ("address", [SignInAttempt.address_key == address_key(address), SignInAttempt.attempted_at > since],
         ADDRESS_LIMIT),
    ):  # fmt: skip
        failures = list(
            db.session.scalars(
                select(SignInAttempt.attempted_at)
                .where(SignInAttempt.succeeded.is_(False), *where)
                .order_by(SignInAttempt.attempted_at.desc())
                .limit(limit)
            )
        )
        if len(failures) >= limit:
            # Unlocked when the oldest of the last ``limit`` failures leaves the window.
            return Lockout(scope, failures[-1] + WINDOW - now)
    return None


def claim(username: str, address: str | None) -> Lockout | int:
    """The lock that refuses this sign-in now, or else the attempt counted as a failure and
    committed, before anyone looks at the password: its id, for ``succeeded``.

    Checking and counting happen under one lock for every web process (PostgreSQL: an advisory
    lock; SQLite: its one write lock), so of guesses sent in parallel no more than the limit
    get their password checked. An attempt whose password is still being checked counts as a
    failure meanwhile. Commits (which releases the lock)."""
    hold_lock("console:sign-in")  # until the commit below
    locked = lockout(username, address)
    if locked is not None:
        db.session.commit()
        return locked
    attempt = SignInAttempt(account_key=account_key(username), address_key=address_key(address), succeeded=False)
    db.session.add(attempt)
    db.session.execute(delete(SignInAttempt).where(SignInAttempt.attempted_at < _now() - KEEP))
    db.session.flush()
    claimed = attempt.id
    db.session.commit()
    return claimed


def clear_account(username: str) -> int:
    """Lift the account's lock and clear its count of failures (an administrator reset its
    password, or unlocked it): they no longer count against the account, and still count
    against their addresses (the row stays, under a key no name has). Holds the sign-in lock
    until the caller commits. Returns how many failures were cleared."""
    hold_lock("console:sign-in")
    cleared = db.session.execute(
        update(SignInAttempt)
        .where(SignInAttempt.account_key == account_key(username), SignInAttempt.succeeded.is_(False))
        .values(account_key=_key("cleared", "by an administrator"))
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    return int(cleared or 0)


def succeeded(attempt_id: int) -> None:
    """A claimed attempt whose password matched: it clears the account's count (in the current
    transaction)."""
    db.session.execute(update(SignInAttempt).where(SignInAttempt.id == attempt_id).values(succeeded=True))
