"""Seconds of speech a caller hears before the first responder's phone rings, path by path.

Counted from the very scripts the voice menus are built from (``ivr.twiml``), so the two
cannot drift apart. For each language and need, two callers:

- **following**: answers each menu by key as soon as its last option ends. They hear every
  sentence until the need menu's last option ends, plus anything said after their choice
  before the ring starts.
- **barge-in**: presses each key as soon as a menu starts. A key cuts short every sentence
  inside a ``<Gather>``, so they hear only what is said outside one.

The search for a responder starts in the webhook that receives the need (``ivr.views``), so
nothing is said between a keyed choice and the first ring; whatever is said then (a
"nobody speaks your language" notice, the hold message) is heard while the phone rings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ivr import twiml
from ivr.menu import default_need
from routing.document import Language, RoutingDocument

DEFAULT_WORDS_PER_SECOND = 2.5  # Twilio's Polly voices speak about this fast


@dataclass(frozen=True)
class PathTiming:
    """One path through the menus: a language and a need, chosen by key."""

    language: str
    need: str
    following_seconds: float  # answers each menu when it ends
    barge_in_seconds: float  # presses keys during the prompts


def spoken_seconds(text: str, words_per_second: float = DEFAULT_WORDS_PER_SECOND) -> float:
    """How long a voice takes to say ``text`` ("9 1 1" is three words)."""
    return len(text.split()) / words_per_second


def before_ring(document: RoutingDocument, language: Language) -> list[twiml.Spoken]:
    """Every sentence said to a caller in ``language`` before the first ring, as ``ivr.views``
    says them: the welcome and language menu, then the need menu (unless ``ask_need`` is off,
    when the ring starts as soon as the language is known)."""
    welcome = twiml.welcome(document)
    script: list[twiml.Spoken] = []
    lead = welcome
    if len(document.languages) > 1:
        script += twiml.language_menu_script(document, [(document.default_language, text) for text in welcome])
        lead = twiml.after_language(document, language)
    if document.menu.ask_need:
        script += twiml.need_menu_script(document, language, lead)
    return script  # without a menu left, ``lead`` is said while the phone already rings


def seconds(script: Sequence[twiml.Spoken], words_per_second: float = DEFAULT_WORDS_PER_SECOND) -> tuple[float, float]:
    """(following, barge-in) seconds for a script heard before the ring."""
    following = sum((spoken_seconds(spoken.text, words_per_second) for spoken in script), 0.0)
    barge_in = sum((spoken_seconds(spoken.text, words_per_second) for spoken in script if not spoken.in_gather), 0.0)
    return round(following, 1), round(barge_in, 1)


def path_timings(document: RoutingDocument, words_per_second: float = DEFAULT_WORDS_PER_SECOND) -> list[PathTiming]:
    """Each path's seconds before the first ring, per language and need (a keyed need rings at once)."""
    needs = document.needs if document.menu.ask_need else (default_need(document),)
    result: list[PathTiming] = []
    for language in document.languages:
        following, barge_in = seconds(before_ring(document, language), words_per_second)
        result.extend(PathTiming(language.code, need.key, following, barge_in) for need in needs)
    return result


def slow_paths(document: RoutingDocument, words_per_second: float = DEFAULT_WORDS_PER_SECOND) -> list[PathTiming]:
    """The paths where a caller following the menus waits past ``menu.max_seconds_to_ring``."""
    limit = document.menu.max_seconds_to_ring
    return [path for path in path_timings(document, words_per_second) if path.following_seconds > limit]
