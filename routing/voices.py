"""Which Twilio ``<Say>`` voices exist for which language, so a misspelt or mismatched voice
is refused before a caller hears a failed ``<Say>`` (Twilio: "an invalid combination of voice
and language may result in error and ``<Say>`` instruction failure").

A small vetted table, not Twilio's whole catalogue: the Amazon Polly voices of Amazon's voice
list (https://docs.aws.amazon.com/polly/latest/dg/available-voices.html), which Twilio offers
as ``Polly.<Name>`` (``-Neural`` / ``-Generative`` for the newer engines), and Google voices,
whose names carry their own locale (``Google.es-US-Neural2-A``). A language missing here
can be added in one line; a voice Amazon adds later likewise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Locale (Twilio's ``language`` attribute) → Amazon Polly voice names.
POLLY_VOICES: dict[str, frozenset[str]] = {
    locale: frozenset(names.split())
    for locale, names in {
        "en-US": "Danielle Gregory Ivy Joanna Joey Justin Kendra Kevin Kimberly Matthew Ruth Salli Stephen",
        "en-GB": "Amy Arthur Brian Emma",
        "en-AU": "Nicole Olivia Russell",
        "en-IN": "Aditi Kajal Raveena",
        "en-IE": "Niamh",
        "en-NZ": "Aria",
        "en-ZA": "Ayanda",
        "en-GB-WLS": "Geraint",
        "es-US": "Lupe Miguel Pedro Penelope",
        "es-MX": "Andres Mia",
        "es-ES": "Conchita Enrique Lucia Sergio",
        "fr-FR": "Celine Lea Mathieu Remi",
        "fr-CA": "Chantal Gabrielle Liam",
        "pt-BR": "Camila Ricardo Thiago Vitoria",
        "pt-PT": "Cristiano Ines",
        "de-DE": "Daniel Hans Marlene Vicki",
        "it-IT": "Adriano Bianca Carla Giorgio",
        "cmn-CN": "Zhiyu",
        "zh-CN": "Zhiyu",
        "ja-JP": "Kazuha Mizuki Takumi Tomoko",
        "ko-KR": "Seoyeon",
        "arb": "Zeina",
        "ar-AE": "Hala Zayd",
        "hi-IN": "Aditi Kajal",
        "ru-RU": "Maxim Tatyana",
        "pl-PL": "Ewa Jacek Jan Maja Ola",
        "nl-NL": "Laura Lotte Ruben",
        "tr-TR": "Burcu Filiz",
        "cy-GB": "Gwyneth",
    }.items()
}
POLLY_ENGINES = ("", "-Neural", "-Generative")
# Twilio's basic voices speak only a few languages (by primary subtag).
BASIC_VOICES = frozenset({"man", "woman"})
BASIC_LANGUAGES = frozenset({"en", "es", "fr", "de"})
GOOGLE_VOICE = re.compile(
    r"^Google\.(?P<locale>[a-z]{2,3}-[A-Z]{2})-(?:Standard|Wavenet|Neural2|News|Studio|Polyglot|Journey|Chirp-HD|Chirp3-HD)-[A-Za-z0-9]+\Z"
)
POLLY_VOICE = re.compile(r"^Polly\.(?P<name>[A-Z][a-z]+)(?P<engine>-Neural|-Generative)?\Z")


@dataclass(frozen=True)
class VoiceProblem:
    severity: str  # "error" or "warning"
    message: str


def _primary(locale: str) -> str:
    return locale.split("-")[0].lower()


def _polly_locales(name: str) -> list[str]:
    return sorted(locale for locale, names in POLLY_VOICES.items() if name in names)


def check_voice(voice: str, twilio_language: str) -> VoiceProblem | None:
    """None when ``voice`` speaks ``twilio_language`` (an empty voice is the account default)."""
    if not voice or not twilio_language:
        return None
    if voice in BASIC_VOICES:
        if _primary(twilio_language) in BASIC_LANGUAGES:
            return None
        return VoiceProblem("error", f"Twilio's basic {voice!r} voice does not speak {twilio_language}")
    if voice == "alice":
        return VoiceProblem("warning", "'alice' is Twilio's retired voice; choose a Polly or Google voice")
    google = GOOGLE_VOICE.match(voice)
    if google:
        if google["locale"].lower() == twilio_language.lower():
            return None
        return VoiceProblem("error", f"{voice} speaks {google['locale']}, not {twilio_language}")
    polly = POLLY_VOICE.match(voice)
    known_here = sorted(POLLY_VOICES.get(twilio_language, frozenset()))
    hint = f" (for {twilio_language}: {', '.join(f'Polly.{name}' for name in known_here)})" if known_here else ""
    if not polly:
        return VoiceProblem(
            "error", f"{voice!r} is not a Twilio voice name like 'Polly.Joanna' or 'Google.en-US-Neural2-F'{hint}"
        )
    locales = _polly_locales(polly["name"])
    if not locales:
        return VoiceProblem("error", f"{voice!r} is not an Amazon Polly voice{hint}")
    if twilio_language in locales:
        return None
    if any(_primary(locale) == _primary(twilio_language) for locale in locales):
        return VoiceProblem(
            "warning",
            f"{voice} is a {'/'.join(locales)} voice; with language {twilio_language} Twilio may refuse it{hint}",
        )
    return VoiceProblem("error", f"{voice} speaks {'/'.join(locales)}, not {twilio_language}{hint}")
