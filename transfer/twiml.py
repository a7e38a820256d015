"""What the waiting caller and the responders hear. Pure builders over the routing document."""

from __future__ import annotations

from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

from ivr.twiml import say
from routing.document import Language, RoutingDocument

HOLD_PAUSE_SECONDS = 15  # between updates when no hold music is configured
CONFERENCE_EVENTS = "start end join leave"


def hold(
    document: RoutingDocument, language: Language, *, message: str, next_url: str,
    callback_offer: str | None = None, callback_url: str | None = None,
) -> VoiceResponse:  # fmt: skip
    """One turn of the hold loop: a sentence, music (or a pause), then back to us.

    Each turn is a fresh request to ``next_url``, which is how the hold limit is enforced
    without any background worker. With ``callback_offer`` the turn listens for the callback
    key (sent to ``callback_url``); pressing nothing just carries on holding.
    """
    twiml = VoiceResponse()
    turn: VoiceResponse | Gather = twiml
    if callback_offer and callback_url:
        # No finish key: a callback key of ``#`` would otherwise end the entry as no input.
        turn = Gather(input="dtmf", num_digits=1, timeout=1, finish_on_key="", action=callback_url, method="POST")
        twiml.append(turn)
    say(turn, language, message)
    if callback_offer:
        say(turn, language, callback_offer)
    if document.transfer.hold_music_url:
        turn.play(document.transfer.hold_music_url)
    else:
        turn.pause(length=HOLD_PAUSE_SECONDS)
    twiml.redirect(next_url, method="POST")
    return twiml


def go_to(url: str) -> VoiceResponse:
    """Straight on to ``url``'s TwiML."""
    twiml = VoiceResponse()
    twiml.redirect(url, method="POST")
    return twiml


def settle(next_url: str) -> VoiceResponse:
    """A second of quiet, then the next hold turn: while a REST redirect brings the caller in."""
    twiml = VoiceResponse()
    twiml.pause(length=1)
    twiml.redirect(next_url, method="POST")
    return twiml


def callback_or_backup(
    language: Language, *, message: str, callback_offer: str, callback_url: str, backup_url: str
) -> VoiceResponse:
    """Nobody can take the call now: offer a callback for a few seconds, else the backup line."""
    twiml = VoiceResponse()
    gather = Gather(input="dtmf", num_digits=1, timeout=6, finish_on_key="", action=callback_url, method="POST")
    say(gather, language, message)
    say(gather, language, callback_offer)
    twiml.append(gather)
    twiml.redirect(backup_url, method="POST")
    return twiml


def _conference(dial: Dial, name: str, *, events_url: str, label: str, ends_conference: bool) -> None:
    dial.conference(
        name,
        start_conference_on_enter=True,
        end_conference_on_exit=ends_conference,
        beep=False,
        participant_label=label,
        status_callback=events_url,
        status_callback_event=CONFERENCE_EVENTS,
        status_callback_method="POST",
    )


def caller_joins(name: str, *, events_url: str, after_url: str) -> VoiceResponse:
    """The caller enters the conference. Their leaving ends it, so no responder is left
    talking to an empty room; responders leaving do not end it (see ``responder_joins``)."""
    twiml = VoiceResponse()
    dial = Dial(action=after_url, method="POST")
    _conference(dial, name, events_url=events_url, label="caller", ends_conference=True)
    twiml.append(dial)
    return twiml


def responder_joins(
    document: RoutingDocument, name: str, *, events_url: str, after_url: str, label: str, lead: str = "connecting"
) -> VoiceResponse:
    """A responder who pressed 1 enters the conference; ``*`` opens the counselor menu."""
    twiml = VoiceResponse()
    twiml.say(document.staff_prompt(lead))
    dial = Dial(action=after_url, method="POST", hangup_on_star=True)
    _conference(dial, name, events_url=events_url, label=label, ends_conference=False)
    twiml.append(dial)
    return twiml


def whisper(document: RoutingDocument, text: str, *, action: str) -> VoiceResponse:
    """The brief a responder hears on answering, then 1 to accept / 2 to pass.

    Silence (a voicemail greeting answering) falls through to a hang-up: a pass.
    """
    twiml = VoiceResponse()
    gather = Gather(
        input="dtmf",
        num_digits=1,
        timeout=document.transfer.accept_timeout_seconds,
        action=action,
        method="POST",
    )
    gather.say(text)
    gather.pause(length=1)
    gather.say(text)
    twiml.append(gather)
    twiml.say(document.staff_prompt("no_response"))
    twiml.hangup()
    return twiml


def staff_message(text: str) -> VoiceResponse:
    """A sentence to a responder, then hang up their leg."""
    twiml = VoiceResponse()
    twiml.say(text)
    twiml.hangup()
    return twiml


def counselor_menu(document: RoutingDocument, *, action: str, back_url: str) -> VoiceResponse:
    """After ``*``: bring in the co-responder unit, or go back; silence goes back."""
    twiml = VoiceResponse()
    gather = Gather(input="dtmf", num_digits=1, timeout=5, action=action, method="POST")
    gather.say(document.staff_prompt("counselor_menu"))
    twiml.append(gather)
    twiml.redirect(back_url, method="POST")
    return twiml


def spoken_wait(seconds: float) -> str:
    """ "a few seconds" / "40 seconds" / "3 minutes": how long the caller has waited, for the whisper."""
    whole = int(seconds)
    if whole < 10:
        return "a few seconds"  # never "0 seconds" or "1 seconds"
    if whole < 90:
        return f"{whole} seconds"
    minutes = round(whole / 60)
    return f"{minutes} minutes" if minutes != 1 else "1 minute"
