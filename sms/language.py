"""Which of the line's languages a first text is written in (lingua, restricted to them).

Memory: lingua's high-accuracy mode loads five n-gram models per language (about 80 MiB for
English and Spanish, in every web worker that handles a text), its low-accuracy mode only the
trigram models (a few MiB). ``bench/language_memory.py`` measures both on the spoken-needs
corpus; low accuracy decides fewer short texts (those are asked which language instead, as
texts under ``MIN_LETTERS`` already are) and decided none wrongly there. The detector is built
on the first text that needs it, for the line's languages only, and models load lazily.
"""

from __future__ import annotations

from functools import lru_cache

from lingua import IsoCode639_1, LanguageDetector, LanguageDetectorBuilder

from routing.document import Language, RoutingDocument
from routing.validation import normalise_words, normalised_configured

MIN_LETTERS = 4
# "low" (trigram models only) or "high" (all n-gram models); see the module docstring.
ACCURACY = "low"


@lru_cache(maxsize=8)
def _detector(codes: tuple[str, ...], accuracy: str = "high") -> LanguageDetector | None:
    isos = [getattr(IsoCode639_1, code.split("-")[0].upper(), None) for code in codes]
    known = [iso for iso in isos if iso is not None]
    if len(known) < 2:
        return None
    builder = LanguageDetectorBuilder.from_iso_codes_639_1(*known)
    if accuracy == "low":
        builder = builder.with_low_accuracy_mode()
    return builder.build()


def detect(document: RoutingDocument, text: str) -> tuple[Language | None, float]:
    """The most likely line language and its confidence (0 to 1); None when it cannot tell.

    Words the line configured for one language only ("quiero morir", "want to die") are the
    strongest evidence; otherwise lingua decides, restricted to the line's languages.
    """
    if len(document.languages) == 1:
        return document.languages[0], 1.0
    by_words = _languages_by_configured_words(document, text)
    if len(by_words) == 1:
        return by_words[0], 1.0
    # A word or two ("ok", "hi") says too little to tell languages apart: ask instead (and
    # never load a model for it).
    if sum(ch.isalpha() for ch in text) < MIN_LETTERS:
        return None, 0.0
    detector = _detector(tuple(language.code for language in document.languages), ACCURACY)
    if detector is None:
        return None, 0.0
    values = detector.compute_language_confidence_values(text)
    if not values:
        return None, 0.0
    best = values[0]
    code = best.language.iso_code_639_1.name.lower()
    language = next((lang for lang in document.languages if lang.code.split("-")[0] == code), None)
    return language, float(best.value)


def _languages_by_configured_words(document: RoutingDocument, text: str) -> list[Language]:
    heard = f" {normalise_words(text)} "
    found = []
    for language in document.languages:
        words = [
            *language.speech_words,
            *(w for need in document.needs for w in need.speech_words.get(language.code, ())),
        ]
        if any(f" {normalised_configured(word)} " in heard for word in words if len(normalised_configured(word)) > 3):
            found.append(language)
    return found
