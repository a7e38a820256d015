"""Sending a caller to the backup line: recorded once per attempt, retried by ``/voice/backup-result``."""

from __future__ import annotations

from flask import Response

from crisisline.db import db
from crisisline.failsafe import backup_number_to_dial, caller_id_for_backup, twiml_response
from crisisline.models import Call
from crisisline.urls import path_for
from ivr import call_log, twiml
from routing.document import Language, RoutingDocument


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
