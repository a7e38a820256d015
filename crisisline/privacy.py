"""Encryption at rest and keyed hashes for personal data (phone numbers, message bodies).

Each 32-byte data key is split with HKDF into an AES-256-GCM key and a key id (a 4-byte
fingerprint, safe to show). A keyring holds the newest key, which seals, and older keys, which
only open, so a key is rotated without a flag day: ``flask keys rotate`` re-seals old values.

A sealed value names its key: ``v2:<key id>:<base64 nonce+ciphertext>``. Values sealed before
key ids existed (``v1:<base64>``) still open: each key of the ring is tried for them.

Lookup hashes (HMAC-SHA256, e.g. a caller's number → a blocklist row) use a separate key that
is *not* rotated with the data key: a hash cannot be recomputed without the plain value, and
some are stored without one (the blocklist), so a new hash key would silently unblock numbers
and forget who said STOP. By default it is derived (HKDF) from the data key, as it always was;
before the first rotation it is pinned as ``LOOKUP_HASH_KEY`` (``flask keys hash-key``). A
leaked hash key never helps decrypt, and vice versa.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CIPHERTEXT_VERSION = "v2"  # carries a key id
LEGACY_VERSION = "v1"  # sealed before key ids: any key of the ring may have sealed it
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_ID_BYTES = 4


class DecryptionError(ValueError):
    """A stored value could not be decrypted (wrong key, or tampered with)."""


def _derive(master_key: bytes, purpose: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose).derive(master_key)


def key_id(master_key: bytes) -> str:
    """The public fingerprint of a data key (8 hex characters); reveals nothing of the key."""
    return _derive(master_key, b"crisisline/key-id/v1", KEY_ID_BYTES).hex()


def derived_lookup_hash_key(master_key: bytes) -> bytes:
    """The lookup-hash key a data key has always implied (what ``LOOKUP_HASH_KEY`` pins)."""
    return _derive(master_key, b"crisisline/lookup-hash/v1")


class DataKey(bytes):
    """The newest data key, carrying the rest of its keyring (older keys, the pinned hash key).

    ``Vault(settings.data_encryption_key)`` is how the app builds its vault; the key carries
    its keyring so that single argument is enough.
    """

    older: tuple[bytes, ...]
    lookup_hash_key: bytes | None

    def __new__(
        cls, key: bytes, older: Iterable[bytes] = (), lookup_hash_key: bytes | None = None
    ) -> DataKey:  # fmt: skip
        made = super().__new__(cls, key)
        made.older = tuple(older)
        made.lookup_hash_key = lookup_hash_key
        return made


class Vault:
    """Seals and opens personal values, and hashes them for lookups without decryption.

    ``master_key`` seals; ``old_keys`` only open. A ring with old keys must be given its
    ``lookup_hash_key``: deriving it from the newest key would change every lookup hash.
    """

    def __init__(
        self, master_key: bytes, old_keys: Iterable[bytes] | None = None, *, lookup_hash_key: bytes | None = None
    ) -> None:
        if old_keys is None:
            old_keys = getattr(master_key, "older", ())
        if lookup_hash_key is None:
            lookup_hash_key = getattr(master_key, "lookup_hash_key", None)
        ring = [bytes(master_key), *(bytes(key) for key in old_keys)]
        if any(len(key) != KEY_BYTES for key in ring):
            raise ValueError("the data encryption key must be 32 bytes")
        if len(ring) > 1 and lookup_hash_key is None:
            raise ValueError("a keyring with old keys needs its lookup-hash key pinned (LOOKUP_HASH_KEY)")
        if lookup_hash_key is not None and len(lookup_hash_key) != KEY_BYTES:
            raise ValueError("the lookup-hash key must be 32 bytes")
        self._keys: dict[str, AESGCM] = {}
        for key in ring:
            identifier = key_id(key)
            if identifier in self._keys:
                continue  # the same key twice: harmless
            self._keys[identifier] = AESGCM(_derive(key, b"crisisline/encrypt/v1"))
        if len(self._keys) != len({bytes(key) for key in ring}):
            raise ValueError("two data keys share a key id; generate a new key")
        self.current_key_id = key_id(ring[0])
        self._hash_key = lookup_hash_key if lookup_hash_key is not None else derived_lookup_hash_key(ring[0])

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id of the ring, the current (sealing) one first."""
        return tuple(self._keys)

    def seal(self, plaintext: str, *, context: str) -> str:
        """Encrypt ``plaintext`` with the newest key; ``context`` (e.g. ``"phone"``) binds it to its column."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current_key_id].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{CIPHERTEXT_VERSION}:{self.current_key_id}:" + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str, *, context: str) -> str:
        """Decrypt a value made by :meth:`seal` (with any key of the ring) and the same ``context``."""
        version, _, rest = token.partition(":")
        if version == CIPHERTEXT_VERSION:
            identifier, _, payload = rest.partition(":")
            aead = self._keys.get(identifier)
            if aead is None:
                raise DecryptionError("value was sealed with a key that is not in the keyring")
            return _decrypt(aead, payload, context)
        if version == LEGACY_VERSION:
            for aead in self._keys.values():  # newest first: most legacy values were sealed with it
                try:
                    return _decrypt(aead, rest, context)
                except DecryptionError:
                    continue
            raise DecryptionError("value could not be decrypted")
        raise DecryptionError(f"unknown ciphertext version {version[:8]!r}")

    def sealed_key_id(self, token: str) -> str | None:
        """The key id a value names (None for a legacy value that names none); never decrypts."""
        version, _, rest = token.partition(":")
        if version == CIPHERTEXT_VERSION:
            return rest.partition(":")[0]
        if version == LEGACY_VERSION:
            return None
        raise DecryptionError(f"unknown ciphertext version {version[:8]!r}")

    def current_prefix(self) -> str:
        """How every value sealed with the newest key starts (for finding the others in SQL)."""
        return f"{CIPHERTEXT_VERSION}:{self.current_key_id}:"

    def reseal(self, token: str, *, context: str) -> str:
        """``token`` sealed with the newest key (unchanged if it already is)."""
        if token.startswith(self.current_prefix()):
            return token
        return self.seal(self.open(token, context=context), context=context)

    def lookup_hash(self, value: str, *, context: str) -> str:
        """A stable keyed hash (HMAC-SHA256, hex) for equality lookups, e.g. a blocklist."""
        message = context.encode() + b"\x00" + value.encode()
        return hmac.new(self._hash_key, message, hashlib.sha256).hexdigest()


def _decrypt(aead: AESGCM, payload: str, context: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(payload)
        return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
    except Exception as error:  # cryptography raises InvalidTag; base64 raises others
        raise DecryptionError("value could not be decrypted") from error
