"""A corpus of realistic spoken answers to the need menu, run through the real decision
(:func:`ivr.menu.need_step`) on the shipped example routing.

Each expectation is a person's judgment of what the line should do with the answer, written
without looking at the matcher: the need a counselor would agree with, or ``ASK`` (ask again)
when the caller only denies or doubts a need ("I'm not in danger", "maybe anxiety?"), names
two needs that are equally pressing, or says nothing a menu can act on. The line's policy
(issue 9) is that a negated or hedged need word never chooses a need.

Transcripts are as Twilio's recogniser gives them: sometimes with punctuation, sometimes not,
with recognition errors ("sue aside"), slang, and English and Spanish mixed.

The test prints accuracy per language and fails below the floor, and fails on any route to a
co-responder unit (police-involved) on speech alone, whatever the accuracy.
"""

from __future__ import annotations

from collections import Counter

import pytest

from crisisline.settings import DEFAULT_ROUTING_FILE
from ivr.menu import MenuInput, MenuStep, need_step
from routing.document import Need, RoutingDocument
from routing.validation import load_document

ASK = "ask again"
ACCURACY_FLOOR = 0.90

DANGER, SUICIDE, MENTAL, SUBSTANCE, VIOLENCE, OTHER = (
    "danger_now",
    "suicide",
    "mental_health",
    "substance_use",
    "domestic_violence",
    "something_else",
)

ENGLISH: list[tuple[str, str]] = [
    # Suicide, said plainly and less plainly.
    ("I want to kill myself", SUICIDE),
    ("I'm thinking about suicide.", SUICIDE),
    ("I've been having suicidal thoughts", SUICIDE),
    ("I don't want to be alive anymore", SUICIDE),
    ("I want to end my life", SUICIDE),
    ("I just want to die", SUICIDE),
    ("suicide", SUICIDE),
    ("thoughts of suicide", SUICIDE),
    ("I'm going to end it all tonight", SUICIDE),
    ("my friend is talking about killing herself", SUICIDE),
    ("I can't stop thinking about killing myself", SUICIDE),
    ("I'm gonna off myself", SUICIDE),
    ("I wanna die", SUICIDE),
    ("I can't go on anymore", SUICIDE),
    ("everyone would be better off if I was dead", SUICIDE),
    ("I've got a rope and I'm ready", SUICIDE),
    ("I'm not okay I want to die", SUICIDE),
    ("I'm not okay, I want to kill myself", SUICIDE),
    ("I overdosed on purpose to kill myself", SUICIDE),
    # Speech-recognition errors for suicide.
    ("sue aside", SUICIDE),
    ("I keep thinking about sue aside", SUICIDE),
    ("I've been feeling suicide all", SUICIDE),
    ("sewer side thoughts", SUICIDE),
    ("I want to kill my self", SUICIDE),
    # Negated or hedged suicide: ask again.
    ("I'm not suicidal", ASK),
    ("I don't want to kill myself, but", ASK),
    ("I don't want to kill myself but I keep thinking about it", ASK),
    ("I'm not going to hurt myself", ASK),
    ("I'm not thinking about suicide or anything", ASK),
    ("I never said I wanted to die", ASK),
    ("I'm kind of suicidal I guess", ASK),
    # Danger now.
    ("someone is in danger", DANGER),
    ("there's a man with a gun outside my house", DANGER),
    ("my neighbor has a knife", DANGER),
    ("this is an emergency", DANGER),
    ("emergency", DANGER),
    ("I'm in danger right now", DANGER),
    ("he's going to hurt someone", DANGER),
    ("there's a weapon in the house", DANGER),
    ("my dad is drunk and he has a gun", DANGER),
    ("I'm not safe here", DANGER),
    ("my son is threatening us with a bat", DANGER),
    ("someone is going to get hurt", DANGER),
    ("it's dangerous here", DANGER),
    # Negated danger: ask again, or the other need they name.
    ("I'm not in danger, I just need to talk to someone", OTHER),
    ("I'm not in danger I just need to talk to someone", OTHER),
    ("I'm not in danger", ASK),
    ("it's not an emergency", ASK),
    ("no one is in danger", ASK),
    ("I don't have a gun or anything", ASK),
    ("I don't think it's an emergency", ASK),
    ("nobody's in danger, I'm just really depressed", MENTAL),
    ("it's not an emergency but I'm having a panic attack", MENTAL),
    ("no, I'm not in any danger", ASK),
    ("I'm not sure if it's an emergency", ASK),
    # Mental health.
    ("I'm having a panic attack", MENTAL),
    ("I'm really depressed", MENTAL),
    ("I've got really bad anxiety", MENTAL),
    ("I'm hearing voices", MENTAL),
    ("mental health", MENTAL),
    ("I'm having a mental health crisis", MENTAL),
    ("I can't stop crying", MENTAL),
    ("I think I'm having a breakdown", MENTAL),
    ("I'm freaking out", MENTAL),
    ("my anxiety is through the roof", MENTAL),
    ("I'm bipolar and I'm off my meds", MENTAL),
    ("I'm so stressed out", MENTAL),
    ("I'm paranoid that people are following me", MENTAL),
    ("my brother is schizophrenic and he's not making sense", MENTAL),
    ("I feel like I'm losing my mind", MENTAL),
    ("panic attack", MENTAL),
    ("I'm not suicidal, I'm just really anxious", MENTAL),
    ("I don't know what to do I'm having a panic attack", MENTAL),
    ("I'm not drinking, I'm just really depressed", MENTAL),
    ("I'm not sure, maybe anxiety?", ASK),
    ("I'm having anxiety and I want to die", SUICIDE),
    ("I'm so sad all the time", MENTAL),
    # Drugs and alcohol.
    ("my friend overdosed", SUBSTANCE),
    ("I've been drinking all day", SUBSTANCE),
    ("I relapsed", SUBSTANCE),
    ("I need help with my drinking", SUBSTANCE),
    ("drugs", SUBSTANCE),
    ("I'm addicted to meth", SUBSTANCE),
    ("heroin", SUBSTANCE),
    ("I'm detoxing and it's really bad", SUBSTANCE),
    ("I'm drunk", SUBSTANCE),
    ("fentanyl", SUBSTANCE),
    ("I can't stop drinking", SUBSTANCE),
    ("my son is on drugs and I don't know what to do", SUBSTANCE),
    ("I'm having a really bad trip", SUBSTANCE),
    ("alcohol", SUBSTANCE),
    ("I think my roommate took an over dose", SUBSTANCE),
    ("substance abuse", SUBSTANCE),
    ("not drugs", ASK),
    ("it's not about drugs or alcohol", ASK),
    ("I don't drink or use drugs", ASK),
    ("maybe drugs I don't know", ASK),
    # Violence at home.
    ("my husband hits me", VIOLENCE),
    ("my boyfriend is abusive", VIOLENCE),
    ("domestic violence", VIOLENCE),
    ("domestic violins", VIOLENCE),
    ("I'm being abused at home", VIOLENCE),
    ("my partner hit me last night", VIOLENCE),
    ("my wife beats me", VIOLENCE),
    ("violence at home", VIOLENCE),
    ("he hit me and I'm scared to go home", VIOLENCE),
    ("my baby daddy keeps hitting me", VIOLENCE),
    ("my husband hits me when he's drunk", VIOLENCE),
    ("my stepdad hurts me", VIOLENCE),
    ("I'm not being abused or anything, I just feel lonely", OTHER),
    # Something else, and nothing a menu can act on.
    ("I just need to talk to someone", OTHER),
    ("I need someone to talk to", OTHER),
    ("other", OTHER),
    ("something else", OTHER),
    ("I just want to talk", OTHER),
    ("I'm lonely", OTHER),
    ("can I talk to a real person", OTHER),
    ("I just need to vent", OTHER),
    ("I don't know", ASK),
    ("um", ASK),
    ("hello?", ASK),
    ("I'm calling for my friend", ASK),
    ("yes", ASK),
    ("I'm not sure", ASK),
    ("it's complicated", ASK),
    ("can you hear me", ASK),
    # Spoken numbers instead of keys.
    ("two", SUICIDE),
    ("number three", MENTAL),
    ("1", DANGER),
    ("four", SUBSTANCE),
    ("option five", VIOLENCE),
    ("six", OTHER),
    ("for", SUBSTANCE),
    ("um, two", SUICIDE),
    ("nine", ASK),
    # Two needs at once.
    ("I'm depressed and I've been drinking a lot", ASK),
    ("there's a gun in the house and I want to kill myself", DANGER),
    ("I want to talk to someone about my drinking", SUBSTANCE),
]

SPANISH: list[tuple[str, str]] = [
    # Suicidio.
    ("quiero matarme", SUICIDE),
    ("estoy pensando en suicidarme", SUICIDE),
    ("ya no quiero vivir", SUICIDE),
    ("quiero quitarme la vida", SUICIDE),
    ("pensamientos de suicidio", SUICIDE),
    ("me quiero morir", SUICIDE),
    ("me quiero suicidar", SUICIDE),
    ("tengo ganas de morirme", SUICIDE),
    ("suicidio", SUICIDE),
    ("mi amiga se quiere matar", SUICIDE),
    ("estoy pensando en hacerme daño", SUICIDE),
    ("quiero acabar con mi vida", SUICIDE),
    ("no estoy bien, quiero morir", SUICIDE),
    ("no estoy en peligro pero tengo ganas de matarme", SUICIDE),
    ("no quiero matarme", ASK),
    ("no me quiero hacer daño", ASK),
    ("no estoy pensando en suicidarme", ASK),
    ("nunca he pensado en el suicidio", ASK),
    # Peligro ahora.
    ("hay un hombre con una pistola", DANGER),
    ("es una emergencia", DANGER),
    ("estoy en peligro", DANGER),
    ("mi vecino tiene un cuchillo", DANGER),
    ("emergencia", DANGER),
    ("alguien está en peligro", DANGER),
    ("hay un arma en la casa", DANGER),
    ("estoy en peligro, mi esposo tiene un arma", DANGER),
    ("no estoy a salvo", DANGER),
    ("no estoy en peligro", ASK),
    ("no estoy en peligro, solo quiero hablar con alguien", OTHER),
    ("no estoy en peligro solo quiero hablar con alguien", OTHER),
    ("no es una emergencia", ASK),
    ("no es una emergencia pero tengo mucha ansiedad", MENTAL),
    ("nadie está en peligro", ASK),
    ("no hay ningún arma", ASK),
    ("no sé si es una emergencia", ASK),
    # Salud mental.
    ("tengo un ataque de pánico", MENTAL),
    ("estoy muy deprimido", MENTAL),
    ("estoy muy deprimida", MENTAL),
    ("tengo ansiedad", MENTAL),
    ("escucho voces", MENTAL),
    ("salud mental", MENTAL),
    ("no puedo dejar de llorar", MENTAL),
    ("creo que tengo depresión", MENTAL),
    ("me estoy volviendo loca", MENTAL),
    ("ando bien deprimido", MENTAL),
    ("tengo muchos nervios y no puedo respirar", MENTAL),
    ("no estoy pensando en suicidarme, solo estoy muy deprimida", MENTAL),
    ("no sé, tal vez ansiedad", ASK),
    ("a lo mejor es depresión", ASK),
    ("mi hijo tiene esquizofrenia y no está bien", MENTAL),
    # Drogas o alcohol.
    ("mi hijo tomó una sobredosis", SUBSTANCE),
    ("he estado bebiendo todo el día", SUBSTANCE),
    ("drogas", SUBSTANCE),
    ("tengo problemas con el alcohol", SUBSTANCE),
    ("recaí", SUBSTANCE),
    ("soy adicto a la cocaína", SUBSTANCE),
    ("estoy borracho", SUBSTANCE),
    ("mi esposo está usando drogas otra vez", SUBSTANCE),
    ("creo que es una sobre dosis", SUBSTANCE),
    ("no son drogas", ASK),
    ("no tiene nada que ver con drogas", ASK),
    ("quizás son las drogas", ASK),
    ("ando bien pedo", SUBSTANCE),
    # Violencia en casa.
    ("mi esposo me pega", VIOLENCE),
    ("mi pareja me golpea", VIOLENCE),
    ("violencia doméstica", VIOLENCE),
    ("sufro maltrato en mi casa", VIOLENCE),
    ("mi novio es abusivo", VIOLENCE),
    ("violencia en casa", VIOLENCE),
    ("mi papá le pega a mi mamá", VIOLENCE),
    ("mi esposo me golpeó anoche", VIOLENCE),
    # Otra cosa, y nada que sirva.
    ("solo quiero hablar con alguien", OTHER),
    ("necesito hablar con alguien", OTHER),
    ("otra cosa", OTHER),
    ("me siento muy sola", OTHER),
    ("necesito desahogarme", OTHER),
    ("no sé", ASK),
    ("eh", ASK),
    ("bueno", ASK),
    ("hola", ASK),
    ("llamo por mi hermano", ASK),
    ("no, no es nada de eso", ASK),
    # Números dichos.
    ("dos", SUICIDE),
    ("número tres", MENTAL),
    ("cuatro", SUBSTANCE),
    ("la opción cinco", VIOLENCE),
    ("seis", OTHER),
    ("uno", DANGER),
    # Spanish and English mixed.
    ("tengo un panic attack", MENTAL),
    ("estoy muy depressed", MENTAL),
    ("quiero hablar con alguien, I need help", OTHER),
    ("my husband me pega", VIOLENCE),
    ("no drugs, solo necesito hablar", OTHER),
    ("I want to kill myself, ya no puedo más", SUICIDE),
    ("es una emergency", DANGER),
]

CORPUS = [("en", speech, expected) for speech, expected in ENGLISH] + [
    ("es", speech, expected) for speech, expected in SPANISH
]


@pytest.fixture(scope="module")
def document() -> RoutingDocument:
    return load_document(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))


def decided(document: RoutingDocument, code: str, speech: str, attempt: int = 1) -> MenuStep[Need]:
    return need_step(document, document.language(code), MenuInput(speech=speech), attempt)


def understood_as(step: MenuStep[Need]) -> str:
    """The need the line acts on (chosen, or pending the caller's confirming key), or ASK."""
    if step.outcome in ("chosen", "confirm") and step.choice is not None:
        return step.choice.key
    return ASK


def test_the_corpus_is_large_in_both_languages_and_has_no_duplicates() -> None:
    assert len(CORPUS) >= 150
    counts = Counter(code for code, _, _ in CORPUS)
    assert counts["en"] >= 60 and counts["es"] >= 60
    assert len({(code, speech.casefold()) for code, speech, _ in CORPUS}) == len(CORPUS)
    assert sum(expected == ASK for _, _, expected in CORPUS) >= 30  # negations, hedges, noise


def test_no_answer_routes_to_a_co_responder_unit_without_a_confirming_key(document: RoutingDocument) -> None:
    units = {need.key for need in document.needs if need.target == "co_responders"}
    assert units, "the example routing has a co-responder need"
    routed_unasked = []
    for code, speech, _ in CORPUS:
        # Every attempt, the last one too: a used-up menu must not default to a unit either.
        for attempt in range(1, document.menu.retries + 2):
            step = decided(document, code, speech, attempt)
            if step.outcome in ("chosen", "default") and step.choice is not None and step.choice.key in units:
                routed_unasked.append((code, speech, attempt, step.outcome))
    assert routed_unasked == []


def test_spoken_danger_is_always_confirmed_by_key_first(document: RoutingDocument) -> None:
    confirmed = [decided(document, code, speech) for code, speech, expected in CORPUS if expected == DANGER]
    assert confirmed and all(step.outcome == "confirm" for step in confirmed if understood_as(step) == DANGER)


def test_accuracy_per_language_meets_the_floor(document: RoutingDocument, capsys: pytest.CaptureFixture[str]) -> None:
    results: dict[str, list[bool]] = {}
    misses: list[str] = []
    for code, speech, expected in CORPUS:
        got = understood_as(decided(document, code, speech))
        results.setdefault(code, []).append(got == expected)
        if got != expected:
            misses.append(f"  {code}  {speech!r}: expected {expected}, got {got}")

    accuracy = {code: sum(hits) / len(hits) for code, hits in results.items()}
    with capsys.disabled():
        print("\nSpoken needs corpus (config/routing.example.yaml)")
        print(f"  {'language':<10}{'answers':>8}{'right':>8}{'accuracy':>10}")
        for code, hits in results.items():
            print(f"  {code:<10}{len(hits):>8}{sum(hits):>8}{accuracy[code]:>10.1%}")
        print("Misses:" if misses else "No misses.")
        print("\n".join(misses))
    assert all(value >= ACCURACY_FLOOR for value in accuracy.values()), accuracy
