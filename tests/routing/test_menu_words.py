"""Every word the voice menus listen for lives in the routing config, per language: spoken
numbers, negations, hedges, clause breaks and yes/no. Older configs without them stay valid,
and a new language is a config change only."""

from __future__ import annotations

from typing import Any

import yaml

from crisisline.settings import DEFAULT_ROUTING_FILE
from ivr.menu import MenuInput, confirm_step, need_step
from routing.document import RoutingDocument
from routing.validation import load_document, validate_text

NEW_PROMPTS = ("need_unclear", "need_confirm", "need_confirm_key")


def example() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    return loaded


def document_of(raw: dict[str, Any]) -> RoutingDocument:
    return load_document(yaml.safe_dump(raw, allow_unicode=True))


def understood(document: RoutingDocument, code: str, speech: str) -> str:
    step = need_step(document, document.language(code), MenuInput(speech=speech), 1)
    return step.choice.key if step.outcome in ("chosen", "confirm") and step.choice else step.outcome


def test_the_example_lists_are_parsed_normalised() -> None:
    document = load_document(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    english, spanish = document.languages

    assert english.digit_words["two"] == 2 and spanish.digit_words["dos"] == 2
    assert "don t" in english.negation_words  # "don't", as speech is normalised
    assert "no" in spanish.negation_words and "y" in spanish.clause_breaks
    assert "quizas" in spanish.hedge_words and "si" in spanish.yes_words


def test_a_config_written_before_the_word_lists_and_new_prompts_stays_valid() -> None:
    raw = example()
    del raw["menu"]["ask_need"], raw["menu"]["max_seconds_to_ring"]
    for language in raw["languages"]:
        del language["words"]
        for key in NEW_PROMPTS:
            del language["prompts"][key]
    raw["languages"][0]["prompts"]["need_option"] = "For {label}, press {digit}."

    document, problems = validate_text(yaml.safe_dump(raw, allow_unicode=True))

    assert document is not None, [str(p) for p in problems]
    assert [str(p) for p in problems] == []
    english = document.language("en")
    assert english.digit_words["dos"] == 2 and english.digit_words["three"] == 3  # the old built-in words
    assert document.menu.ask_need is True and document.menu.max_seconds_to_ring == 20
    # Stand-ins in the caller's language, built from prompts the config has.
    assert english.prompt("need_confirm", label="someone in danger") == "For someone in danger, press 1."
    assert english.prompt("need_unclear") == english.prompt("invalid_input")
    # And speech is still understood safely with the default lists.
    assert understood(document, "en", "I'm not in danger, I just need to talk to someone") == "something_else"
    assert understood(document, "es", "no estoy en peligro") == "retry"


def test_each_language_uses_its_own_lists() -> None:
    raw = example()
    raw["languages"][0]["words"]["negations"] = ["never"]  # "not" no longer negates in English
    document = document_of(raw)

    assert understood(document, "en", "I'm not in danger") == "danger_now"
    assert understood(document, "en", "I'm never in danger") == "retry"


FRENCH = {
    "code": "fr",
    "digit": 3,
    "name": "Français",
    "staff_name": "French",
    "twilio_language": "fr-CA",
    "voice": "Polly.Chantal",
    "speech_words": ["français", "french"],
    "words": {
        "digits": {"zéro": 0, "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "six": 6},
        "fillers": ["euh", "numéro", "option", "le"],
        "negations": ["pas", "ne", "jamais", "personne", "aucun"],
        "not_negations": ["ça ne va pas"],
        "hedges": ["peut-être", "je sais pas si"],
        "clause_breaks": ["mais", "et", "juste", "seulement"],
        "yes_words": ["oui", "d'accord"],
        "no_words": ["non"],
    },
}


def with_french(raw: dict[str, Any]) -> None:
    french = dict(FRENCH)
    french["prompts"] = dict(raw["languages"][0]["prompts"])
    french["prompts"]["need_confirm"] = "Vous avez dit {label}. Si c'est bien ça, appuyez sur 1. Sinon, sur 2."
    french["sms"] = dict(raw["languages"][0]["sms"])
    raw["languages"].append(french)
    french_words = {
        "danger_now": ("quelqu'un en danger", ["danger", "urgence", "arme"]),
        "suicide": ("pensées suicidaires", ["suicide", "me tuer", "mourir"]),
        "mental_health": ("santé mentale", ["anxiété", "panique", "déprimé"]),
        "substance_use": ("drogues ou alcool", ["drogue", "drogues", "alcool"]),
        "domestic_violence": ("violence à la maison", ["violence conjugale", "me frappe"]),
        "something_else": ("autre chose", ["parler à quelqu'un"]),
    }
    for need in raw["needs"]:
        label, words = french_words[need["key"]]
        need["labels"]["fr"] = label
        need["speech_words"]["fr"] = words


def test_adding_french_is_a_config_change_only() -> None:
    raw = example()
    with_french(raw)
    document = document_of(raw)
    french = document.language("fr")

    assert understood(document, "fr", "deux") == "suicide"
    assert understood(document, "fr", "numéro trois") == "mental_health"
    assert understood(document, "fr", "je veux mourir") == "suicide"
    assert understood(document, "fr", "je ne suis pas en danger") == "retry"
    assert understood(document, "fr", "je ne suis pas en danger, je veux juste parler à quelqu'un") == (
        "something_else"
    )
    assert understood(document, "fr", "ça ne va pas, j'ai des crises de panique") == "mental_health"
    assert understood(document, "fr", "peut-être la drogue") == "retry"
    # Spoken danger is confirmed by key; "oui" asks for the key, "non" goes back to the menu.
    assert need_step(document, french, MenuInput(speech="il y a une arme"), 1).outcome == "confirm"
    assert confirm_step(document, french, MenuInput(speech="oui"), 1).outcome == "again"
    assert confirm_step(document, french, MenuInput(speech="non"), 1).outcome == "choose_again"
    assert confirm_step(document, french, MenuInput(digits="1"), 1).outcome == "confirmed"
