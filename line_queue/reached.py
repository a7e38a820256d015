"""Has a person reached the line since a moment? Asked before keeping a promise that would be
wrong once they have: a callback (a second counselor would cross the first), or a "we missed
you, reach us here" text (said to someone a counselor has just talked with, it tells them they
were never heard). Shared by ``callbacks`` and ``workers.contacts``; by keyed hash only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, or_, select

from crisisline.db import db
from crisisline.models import Call, Conversation, Texter, Transfer

REACHED, HOLDING = "reached", "holding"

# A text conversation of the person's that a counselor took after ``since``.
_TAKEN_BY_TEXT_SINCE = (
    select(Conversation.id)
    .join(Texter, Texter.id == Conversation.texter_id)
    .where(
        Texter.number_hash == bindparam("number_hash"),
        or_(
            and_(Conversation.id != bindparam("own"), Conversation.assigned_at > bindparam("since")),
            # ``own``: the conversation a callback's CALL came from, closed by the CALL before
            # the callback is stored (a YES that came first makes no callback). Open and taken
            # only for a callback an earlier version of the line stored before its close.
            and_(
                Conversation.id == bindparam("own"),
                Conversation.state != "closed",
                Conversation.assigned_at.is_not(None),
            ),
        ),
    )
    .limit(1)
)
# Their live calls' transfers after ``since``: on their calls begun since (``promised_on``
# left out), and on ``asked_on`` (begun before) those not joined to a counselor before ``since``.
_CALLS_SINCE = (
    select(Transfer.state, Transfer.connected_at)
    .join(Call, Call.id == Transfer.call_id)
    .where(
        Call.caller_hash == bindparam("number_hash"),
        Transfer.mode == "live",
        or_(
            and_(Call.id != bindparam("promised_on"), Call.started_at > bindparam("since")),
            and_(
                Call.id == bindparam("asked_on"),
                or_(Transfer.connected_at.is_(None), Transfer.connected_at > bindparam("since")),
            ),
        ),
    )
)


def reached_since(
    number_hash: str | None, since: datetime, *, promised_on_call: int | None = None,
    asked_on_call: int | None = None, own_conversation: int | None = None,
) -> str | None:  # fmt: skip
    """``REACHED`` (with a counselor live since ``since``: joined, not merely accepted; or a
    counselor took a text conversation of theirs), ``HOLDING`` (on the line now: holding, or
    being brought to a counselor), or None (never, or gone without anyone).

    ``promised_on_call``: a call left out (the missed call a text is about). ``asked_on_call``:
    the call a callback was asked for on, promised at ``since``: a counselor who had them on it
    before then does not count, but one who joins them on it after does, and so does their
    still holding on it (its hand-over to the callback failed: the clock's repair makes the
    callback later; before, the repair rang a counselor to call back someone a counselor had
    just talked with on that very call)."""
    if not number_hash:
        return None
    if db.session.scalar(_TAKEN_BY_TEXT_SINCE, {"number_hash": number_hash, "since": since,
                                                "own": own_conversation or 0}):  # fmt: skip
        return REACHED
    bound = {"number_hash": number_hash, "since": since, "promised_on": promised_on_call or 0}
    rounds = db.session.execute(_CALLS_SINCE, {**bound, "asked_on": asked_on_call or 0}).all()
    if any(connected_at is not None for _state, connected_at in rounds):
        return REACHED
    return HOLDING if any(state in ("waiting", "connecting") for state, _ in rounds) else None
