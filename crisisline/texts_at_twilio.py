"""Noting the texts Twilio keeps between a texter and one of the line's numbers, to be deleted
there once the purge has scrubbed them (``TwilioRecord`` of kind ``texts``; the deleting is
``workers.twilio_records``'s). Here, in the core, because more than one layer notes them: the
purge of stored texts (workers) and the purge of texts kept through an outage (sms).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from crisisline.db import db, insert_ignoring_duplicates
from crisisline.models import TwilioRecord

TEXTS = "texts"
# A reply to a text from just before the cutoff reaches Twilio after it: the webhook answers
# within Twilio's 15 s, the fail-safe at its deadline. Rows are due this long after the purge,
# when the cutoff has moved past it.
REPLY_WINDOW = timedelta(minutes=1)


def cutoff_stamp(cutoff: datetime) -> str:
    """The cutoff as a row's key names it: a purge run again at the same moment notes nothing twice."""
    return cutoff.astimezone(UTC).strftime("%Y%m%dT%H%M%S")


def note_texts(key: str, *, sealed_number: str, line_number: str, sent_before: datetime, now: datetime) -> None:
    """In the caller's transaction: the texts between ``line_number`` and the texter's number
    (``sealed_number``: sealed as ``Texter.sealed_number`` is) sent before ``sent_before``, due
    ``REPLY_WINDOW`` from ``now``. ``key`` (at most 64 characters: ``TwilioRecord.sid``) names the row: noted before,
    it stays as it is."""
    db.session.execute(
        insert_ignoring_duplicates(
            TwilioRecord,
            {
                "kind": TEXTS,
                "sid": key,
                "state": "pending",
                "due_at": now + REPLY_WINDOW,
                "attempts": 0,
                "queued_at": now,
                "sealed_number": sealed_number,
                "line_number": line_number,
                "sent_before": sent_before,
            },
        ),
        execution_options={"synchronize_session": False},
    )
