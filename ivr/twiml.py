"""The TwiML each IVR step answers with. Pure builders over the routing document.

Every response ends in a ``<Gather>`` whose silence falls through to a ``<Redirect>``, or in
a ``<Dial>`` with an ``action``: the caller is never left in silence and never hung up on.

Each menu is first written as a script (:class:`Spoken` sentences, each inside the
``<Gather>`` or not) and then built from it, so ``routing.timing`` can count the seconds a
caller listens from the very sentences they hear. Every menu sentence is inside its
``<Gather>``: a caller who knows what to press can press it at once (barge-in).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from twilio.twiml.voice_response import Gather, VoiceResponse

from routing.document import Language, Need, RoutingDocument

BACKUP_RING_SECONDS = 30


def say(verb: VoiceResponse | Gather, language: Language, text: str) -> None:
    """Speak ``text`` in ``language``'s Twilio language and voice."""
    attributes = {"language": language.twilio_language}
    if language.voice:
        attributes["voice"] = language.voice
    verb.say(text, **attributes)


@dataclass(frozen=True)
class Spoken:
    """One sentence a caller hears; ``in_gather``: a keypress (or speech) cuts it short."""

    language: Language
    text: str
    in_gather: bool


def welcome(document: RoutingDocument) -> list[str]:
    """What a new caller hears first, in the line's default language, before any menu option.

    The confidentiality notice is said once, in the caller's own language: on a line with a
    language menu it comes after their choice (:func:`after_language`), otherwise here.
    """
    language = document.default_language
    if len(document.languages) > 1:
        return [language.prompt("greeting")]
    return [language.prompt("greeting"), language.prompt("confidentiality")]


def after_language(document: RoutingDocument, language: Language) -> list[str]:
    """What follows the language menu, in the chosen language, before the need menu."""
    return [language.prompt("confidentiality")] if len(document.languages) > 1 else []


def language_menu_script(document: RoutingDocument, lead: Iterable[tuple[Language, str]] = ()) -> list[Spoken]:
    """``lead`` then each language's option in its own language, all inside the ``<Gather>``."""
    return [Spoken(language, text, True) for language, text in lead] + [
        Spoken(language, language.prompt("language_option", digit=language.digit), True)
        for language in document.languages
    ]


def need_menu_script(document: RoutingDocument, language: Language, lead: Iterable[str] = ()) -> list[Spoken]:
    """``lead``, the need menu's intro and one option per need, all inside the ``<Gather>``."""
    script = [Spoken(language, text, True) for text in lead]
    script.append(Spoken(language, language.prompt("need_menu_intro"), True))
    for need in document.needs:
        label = need_label(document, language, need)
        script.append(Spoken(language, language.prompt("need_option", label=label, digit=need.digit), True))
    return script


def confirm_script(document: RoutingDocument, language: Language, need: Need, lead: Iterable[str] = ()) -> list[Spoken]:
    """The confirmation of a need heard in speech ("You said ... press 1"), inside the ``<Gather>``."""
    confirm = language.prompt("need_confirm", label=need_label(document, language, need))
    return [Spoken(language, text, True) for text in (*lead, confirm)]


def need_label(document: RoutingDocument, language: Language, need: Need) -> str:
    return need.labels.get(language.code) or need.labels.get(document.menu.default_language, need.key)


def _speak(twiml: VoiceResponse, gather: Gather, script: Sequence[Spoken]) -> None:
    """Say ``script``: sentences outside the ``<Gather>`` come before it, the rest inside it."""
    for spoken in script:
        say(gather if spoken.in_gather else twiml, spoken.language, spoken.text)
    twiml.append(gather)


def _gather(document: RoutingDocument, language: Language, action: str, hints: Iterable[str]) -> Gather:
    return Gather(
        input="dtmf speech",
        num_digits=1,
        timeout=document.menu.timeout_seconds,
        speech_timeout="auto",
        action=action,
        method="POST",
        language=language.twilio_language,
        hints=", ".join(dict.fromkeys(word for word in hints if word)),
    )


def language_menu(
    document: RoutingDocument, *, action: str, lead: Iterable[tuple[Language, str]] = ()
) -> VoiceResponse:
    """Each language's option spoken in its own language and voice ("Para español, oprima 2")."""
    twiml = VoiceResponse()
    hints = [word for lang in document.languages for word in (lang.name, *lang.speech_words)]
    gather = _gather(document, document.default_language, action, hints)
    _speak(twiml, gather, language_menu_script(document, lead))
    twiml.redirect(action, method="POST")
    return twiml


def need_menu(
    document: RoutingDocument,
    language: Language,
    *,
    action: str,
    lead: Iterable[str] = (),
) -> VoiceResponse:
    """The need menu in the caller's language, by key or by voice."""
    twiml = VoiceResponse()
    hints = [
        word
        for need in document.needs
        for word in (need.labels.get(language.code, ""), *need.speech_words.get(language.code, ()))
    ]
    gather = _gather(document, language, action, hints)
    _speak(twiml, gather, need_menu_script(document, language, lead))
    twiml.redirect(action, method="POST")
    return twiml


def confirm_need(
    document: RoutingDocument, language: Language, need: Need, *, action: str, lead: Iterable[str] = ()
) -> VoiceResponse:
    """Confirm a co-responder need heard in speech: only the key 1 confirms. Silence comes
    back to ``action`` with no input (asked once more, then the need menu)."""
    twiml = VoiceResponse()
    gather = _gather(document, language, action, (*language.yes_words, *language.no_words))
    _speak(twiml, gather, confirm_script(document, language, need, lead))
    twiml.redirect(action, method="POST")
    return twiml


def backup(
    document: RoutingDocument,
    language: Language,
    *,
    message_key: str,
    action: str,
    caller_id: str | None = None,
    backup_number: str | None = None,
) -> VoiceResponse:
    """A calm sentence, then the backup line; ``action`` retries or gives the last resort.
    ``caller_id`` stands in for a withheld caller's, or is the number of a person the line called
    back (``crisisline.failsafe.caller_id_for_backup``). ``backup_number``: the number to dial
    instead of the routing's (``crisisline.failsafe.backup_number_to_dial``)."""
    twiml = VoiceResponse()
    say(twiml, language, language.prompt(message_key))
    number = backup_number or document.backup_number
    twiml.dial(number, action=action, method="POST", timeout=BACKUP_RING_SECONDS, caller_id=caller_id)
    return twiml


def last_resort(language: Language) -> VoiceResponse:
    """When the backup line itself cannot be reached: tell the caller where to turn."""
    twiml = VoiceResponse()
    say(twiml, language, language.prompt("backup_unreachable"))
    return twiml


def finished() -> VoiceResponse:
    """The conversation with a human is over; end the call cleanly."""
    twiml = VoiceResponse()
    twiml.hangup()
    return twiml


def with_lead(language: Language, lead: Iterable[str], rest: VoiceResponse) -> VoiceResponse:
    """``rest`` preceded by sentences in the caller's language (e.g. a notice before holding)."""
    twiml = VoiceResponse()
    for text in lead:
        say(twiml, language, text)
    for verb in rest.verbs:
        twiml.append(verb)
    return twiml
