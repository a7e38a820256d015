"""The menus hear what distressed callers mean (found by a review of the menus; each test
failed before): "No hablo inglés" is not a choice of English; a denial in one clause ("nobody
cares") never hands a suicidal caller to a lower-priority need; a spoken "yes" with a "no" in
it ("sí, no estoy a salvo") is a yes; the language menu's re-prompt is said in every language."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Call
from crisisline.settings import DEFAULT_ROUTING_FILE
from ivr.menu import MenuInput, choose_language, confirm_step, need_step
from routing.validation import load_document
from twilio_fake.phone import Phone, Silence, Words

CHICAGO = ZoneInfo("America/Chicago")


@pytest.fixture(autouse=True)
def _wednesday_morning() -> Any:
    with time_machine.travel(datetime(2026, 12, 2, 10, 0, tzinfo=CHICAGO), tick=True):
        yield


def language_of(app: Flask, call_sid: str) -> str | None:
    with app.app_context():
        return db.session.scalars(select(Call.language).where(Call.call_sid == call_sid)).one()


@pytest.mark.parametrize(
    "speech",
    [
        "No hablo inglés",  # "I don't speak English"
        "no hablo inglés, español por favor",  # names Spanish too
        "I don't speak English",
    ],
)
def test_a_caller_who_says_they_do_not_speak_english_is_not_given_english(
    app: Flask, phone: Phone, speech: str
) -> None:
    call = phone.call([Words(speech)], hang_up_after_requests=2)

    gather = call.last_twiml.find("Gather")
    assert gather is not None
    # Either Spanish, or asked again: never the English need menu for someone who just said
    # they do not speak English.
    assert gather.get("language") != "en-US" or "menu/language" in (gather.get("action") or "")
    assert language_of(app, call.identity.call_sid) != "en"


def test_the_language_menus_re_prompt_is_said_in_spanish_too(phone: Phone) -> None:
    call = phone.call([Silence()], hang_up_after_requests=2)

    says = [(say.get("language"), say.text) for say in call.last_twiml.iter("Say")]
    assert ("en-US", "I didn't hear anything. Take your time.") in says
    assert ("es-US", "No escuché nada. Tómese su tiempo.") in says


# --- a negation meant for one need hands the call to a lower-priority one ---------------------


@pytest.fixture(scope="module")
def document() -> Any:
    return load_document(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("language", "speech"),
    [
        ("en", "nobody cares I want to kill myself I'm drunk"),
        ("en", "nothing helps I want to die I'm so depressed"),
        ("es", "nadie me quiere me quiero morir estoy borracho"),
    ],
)
def test_a_negation_never_turns_a_suicidal_caller_into_a_lower_priority_need(
    document: Any, language: str, speech: str
) -> None:
    step = need_step(document, document.language(language), MenuInput("", speech), 1)

    # Suicide, or ask again: never a need the caller did not put first, at priority 0.
    assert step.outcome == "retry" or (step.choice is not None and step.choice.key == "suicide"), (
        step.outcome,
        step.choice and step.choice.key,
    )


# --- a spoken "yes" to the danger confirmation heard as "no" ----------------------------------


@pytest.mark.parametrize(
    ("language", "speech"),
    [("es", "sí, por favor no cuelgue"), ("es", "sí, no estoy a salvo"), ("en", "yes, no one is safe here")],
)
def test_a_spoken_yes_with_a_no_in_it_is_asked_for_the_key_not_sent_back_to_the_menu(
    document: Any, language: str, speech: str
) -> None:
    step = confirm_step(document, document.language(language), MenuInput("", speech), 1)

    assert (step.outcome, step.reason) == ("again", "spoken_yes")


# --- found by the review of the fixes above: what they must not break -------------------------


@pytest.mark.parametrize(
    ("speech", "wanted"),
    [
        ("No, English", "en"),  # the "no" answers something else; English is the choice
        ("No. English please", "en"),
        ("I'm not okay, English", "en"),  # a look-alike, and across a comma
        ("no estoy bien, español", "es"),
        ("no sé, español", "es"),
        ("never mind, English", "en"),
        ("no hablo inglés, español por favor", "es"),
        ("I don't speak Spanish", "en"),
    ],
)
def test_a_negation_counts_only_in_its_own_clause_for_the_language(document: Any, speech: str, wanted: str) -> None:
    chosen = choose_language(document, MenuInput("", speech))

    assert chosen is not None and chosen.code == wanted, (speech, chosen and chosen.code)


@pytest.mark.parametrize(("language", "speech"), [("en", "yeah no"), ("es", "claro que no"), ("es", "sí, no")])
def test_a_no_that_is_the_answer_after_a_yes_word_still_goes_back_to_the_menu(
    document: Any, language: str, speech: str
) -> None:
    step = confirm_step(document, document.language(language), MenuInput("", speech), 1)

    assert (step.outcome, step.reason) == ("choose_again", "declined"), (speech, step)


@pytest.mark.parametrize(
    ("speech", "wanted"),
    [
        ("depressed not suicidal", "mental_health"),
        ("I have depression not suicidal thoughts", "mental_health"),
        ("drugs not suicide", "substance_use"),
        ("I'm anxious I'm not going to hurt myself", "mental_health"),
    ],
)
def test_a_need_said_plainly_then_a_plain_denial_is_still_routed(document: Any, speech: str, wanted: str) -> None:
    step = need_step(document, document.language("en"), MenuInput("", speech), 1)

    assert (step.outcome, step.choice and step.choice.key) == ("chosen", wanted)
