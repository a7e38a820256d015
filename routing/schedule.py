"""Who is on call at a moment: weekly shifts in the line's time zone, then one-off overrides."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from routing.document import Responder, RoutingDocument, Shift


def local_time(document: RoutingDocument, moment: datetime) -> datetime:
    """``moment`` (aware) as a naive wall-clock time in the line's time zone."""
    return moment.astimezone(document.timezone).replace(tzinfo=None)


def shift_covers(shift: Shift, wall_clock: datetime) -> bool:
    """True when ``wall_clock`` (line-local, naive) falls inside this weekly shift."""
    day, moment = wall_clock.weekday(), wall_clock.time()
    end = shift.end or time.max
    if shift.start < end:
        return day in shift.weekdays and shift.start <= moment < end
    # Past midnight: the evening part belongs to the listed day, the early hours to the next.
    previous_day = (wall_clock - timedelta(days=1)).weekday()
    return (day in shift.weekdays and moment >= shift.start) or (previous_day in shift.weekdays and moment < end)


def is_on_call(responder: Responder, wall_clock: datetime) -> bool:
    """Overrides win over the weekly rota; among overlapping overrides the latest-starting wins."""
    covering = [o for o in responder.overrides if o.start <= wall_clock < o.end]
    if covering:
        return max(covering, key=lambda override: override.start).on_call
    return any(shift_covers(shift, wall_clock) for shift in responder.shifts)


def on_call(document: RoutingDocument, moment: datetime) -> list[Responder]:
    """Every responder on call at ``moment``, in config order."""
    wall_clock = local_time(document, moment)
    return [r for r in document.responders if is_on_call(r, wall_clock)]


def after_quiet_hours(document: RoutingDocument, moment: datetime) -> datetime:
    """``moment`` (aware), or the end of the line's quiet hours if it falls inside them, so a
    check-in consented in the afternoon does not wake the person at 03:00."""
    quiet = document.followups.quiet_hours
    if quiet is None:
        return moment
    start, end = quiet
    wall_clock = local_time(document, moment)
    clock = wall_clock.time()
    if start < end:
        inside, end_day = start <= clock < end, wall_clock.date()
    else:  # past midnight: the evening part ends tomorrow, the early hours today
        inside = clock >= start or clock < end
        end_day = wall_clock.date() + timedelta(days=1) if clock >= start else wall_clock.date()
    if not inside:
        return moment
    # On the night the clocks go back the end's wall-clock time comes twice: the first that is
    # still ahead (compared in UTC, where ``fold`` counts). One the clocks skip going forward
    # does not exist: fold 0 reads it an hour later, never earlier.
    ends = [datetime.combine(end_day, end, tzinfo=document.timezone).replace(fold=fold) for fold in (0, 1)]
    real = [at for at in ends if at.astimezone(UTC).astimezone(document.timezone).time() == end]
    ahead = [at.astimezone(UTC) for at in real or ends[:1] if at.astimezone(UTC) > moment.astimezone(UTC)]
    return min(ahead).astimezone(moment.tzinfo) if ahead else moment
