"""The typed shape of a valid routing document. Built only by ``routing.validation``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

TARGETS = ("counselors", "co_responders", "backup")
RESPONDER_KINDS = ("counselor", "co_responder")

# Every prompt each language must define, with the {placeholders} it must use.
PROMPT_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "greeting": frozenset(),
    "confidentiality": frozenset(),
    "language_option": frozenset({"digit"}),
    "need_menu_intro": frozenset(),
    "need_option": frozenset({"label", "digit"}),
    "invalid_input": frozenset(),
    "no_input": frozenset(),
    "connecting": frozenset(),
    "no_language_match": frozenset(),
    "nobody_available": frozenset(),
    "backup_retry": frozenset(),
    "backup_unreachable": frozenset(),
    "system_down": frozenset(),
    "blocked": frozenset(),
}


@dataclass(frozen=True)
class Language:
    code: str
    digit: int
    name: str
    twilio_language: str
    voice: str
    speech_words: tuple[str, ...]
    prompts: dict[str, str]

    def prompt(self, key: str, **values: object) -> str:
        """The prompt ``key`` in this language, with its placeholders filled in."""
        return self.prompts[key].format(**values)


@dataclass(frozen=True)
class Need:
    key: str
    digit: int
    target: str
    fallback: str | None
    skill: str
    labels: dict[str, str]
    speech_words: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Shift:
    """A weekly on-call window in the line's time zone; ``end <= start`` runs past midnight."""

    weekdays: frozenset[int]  # 0 = Monday
    start: time
    end: time | None  # None means midnight at the end of the day ("24:00")


@dataclass(frozen=True)
class Override:
    """A one-off change to a weekly rota: on call (cover) or off call (leave), local times."""

    start: datetime
    end: datetime
    on_call: bool


@dataclass(frozen=True)
class Responder:
    """A counselor or co-responder unit. ``phone`` is E.164."""

    id: str
    kind: str
    name: str
    phone: str
    languages: tuple[str, ...]
    skills: frozenset[str]
    shifts: tuple[Shift, ...]
    overrides: tuple[Override, ...]


@dataclass(frozen=True)
class MenuSettings:
    timeout_seconds: int
    retries: int
    default_language: str
    default_need: str


@dataclass(frozen=True)
class TransferSettings:
    ring_timeout_seconds: int
    backup_attempts: int
    language_fallback: str  # "any_language" or "backup"


@dataclass(frozen=True)
class RoutingDocument:
    line_name: str
    timezone: ZoneInfo
    region: str
    mode: str
    backup_number: str
    menu: MenuSettings
    transfer: TransferSettings
    languages: tuple[Language, ...]
    needs: tuple[Need, ...]
    responders: tuple[Responder, ...]

    @property
    def default_language(self) -> Language:
        return self.language(self.menu.default_language)

    def language(self, code: str | None) -> Language:
        """The language ``code``, or the default one for an unknown or missing code."""
        by_code = {language.code: language for language in self.languages}
        return by_code.get(code or "") or by_code.get(self.menu.default_language) or self.languages[0]

    def need(self, key: str | None) -> Need | None:
        return next((need for need in self.needs if need.key == key), None)
