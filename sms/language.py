"""Which of the line's languages a first text is written in (lingua, restricted to them)."""

from __future__ import annotations

from functools import lru_cache

from lingua import IsoCode639_1, LanguageDetector, LanguageDetectorBuilder

from routing.document import Language, RoutingDocument


@lru_cache(maxsize=8)
def _detector(codes: tuple[str, ...]) -> LanguageDetector | None:
    isos = [getattr(IsoCode639_1, code.split("-")[0].upper(), None) for code in codes]
    known = [iso for iso in isos if iso is not None]
    if len(known) < 2:
        return None
    return LanguageDetectorBuilder.from_iso_codes_639_1(*known).build()


def detect(document: RoutingDocument, text: str) -> tuple[Language | None, float]:
    """The most likely line language and its confidence (0 to 1); None when it cannot tell."""
    if len(document.languages) == 1:
        return document.languages[0], 1.0
    detector = _detector(tuple(language.code for language in document.languages))
    if detector is None or not any(ch.isalpha() for ch in text):
        return None, 0.0
    values = detector.compute_language_confidence_values(text)
    if not values:
        return None, 0.0
    best = values[0]
    code = best.language.iso_code_639_1.name.lower()
    language = next((lang for lang in document.languages if lang.code.split("-")[0] == code), None)
    return language, float(best.value)
