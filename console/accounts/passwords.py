"""Password hashing: argon2id at the RFC 9106 "low memory" profile (argon2-cffi's default:
3 passes over 64 MiB, 4 lanes). Hashes carry their parameters, so raising the cost later
rehashes each password at its next successful sign-in."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 256  # argon2 takes any length; this only stops silly request bodies
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so a wrong name takes as long as a
    wrong password. Made on first use: hashing at import cost every process (web workers, RQ
    workers, the clock) 0.5 s and 64 MiB at start (bench/load.py)."""
    return _hasher.hash("not a password of anyone's")


class WeakPassword(ValueError):
    """The password is too short or too long; the message says which."""


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"Use at least {MIN_LENGTH} characters (a few words make a good password).")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"Use at most {MAX_LENGTH} characters.")


def hash_password(password: str) -> str:
    check_strength(password)
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; a missing hash costs the same time and fails."""
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password[:MAX_LENGTH]) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


def rehash(password: str) -> str:
    """A fresh hash at today's cost for a password that just verified (no strength rules:
    the person chose it under the rules of its day)."""
    return _hasher.hash(password)
