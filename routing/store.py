"""Published routing documents, versioned in the database; the highest id is active.

Publishing validates first and refuses an invalid document whole, so the line is never
left without a valid config. Each process caches the parsed active document by version id.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import RoutingVersion
from crisisline.privacy import Vault
from routing.document import RoutingDocument
from routing.validation import load_document

SEAL_CONTEXT = "routing-source"


@dataclass(frozen=True)
class ActiveRouting:
    version_id: int
    document: RoutingDocument


_cache_lock = threading.Lock()
_cache: dict[tuple[int, str], ActiveRouting] = {}


def _vault() -> Vault:
    vault: Vault = current_app.extensions["crisisline.vault"]
    return vault


def publish(source: str, *, published_by: str, note: str | None = None) -> RoutingVersion:
    """Validate ``source`` and publish it as the new active version.

    Raises :class:`routing.validation.InvalidRoutingDocument` and writes nothing if invalid.
    Publishing the same text as the active version again is a no-op returning that version.
    """
    load_document(source)
    digest = hashlib.sha256(source.encode()).hexdigest()
    latest = db.session.scalars(select(RoutingVersion).order_by(RoutingVersion.id.desc()).limit(1)).first()
    if latest is not None and latest.digest == digest:
        return latest
    version = RoutingVersion(
        sealed_source=_vault().seal(source, context=SEAL_CONTEXT),
        digest=digest,
        published_by=published_by,
        note=note,
    )
    db.session.add(version)
    db.session.commit()
    return version


def source_of(version: RoutingVersion) -> str:
    """The YAML text of a published version, exactly as it was published."""
    return _vault().open(version.sealed_source, context=SEAL_CONTEXT)


def active_routing() -> ActiveRouting | None:
    """The active document, or None if nothing was ever published. One cheap query per call."""
    newest = db.session.execute(
        select(RoutingVersion.id, RoutingVersion.digest).order_by(RoutingVersion.id.desc()).limit(1)
    ).first()
    if newest is None:
        return None
    # Keyed by digest too: ids can be reused after a restore, contents cannot collide.
    key = (newest.id, newest.digest)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    version = db.session.get(RoutingVersion, newest.id)
    if version is None:
        return None
    active = ActiveRouting(version.id, load_document(source_of(version)))
    with _cache_lock:
        _cache.clear()  # only the newest version is ever served
        _cache[key] = active
    return active
