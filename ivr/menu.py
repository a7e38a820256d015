"""Where a caller's keypress or spoken answer is handled.

Plain functions: a :class:`MenuInput` (what Twilio heard) and the routing document in, a
:class:`MenuStep` (what happens next) out. No Flask, no database: easy to test and to reuse
for the SMS menu.

- Language menu: :func:`choose_language`, then :func:`next_step`.
- Need menu: :func:`need_step` (built on :func:`understand_need` and :func:`heard_needs`).
- Confirming a co-responder need heard in speech: :func:`confirm_step`.

Every word list (spoken digits, negations, hedges, yes/no) comes from the language's
``words`` in the routing config, so a new language is a config change only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from routing.document import Language, Need, RoutingDocument
from routing.validation import normalise_words, normalised_configured

Choice = TypeVar("Choice", Language, Need)

# Speech recognition often drops commas, so "not" cannot deny words far after it.
NEGATION_REACH = 5
CONFIRM_KEY = "1"  # the confirmation prompt says "press 1 if that is right..."
CHOOSE_AGAIN_KEY = "2"  # "...or 2 to choose again"
CONFIRM_TRIES = 2  # the confirmation is said at most twice, then the need menu again
CLAUSE_PUNCTUATION = re.compile(r"[.,;:!?¿¡]+")


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

    ``outcome`` is ``"chosen"`` (``choice`` set), ``"confirm"`` (a co-responder need heard in
    speech: ask for the confirming key before anyone is rung), ``"retry"`` (ask again with
    ``attempt`` as the next attempt number; ``reason`` is ``"invalid"``, ``"no_input"`` or
    ``"unclear"``) or ``"default"`` (retries used up; ``choice`` is the configured default).
    """

    outcome: str
    choice: Choice | None
    attempt: int
    reason: str = ""


@dataclass(frozen=True)
class HeardNeeds:
    """The needs named in a sentence: ``said`` plainly, or only ``denied`` ("I'm not in danger")."""

    said: tuple[Need, ...]
    denied: tuple[Need, ...]
    denied_beside_said: tuple[Need, ...] = ()  # denied in a clause where a need is also said


@dataclass(frozen=True)
class NeedAnswer:
    """What a need-menu answer means: ``need`` (or None with ``reason``), and whether by key."""

    need: Need | None
    by_key: bool
    reason: str = ""  # "no_input", "invalid" (a key no need has) or "unclear" (speech)


@dataclass(frozen=True)
class ConfirmStep:
    """The outcome of a confirmation answer: ``"confirmed"`` (key 1 only), ``"again"`` (say
    the confirmation again as try ``tries``) or ``"choose_again"`` (back to the need menu)."""

    outcome: str
    tries: int
    reason: str = ""  # "no_input", "spoken_yes", "declined" or "other"


# --- spoken numbers --------------------------------------------------------------------------


def spoken_digit(speech: str, digit_words: Mapping[str, int], fillers: Iterable[str] = ()) -> int | None:
    """A single digit the caller said ("2", "two", "number dos"), if that is all they said."""
    words = _without(normalise_words(speech).split(), fillers)
    if len(words) != 1:
        return None
    word = words[0]
    if re.fullmatch(r"\d", word):
        return int(word)
    return digit_words.get(word)


def _without(words: list[str], phrases: Iterable[str]) -> list[str]:
    free = [True] * len(words)
    for phrase in sorted(phrases, key=lambda p: -len(p.split())):
        for start in _find(words, phrase.split(), free):
            free[start : start + len(phrase.split())] = [False] * len(phrase.split())
    return [word for word, keep in zip(words, free, strict=True) if keep]


def _languages_from(document: RoutingDocument, first: Language) -> list[Language]:
    """``first``, then the line's other languages: callers mix languages ("tengo panic attack")."""
    return [first, *(language for language in document.languages if language.code != first.code)]


def _digit_words(languages: Sequence[Language]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for language in languages:
        for word, digit in language.digit_words.items():
            merged.setdefault(word, digit)
    return merged


def _fillers(languages: Sequence[Language]) -> list[str]:
    return [word for language in languages for word in language.filler_words]


def _digit(given: MenuInput, languages: Sequence[Language]) -> int | None:
    if given.digits:
        # numDigits=1 should give one key; if a phone sends more, the first one counts.
        first = given.digits[0]
        # ``isdecimal``: "²".isdigit() is True, and int("²") raises (a texter's "²" did).
        return int(first) if first.isdecimal() else -1
    if given.speech:
        return spoken_digit(given.speech, _digit_words(languages), _fillers(languages))
    return None


# --- the language menu -----------------------------------------------------------------------


def choose_language(document: RoutingDocument, given: MenuInput) -> Language | None:
    """The language a caller picked by key ("2") or by voice ("español"), or None."""
    digit = _digit(given, _languages_from(document, document.default_language))
    if digit is not None:
        return next((lang for lang in document.languages if lang.digit == digit), None)
    if given.speech:
        return _spoken_language(document, given.speech)
    return None


# A language named this close after a negation, in the same clause, is denied ("no hablo inglés").
LANGUAGE_NEGATION_REACH = 3


def _spoken_language(document: RoutingDocument, speech: str) -> Language | None:
    """The one language the speech names plainly. A language named only to deny it ("No hablo
    inglés", "I don't speak English") is not chosen: on a two-language line, denying the one
    means the other. A negation counts only in its own clause ("No, English" is English; "no
    estoy bien, español" is Spanish), and look-alikes ("not okay") deny nothing. Anything else
    (two languages said, none) is None: asked again."""
    languages = list(document.languages)
    words, clause_of = _tokens(speech)
    free = [True] * len(words)
    found: list[tuple[int, Language]] = []
    for language in languages:
        for phrase in (language.name, *language.speech_words):
            parts = normalised_configured(phrase).split()
            for start in _find(words, parts, free, clause_of):
                free[start : start + len(parts)] = [False] * len(parts)
                found.append((start, language))
    _mask(words, free, clause_of, (w for lang in languages for w in lang.not_negation_words))
    negation_words = [word for lang in languages for word in lang.negation_words]
    negations = [(clause_of[start], start + size - 1) for start, size in _spans(words, free, clause_of, negation_words)]
    said: dict[str, Language] = {}
    denied: dict[str, Language] = {}
    for start, language in found:
        negated = any(
            where == clause_of[start] and 0 < start - end <= LANGUAGE_NEGATION_REACH for where, end in negations
        )
        (denied if negated else said)[language.code] = language
    if len(said) == 1:
        return next(iter(said.values()))
    if not said and len(denied) == 1 and len(languages) == 2:
        return next(language for language in languages if language.code not in denied)
    return None


def next_step(choice: Choice | None, given: MenuInput, attempt: int, retries: int, default: Choice) -> MenuStep[Choice]:
    """Decide what follows attempt number ``attempt`` (1-based) of a menu."""
    if choice is not None:
        return MenuStep("chosen", choice, attempt)
    reason = "no_input" if given.is_empty else "invalid"
    if attempt > retries:
        return MenuStep("default", default, attempt, reason)
    return MenuStep("retry", None, attempt + 1, reason)


# --- the need menu ---------------------------------------------------------------------------


def heard_needs(document: RoutingDocument, language: Language, speech: str) -> HeardNeeds:
    """Which needs a sentence names, and which it names only to deny or doubt them.

    A need word counts unless a negation ("not", "no") comes shortly before it in the same
    clause, or a hedge ("maybe", "tal vez") is anywhere in that clause. Clauses end at
    punctuation and at break words ("but", "just", "pero"), so in "I'm not in danger, I just
    need to talk to someone" only "talk to someone" counts. A need phrase that holds a
    negation itself ("no quiero vivir") and look-alikes ("not okay") deny nothing.
    """
    languages = _languages_from(document, language)
    words, clause_of = _tokens(speech)
    free = [True] * len(words)

    matches: list[tuple[int, Need]] = []  # (first word, need)
    for phrase, need in _need_phrases(document, languages):
        for start in _find(words, phrase, free, clause_of):
            free[start : start + len(phrase)] = [False] * len(phrase)
            matches.append((start, need))
    _mask(words, free, clause_of, (w for lang in languages for w in lang.not_negation_words))

    # Break words split the punctuation clauses further; a matched phrase keeps its clause.
    breaks = _mask(words, free, clause_of, (w for lang in languages for w in lang.clause_breaks))
    by_punctuation = list(clause_of)
    clause = 0
    for index in range(len(words)):
        if index in breaks or (index and by_punctuation[index] != by_punctuation[index - 1]):
            clause += 1
        clause_of[index] = clause

    # Hedges first: some hold a negation ("not sure", "no sé si") that should not count twice.
    hedge_words = [word for lang in languages for word in lang.hedge_words]
    negation_words = [word for lang in languages for word in lang.negation_words]
    hedged = {clause_of[start] for start, _ in _spans(words, free, clause_of, hedge_words)}
    negations = [(clause_of[start], start + size - 1) for start, size in _spans(words, free, clause_of, negation_words)]

    said: dict[str, Need] = {}
    denied: dict[str, Need] = {}
    said_at: list[tuple[int, int]] = []  # (clause, first word) of each need said plainly
    denied_at: list[tuple[int, int, Need]] = []
    for start, need in matches:
        doubted = clause_of[start] in hedged or any(
            where == clause_of[start] and 0 < start - end <= NEGATION_REACH for where, end in negations
        )
        (denied if doubted else said)[need.key] = need
        if doubted:
            denied_at.append((clause_of[start], start, need))
        else:
            said_at.append((clause_of[start], start))
    # A need denied before another said in the same clause: "nobody cares I want to kill myself
    # I'm drunk" (the negation may belong to a sentence the transcript ran together). Not one
    # denied after it: "depressed not suicidal" says what it is, then what it is not.
    beside = {
        need.key: need
        for clause, start, need in denied_at
        if need.key not in said and any(c == clause and s > start for c, s in said_at)
    }
    order = {need.key: index for index, need in enumerate(document.needs)}
    return HeardNeeds(
        said=tuple(sorted(said.values(), key=lambda n: order[n.key])),
        denied=tuple(sorted((n for k, n in denied.items() if k not in said), key=lambda n: order[n.key])),
        denied_beside_said=tuple(beside.values()),
    )


def understand_need(document: RoutingDocument, language: Language, given: MenuInput) -> NeedAnswer:
    """The need a caller picked by key, or by voice when the speech is clear.

    Speech is clear when it names one need (the catch-all default need gives way to any
    other), or several of which one has a strictly higher ``priority``. Speech naming needs
    only to deny them, naming several equally, or naming none is ``"unclear"``.
    """
    languages = _languages_from(document, language)
    digit = _digit(given, languages)
    if digit is not None:
        need = next((need for need in document.needs if need.digit == digit), None)
        if need is not None:
            return NeedAnswer(need, by_key=bool(given.digits))
        return NeedAnswer(None, bool(given.digits), "invalid" if given.digits else "unclear")
    if not given.speech:
        return NeedAnswer(None, by_key=False, reason="no_input")
    heard = heard_needs(document, language, given.speech)
    said = heard.said
    specific = [need for need in said if need.key != document.menu.default_need] or list(said)
    if specific:
        top = max(need.priority for need in specific)
        if any(need.priority > top for need in heard.denied_beside_said):
            return NeedAnswer(None, by_key=False, reason="unclear")  # never trade a denied higher need down
        leaders = [need for need in specific if need.priority == top]
        if len(leaders) == 1:
            return NeedAnswer(leaders[0], by_key=False)
    return NeedAnswer(None, by_key=False, reason="unclear")


def choose_need(document: RoutingDocument, language: Language, given: MenuInput) -> Need | None:
    """The need a caller picked by key or by voice ("I want to kill myself"), or None."""
    return understand_need(document, language, given).need


def needs_confirmation(answer: NeedAnswer) -> bool:
    """A co-responder unit (police-involved) is never rung on speech alone: a key confirms it."""
    return answer.need is not None and answer.need.target == "co_responders" and not answer.by_key


def need_step(document: RoutingDocument, language: Language, given: MenuInput, attempt: int) -> MenuStep[Need]:
    """What follows attempt ``attempt`` (1-based) of the need menu.

    ``"chosen"`` routes the call; ``"confirm"`` asks for the confirming key first (even on the
    last attempt); ``"retry"`` asks again (``"unclear"`` speech is asked to press a number);
    after ``menu.retries`` retries, ``"default"`` goes with ``menu.default_need``. A caller
    who was asked to confirm on the last attempt and came back unconfirmed (who cannot or will
    not press keys) goes with the default too: speech alone never rings the unit, and the
    counselor who answers can add it.
    """
    answer = understand_need(document, language, given)
    if answer.need is not None and needs_confirmation(answer) and attempt > document.menu.retries + 1:
        return MenuStep("default", default_need(document), attempt, "unconfirmed")
    if answer.need is not None:
        return MenuStep("confirm" if needs_confirmation(answer) else "chosen", answer.need, attempt)
    if attempt > document.menu.retries:
        return MenuStep("default", default_need(document), attempt, answer.reason)
    return MenuStep("retry", None, attempt + 1, answer.reason)


def default_need(document: RoutingDocument) -> Need:
    return document.need(document.menu.default_need) or document.needs[-1]


# --- confirming a co-responder need ----------------------------------------------------------


def confirm_step(document: RoutingDocument, language: Language, given: MenuInput, tries: int) -> ConfirmStep:
    """The caller's answer to "You said ... Press 1 if that is right, or 2 to choose again".

    Only the key 1 confirms. Any other key, "no", or other words: back to the need menu.
    Silence or a spoken "yes": the confirmation once more, then the need menu.
    """
    if given.digits:
        if given.digits[0] == CONFIRM_KEY:
            return ConfirmStep("confirmed", tries)
        return ConfirmStep("choose_again", tries, "declined" if given.digits[0] == CHOOSE_AGAIN_KEY else "other")
    reason = "no_input"
    if given.speech:
        languages = _languages_from(document, language)
        digit = spoken_digit(given.speech, _digit_words(languages), _fillers(languages))
        no_words = [w for lang in languages for w in lang.no_words]
        # An answer that starts with yes is a yes ("sí, no estoy a salvo"), unless its "no" is
        # the answer itself: alone in a clause or last ("sí, no", "yeah no", "claro que no").
        yes = _starts_with_any(given.speech, (w for lang in languages for w in lang.yes_words))
        if (not yes and (digit == int(CHOOSE_AGAIN_KEY) or _says_any(given.speech, no_words))) or (
            yes and _answers_no(given.speech, no_words)
        ):
            return ConfirmStep("choose_again", tries, "declined")
        if digit != int(CONFIRM_KEY) and not _says_any(given.speech, (w for lang in languages for w in lang.yes_words)):
            return ConfirmStep("choose_again", tries, "other")
        reason = "spoken_yes"
    if tries < CONFIRM_TRIES:
        return ConfirmStep("again", tries + 1, reason)
    return ConfirmStep("choose_again", tries, reason)


# --- matching words --------------------------------------------------------------------------


def _tokens(speech: str) -> tuple[list[str], list[int]]:
    """Normalised words and, for each, the punctuation-delimited clause it is in."""
    words: list[str] = []
    clause_of: list[int] = []
    for clause, piece in enumerate(CLAUSE_PUNCTUATION.split(speech)):
        piece_words = normalise_words(piece).split()
        words.extend(piece_words)
        clause_of.extend([clause] * len(piece_words))
    return words, clause_of


# The phrase lists of the routing documents in use, by document identity and languages: a
# document is built once per published version and kept (``routing.store``), and it is frozen
# but not hashable. Each entry holds its document, so an id is never reused while it is here.
_PHRASES_KEPT = 16
_phrases: dict[tuple[int, tuple[str, ...]], tuple[RoutingDocument, list[tuple[list[str], Need]]]] = {}


def _need_phrases(document: RoutingDocument, languages: Sequence[Language]) -> list[tuple[list[str], Need]]:
    """Every need's label and speech words, longest first so "kill myself" beats "kill"
    (made once per routing document and languages: ~3% of an inbound text otherwise)."""
    key = (id(document), tuple(language.code for language in languages))
    kept = _phrases.get(key)
    if kept is not None and kept[0] is document:
        return kept[1]
    phrases = _make_need_phrases(document, languages)
    if len(_phrases) >= _PHRASES_KEPT:
        _phrases.clear()
    _phrases[key] = (document, phrases)
    return phrases


def _make_need_phrases(document: RoutingDocument, languages: Sequence[Language]) -> list[tuple[list[str], Need]]:
    phrases: list[tuple[list[str], Need]] = []
    for language in languages:
        for need in document.needs:
            for text in (need.labels.get(language.code, ""), *need.speech_words.get(language.code, ())):
                words = normalised_configured(text).split()
                if words:
                    phrases.append((words, need))
    return sorted(phrases, key=lambda item: -len(item[0]))


def _find(
    words: Sequence[str], phrase: Sequence[str], free: Sequence[bool], clause_of: Sequence[int] = ()
) -> list[int]:
    """Starts of ``phrase`` in ``words`` over free words only, within one clause, not overlapping."""
    size = len(phrase)
    starts: list[int] = []
    if not size:
        return starts
    first, wanted, last = phrase[0], list(phrase), len(words) - size
    index = 0
    while index <= last:
        # Jump to the next place the phrase could start: a text is read against every need
        # phrase of the line, and most phrases' first word is nowhere in it.
        try:
            index = words.index(first, index, last + 1)
        except ValueError:
            break
        end = index + size
        if (
            list(words[index:end]) == wanted
            and all(free[index:end])
            and (not clause_of or clause_of[index] == clause_of[end - 1])
        ):
            starts.append(index)
            index = end
        else:
            index += 1
    return starts


def _spans(
    words: Sequence[str], free: list[bool], clause_of: Sequence[int], phrases: Iterable[str]
) -> list[tuple[int, int]]:
    """(start, length) of each phrase found among free words, longest phrases first; marks them used."""
    found: list[tuple[int, int]] = []
    for phrase in sorted(set(phrases), key=lambda p: -len(p.split())):
        parts = phrase.split()
        for start in _find(words, parts, free, clause_of):
            free[start : start + len(parts)] = [False] * len(parts)
            found.append((start, len(parts)))
    return found


def _mask(words: Sequence[str], free: list[bool], clause_of: Sequence[int], phrases: Iterable[str]) -> set[int]:
    """Mark the phrases' words used; returns the positions they covered."""
    return {start + offset for start, length in _spans(words, free, clause_of, phrases) for offset in range(length)}


def _says_any(speech: str, phrases: Iterable[str]) -> bool:
    heard = f" {normalise_words(speech)} "
    return any(f" {phrase} " in heard for phrase in phrases if phrase)


def _answers_no(speech: str, no_words: Sequence[str]) -> bool:
    """A no word that is a whole clause of ``speech``, or its last word."""
    words, clause_of = _tokens(speech)
    clauses = [" ".join(w for w, c in zip(words, clause_of, strict=True) if c == clause) for clause in set(clause_of)]
    said = {normalised_configured(word) for word in no_words}
    return bool(words) and (words[-1] in said or any(clause in said for clause in clauses))


def _starts_with_any(speech: str, phrases: Iterable[str]) -> bool:
    heard = f"{normalise_words(speech)} "
    return any(heard.startswith(f"{phrase} ") for phrase in phrases if phrase)
