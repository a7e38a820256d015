"""Twilio voice webhooks. Thin: read the request, ask ``menu``/``routing``, answer TwiML.

Point the Twilio number at these (see README): Voice URL ``/voice/incoming``, status
callback ``/voice/status``, Fallback URL ``/voice/fallback``. Every route checks
``X-Twilio-Signature`` first, and every voice route turns any failure into TwiML that dials
the backup line (``crisisline.failsafe``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, request
from twilio.twiml.voice_response import VoiceResponse

import line_queue
from crisisline import twilio_params
from crisisline.db import commit_keeping_loaded, db
from crisisline.failsafe import (
    acknowledged,
    failsafe_response,
    fallback_url_answer,
    status_deadline,
    twiml_response,
    voice_failsafe,
)
from crisisline.models import Call
from crisisline.settings import Settings
from crisisline.twilio_auth import twilio_signed
from crisisline.urls import path_for
from ivr import call_log, twiml
from ivr.backup import answered_too_briefly, to_backup
from ivr.menu import (
    CONFIRM_TRIES,
    MenuInput,
    choose_language,
    confirm_step,
    default_need,
    need_step,
    next_step,
)
from routing.document import Language, Need, RoutingDocument
from routing.engine import decide_route
from routing.store import active_routing
from transfer import flow
from transfer import views as transfer_views

bp = Blueprint("voice", __name__, url_prefix="/voice")
MAX_ATTEMPT = 10  # our own URLs stay below this (retries+1, a few more after confirmations); clamp the rest
SORRY_PROMPTS = {"no_input": "no_input", "invalid": "invalid_input", "unclear": "need_unclear"}


def _settings() -> Settings:
    settings: Settings = current_app.extensions["crisisline.settings"]
    return settings


def _attempt(name: str = "attempt", highest: int = MAX_ATTEMPT) -> int:
    return twilio_params.query_number(name, 1, highest=highest)


def _menu_input() -> MenuInput:
    """What the caller keyed or said, checked at the edge: keys ``[0-9*#]`` only (anything
    else counts as no key), speech without control characters and of bounded length."""
    speech = twilio_params.text(request.form, "SpeechResult", limit=twilio_params.MAX_SPEECH)
    return MenuInput(twilio_params.digits(request.form), speech)


def _document() -> tuple[int, RoutingDocument] | None:
    active = active_routing()
    return (active.version_id, active.document) if active else None


def _menu_call() -> tuple[RoutingDocument, Call] | None:
    """The active routing and the call a menu answer belongs to, or None when there is no
    routing or the request names no call we can follow."""
    active = _document()
    call_sid = twilio_params.call_sid(request.form)
    if active is None or call_sid is None:
        return None
    return active[1], call_log.require_call(call_sid, request.form.get("From"))


@bp.post("/incoming")
@twilio_signed
@voice_failsafe
def incoming() -> Response:
    """A new call: the greeting, then the language menu (or, on a one-language line, the
    confidentiality notice and the need menu). Every sentence can be interrupted by a key."""
    if _settings().line_mode_override == "system_down":
        return failsafe_response()  # the operator's emergency switch needs no database
    call_sid = twilio_params.call_sid(request.form)
    if call_sid is None:
        return failsafe_response()  # a call we could not follow: straight to the backup line
    active = _document()
    if active is None:
        return failsafe_response()
    version_id, document = active
    call = call_log.open_call(call_sid, request.form.get("From"), version_id, line_number=request.form.get("To"))
    call_log.record_event(call, "call.started", "started", {"routing_version": version_id})
    language = document.default_language

    if call_log.is_blocked(request.form.get("From")):
        return to_backup(call, document, language, "blocked", attempt=1)
    if document.mode == "system_down":
        return to_backup(call, document, language, "system_down", attempt=1)
    db.session.commit()

    lead = twiml.welcome(document)
    if len(document.languages) == 1:
        if not document.menu.ask_need:
            return _without_need_menu(call, document, language, lead)
        return twiml_response(twiml.need_menu(document, language, action=_need_url(language, 1), lead=lead))
    return twiml_response(
        twiml.language_menu(
            document,
            action=path_for("voice.language_menu", attempt=1),
            lead=[(language, text) for text in lead],
        )
    )


@bp.post("/menu/language")
@twilio_signed
@voice_failsafe
def language_menu() -> Response:
    """The caller's answer to the language menu (keypad or speech)."""
    found = _menu_call()
    if found is None:
        return failsafe_response()  # no routing, or a call we could not follow: the backup line
    document, call = found
    given = _menu_input()
    attempt = _attempt()
    step = next_step(choose_language(document, given), given, attempt, document.menu.retries, document.default_language)
    detail = {"attempt": attempt, "via": given.via, "digits": given.digits[:4]}
    call.language_attempts = max(call.language_attempts, attempt)

    if step.outcome == "retry":
        call_log.record_event(call, f"menu.language.{step.reason}", f"language:{attempt}", detail, speech=given.speech)
        db.session.commit()
        key = "no_input" if step.reason == "no_input" else "invalid_input"
        return twiml_response(
            twiml.language_menu(
                document,
                action=path_for("voice.language_menu", attempt=step.attempt),
                lead=[(lang, lang.prompt(key)) for lang in document.languages],
            )
        )

    assert step.choice is not None
    language = step.choice
    kind = "menu.language.chosen" if step.outcome == "chosen" else "menu.language.defaulted"
    call_log.record_event(call, kind, f"language:{attempt}", {**detail, "language": language.code}, speech=given.speech)
    call.language = language.code
    db.session.commit()
    lead = twiml.after_language(document, language)  # the confidentiality notice, in their language
    if not document.menu.ask_need:
        return _without_need_menu(call, document, language, lead)
    return twiml_response(twiml.need_menu(document, language, action=_need_url(language, 1), lead=lead))


def _without_need_menu(call: Call, document: RoutingDocument, language: Language, lead: list[str]) -> Response:
    """``menu.ask_need: false``: everyone goes with the default need; ``lead`` is said while it rings."""
    need = default_need(document)
    call_log.record_event(call, "menu.need.not_asked", "need:0", {"need": need.key})
    call.need = need.key
    call.menu_completed_at = call.menu_completed_at or datetime.now(UTC)
    return _route(call, document, language, need, lead=lead)


@bp.post("/menu/need")
@twilio_signed
@voice_failsafe
def need_menu() -> Response:
    """The caller's answer to the need menu; a choice (or the default) routes the call."""
    found = _menu_call()
    if found is None:
        return failsafe_response()  # no routing, or a call we could not follow: the backup line
    document, call = found
    language = document.language(request.args.get("lang"))
    given = _menu_input()
    attempt = _attempt()
    step = need_step(document, language, given, attempt)
    detail = {"attempt": attempt, "via": given.via, "digits": given.digits[:4]}
    call.need_attempts = max(call.need_attempts, attempt)
    call.language = call.language or language.code

    if step.outcome == "retry":
        call_log.record_event(call, f"menu.need.{step.reason}", f"need:{attempt}", detail, speech=given.speech)
        db.session.commit()
        sorry = language.prompt(SORRY_PROMPTS[step.reason])
        return twiml_response(
            twiml.need_menu(document, language, action=_need_url(language, step.attempt), lead=[sorry])
        )

    assert step.choice is not None
    need = step.choice
    if step.outcome == "confirm":
        # A co-responder unit involves the police: speech alone never rings it.
        call_log.record_event(
            call, "menu.need.confirming", f"need:{attempt}", {**detail, "need": need.key}, speech=given.speech
        )
        db.session.commit()
        return twiml_response(
            twiml.confirm_need(document, language, need, action=_confirm_url(language, need, attempt, 1))
        )
    kind = "menu.need.chosen" if step.outcome == "chosen" else "menu.need.defaulted"
    call_log.record_event(call, kind, f"need:{attempt}", {**detail, "need": need.key}, speech=given.speech)
    call.need = need.key
    call.menu_completed_at = call.menu_completed_at or datetime.now(UTC)
    return _route(call, document, language, need)


@bp.post("/menu/confirm")
@twilio_signed
@voice_failsafe
def confirm_need() -> Response:
    """The answer to "You said ... If that's right, press 1. To choose again, press 2."

    Only the key 1 routes the call (to the need heard in speech). Silence or a spoken "yes":
    the confirmation once more. Anything else, or a second silence: the need menu again.
    """
    found = _menu_call()
    if found is None:
        return failsafe_response()  # no routing, or a call we could not follow: the backup line
    document, call = found
    language = document.language(request.args.get("lang"))
    need = document.need(request.args.get("need"))
    attempt = _attempt()
    tries = _attempt("asked", CONFIRM_TRIES)
    given = _menu_input()
    if need is None:  # the routing changed under the call: ask again
        return twiml_response(twiml.need_menu(document, language, action=_need_url(language, attempt)))
    step = confirm_step(document, language, given, tries)
    detail = {"attempt": attempt, "asked": tries, "via": given.via, "digits": given.digits[:4], "need": need.key}
    dedupe = f"confirm:{attempt}:{tries}"

    if step.outcome == "again":
        call_log.record_event(call, f"menu.confirm.{step.reason}", dedupe, detail, speech=given.speech)
        db.session.commit()
        lead = [language.prompt("need_confirm_key" if step.reason == "spoken_yes" else "no_input")]
        return twiml_response(
            twiml.confirm_need(
                document, language, need, action=_confirm_url(language, need, attempt, step.tries), lead=lead
            )
        )
    if step.outcome == "choose_again":
        call_log.record_event(call, f"menu.confirm.{step.reason}", dedupe, detail, speech=given.speech)
        db.session.commit()
        lead = [] if step.reason == "declined" else [language.prompt("need_unclear")]
        # A retry. Past the last one a clear answer is still taken (they were told they could
        # choose again); an unclear one goes with the default need.
        return twiml_response(twiml.need_menu(document, language, action=_need_url(language, attempt + 1), lead=lead))

    call_log.record_event(call, "menu.need.chosen", dedupe, {**detail, "confirmed": True}, speech=given.speech)
    call.need = need.key
    call.menu_completed_at = call.menu_completed_at or datetime.now(UTC)
    return _route(call, document, language, need)


def _route(
    call: Call, document: RoutingDocument, language: Language, need: Need, *, lead: Sequence[str] = ()
) -> Response:
    """Start the search for a human now (their phone rings); ``lead`` is said meanwhile."""
    decision = decide_route(document, language.code, need, datetime.now(UTC))
    callback_instead = decision.reason == "nobody_on_call" and document.callbacks.enabled and bool(call.sealed_caller)
    call_log.record_event(
        call,
        "route.decided",
        "route",
        {
            # What the line did: "callback_offer" callers hear the callback key first, so the
            # backup line is only one of their outcomes (docs/metrics.md).
            "target": "callback_offer" if callback_instead else decision.target,
            "reason": decision.reason,
            "language_matched": decision.language_matched,
            "responders": [r.id for r in decision.responders],
        },
    )
    if decision.target == "backup" and not callback_instead:
        key = {"system_down": "system_down", "need_routes_to_backup": "connecting"}.get(
            decision.reason, "nobody_available"
        )
        return to_backup(call, document, language, key, attempt=1)
    # Nobody on call but a callback is possible: begin the search anyway; the hold step
    # finds nobody to ring and offers the callback key for a few seconds before the backup line.
    call.route = decision.target  # committed with the new transfer, by ``flow.begin``
    # Told there is no language match when nobody on call speaks their language, and also when
    # nobody free now who could take them does: the queue rings whoever is free, at once, and a
    # speaker busy on another call may never be theirs. Otherwise their next hold turn tells
    # them, should the queue ring someone who does not speak it (``flow.hold_step``).
    matched = decision.language_matched or decision.target == "backup"
    notice = not matched or line_queue.rung_in_another_language(document, language.code, need.key)
    transfer = flow.begin(
        call, document, language.code, need.key, language_matched=decision.language_matched, notice_said=notice
    )
    step = flow.hold_step(transfer, document, tick=1)
    if step.kind == "backup":
        return to_backup(call, document, language, "nobody_available", attempt=1)
    told = [*lead, *([language.prompt("no_language_match")] if notice else [])]
    follow = transfer_views.step_twiml(transfer, document, step, 1)
    return twiml_response(twiml.with_lead(language, told, follow))


@bp.post("/backup-result")
@twilio_signed
@voice_failsafe
def backup_result() -> Response:
    """The backup line's ``<Dial>`` ended: done if answered, else retry, else the last resort."""
    found = _menu_call()
    if found is None:
        return failsafe_response()  # no routing, or a call we could not follow: the backup line
    document, call = found
    language = document.language(request.args.get("lang"))
    attempt = _attempt()
    status = twilio_params.choice(request.form, "DialCallStatus", twilio_params.DIAL_CALL_STATUSES) or ""
    talked = twilio_params.number(request.form, "DialCallDuration")
    call_log.record_event(
        call, "backup.result", f"backup-result:{attempt}", {"attempt": attempt, "status": status, "seconds": talked}
    )
    if request.form.get("CallStatus") in call_log.TERMINAL_STATUSES:
        db.session.commit()  # they hung up while it rang: nobody to try again for
        return twiml_response(VoiceResponse())
    if status == "completed" and not answered_too_briefly(talked):
        db.session.commit()
        return twiml_response(twiml.finished())
    # Not answered, or answered and hung up on a caller still here (a full voicemail box, an
    # auto-attendant's "we are closed"): tried again, then told where to turn.
    if attempt < document.transfer.backup_attempts:
        return to_backup(call, document, language, "backup_retry", attempt=attempt + 1)
    call_log.record_event(call, "backup.unreachable", "backup-unreachable", {"attempts": attempt})
    db.session.commit()
    return twiml_response(twiml.last_resort(language))


def _need_url(language: Language, attempt: int) -> str:
    return path_for("voice.need_menu", lang=language.code, attempt=attempt)


def _confirm_url(language: Language, need: Need, attempt: int, tries: int) -> str:
    return path_for("voice.confirm_need", lang=language.code, need=need.key, attempt=attempt, asked=tries)


@bp.post("/status")
@twilio_signed
@status_deadline(acknowledged)
def status_callback() -> Response:
    """Twilio's call status callback for the caller's leg. Idempotent; never controls the call."""
    form = request.form
    call_sid, status = twilio_params.call_sid(form), twilio_params.call_status(form)
    if call_sid is None or status is None:
        return Response(status=204)  # acknowledged and ignored: no call or no status we can record
    call = call_log.require_call(call_sid, form.get("From"))
    if call_log.apply_status(call, status, twilio_params.number(form, "SequenceNumber"), form.get("CallDuration")):
        call_log.record_event(call, "call.status", f"status:{status}", {"status": status})
    # The call's end is stored first (anyone asking whether the caller is still there sees it);
    # its copy follows the row, so it is not read again.
    commit_keeping_loaded()
    if status in call_log.TERMINAL_STATUSES:
        flow.caller_left(call)
    db.session.commit()
    return Response(status=204)


@bp.post("/fallback")
@twilio_signed
def fallback() -> Response:
    """Twilio's Fallback URL: reached when our main webhook failed. Answered from settings."""
    return fallback_url_answer()
