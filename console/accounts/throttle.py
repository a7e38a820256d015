"""Sign-in rate limits, kept in the database (so every web process sees the same counts).

Failures within ``WINDOW`` are counted three ways (as OWASP's authentication cheat sheet has
it), and any one of them at its limit refuses the sign-in:

- per account and client address, ``PAIR_LIMIT``: someone guessing one account's password
  from one place. A success clears that pair's failures (the person who mistyped has shown
  they know the password), and only that pair's;
- per account from any address, ``ACCOUNT_LIMIT`` (higher): guesses spread over addresses.
  A success elsewhere does not clear them, so a counselor signing in gives no fresh start to
  someone guessing her password from another place;
- per address over every account, ``ADDRESS_LIMIT``, a much higher ceiling: someone trying a
  few passwords on many accounts. Many counselors of one centre may share one address (NAT):
  their mistakes that end in a success do not count here, and a few people's that do not
  stay far below it, so they do not lock their colleagues out.

A locked attempt is refused before the password is looked at, and is not itself counted, so
an attacker cannot extend the lock by trying more. Each lock wears off once the oldest of the
failures that reached its limit is ``WINDOW`` old.

Names and addresses are stored as keyed hashes only, keyed with a key derived from
``SECRET_KEY`` for this purpose alone (:func:`hash_key`), never with ``SECRET_KEY`` itself
(which signs the session cookies). Changing ``SECRET_KEY`` forgets the counts.

An attempt is counted as a failure before its password is checked (``claim``), under one lock
shared by every process, and marked as a success afterwards if it was one: guesses sent all at
once cannot all pass the check before any of them is counted.

An administrator lifts an account's lock by setting a new password or with ``flask users
unlock`` (:func:`clear_account`): its failures stop counting against the account (from any
address), and still count against the addresses they came from.

An attempt is kept no longer than ``WINDOW`` needs it: the next sign-in deletes older ones, and
so does the hourly retention purge (``console.retention``) when nobody signs in.
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
from sqlalchemy import delete, select, update

from console.models import SignInAttempt
from crisisline.db import db, hold_lock

PAIR_LIMIT = 5
ACCOUNT_LIMIT = 10
ADDRESS_LIMIT = 50
WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class Lockout:
    scope: str  # "account_at_address", "account" or "address"
    retry_after: timedelta

    @property
    def minutes(self) -> int:
        return max(1, -(-int(self.retry_after.total_seconds()) // 60))

    @property
    def message(self) -> str:
        whose = {
            "account_at_address": "this account from your network address",
            "account": "this account",
            "address": "your network address",
        }[self.scope]
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
    """The lock that refuses a sign-in now, if any (the longest, if more than one)."""
    now = _now()
    account, place = account_key(username), address_key(address)
    locks = []
    for scope, where, limit in (
        ("account_at_address", [SignInAttempt.account_key == account, SignInAttempt.address_key == place], PAIR_LIMIT),
        ("account", [SignInAttempt.account_key == account], ACCOUNT_LIMIT),
        ("address", [SignInAttempt.address_key == place], ADDRESS_LIMIT),
    ):
        failures = list(
            db.session.scalars(
                select(SignInAttempt.attempted_at)
                .where(SignInAttempt.succeeded.is_(False), SignInAttempt.attempted_at > now - WINDOW, *where)
                .order_by(SignInAttempt.attempted_at.desc())
                .limit(limit)
            )
        )
        if len(failures) >= limit:
            # Unlocked when the oldest of the last ``limit`` failures leaves the window.
            locks.append(Lockout(scope, failures[-1] + WINDOW - now))
    return max(locks, key=lambda lock: lock.retry_after, default=None)


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
    db.session.execute(delete(SignInAttempt).where(SignInAttempt.attempted_at < _now() - WINDOW))
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


def succeeded(attempt_id: int, username: str, address: str | None) -> None:
    """A claimed attempt whose password matched: it clears the failures of the same name from
    the same address, which then count against neither the account nor the address (in the
    current transaction, holding the sign-in lock until the caller commits). Failures of the
    account from other addresses, and of other accounts from this one, still count."""
    hold_lock("console:sign-in")
    db.session.execute(
        delete(SignInAttempt)
        .where(
            SignInAttempt.account_key == account_key(username),
            SignInAttempt.address_key == address_key(address),
            SignInAttempt.succeeded.is_(False),
            SignInAttempt.id < attempt_id,  # claimed before it: a guess claimed since still counts
        )
        .execution_options(synchronize_session=False)
    )
    db.session.execute(update(SignInAttempt).where(SignInAttempt.id == attempt_id).values(succeeded=True))
