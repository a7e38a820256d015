"""Changing the live routing safely: preview, publish, history and roll back.

Plain functions over the database (inside a Flask app context), shared by ``flask routing``
and the web console. A draft names the version it was edited from (its *base*): publishing
it over a newer live version would silently undo someone else's change, so that is refused
unless forced. Every publish records who and why; nothing invalid ever goes live
(:func:`routing.store.publish` validates again under its lock).
"""

from __future__ import annotations

import difflib
import getpass
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import RoutingVersion
from routing import store
from routing.document import RoutingDocument
from routing.review import check_text
from routing.validation import InvalidRoutingDocument, Problem

MAX_NOTE_LENGTH = 500  # routing_versions.note


@dataclass(frozen=True)
class Preview:
    """What publishing a draft would do: the diff against the live version, and every
    problem (refused) and warning (allowed), each with its line in the draft."""

    diff: str  # unified diff, live → draft; empty when they are the same text
    problems: list[Problem]
    warnings: list[Problem]
    live_version: int | None
    base: int | None
    document: RoutingDocument | None
    # The moment its dated warnings were judged at (a gap in a leave under way starts "now"):
    # another preview compared with this one is judged at the same moment.
    checked_at: datetime

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def unchanged(self) -> bool:
        """The draft is exactly the live text: publishing it changes nothing."""
        return self.live_version is not None and not self.diff

    @property
    def stale(self) -> bool:
        """The live version is newer than the one the draft was edited from."""
        return self.live_version is not None and (self.base is None or self.base < self.live_version)


@dataclass(frozen=True)
class Published:
    version: int
    created: bool  # False: the text was already live, nothing was written
    preview: Preview


@dataclass(frozen=True)
class VersionInfo:
    number: int
    published_at: datetime
    author: str
    note: str
    live: bool


class PublishRefused(Exception):
    """Nothing was published. ``reason``: ``invalid``, ``stale``, ``unknown_base``,
    ``no_note`` or ``unknown_version``; ``preview`` when a draft was read."""

    def __init__(self, reason: str, message: str, preview: Preview | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.preview = preview


def default_author() -> str:
    """The OS user running the command (``--author`` overrides it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name (a bare container)
        return "unknown"


def environment_backup_number() -> str | None:
    """``BACKUP_NUMBER``, as the fail-safe dials it, when the app's settings are loaded."""
    settings = current_app.extensions.get("crisisline.settings")
    number = getattr(settings, "backup_number", None)
    return number if isinstance(number, str) else None


def line_phone_number() -> str | None:
    """``LINE_PHONE_NUMBER`` (E.164), when the app's settings are loaded and it is set."""
    settings = current_app.extensions.get("crisisline.settings")
    number = getattr(settings, "line_phone_number", None)
    return number if isinstance(number, str) else None


def live_version() -> RoutingVersion | None:
    return db.session.scalars(select(RoutingVersion).order_by(RoutingVersion.id.desc()).limit(1)).first()


def version(number: int) -> RoutingVersion | None:
    return db.session.get(RoutingVersion, number)


def unified_diff(before: str, after: str, before_name: str, after_name: str) -> str:
    return "".join(
        difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True), before_name, after_name)
    )


def preview(
    text: str, base: int | None = None, *, now: datetime | None = None, left_out: Collection[str] = frozenset()
) -> Preview:
    """Check ``text`` as a draft edited from version ``base`` (None: unknown). Writes nothing.
    ``left_out``: responders the line does not ring whatever the routing says (the coverage
    warnings count them out; see ``routing.review.coverage_warnings``)."""
    live = live_version()
    checked_at = now or datetime.now(UTC)
    report = check_text(
        text,
        now=checked_at,
        environment_backup_number=environment_backup_number(),
        left_out=left_out,
        line_number=line_phone_number(),
    )
    live_text = store.source_of(live) if live is not None else ""
    live_name = f"live (version {live.id})" if live is not None else "live (nothing published)"
    draft_name = f"draft (from version {base})" if base is not None else "draft"
    return Preview(
        diff=unified_diff(live_text, text, live_name, draft_name),
        problems=report.errors,
        warnings=report.warnings,
        live_version=live.id if live is not None else None,
        base=base,
        document=report.document,
        checked_at=checked_at,
    )


def publish(
    text: str,
    *,
    base: int | None,
    note: str,
    author: str,
    force: bool = False,
    now: datetime | None = None,
    left_out: Collection[str] = frozenset(),
) -> Published:
    """Publish ``text`` as the new live version, edited from version ``base``.

    Refused (:class:`PublishRefused`, nothing written) when the text is invalid, the note is
    empty, ``base`` is not a published version, or the live version is newer than ``base``
    (or ``base`` is None while something is live), unless ``force``. The same text as the live
    version publishes nothing and returns the live version, not created: also when another
    publisher wrote this very text after the preview (only one of them published it).
    """
    note = note.strip()
    if not note:
        raise PublishRefused("no_note", "a note saying why is required")
    if len(note) > MAX_NOTE_LENGTH:
        raise PublishRefused("no_note", f"the note is {len(note)} characters; at most {MAX_NOTE_LENGTH}")
    if base is not None and version(base) is None:
        raise PublishRefused("unknown_base", f"there is no version {base} (see `flask routing history`)")
    draft = preview(text, base, now=now, left_out=left_out)
    if not draft.valid:
        raise PublishRefused("invalid", f"{len(draft.problems)} error(s); the live routing is unchanged", draft)
    if draft.unchanged:
        assert draft.live_version is not None
        return Published(draft.live_version, False, draft)

    def refuse_if_stale(live: int | None) -> None:
        # Checked again under the store's lock: someone may have published since the preview.
        if force or live is None or (base is not None and base >= live):
            return
        if base is None:
            raise PublishRefused(
                "stale",
                f"say which version this file was edited from (--base N); the live version is {live}",
                draft,
            )
        raise PublishRefused(
            "stale",
            f"the live version is {live}, newer than version {base} this file was edited from; "
            "merge their change into yours (see `flask routing export` and `history`), or force",
            draft,
        )

    try:
        published = store.publish_once(
            text, published_by=author.strip() or "unknown", note=note, check_live=refuse_if_stale
        )
    except InvalidRoutingDocument as error:  # cannot happen after a valid preview; never publish anyway
        raise PublishRefused("invalid", str(error), draft) from error
    # Whether this call wrote it, not whether it differs from the live version previewed above:
    # another may have published this very text since, and then only they published it.
    return Published(published.version.id, published.created, draft)


def history(limit: int | None = None) -> list[VersionInfo]:
    """Published versions, newest first; the first is live."""
    query = select(
        RoutingVersion.id, RoutingVersion.published_at, RoutingVersion.published_by, RoutingVersion.note
    ).order_by(RoutingVersion.id.desc())
    if limit is not None:
        query = query.limit(limit)
    rows = db.session.execute(query).all()
    return [
        VersionInfo(row.id, row.published_at, row.published_by, row.note or "", live=index == 0)
        for index, row in enumerate(rows)
    ]


def version_diff(number: int) -> str:
    """What version ``number`` changed, against the version before it."""
    target = version(number)
    if target is None:
        raise PublishRefused("unknown_version", f"there is no version {number}")
    before = db.session.scalars(
        select(RoutingVersion).where(RoutingVersion.id < number).order_by(RoutingVersion.id.desc()).limit(1)
    ).first()
    before_text = store.source_of(before) if before is not None else ""
    before_name = f"version {before.id}" if before is not None else "nothing"
    return unified_diff(before_text, store.source_of(target), before_name, f"version {number}")


def rollback(
    number: int, *, author: str, note: str | None = None, now: datetime | None = None, seen_live: int | None = None,
    left_out: Collection[str] = frozenset(),
) -> Published:  # fmt: skip
    """Publish version ``number``'s text again, as a new version (history is never rewritten).

    It is validated like any draft: a version that today's checks refuse is not republished.
    ``seen_live``: the version that was live when the admin chose to roll back; if another
    has been published since, nothing is (their change would be undone unseen). ``left_out``:
    as for ``preview``.
    """
    old = version(number)
    if old is None:
        raise PublishRefused("unknown_version", f"there is no version {number} (see `flask routing history`)")
    reason = f"rollback to version {number}" + (f": {note.strip()}" if note and note.strip() else "")
    live = live_version()
    if seen_live is not None and live is not None and live.id != seen_live:
        raise PublishRefused(
            "stale",
            f"version {live.id} was published after you opened this page (version {seen_live} was live then); "
            "look at what it changed before rolling back",
        )
    return publish(
        store.source_of(old),
        base=seen_live if seen_live is not None else (live.id if live is not None else None),
        note=reason[:MAX_NOTE_LENGTH],
        author=author,
        now=now,
        left_out=left_out,
    )
