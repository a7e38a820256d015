"""Where a caller's keypress or spoken answer is handled.

Plain functions: a :class:`MenuInput` (what Twilio heard) and the routing document in, a
:class:`MenuStep` (what happens next) out. No Flask, no database: easy to test and to reuse
for the SMS menu.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from routing.document import Language, Need, RoutingDocument
from routing.validation import normalise_words

Choice = TypeVar("Choice", Language, Need)

# Spoken numbers, for callers who say "two" instead of pressing it.
NUMBER_WORDS = {
    "zero": 0, "cero": 0, "one": 1, "uno": 1, "una": 1, "two": 2, "dos": 2, "three": 3,
    "tres": 3, "four": 4, "cuatro": 4, "five": 5, "cinco": 5, "six": 6, "seis": 6,
    "seven": 7, "siete": 7, "eight": 8, "ocho": 8, "nine": 9, "nueve": 9,
}  # fmt: skip


@dataclass(frozen=True)
class MenuInput:
    """What Twilio's ``<Gather>`` reported: keypad digits and/or a speech transcript."""

    digits: str = ""
    speech: str = ""

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> MenuInput:
        return cls(form.get("Digits", "").strip(), form.get("SpeechResult", "").strip())

    @property
    def is_empty(self) -> bool:
        return not self.digits and not self.speech

    @property
    def via(self) -> str:
        return "keypad" if self.digits else ("speech" if self.speech else "none")


@dataclass(frozen=True)
class MenuStep(Generic[Choice]):
    """The outcome of one menu answer.

    ``outcome`` is ``"chosen"`` (``choice`` set), ``"retry"`` (ask again with ``attempt``
    as the next attempt number; ``reason`` is ``"invalid"`` or ``"no_input"``) or
    ``"default"`` (retries used up; ``choice`` is the configured default).
    """

    outcome: str
    choice: Choice | None
    attempt: int
    reason: str = ""


def spoken_digit(speech: str) -> int | None:
    """A single digit the caller said ("2", "two", "dos"), if that is all they said."""
    words = normalise_words(speech).split()
    if len(words) != 1:
        return None
    word = words[0]
    if re.fullmatch(r"\d", word):
        return int(word)
    return NUMBER_WORDS.get(word)


def match_words(speech: str, options: Sequence[tuple[Choice, Sequence[str]]]) -> Choice | None:
    """The first option (in config order) with a configured word or phrase in ``speech``."""
    heard = f" {normalise_words(speech)} "
    for choice, words in options:
        if any(f" {normalise_words(word)} " in heard for word in words if normalise_words(word)):
            return choice
    return None


def choose_language(document: RoutingDocument, given: MenuInput) -> Language | None:
    """The language a caller picked by key ("2") or by voice ("español"), or None."""
    digit = _digit(given)
    if digit is not None:
        return next((lang for lang in document.languages if lang.digit == digit), None)
    if given.speech:
        return match_words(given.speech, [(lang, (lang.name, *lang.speech_words)) for lang in document.languages])
    return None


def choose_need(document: RoutingDocument, language: Language, given: MenuInput) -> Need | None:
    """The need a caller picked by key or by voice ("I want to kill myself"), or None."""
    digit = _digit(given)
    if digit is not None:
        return next((need for need in document.needs if need.digit == digit), None)
    if given.speech:
        options = [
            (need, (need.labels.get(language.code, ""), *need.speech_words.get(language.code, ())))
            for need in document.needs
        ]
        return match_words(given.speech, options)
    return None


def next_step(choice: Choice | None, given: MenuInput, attempt: int, retries: int, default: Choice) -> MenuStep[Choice]:
    """Decide what follows attempt number ``attempt`` (1-based) of a menu."""
    if choice is not None:
        return MenuStep("chosen", choice, attempt)
    reason = "no_input" if given.is_empty else "invalid"
    if attempt > retries:
        return MenuStep("default", default, attempt, reason)
    return MenuStep("retry", None, attempt + 1, reason)


def _digit(given: MenuInput) -> int | None:
    if given.digits:
        # numDigits=1 should give one key; if a phone sends more, the first one counts.
        first = given.digits[0]
        return int(first) if first.isdigit() else -1
    return spoken_digit(given.speech) if given.speech else None
