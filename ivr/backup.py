"""Sending a caller to the backup line: recorded once per attempt, retried by ``/voice/backup-result``."""

from __future__ import annotations

from flask import Response

from crisisline.db import db
from crisisline.failsafe import backup_number_to_dial, caller_id_for_backup, twiml_response
from crisisline.models import Call
from crisisline.urls import path_for
from ivr import call_log, twiml
from routing.document import Language, RoutingDocument

# A backup line that answered and hung up within this many seconds, with our caller still on the
# line, did not take the call: a full voicemail box, an auto-attendant's "we are closed". Tried
# again like an unanswered one. A real conversation that ends this soon costs the caller one
# "we are trying again", and they can hang up.
BACKUP_ANSWER_TOO_BRIEF_SECONDS = 30


def answered_too_briefly(talked_seconds: int | None) -> bool:
    """Whether a completed backup ``<Dial>`` (``DialCallDuration``, None if Twilio did not say)
    was too short to have been a conversation."""
    return talked_seconds is not None and talked_seconds < BACKUP_ANSWER_TOO_BRIEF_SECONDS


def to_backup(call: Call, document: RoutingDocument, language: Language, message_key: str, *, attempt: int) -> Response:
    """A calm sentence (``message_key``) and the backup line; its result comes back to us."""
    call_log.record_event(call, "backup.dialled", f"backup:{attempt}", {"attempt": attempt, "reason": message_key})
    call.route = call.route or ("backup" if message_key != "blocked" else "blocked")
    db.session.commit()
    return twiml_response(
        twiml.backup(
            document,
            language,
            message_key=message_key,
            action=path_for("voice.backup_result", lang=language.code, attempt=attempt),
            caller_id=caller_id_for_backup(),
            backup_number=backup_number_to_dial(document.backup_number),
        )
    )
