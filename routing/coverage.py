"""Who covers the week: for each language and need a caller can choose, the stretches of the
week when the engine would ring a speaker of their language, someone in another language, or
nobody (the backup line).

Computed with the real engine (:func:`routing.engine.decide_route`) at every moment the rota
changes (a shift or override starting or ending), so it cannot disagree with what a caller
gets. Plain values, for ``flask routing coverage``, ``flask routing check`` and the console.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from routing.document import Need, RoutingDocument
from routing.engine import decide_route

WEEK_MINUTES = 7 * 24 * 60
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# What a caller gets during a stretch of the week.
COVERED = "covered"  # someone who speaks their language and takes their need
OTHER_LANGUAGE = "other_language"  # someone on call, told there is no language match
NOBODY = "nobody"  # the backup line
# A Monday with no DST change anywhere, for the weekly rota (its wall-clock is all that counts).
REFERENCE_MONDAY = date(2024, 1, 1)
UTC = ZoneInfo("UTC")


@dataclass(frozen=True)
class Stretch:
    """``start``-``end`` in minutes from Monday 00:00 of the week (``end`` may be 10080)."""

    start: int
    end: int
    status: str  # COVERED, OTHER_LANGUAGE or NOBODY
    responders: tuple[str, ...]  # responder ids the engine would ring (in order, first stretch minute)

    @property
    def label(self) -> str:
        """``Mon 16:00-Tue 08:00``, ``Sat 02:00-08:00``, ``Sun 22:00-24:00``."""
        return span_label(self.start, self.end)


@dataclass(frozen=True)
class Coverage:
    """One language and need over one week."""

    language: str
    need: str
    stretches: tuple[Stretch, ...]

    @property
    def gaps(self) -> tuple[Stretch, ...]:
        return tuple(stretch for stretch in self.stretches if stretch.status != COVERED)


def clock_label(minute: int) -> str:
    """``Tue 08:00`` for a minute of the week."""
    day, rest = divmod(minute, 24 * 60)
    return f"{DAY_NAMES[day % 7]} {rest // 60:02d}:{rest % 60:02d}"


def span_label(start: int, end: int) -> str:
    first = clock_label(start)
    if end == start + WEEK_MINUTES:
        return "all week"
    start_day, end_day = start // 1440, end // 1440
    if end % 1440 == 0 and end_day == start_day + 1:
        return f"{first}–24:00"
    if end_day == start_day:
        return f"{first}–{clock_label(end)[4:]}"
    return f"{first}–{clock_label(end)}"


def routable_needs(document: RoutingDocument) -> tuple[Need, ...]:
    """The needs a caller can reach: every need, or only the default one without a need menu."""
    if document.menu.ask_need:
        return document.needs
    default = document.need(document.menu.default_need)
    return (default,) if default is not None else ()


def week_coverage(
    document: RoutingDocument, week_of: date | None = None, *, left_out: Collection[str] = frozenset()
) -> list[Coverage]:
    """Every routable language x need over a week.

    ``week_of`` None: the weekly rota alone (one-off overrides left out). A date: the week
    (Monday to Sunday) holding it, overrides included. ``left_out``: responders the line does
    not ring whatever the routing says (their console account was closed: the caller passes
    ``line_queue.responders.closed_responder_ids()``), counted as not there.
    """
    monday = REFERENCE_MONDAY if week_of is None else week_of - timedelta(days=week_of.weekday())
    # Evaluate on the line's wall-clock: a UTC document makes local time equal to the moment
    # we pass, so shift edges are exact even in a week with a DST change.
    rota = replace(
        document,
        timezone=UTC,
        responders=tuple(
            responder if week_of is not None else replace(responder, overrides=())
            for responder in document.responders
            if responder.id not in left_out
        ),
    )
    start_of_week = datetime.combine(monday, time(0))
    edges = _edges(rota, start_of_week)
    result = []
    for language in document.languages:
        for need in routable_needs(document):
            stretches: list[Stretch] = []
            for index, minute in enumerate(edges):
                end = edges[index + 1] if index + 1 < len(edges) else WEEK_MINUTES
                moment = (start_of_week + timedelta(minutes=minute)).replace(tzinfo=UTC)
                decision = decide_route(rota, language.code, need, moment)
                if need.target == "backup" and decision.target == "backup":
                    status = COVERED  # the need is meant for the backup line
                elif decision.target == "backup":
                    status = NOBODY
                else:
                    status = COVERED if decision.language_matched else OTHER_LANGUAGE
                stretch = Stretch(minute, end, status, tuple(r.id for r in decision.responders))
                if stretches and stretches[-1].status == status:
                    stretches[-1] = replace(stretches[-1], end=end)
                else:
                    stretches.append(stretch)
            if week_of is None and len(stretches) > 1 and stretches[0].status == stretches[-1].status:
                # The rota repeats: Sunday night runs on into Monday morning.
                last = stretches.pop()
                stretches[0] = replace(
                    stretches[0], start=last.start, end=stretches[0].end + WEEK_MINUTES, responders=last.responders
                )
            result.append(Coverage(language.code, need.key, tuple(stretches)))
    return result


def _edges(rota: RoutingDocument, start_of_week: datetime) -> list[int]:
    """Every minute of the week at which someone's shift or override starts or ends."""
    edges = {0}
    for responder in rota.responders:
        for shift in responder.shifts:
            start = shift.start.hour * 60 + shift.start.minute
            end = 24 * 60 if shift.end is None else shift.end.hour * 60 + shift.end.minute
            for day in shift.weekdays:
                edges.add(day * 1440 + start)
                edges.add((day * 1440 + end + (1440 if end <= start else 0)) % WEEK_MINUTES)
        for override in responder.overrides:
            for moment in (override.start, override.end):
                minute = int((moment - start_of_week).total_seconds() // 60)
                if 0 <= minute < WEEK_MINUTES:
                    edges.add(minute)
    return sorted(edges)


def hourly_grid(coverage: Coverage) -> list[str]:
    """Seven strings of 24 characters (Monday first): ``#`` covered, ``~`` another language,
    ``.`` nobody: the worst thing that happens at any minute of that hour."""
    worst = {COVERED: 0, OTHER_LANGUAGE: 1, NOBODY: 2}
    symbol = {0: "#", 1: "~", 2: "."}
    cells = [0] * (7 * 24)
    for stretch in coverage.stretches:
        for minute in range(stretch.start, stretch.end, 1):
            hour = (minute % WEEK_MINUTES) // 60
            cells[hour] = max(cells[hour], worst[stretch.status])
    return ["".join(symbol[cell] for cell in cells[day * 24 : (day + 1) * 24]) for day in range(7)]


@dataclass(frozen=True)
class Opened:
    """A stretch of the weekly rota that gets worse for callers of one language and need."""

    language: str
    need: str
    label: str  # ``Mon 16:00-22:00``
    status: str  # what they get then: OTHER_LANGUAGE or NOBODY

    def __str__(self) -> str:
        return f"{self.label}, {self.language} / {self.need}: {_WORSE[self.status]}"


_WORSE = {NOBODY: "nobody on call (the backup line)", OTHER_LANGUAGE: "nobody on call speaks it"}
_RANK = {COVERED: 0, OTHER_LANGUAGE: 1, NOBODY: 2}


def gaps_opened(
    document: RoutingDocument, without: Collection[str], *, already_without: Collection[str] = ()
) -> list[Opened]:
    """What leaving the responders ``without`` out of the weekly rota does to callers: every
    stretch where a caller of some language and need would get nobody who speaks it, or
    nobody at all, and did not before. ``already_without``: responders left out of both (the
    line does not ring them already)."""

    def rota(left_out: Collection[str]) -> RoutingDocument:
        return replace(document, responders=tuple(r for r in document.responders if r.id not in left_out))

    before = week_coverage(rota(set(already_without)))
    after = week_coverage(rota(set(already_without) | set(without)))
    opened = []
    for was, now in zip(before, after, strict=True):
        worse = [0] * WEEK_MINUTES
        ranks = _ranks(was)
        for minute, rank in enumerate(_ranks(now)):
            worse[minute] = rank if rank > ranks[minute] else 0
        for start, end, rank in _runs(worse):
            status = NOBODY if rank == _RANK[NOBODY] else OTHER_LANGUAGE
            opened.append(Opened(now.language, now.need, span_label(start, end), status))
    return opened


def _ranks(coverage: Coverage) -> list[int]:
    ranks = [0] * WEEK_MINUTES
    for stretch in coverage.stretches:
        for minute in range(stretch.start, stretch.end):
            ranks[minute % WEEK_MINUTES] = _RANK[stretch.status]
    return ranks


def _runs(values: list[int]) -> list[tuple[int, int, int]]:
    """(start, end, value) of each run of one non-zero value in a week that wraps around
    (a run over Sunday midnight is one run, its end past ``WEEK_MINUTES``)."""
    if all(value == values[0] for value in values):
        return [(0, WEEK_MINUTES, values[0])] if values[0] else []
    first = next(minute for minute in range(WEEK_MINUTES) if values[minute] != values[minute - 1])
    runs = []
    start = first
    for step in range(1, WEEK_MINUTES + 1):
        minute = first + step
        if step == WEEK_MINUTES or values[minute % WEEK_MINUTES] != values[start % WEEK_MINUTES]:
            if values[start % WEEK_MINUTES]:
                begin = start % WEEK_MINUTES
                runs.append((begin, begin + (minute - start), values[begin]))
            start = minute
    return sorted(runs)


# How far ahead the dated weeks are checked: a preview stays cheap (at most this many weeks
# plus the one under way are computed), and a rota usually changes before then anyway.
DATED_WEEKS_AHEAD = 8


@dataclass(frozen=True)
class DatedGap:
    """A stretch of real dates when one-off overrides leave callers of one language and need
    worse off than the weekly rota alone does. ``start``/``end``: the line's wall-clock."""

    language: str
    need: str
    start: datetime
    end: datetime
    status: str  # what they get then: OTHER_LANGUAGE or NOBODY

    @property
    def label(self) -> str:
        """``Thu 2026-03-12 00:00-24:00``, ``Fri 2026-03-13 18:00-Mon 2026-03-16 08:00``."""
        first = f"{DAY_NAMES[self.start.weekday()]} {self.start:%Y-%m-%d %H:%M}"
        days = (self.end.date() - self.start.date()).days
        if days == 0:
            return f"{first}–{self.end:%H:%M}"
        if days == 1 and self.end.time() == time(0):
            return f"{first}–24:00"
        return f"{first}–{DAY_NAMES[self.end.weekday()]} {self.end:%Y-%m-%d %H:%M}"


def dated_horizon(document: RoutingDocument, now: datetime) -> tuple[datetime, datetime]:
    """(now, the end of what :func:`override_gaps` checks) on the line's wall-clock: this
    minute, and ``DATED_WEEKS_AHEAD`` weeks later."""
    local_now = now.astimezone(document.timezone).replace(tzinfo=None, second=0, microsecond=0)
    return local_now, local_now + timedelta(weeks=DATED_WEEKS_AHEAD)


def override_gaps(
    document: RoutingDocument, now: datetime, *, left_out: Collection[str] = frozenset()
) -> list[DatedGap]:
    """Every stretch from ``now`` (aware) to ``DATED_WEEKS_AHEAD`` weeks later when the one-off
    overrides leave a caller of some language and need with nobody who speaks it, or nobody at
    all, where the weekly rota alone has someone (its own gaps are warned of already).

    Only the weeks holding a part of an off-call override (leave) still to come are computed,
    with :func:`week_coverage` and every override of that week: an on-call override only adds
    someone, so it never opens a gap, but it may fill the one a leave opens. ``left_out`` as
    for :func:`week_coverage`."""
    local_now, horizon = dated_horizon(document, now)
    mondays: set[date] = set()
    for responder in document.responders:
        if responder.id in left_out:
            continue
        for override in responder.overrides:
            if override.on_call or override.end <= local_now or override.start >= horizon:
                continue
            first = max(override.start, local_now).date()
            last = (min(override.end, horizon) - timedelta(microseconds=1)).date()
            monday = first - timedelta(days=first.weekday())
            while monday <= last:
                mondays.add(monday)
                monday += timedelta(days=7)
    if not mondays:
        return []
    rota = week_coverage(document, left_out=left_out)
    gaps: list[DatedGap] = []
    for monday in sorted(mondays):
        start_of_week = datetime.combine(monday, time(0))
        for was, now_row in zip(rota, week_coverage(document, monday, left_out=left_out), strict=True):
            for start, end, rank in _worse_runs(was, now_row):
                gap = DatedGap(
                    now_row.language,
                    now_row.need,
                    max(start_of_week + timedelta(minutes=start), local_now),
                    min(start_of_week + timedelta(minutes=end), horizon),
                    NOBODY if rank == _RANK[NOBODY] else OTHER_LANGUAGE,
                )
                if gap.end <= gap.start:
                    continue
                previous = next(
                    (
                        index
                        for index, seen in enumerate(gaps)
                        if (seen.language, seen.need, seen.status, seen.end)
                        == (gap.language, gap.need, gap.status, gap.start)
                    ),
                    None,
                )
                if previous is not None:  # one gap over Sunday midnight into the next week
                    gaps[previous] = replace(gaps[previous], end=gap.end)
                else:
                    gaps.append(gap)
    return gaps


def _worse_runs(was: Coverage, now: Coverage) -> list[tuple[int, int, int]]:
    """(start, end, rank) of each stretch of a dated week (``now``, not wrapping) where callers
    get worse than in the weekly rota (``was``, which may wrap over Sunday midnight), in
    minutes of the week; ``rank`` is what they get then."""
    edges = {0, WEEK_MINUTES}
    rota: list[tuple[int, int, int]] = []
    for stretch in was.stretches:
        for start, end in ((stretch.start, stretch.end), (stretch.start - WEEK_MINUTES, stretch.end - WEEK_MINUTES)):
            start, end = max(start, 0), min(end, WEEK_MINUTES)
            if start < end:
                rota.append((start, end, _RANK[stretch.status]))
                edges |= {start, end}
    edges |= {minute for stretch in now.stretches for minute in (stretch.start, stretch.end)}
    runs: list[tuple[int, int, int]] = []
    ordered = sorted(edges)
    for start, end in pairwise(ordered):
        before = next(rank for first, last, rank in rota if first <= start < last)
        after = next(_RANK[s.status] for s in now.stretches if s.start <= start < s.end)
        worse = after if after > before else 0
        if runs and runs[-1][1] == start and runs[-1][2] == worse:
            runs[-1] = (runs[-1][0], end, worse)
        else:
            runs.append((start, end, worse))
    return [run for run in runs if run[2]]
