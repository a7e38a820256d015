"""Everything an administrator should hear about a routing text before it goes live.

:func:`routing.validation.validate_text` decides what is valid: the same text always gives
the same answer. The warnings here depend on more than the text, so they are kept apart:
the clock (an override already over), the environment (``BACKUP_NUMBER``), and the whole rota
read through the engine (a stretch of the week with nobody to ring, the seconds of menus
before the first ring). One check here is an error: no number in the routing may be the line's
own (``LINE_PHONE_NUMBER``), which only the environment knows. ``flask routing check``,
``load`` and the web console all call :func:`check_text`, so they report the same problems at
the same lines.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from routing import coverage, timing
from routing.document import Responder, RoutingDocument, Shift
from routing.validation import Problem, compose, validate

DAY_GROUPS = {
    tuple(range(7)): "daily",
    tuple(range(5)): "weekdays",
    (5, 6): "weekends",
}
WHAT_CALLERS_GET = {
    coverage.NOBODY: "nobody on call: callers go to the backup line",
    coverage.OTHER_LANGUAGE: "nobody on call speaks it: callers get someone in another language",
}


@dataclass(frozen=True)
class Report:
    """A checked text: the document (None when refused), its errors and its warnings, each
    with the line and column of the value it is about where it has one."""

    document: RoutingDocument | None
    errors: list[Problem]
    warnings: list[Problem]

    @property
    def valid(self) -> bool:
        return self.document is not None


def check_text(
    text: str,
    *,
    now: datetime,
    environment_backup_number: str | None = None,
    left_out: Collection[str] = frozenset(),
    line_number: str | None = None,
) -> Report:
    """Validate ``text`` and, when valid, review it (see the module docstring).

    ``now`` (aware) dates the overrides; ``environment_backup_number`` is ``BACKUP_NUMBER``
    (E.164), which the fail-safe dials with the database down. ``left_out``: responders the line
    does not ring whatever the routing says (see :func:`coverage_warnings`). ``line_number``:
    the line's own number (``LINE_PHONE_NUMBER``, E.164) when known; no number in the routing
    may be it (see :func:`own_number_errors`), and the review's errors refuse the text too.
    """
    raw, source_map, problems = compose(text)
    document = None
    if not problems:
        document, problems = validate(raw)
    if document is not None:
        reviewed = review(
            document,
            now=now,
            environment_backup_number=environment_backup_number,
            left_out=left_out,
            line_number=line_number,
        )
        problems = problems + reviewed
        if any(problem.severity == "error" for problem in reviewed):
            document = None
    placed = [source_map.place(problem) for problem in problems]
    return Report(
        document,
        [p for p in placed if p.severity == "error"],
        [p for p in placed if p.severity != "error"],
    )


def review(
    document: RoutingDocument,
    *,
    now: datetime,
    environment_backup_number: str | None = None,
    left_out: Collection[str] = frozenset(),
    line_number: str | None = None,
) -> list[Problem]:
    """Warnings about a valid document that the validator alone cannot give, and the errors
    that need the line's own number (``line_number``; skipped when it is not known)."""
    return [
        *own_number_errors(document, line_number),
        *backup_number_warnings(document, environment_backup_number),
        *past_override_warnings(document, now),
        *overlapping_shift_warnings(document),
        *coverage_warnings(document, left_out=left_out),
        *override_coverage_warnings(document, now, left_out=left_out),
        *time_to_ring_warnings(document),
    ]


def backup_number_warnings(document: RoutingDocument, environment_backup_number: str | None) -> list[Problem]:
    """The routing's backup number is the one the line dials, fail-safes included, once a
    process has read the routing; ``BACKUP_NUMBER`` is dialled only by a process that has not
    (it started with the database down). They should agree."""
    if not environment_backup_number or environment_backup_number == document.backup_number:
        return []
    return [
        Problem(
            "line.backup_number",
            f"{document.backup_number} here, but BACKUP_NUMBER in the environment is {environment_backup_number}; "
            "the line and its fail-safes dial this one, but a process that starts while the database is down "
            "dials BACKUP_NUMBER until it can read the routing. Set BACKUP_NUMBER to the same number",
            "warning",
        )
    ]


def own_number_errors(document: RoutingDocument, line_number: str | None) -> list[Problem]:
    """A number in the routing that is the line's own: the backup line (``system_down`` would
    send every caller back into the line, and every fail-safe dials it once read), or a
    responder's or supervisor's phone (a call or text to them reaches the line itself).
    The number is not repeated in the message: it is in the field named."""
    if not line_number:
        return []
    because = "is the line's own number (LINE_PHONE_NUMBER)"
    problems = []
    if document.backup_number == line_number:
        problems.append(
            Problem("line.backup_number", f"{because}: callers sent to the backup line would call the line again")
        )
    for path, responder in _responder_paths(document):
        if responder.phone == line_number:
            problems.append(Problem(f"{path}.phone", f"{because}: ringing them would ring the line itself"))
    for index, supervisor in enumerate(document.supervisors):
        if supervisor.phone == line_number:
            problems.append(
                Problem(f"supervisors[{index}].phone", f"{because}: texts to them would go to the line itself")
            )
    return problems


def past_override_warnings(document: RoutingDocument, now: datetime) -> list[Problem]:
    """Overrides that are over already: dead weight at best, a wrong year at worst."""
    local_now = now.astimezone(document.timezone).replace(tzinfo=None)
    problems = []
    for path, responder in _responder_paths(document):
        for offset, override in enumerate(responder.overrides):
            if override.end <= local_now:
                problems.append(
                    Problem(
                        f"{path}.overrides[{offset}]",
                        f"ended {override.end:%Y-%m-%d %H:%M}, in the past (is the year right?); remove it",
                        "warning",
                    )
                )
    return problems


def overlapping_shift_warnings(document: RoutingDocument) -> list[Problem]:
    """One responder's shifts that cover the same hours twice: harmless to the engine, but
    usually a typo (a wrong day or end) that hides the gap it was meant to fill."""
    problems = []
    for path, responder in _responder_paths(document):
        covered = [_minutes_of_week(shift) for shift in responder.shifts]
        for later in range(len(covered)):
            for earlier in range(later):
                shared = covered[earlier] & covered[later]
                if shared:
                    first = min(shared)
                    problems.append(
                        Problem(
                            f"{path}.shifts[{later}]",
                            f"overlaps shifts[{earlier}] ({len(shared) // 60} h a week, from "
                            f"{coverage.clock_label(first)}); list each hour once",
                            "warning",
                        )
                    )
    return problems


def _minutes_of_week(shift: Shift) -> set[int]:
    start = shift.start.hour * 60 + shift.start.minute
    end = 1440 if shift.end is None else shift.end.hour * 60 + shift.end.minute
    length = end - start if end > start else end + 1440 - start
    return {(day * 1440 + start + minute) % coverage.WEEK_MINUTES for day in shift.weekdays for minute in range(length)}


def _responder_paths(document: RoutingDocument) -> list[tuple[str, Responder]]:
    """Each responder with its place in the file (``counselors[2]``, ``co_responder_units[0]``)."""
    counters = {"counselor": 0, "co_responder": 0}
    result = []
    for responder in document.responders:
        section = "counselors" if responder.kind == "counselor" else "co_responder_units"
        result.append((f"{section}[{counters[responder.kind]}]", responder))
        counters[responder.kind] += 1
    return result


def coverage_warnings(document: RoutingDocument, *, left_out: Collection[str] = frozenset()) -> list[Problem]:
    """Each stretch of the weekly rota when a language and need callers can choose has nobody
    to ring, or nobody who speaks the language; same hours on several days in one warning.
    ``left_out``: responders the line does not ring whatever the routing says (their console
    account was closed: the caller passes ``line_queue.responders.closed_responder_ids()``)."""
    if document.mode == "system_down":
        return []  # everyone goes to the backup line on purpose
    # First the days on which one need has the same gap hours, then the needs that share
    # those days and hours: one warning each.
    days_of: dict[tuple[str, str, str, int, int], set[int]] = {}
    merged: dict[tuple[str, str, str], list[str]] = {}
    for row in coverage.week_coverage(document, left_out=left_out):
        for gap in row.gaps:
            length = gap.end - gap.start
            if length >= 24 * 60:
                merged.setdefault((row.language, gap.status, gap.label), []).append(row.need)
                continue
            days_of.setdefault((row.language, gap.status, row.need, gap.start % 1440, length), set()).add(
                (gap.start // 1440) % 7
            )
    for (language, status, need, start, length), days in days_of.items():
        when = f"{_days_label(days)} {_hours_label(start, length)}"
        merged.setdefault((language, status, when), []).append(need)
    order = {need.key: index for index, need in enumerate(document.needs)}
    problems = []
    for (language, status, when), needs in sorted(merged.items()):
        named = ", ".join(sorted(set(needs), key=order.__getitem__))
        who = document.language(language).staff_name
        problems.append(
            Problem(
                "counselors",
                f"coverage gap {when}, {who} ({language}) / {named}: {WHAT_CALLERS_GET[status]} "
                "(see `flask routing coverage`)",
                "warning",
            )
        )
    return problems


def override_coverage_warnings(
    document: RoutingDocument, now: datetime, *, left_out: Collection[str] = frozenset()
) -> list[Problem]:
    """Each stretch of real dates, from ``now`` to ``coverage.DATED_WEEKS_AHEAD`` weeks ahead,
    when one-off overrides (someone off call) leave a language and need with nobody to ring,
    or nobody who speaks the language, though the weekly rota has someone then: the weekly
    rota's own gaps are :func:`coverage_warnings`'. Needs with the same gap in one warning.
    An off-call override running past those weeks is named: what it leaves later is not
    checked yet. ``left_out`` as for :func:`coverage_warnings`."""
    if document.mode == "system_down":
        return []  # everyone goes to the backup line on purpose
    merged: dict[tuple[str, datetime, str, str], list[str]] = {}
    for gap in coverage.override_gaps(document, now, left_out=left_out):
        merged.setdefault((gap.language, gap.start, gap.status, gap.label), []).append(gap.need)
    order = {need.key: index for index, need in enumerate(document.needs)}
    problems = []
    for (language, start, status, label), needs in sorted(merged.items()):
        named = ", ".join(sorted(set(needs), key=order.__getitem__))
        who = document.language(language).staff_name
        problems.append(
            Problem(
                "counselors",
                f"coverage gap {label}, {who} ({language}) / {named}: {WHAT_CALLERS_GET[status]}, "
                "because of the one-off overrides (off call) then "
                f"(see `flask routing coverage --week {start:%Y-%m-%d}`)",
                "warning",
            )
        )
    local_now, horizon = coverage.dated_horizon(document, now)
    for path, responder in _responder_paths(document):
        if responder.id in left_out:
            continue
        for offset, override in enumerate(responder.overrides):
            if not override.on_call and override.end > horizon and override.end > local_now:
                problems.append(
                    Problem(
                        f"{path}.overrides[{offset}]",
                        f"off call until {override.end:%Y-%m-%d %H:%M}: coverage gaps are checked only "
                        f"{coverage.DATED_WEEKS_AHEAD} weeks ahead, so one this leaves later is not warned of; "
                        "preview the routing again nearer the time",
                        "warning",
                    )
                )
    return problems


def _days_label(days: set[int]) -> str:
    ordered = tuple(sorted(days))
    return DAY_GROUPS.get(ordered) or ", ".join(coverage.DAY_NAMES[day] for day in ordered)


def _hours_label(start: int, length: int) -> str:
    end = start + length
    first = f"{start // 60:02d}:{start % 60:02d}"
    if end == 1440:
        return f"{first}–24:00"
    suffix = " (next day)" if end > 1440 else ""
    end %= 1440
    return f"{first}–{end // 60:02d}:{end % 60:02d}{suffix}"


def time_to_ring_warnings(document: RoutingDocument) -> list[Problem]:
    """Menus too long before the first ring, and a default that rings a unit unasked."""
    problems = []
    slowest: dict[str, float] = {}
    for path in timing.slow_paths(document):
        slowest[path.language] = max(slowest.get(path.language, 0.0), path.following_seconds)
    for code, seconds in slowest.items():
        who = f"{document.language(code).staff_name}-speaking callers"
        problems.append(
            Problem(
                "menu.max_seconds_to_ring",
                f"{who} who follow the menus hear {seconds:.1f} s of prompts before the first ring "
                f"(limit {document.menu.max_seconds_to_ring} s); shorten the prompts or labels "
                "(see `flask routing timing`)",
                "warning",
            )
        )
    default = document.need(document.menu.default_need)
    if default is not None and default.target == "co_responders":
        problems.append(
            Problem(
                "menu.default_need",
                f"{default.key!r} rings co-responder units for callers who never chose it by key",
                "warning",
            )
        )
    return problems
