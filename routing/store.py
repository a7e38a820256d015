"""Published routing documents, versioned in the database; the highest id is active.

Publishing validates first and refuses an invalid document whole, so the line is never
left without a valid config. Each process caches the parsed active document by version id.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from flask import current_app, has_request_context, request
from sqlalchemy import select

from crisisline.db import db, hold_lock
from crisisline.failsafe import remember_backup_number
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
_cache: dict[tuple[int, str, str | None], ActiveRouting] = {}


def _vault() -> Vault:
    vault: Vault = current_app.extensions["crisisline.vault"]
    return vault


@dataclass(frozen=True)
class Publication:
    version: RoutingVersion
    created: bool  # False: this very text was already the latest version; nothing was written


def publish(
    source: str,
    *,
    published_by: str,
    note: str | None = None,
    check_live: Callable[[int | None], None] | None = None,
) -> RoutingVersion:
    """Validate ``source`` and publish it as the new active version; the version it is now.

    As :func:`publish_once`, for a caller that need not know whether a row was written.
    """
    return publish_once(source, published_by=published_by, note=note, check_live=check_live).version


def publish_once(
    source: str,
    *,
    published_by: str,
    note: str | None = None,
    check_live: Callable[[int | None], None] | None = None,
) -> Publication:
    """Validate ``source`` and publish it as the new active version, saying whether this call
    wrote it (``created``).

    Raises :class:`routing.validation.InvalidRoutingDocument` and writes nothing if invalid.
    Publishing the same text as the active version again is a no-op returning that version,
    not created: also when another publisher wrote this very text a moment before (a
    double-clicked Publish, two administrators at once), so only one of them records it.
    ``check_live`` is called with the live version's id (None if none) while publishes are
    serialised, and may raise to refuse (a draft based on an older version): nothing is written.
    """
    load_document(source)
    digest = hashlib.sha256(source.encode()).hexdigest()
    latest = _latest()
    if latest is not None and latest.digest == digest:
        return Publication(latest, created=False)
    # One publisher at a time, held until commit or rollback, so two cannot both pass
    # ``check_live`` against the same live version.
    hold_lock("routing:publish")
    latest = _latest()  # again, under the lock
    if latest is not None and latest.digest == digest:
        db.session.commit()  # someone published this very text meanwhile; release the lock
        return Publication(latest, created=False)
    if check_live is not None:
        try:
            check_live(latest.id if latest is not None else None)
        except BaseException:
            db.session.rollback()  # releases the lock; nothing was written
            raise
    version = RoutingVersion(
        sealed_source=_vault().seal(source, context=SEAL_CONTEXT),
        digest=digest,
        published_by=published_by[:120],
        note=note[:500] if note else note,
    )
    db.session.add(version)
    db.session.commit()
    if has_request_context():
        request.environ.pop(_REQUEST_KEY, None)  # this request now sees the new version
    return Publication(version, created=True)


def _latest() -> RoutingVersion | None:
    return db.session.scalars(
        select(RoutingVersion).order_by(RoutingVersion.id.desc()).limit(1).execution_options(populate_existing=True)
    ).first()


def source_of(version: RoutingVersion) -> str:
    """The YAML text of a published version, exactly as it was published."""
    return _vault().open(version.sealed_source, context=SEAL_CONTEXT)


# Where a request keeps the routing it read: one version per request, read once (a status
# callback asked three times). Per request, not per app context: a worker's context lives long.
_REQUEST_KEY = "crisisline.active_routing"


def active_routing() -> ActiveRouting | None:
    """The active document, or None if nothing was ever published. One cheap query per
    request (a request sees one version throughout, even if another is published meanwhile)."""
    if has_request_context() and _REQUEST_KEY in request.environ:
        kept: ActiveRouting | None = request.environ[_REQUEST_KEY]
        return kept
    active = _read_active_routing()
    if has_request_context():
        request.environ[_REQUEST_KEY] = active
    return active


def last_read_routing() -> ActiveRouting | None:
    """The routing this process last read, from memory (None before its first read): for a
    fail-safe that must not touch the database, which may be what failed."""
    with _cache_lock:
        return next(iter(_cache.values()), None)


# Built once: every webhook runs it (``crisisline.db``, "Statements built once").
_NEWEST_VERSION = select(RoutingVersion.id, RoutingVersion.digest).order_by(RoutingVersion.id.desc()).limit(1)


def _line_mode_override() -> str | None:
    settings = current_app.extensions.get("crisisline.settings")
    return settings.line_mode_override if settings is not None else None


def _as_the_operator_set_it(document: RoutingDocument, override: str | None) -> RoutingDocument:
    """``LINE_MODE_OVERRIDE=system_down``, the operator's emergency switch: every path that
    reads the routing (calls, texts, the queue's passes, the clock's retries and sweeps) sees
    the line down, as if its published mode were ``system_down``. A new caller is sent to the
    backup line before the routing is read at all (``ivr.views.incoming``)."""
    if override != "system_down" or document.mode == "system_down":
        return document
    return replace(document, mode="system_down")


def _read_active_routing() -> ActiveRouting | None:
    newest = db.session.execute(_NEWEST_VERSION).first()
    if newest is None:
        return None
    # Keyed by digest too: ids can be reused after a restore, contents cannot collide; and by
    # the operator's switch, which changes what is served (an app's own settings).
    override = _line_mode_override()
    key = (newest.id, newest.digest, override)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        remember_backup_number(cached.document.backup_number)
        return cached
    version = db.session.get(RoutingVersion, newest.id)
    if version is None:
        return None
    # Not strict: a version published before a newer check must keep the line running.
    document = _as_the_operator_set_it(load_document(source_of(version), strict=False), override)
    active = ActiveRouting(version.id, document)
    with _cache_lock:
        _cache.clear()  # only the newest version is ever served
        _cache[key] = active
    remember_backup_number(active.document.backup_number)
    return active
