""" "Who would be rung?": a caller's path through the line at any moment, without a call.

Uses the real engine (:func:`routing.engine.decide_route` over :mod:`routing.schedule`) and
the real menu scripts (:mod:`routing.timing`), so the answer is what a caller would get at
that moment with every responder free. Returns plain values for ``flask routing who`` and
the web console.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from routing import timing
from routing.document import Language, Need, RoutingDocument
from routing.engine import decide_route

# What the caller hears once the need is known, by the engine's reason for going to backup
# (as ``ivr.views`` says it).
BACKUP_PROMPTS = {"system_down": "system_down", "need_routes_to_backup": "connecting"}


class UnknownChoice(ValueError):
    """A language or need the line does not have."""


@dataclass(frozen=True)
class Rung:
    """One responder in the order they would be rung."""

    round: int  # 1 first; with ``strategy: parallel`` several share a round
    id: str
    name: str
    kind: str  # "counselor" or "co_responder"
    languages: tuple[str, ...]


# Why a responder the routing would ring is not: the only reason ``left_out`` has today.
NOT_RUNG_WHY = "console account closed"


@dataclass(frozen=True)
class NotRung:
    """A responder this caller would have been offered, whom the line does not ring."""

    id: str
    name: str
    entries: tuple[str, ...]  # where the routing lists them: ``counselors[1] (Ben Carter)``
    why: str = NOT_RUNG_WHY

    def __str__(self) -> str:
        return f"{', '.join(self.entries) or self.name}: not rung: {self.why}"


@dataclass(frozen=True)
class Simulation:
    language: str
    need: str
    local_time: datetime  # the moment, in the line's time zone
    target: str  # "counselors", "co_responders" or "backup"
    reason: str  # the engine's: matched, no_language_match, nobody_on_call, system_down, …
    language_matched: bool
    strategy: str  # "sequential" or "parallel"
    rings: tuple[Rung, ...]  # empty when the caller goes to the backup line
    heard_before_ring: tuple[str, ...]  # a caller who follows the menus, sentence by sentence
    heard_after_choice: tuple[str, ...]  # said while the first phone rings, or before the backup line
    seconds_before_ring: float  # following the menus
    seconds_before_ring_barge_in: float  # pressing keys during the prompts
    backup_number: str | None  # dialled when nobody is rung
    need_was_asked: bool  # false with ``menu.ask_need: false``: everyone has the default need
    not_rung: tuple[NotRung, ...] = ()  # on call for this caller, left out (never silently)


def choose_language(document: RoutingDocument, chosen: str) -> Language:
    """A language by code (``es``) or menu digit (``2``)."""
    for language in document.languages:
        if chosen in (language.code, str(language.digit)):
            return language
    codes = ", ".join(f"{language.code} ({language.digit})" for language in document.languages)
    raise UnknownChoice(f"{chosen!r} is not one of the line's languages: {codes}")


def choose_need(document: RoutingDocument, chosen: str) -> Need:
    """A need by key (``suicide``) or menu digit (``2``)."""
    for need in document.needs:
        if chosen in (need.key, str(need.digit)):
            return need
    keys = ", ".join(f"{need.key} ({need.digit})" for need in document.needs)
    raise UnknownChoice(f"{chosen!r} is not one of the line's needs: {keys}")


def who_would_be_rung(
    document: RoutingDocument,
    language_choice: str,
    need_choice: str,
    moment: datetime,
    *,
    words_per_second: float = timing.DEFAULT_WORDS_PER_SECOND,
    left_out: Collection[str] = frozenset(),
) -> Simulation:
    """A caller choosing ``language_choice`` and ``need_choice`` (code/key or digit) at
    ``moment`` (aware): who is rung in what order, what they hear, and for how long before
    the first ring. Raises :class:`UnknownChoice` for a language or need the line lacks.
    ``left_out``: responders the line does not ring whatever the routing says (their console
    account was closed: the caller passes ``line_queue.responders.closed_responder_ids()``)."""
    language = choose_language(document, language_choice)
    need = choose_need(document, need_choice)
    asked = document.menu.ask_need
    if not asked:
        default = document.need(document.menu.default_need)
        need = default if default is not None else need
    decision = decide_route(document, language.code, need, moment, unavailable=left_out)
    # Whom the routing alone would offer this caller and the line does not ring: said, by
    # name and entry, so a silent absence is not read as a rota mistake.
    routed = decide_route(document, language.code, need, moment).responders if left_out else ()
    not_rung = tuple(NotRung(r.id, r.name, document.entries(r.id)) for r in routed if r.id in left_out)
    strategy = document.transfer.strategy_for(need)
    at_once = document.transfer.parallel_max if strategy == "parallel" else 1
    rings = tuple(
        Rung(index // at_once + 1, responder.id, responder.name, responder.kind, responder.languages)
        for index, responder in enumerate(decision.responders)
    )
    script = timing.before_ring(document, language)
    following, barge_in = timing.seconds(script, words_per_second)
    return Simulation(
        language=language.code,
        need=need.key,
        local_time=moment.astimezone(document.timezone),
        target=decision.target,
        reason=decision.reason,
        language_matched=decision.language_matched,
        strategy=strategy,
        rings=rings,
        heard_before_ring=tuple(spoken.text for spoken in script),
        heard_after_choice=tuple(_after_choice(document, language, decision.target, decision.reason, rings)),
        seconds_before_ring=following,
        seconds_before_ring_barge_in=barge_in,
        backup_number=document.backup_number if not rings else None,
        need_was_asked=asked,
        not_rung=not_rung,
    )


def _after_choice(
    document: RoutingDocument, language: Language, target: str, reason: str, rings: tuple[Rung, ...]
) -> list[str]:
    if rings:
        told = [] if reason == "matched" else [language.prompt("no_language_match")]
        return [*told, language.prompt("hold")]
    said = [language.prompt(BACKUP_PROMPTS.get(reason, "nobody_available"))]
    if reason == "nobody_on_call" and document.callbacks.enabled:
        # A caller whose number is known is offered a callback for a few seconds first.
        said.append(language.prompt("callback_offer", digit=document.callbacks.digit))
    return said
