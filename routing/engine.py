"""Who to ring for a caller's language and need: the one routing engine every entry point uses.

Pure functions over a :class:`RoutingDocument`; the caller supplies the time and which
responders are unavailable, so the same rules serve voice, SMS, callbacks and the admin's
"who would ring now" simulator.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from routing.document import Need, Responder, RoutingDocument
from routing.schedule import on_call

MAX_SIMULTANEOUS_NUMBERS = 10  # Twilio's limit of <Number> nouns in one <Dial>


@dataclass(frozen=True)
class RouteDecision:
    """Where a contact goes. ``responders`` is empty exactly when ``target == "backup"``."""

    target: str  # "counselors", "co_responders" or "backup"
    responders: tuple[Responder, ...]
    language_matched: bool
    reason: str


def decide_route(
    document: RoutingDocument,
    language_code: str,
    need: Need,
    moment: datetime,
    *,
    unavailable: Collection[str] = (),
    last_offered: Mapping[str, datetime] | None = None,
    present: Sequence[Responder] | None = None,
    channel: str = "voice",
) -> RouteDecision:
    """Choose the responders for ``need`` in ``language_code`` at ``moment``.

    Order of preference: the need's target with a responder who has the need's skill and
    speaks the language; its fallback target (anyone of that kind on call) likewise; then,
    if the line allows, any of those responders with the caller told there is no language
    match; then the backup line.
    Within a pool, the least recently offered responder comes first.
    ``present``: ``on_call(document, moment)``, when the caller has it already (a queue pass
    asks for many contacts at one moment).
    ``channel``: ``text`` for a texter, whom co-responder units never take (they take calls):
    a need routed to units falls back to counselors for them, whatever its own fallback.
    """
    if document.mode == "system_down":
        return RouteDecision("backup", (), True, "system_down")
    if channel == "text" and need.target == "co_responders" and need.fallback != "counselors":
        # Else a texter choosing it (danger now) would be offered to nobody, ever.
        need = replace(need, fallback="counselors")
    targets = [need.target] + ([need.fallback] if need.fallback else [])
    available = [r for r in (on_call(document, moment) if present is None else present) if r.id not in unavailable]
    pools = [
        (target, _pool(available, target, need, is_fallback=index > 0))
        for index, target in enumerate(targets)
        if target != "backup"
    ]

    for target, pool in pools:
        speakers = [r for r in pool if language_code in r.languages]
        if speakers:
            return RouteDecision(target, _ordered(speakers, last_offered), True, "matched")
    if document.transfer.language_fallback == "any_language":
        for target, pool in pools:
            if pool:
                return RouteDecision(target, _ordered(pool, last_offered), False, "no_language_match")
    if need.target == "backup":
        return RouteDecision("backup", (), True, "need_routes_to_backup")
    return RouteDecision("backup", (), False, "nobody_on_call")


def _pool(present: list[Responder], target: str, need: Need, *, is_fallback: bool) -> list[Responder]:
    kind = "counselor" if target == "counselors" else "co_responder"
    # A fallback target takes whoever of that kind is on call: someone beats no one. Units
    # with no listed skills take every need routed to them.
    return [
        r
        for r in present
        if r.kind == kind and (is_fallback or need.skill in r.skills or (kind == "co_responder" and not r.skills))
    ]


def _ordered(pool: list[Responder], last_offered: Mapping[str, datetime] | None) -> tuple[Responder, ...]:
    if not last_offered:
        return tuple(pool)
    never = datetime.min.replace(tzinfo=None)

    def key(responder: Responder) -> tuple[bool, datetime]:
        offered = last_offered.get(responder.id)
        return (offered is not None, offered.replace(tzinfo=None) if offered else never)

    return tuple(sorted(pool, key=key))
