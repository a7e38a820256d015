"""The TwiML each IVR step answers with. Pure builders over the routing document.

Every response ends in a ``<Gather>`` whose silence falls through to a ``<Redirect>``, or in
a ``<Dial>`` with an ``action``: the caller is never left in silence and never hung up on.
"""

from __future__ import annotations

from collections.abc import Iterable

from twilio.twiml.voice_response import Gather, VoiceResponse

from routing.document import Language, RoutingDocument

BACKUP_RING_SECONDS = 30


def say(verb: VoiceResponse | Gather, language: Language, text: str) -> None:
    """Speak ``text`` in ``language``'s Twilio language and voice."""
    attributes = {"language": language.twilio_language}
    if language.voice:
        attributes["voice"] = language.voice
    verb.say(text, **attributes)


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
    for language, text in lead:
        say(twiml, language, text)
    hints = [word for lang in document.languages for word in (lang.name, *lang.speech_words)]
    gather = _gather(document, document.default_language, action, hints)
    for language in document.languages:
        say(gather, language, language.prompt("language_option", digit=language.digit))
    twiml.append(gather)
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
    for text in lead:
        say(twiml, language, text)
    hints = [
        word
        for need in document.needs
        for word in (need.labels.get(language.code, ""), *need.speech_words.get(language.code, ()))
    ]
    gather = _gather(document, language, action, hints)
    say(gather, language, language.prompt("need_menu_intro"))
    for need in document.needs:
        label = need.labels.get(language.code) or need.labels.get(document.menu.default_language, need.key)
        say(gather, language, language.prompt("need_option", label=label, digit=need.digit))
    twiml.append(gather)
    twiml.redirect(action, method="POST")
    return twiml


def backup(document: RoutingDocument, language: Language, *, message_key: str, action: str) -> VoiceResponse:
    """A calm sentence, then the backup line; ``action`` retries or gives the last resort."""
    twiml = VoiceResponse()
    say(twiml, language, language.prompt(message_key))
    twiml.dial(document.backup_number, action=action, method="POST", timeout=BACKUP_RING_SECONDS)
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
