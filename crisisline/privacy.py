"""Encryption at rest and keyed hashes for personal data (phone numbers, message bodies).

One 32-byte ``DATA_ENCRYPTION_KEY`` is split with HKDF into an AES-256-GCM key and an
HMAC-SHA256 key, so a leaked lookup hash never helps decrypt, and vice versa. Ciphertexts
carry a version prefix so the key can be rotated later without a flag day.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CIPHERTEXT_VERSION = "v1"
NONCE_BYTES = 12


class DecryptionError(ValueError):
    """A stored value could not be decrypted (wrong key, or tampered with)."""


def _derive(master_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master_key)


class Vault:
    """Seals and opens personal values, and hashes them for lookups without decryption."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the data encryption key must be 32 bytes")
        self._aead = AESGCM(_derive(master_key, b"crisisline/encrypt/v1"))
        self._hash_key = _derive(master_key, b"crisisline/lookup-hash/v1")

    def seal(self, plaintext: str, *, context: str) -> str:
        """Encrypt ``plaintext``; ``context`` (e.g. ``"phone"``) binds it to its column."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{CIPHERTEXT_VERSION}:" + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str, *, context: str) -> str:
        """Decrypt a value made by :meth:`seal` with the same ``context``."""
        version, _, payload = token.partition(":")
        if version != CIPHERTEXT_VERSION:
            raise DecryptionError(f"unknown ciphertext version {version!r}")
        try:
            raw = base64.urlsafe_b64decode(payload)
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except Exception as error:  # cryptography raises InvalidTag; base64 raises others
            raise DecryptionError("value could not be decrypted") from error

    def lookup_hash(self, value: str, *, context: str) -> str:
        """A stable keyed hash (HMAC-SHA256, hex) for equality lookups, e.g. a blocklist."""
        message = context.encode() + b"\x00" + value.encode()
        return hmac.new(self._hash_key, message, hashlib.sha256).hexdigest()
