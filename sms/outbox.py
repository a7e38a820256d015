"""Sending texts: at most once, never lost silently, recorded with their delivery status.

Each outbound text has an idempotency key (e.g. ``relay:<inbound id>``). The row is claimed
in the database before the Twilio request, so a duplicated webhook or a retried job finds the
claim and sends nothing; a crash between claim and send leaves a ``claimed`` row for a human.

A reply to the person whose text a webhook is answering (to their number, from the number they
texted) goes out in that webhook's own TwiML (``TwimlReplies``), as Twilio means replies to be
sent: no REST request holds the texter's webhook (100 to 300 ms each against Twilio, longer
when its API is slow), and each ``<Message>`` carries the status callback of its row. Every
other text (to a counselor, a supervisor, a texter from a job) goes over the REST API.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import requests
from blinker import Namespace
from flask import current_app, has_request_context, request
from sqlalchemy import Insert, and_, bindparam, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from twilio.base.exceptions import TwilioRestException

from crisisline import events
from crisisline.background import ARRIVED_AT
from crisisline.db import commit_keeping_loaded, constant, db, insert_ignoring_duplicates, inserted_id
from crisisline.deadline import ANSWERED, PROGRESS
from crisisline.models import Conversation, Message, Texter, utcnow
from crisisline.privacy import Vault
from crisisline.sms_segments import segment_count, split_for_sms
from crisisline.urls import public_url
from line_queue.responders import TEXTS_BLOCKED, make_offers_due, set_paused
from routing.document import RoutingDocument
from transfer.dispatch import rest_client

log = logging.getLogger(__name__)
# Sent with the message id as sender, after its failure is committed: a counselor's words
# relayed to a texter (``c<id>:relay:…``) that Twilio refused or could not deliver, with
# ``conversation_id`` and ``error_code`` (None if none): the counselor is told, who would
# otherwise believe they were read.
relay_to_texter_failed = Namespace().signal("relay-to-texter-failed")
# Sent with the conversation's id as sender, once the texts held for it are committed: texts a
# webhook left ``RETRYING`` for want of time (``WEBHOOK_REST_SHARE``), to be sent beside its
# answer (``sms.conversations``); the minute's sweep sends them should that never run.
texts_held_for_time = Namespace().signal("texts-held-for-time")
# A webhook starts its REST sends within this share of its deadline; a conversation's texts
# after that wait for a send started beside its answer. A counselor's YES relays the whole
# backlog, one REST request a text (100 to 300 ms at Twilio, more when it is slow): a dozen
# would pass the deadline, and the counselor read "the line is having trouble" first.
WEBHOOK_REST_SHARE = 0.5
BODY_CONTEXT = "sms-body"
OPTED_OUT = 21610
# Later statuses never overwrite final ones (callbacks arrive out of order).
STATUS_RANK = {"claimed": 0, "accepted": 1, "scheduled": 1, "queued": 1, "sending": 2, "sent": 3,
               "partially_delivered": 4, "failed": 5, "undelivered": 5, "canceled": 5, "delivered": 5,
               "received": 5, "read": 6}  # fmt: skip
# A text that did not go out (or never reached the phone).
UNSENT_STATUSES = ("failed", "undelivered", "canceled")
# What Twilio reports of a text it received: never news of one the line sent.
INBOUND_STATUSES = frozenset({"receiving", "received"})
# Every MessageStatus Twilio reports; anything else in a status callback is ignored.
MESSAGE_STATUSES = frozenset(STATUS_RANK) - {"claimed"}
# Twilio's refusals that say it created nothing and that a later try may be taken: too many
# requests (HTTP 429, 20429) and Twilio failing (HTTP 500 and 503, 20500 and 20503). A
# conversation's text so refused is not failed at once but left ``RETRYING`` under its claimed
# key, and the minute's text sweep tries it again (``retry_refused``); only once that has not
# worked for a few minutes is it failed as any refusal is. A 502 or 504 is not among them: a
# gateway said it, which may have passed the request on (the text may have gone out). Kept in
# ``error_code`` as Twilio's code, or the HTTP status when Twilio gave none.
REFUSED_FOR_NOW_STATUSES = frozenset({429, 500, 503})
REFUSED_FOR_NOW_CODES = frozenset({20429, 20500, 20503})
REFUSED_FOR_NOW = tuple(sorted(REFUSED_FOR_NOW_STATUSES | REFUSED_FOR_NOW_CODES))
RETRYING = "retrying"


# At most this much of a webhook's answer is replies; the rest go over REST, after them. Twilio
# drops a TwiML answer over 64 kB whole (11750), and a counselor taking a conversation is sent
# its whole backlog in answer to their "YES".
MAX_TWIML_REPLIES = 8
MAX_TWIML_REPLY_BYTES = 16_000
# What XML 1.0 cannot carry: one such character in a texter's words (relayed to a counselor)
# would make Twilio refuse the whole answer (12100). Such a text goes over REST.
_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


# Whom one of the sweep's texts is for, as it tells them apart (``sms.conversations``): the
# conversation, the party, and which counselor (None for a texter).
Recipient = tuple[int | None, str, str | None]


@dataclass(frozen=True)
class TakenReply:
    """A claimed part kept for the answer; what a REST send of it would need too."""

    message_id: int
    text: str
    responder_id: str | None = None
    texter: Texter | None = None
    retry_refused: bool = False
    recipient: Recipient | None = None  # for the sweep's texts (``send_text``)


class TwimlReplies:
    """The texts a webhook answers its sender with, sent in its TwiML.

    Shared by the webhook's handler and its deadline (``crisisline.deadline``), which may
    answer first: whichever takes the replies first decides how they go. The handler
    ``render``s them into its answer. If the deadline answers first (``abandon``), its answer
    carries the replies taken so far and later ones go over REST; if the handler had already
    built its answer (which will now never be sent), the deadline's answer carries them. A
    reply that does not fit (``MAX_TWIML_REPLIES``, ``MAX_TWIML_REPLY_BYTES``, a character XML
    cannot carry) spills them: the replies taken before it go over REST first, in order, then
    it and every later one."""

    def __init__(self, to_number: str | None, from_number: str | None) -> None:
        self.to_number = to_number
        self.from_number = from_number
        self._parts: list[TakenReply] = []
        self._bytes = 0
        self._state = "open"  # open -> rendered | abandoned | spilled (then abandoned or rendered)
        self._lock = threading.Lock()

    def answers(self, to_number: str, from_number: str) -> bool:
        """Whether a text to ``to_number`` from ``from_number`` replies to this webhook's sender."""
        return bool(self.to_number) and (to_number, from_number) == (self.to_number, self.from_number)

    def take(self, reply: TakenReply) -> tuple[bool, list[TakenReply]]:
        """(kept for the answer, replies taken before that must now go over REST first)."""
        size = len(reply.text.encode())
        with self._lock:
            if self._state != "open":
                return False, []
            fits = (len(self._parts) < MAX_TWIML_REPLIES and self._bytes + size <= MAX_TWIML_REPLY_BYTES
                    and not _NOT_IN_XML.search(reply.text))  # fmt: skip
            if fits:
                self._parts.append(reply)
                self._bytes += size
                return True, []
            self._state = "spilled"
            spilled, self._parts = self._parts, []
            return False, spilled

    def spill(self) -> list[TakenReply]:
        """A reply that must not go in the answer (``send_text(in_twiml=False)``): the replies
        taken before it go over REST first, in order, then it and every later one."""
        with self._lock:
            if self._state != "open":
                return []
            self._state = "spilled"
            spilled, self._parts = self._parts, []
            return spilled

    def render(self) -> list[tuple[int, str]] | None:
        """For the handler's answer: (message id, text) of each reply, or None if the deadline
        answered already (with the replies taken by then)."""
        with self._lock:
            if self._state == "abandoned":
                return None
            self._state = "rendered"
            return [(part.message_id, part.text) for part in self._parts]

    def abandon(self) -> list[tuple[int, str]]:
        """For the deadline's answer: the replies taken so far (the handler's answer will never
        be sent); any later reply goes over REST."""
        with self._lock:
            taken = [(part.message_id, part.text) for part in self._parts]
            if self._state != "rendered":
                self._state, self._parts = "abandoned", []
            return taken


def answering(replies: TwimlReplies) -> None:
    """Send this request's replies to its sender in its TwiML (``TwimlReplies``)."""
    request.environ.setdefault(PROGRESS, {})["replies"] = replies


def _twiml_replies() -> TwimlReplies | None:
    if not has_request_context():
        return None  # a job, the clock, a background pass: nobody's webhook to answer
    replies: TwimlReplies | None = request.environ.get(PROGRESS, {}).get("replies")
    return replies


def vault() -> Vault:
    box: Vault = current_app.extensions["crisisline.vault"]
    return box


def send_text(
    *,
    key: str,
    to_number: str,
    from_number: str,
    body: str,
    party: str,
    conversation_id: int | None = None,
    responder_id: str | None = None,
    texter: Texter | None = None,
    retry_refused: bool = False,
    in_twiml: bool = True,
) -> bool:
    """Send ``body`` once for ``key`` (split if over 1600 characters). True if sent now.

    ``in_twiml=False``: never in the TwiML answer of the webhook it replies to, always over
    REST. Twilio reports a TwiML reply's SID only for the answer's last ``<Message>``, and a
    text whose SID the line never learns is deleted at Twilio after the purge only if it is
    found by number, which only a texter's texts are (``workers.twilio_records``). So a text
    carrying a texter's words to anyone else (a relay to their counselor) goes over REST.

    Texts to an opted-out texter are never sent; Twilio's 21610 marks them opted out.
    ``retry_refused``: a refusal that means Twilio created nothing (``REFUSED_FOR_NOW``) leaves
    the text, and its later parts, ``RETRYING`` for the text sweep, which knows the recipient
    again from the row (a conversation's texts only: ``sms.conversations``); it is not sent now.
    Such a text to a recipient who still has an earlier one ``RETRYING`` is not sent now either
    (over REST or in TwiML): it is claimed ``RETRYING`` behind it, so the sweep sends both in
    order (a texter must never read a counselor's second text before their first).
    """
    if texter is not None and texter.opted_out:
        return False
    # The sweep's texts (``sms.conversations``): kept in order per recipient, as the sweep keeps them.
    recipient: Recipient | None = (conversation_id, party, responder_id) if retry_refused and conversation_id else None
    sent_any = False
    held = False  # this text's parts wait for the sweep: refused for now, or behind an earlier text
    held_code: int | None = None  # the refusal they wait behind (None: held for order, never refused)
    for index, part in enumerate(split_for_sms(body)):
        part_key = key if index == 0 else f"{key}:{index}"
        claim: dict[str, object] = {
            "conversation_id": conversation_id,
            "direction": "out",
            "party": party,
            "idempotency_key": part_key,
            "responder_id": responder_id,
            "sealed_body": vault().seal(part, context=BODY_CONTEXT),
            "segments": segment_count(part),
            "status": "claimed",
            "status_rank": 0,
            "error_code": None,
        }
        if held:  # in order, after the part that waits: the sweep sends it
            claim.update(status=RETRYING, error_code=held_code)
            message_id = inserted_id(Message, claim)
        elif recipient is not None:
            message_id, held = _claim_in_order(claim)
        else:
            message_id = inserted_id(Message, claim)
        commit_keeping_loaded()  # the claim, before the request: the sender's rows stay loaded
        if message_id is None and not held:
            # Claimed before (a re-run: a retried job, a duplicated webhook). A part that did
            # not go out ends the text here, as it ended the first run: the parts after it
            # never go alone. One left for the sweep holds the new parts after it behind it.
            claimed = db.session.execute(_CLAIM_OF, {"key": part_key}).first()
            if claimed is not None and claimed.status in UNSENT_STATUSES:
                return sent_any
            if claimed is not None and claimed.status == RETRYING:
                held, held_code = True, claimed.error_code
        if message_id is None or held:
            continue  # sent (or being sent) already for this key, or left for the sweep
        replies = _twiml_replies()
        if replies is not None and replies.answers(to_number, from_number):
            reply = TakenReply(message_id, part, responder_id, texter, retry_refused, recipient)
            taken, earlier = replies.take(reply) if in_twiml else (False, replies.spill())
            # Those taken for the answer before it go over REST first; if one is left for the
            # sweep, this part follows it there.
            waiting = _send_spilled(earlier, to_number, from_number)
            if recipient is not None and recipient in waiting:
                _hold(message_id)
                held = True
                continue
            if taken:
                sent_any = True
                continue
        if recipient is not None and _webhook_out_of_time():
            _hold(message_id)  # with the parts after it: sent beside the answer, in order
            held = True
            continue
        outcome = _send_over_rest(
            message_id, to_number, from_number, part, responder_id=responder_id, texter=texter,
            retry_refused=retry_refused,
        )  # fmt: skip
        if outcome is True:
            sent_any = True
        elif outcome is False:
            return sent_any
        else:
            held, held_code = True, outcome
    if held and recipient is not None and _webhook_out_of_time():
        texts_held_for_time.send(conversation_id)
    return sent_any


def _webhook_out_of_time() -> bool:
    """Whether this request, a webhook under the deadline, has used its share for REST sends.
    False outside one (a job, the sweep, the console): those have no caller's deadline; and
    once the deadline has answered for it, as nothing then waits on this handler."""
    if not has_request_context():
        return False
    arrived_at = request.environ.get(ARRIVED_AT)
    if arrived_at is None or request.environ.get(PROGRESS, {}).get(ANSWERED):
        return False
    deadline: float = current_app.extensions["crisisline.settings"].voice_deadline_seconds
    return time.monotonic() - arrived_at > deadline * WEBHOOK_REST_SHARE


# ``send_text``'s read of a part claimed before under its key (a re-run only).
_CLAIM_OF = select(Message.status, Message.error_code).where(Message.idempotency_key == bindparam("key"))
# An earlier text to the same recipient still waits for the sweep: the claim's subquery, read
# through the conversation's texts (``ix_messages_conversation_id``); the WHERE values are bound
# under names that are no column's (``crisisline.db``). Never an
# offer (``c<id>:offer:<offer id>``): what follows it in its conversation comes once the
# counselor has taken it (their backlog, the texter's next words), when it says nothing more.
_WAITING_BEFORE = (
    select(Message.id)
    .where(
        or_(
            Message.status == constant(RETRYING),
            # Being tried again by the sweep right now (``_TRY_AGAIN``: claimed, its code kept,
            # no SID yet): refused once more, it would be behind whatever went out meanwhile.
            and_(Message.status == "claimed", Message.error_code.is_not(None), Message.message_sid.is_(None)),
        ),
        Message.conversation_id == bindparam("to_conversation"),
        Message.party == bindparam("to_party"),
        or_(Message.party != "counselor", Message.responder_id == bindparam("to_responder")),
        Message.idempotency_key.not_like("%:offer:%"),
    )
    .exists()
)


def _claim_in_order(claim: dict[str, object]) -> tuple[int | None, bool]:
    """Claim a part of one of the sweep's texts: ``RETRYING`` (no error code: Twilio never
    refused it) if its recipient has an earlier text waiting for the sweep or being tried again
    by it (``_WAITING_BEFORE``), else ``claimed``. One
    statement, the read inside the INSERT: the webhook pays no round trip for it. Returns the
    new row's id (None if claimed before) and whether it waits for the sweep."""
    statement = _insert_in_order(db.session.get_bind().dialect.name)
    params = {**claim, "to_conversation": claim["conversation_id"], "to_party": claim["party"],
              "to_responder": claim["responder_id"]}  # fmt: skip
    row = db.session.execute(statement, params).first()
    if row is None:
        return None, False
    return row.id, row.status == RETRYING


@cache
def _insert_in_order(dialect: str) -> Insert:
    """``_claim_in_order``'s INSERT, built once per backend."""
    keys = ("conversation_id", "direction", "party", "idempotency_key", "responder_id", "sealed_body", "segments",
            "status_rank", "error_code")  # fmt: skip
    columns: dict[str, object] = {name: bindparam(name) for name in keys}
    columns["status"] = case((_WAITING_BEFORE, RETRYING), else_=bindparam("status"))
    return insert_ignoring_duplicates(Message, columns).returning(Message.id, Message.status)


def _send_spilled(spilled: list[TakenReply], to_number: str, from_number: str) -> set[Recipient]:
    """Replies taken for a webhook's answer that now go over REST instead, in order (they did
    not all fit in it). One refused for now holds the sweep's texts to its recipient after it
    (``RETRYING`` behind it, unsent). Returns the recipients now waiting for the sweep."""
    waiting: set[Recipient] = set()
    for reply in spilled:
        if reply.recipient is not None and reply.recipient in waiting:
            _hold(reply.message_id)
            continue
        outcome = _send_over_rest(reply.message_id, to_number, from_number, reply.text,
                                  responder_id=reply.responder_id, texter=reply.texter,
                                  retry_refused=reply.retry_refused)  # fmt: skip
        if outcome is not True and outcome is not False and reply.recipient is not None:
            waiting.add(reply.recipient)
    return waiting


def _hold(message_id: int) -> None:
    """A claimed part not sent now: left for the sweep behind an earlier text to the same
    recipient (no error code: Twilio never refused it). Committed."""
    db.session.execute(
        update(Message).where(Message.id == message_id, Message.status == "claimed").values(status=RETRYING)
    )
    db.session.commit()


def _refused_for_now(error: TwilioRestException) -> int | None:
    """The code to keep for a refusal after which Twilio created nothing and a later try may
    be taken (``REFUSED_FOR_NOW``), or None."""
    if error.code in REFUSED_FOR_NOW_CODES:
        return int(error.code)
    if error.status in REFUSED_FOR_NOW_STATUSES:
        # Kept as the HTTP status when Twilio's code is one we do not list (a 429 carrying
        # another rate-limit code): whoever reads it back knows it among ``REFUSED_FOR_NOW``.
        return int(error.status)
    return None


def _send_over_rest(
    message_id: int, to_number: str, from_number: str, part: str, *, responder_id: str | None = None,
    texter: Texter | None = None, retry_refused: bool = False,
) -> bool | int:  # fmt: skip
    """One claimed part, over the REST API: True if Twilio took it, False if not; with
    ``retry_refused``, a refusal for now leaves it ``RETRYING`` and returns its code (an int)."""
    try:
        created = rest_client().messages.create(
            to=to_number, from_=from_number, body=part,
            status_callback=public_url("sms.message_status", message=message_id),
        )  # fmt: skip
    except TwilioRestException as error:
        code = _refused_for_now(error)
        if retry_refused and code is not None:
            # Nothing was created: the same row, still claimed under its key, is tried again by
            # the minute's sweep; never here (a webhook's REST calls have a budget).
            log.warning("text %s refused for now (Twilio %s, HTTP %s): the sweep tries it again",
                        message_id, error.code, error.status)  # fmt: skip
            # Only from this try's claim: a status callback that moved the row on meanwhile
            # stands (written back ``RETRYING``, the sweep would send it again).
            db.session.execute(
                update(Message)
                .where(Message.id == message_id, Message.status == "claimed")
                .values(status=RETRYING, status_rank=0, error_code=code)
            )
            db.session.commit()
            return code
        log.warning("text %s not sent: Twilio error %s", message_id, error.code)
        # A refusal for now is kept as such (``REFUSED_FOR_NOW``): a one-text contact retries it.
        _failed(message_id, code if code is not None else error.code, responder_id=responder_id, texter=texter)
        return False
    except (requests.RequestException, OSError) as error:
        # Left "claimed": never retried blindly (it may have gone out). After two minutes the
        # counselor's thread and the live board say it may not have been sent (``sms.delivery``).
        log.error("text %s: Twilio unreachable (%s); left for review", message_id, type(error).__name__)
        return False
    db.session.execute(_SENT, {"message": message_id, "sid": created.sid})
    commit_keeping_loaded()
    return True


def _failed(message_id: int, code: int | None, *, responder_id: str | None, texter: Texter | None) -> None:
    """Twilio refused this text for good: failed, and whoever must know is told (committed)."""
    _set(message_id, status="failed", status_rank=4, error_code=code)
    if code == OPTED_OUT and texter is not None:
        mark_opted_out(texter)
    blocked = responder_id if code == OPTED_OUT else None
    if blocked is not None:
        _pause_blocked(blocked)
    db.session.commit()
    if blocked is not None:  # their phone ringing for a caller: the caller's next person now
        events.send_responder_paused(blocked)
    _tell_if_a_relay_to_a_texter(message_id)


# An earlier text to the same recipient that waits for a try or is being tried right now:
# one process's try must not overtake another's (the sweep beside a webhook's held texts).
_EARLIER = aliased(Message)
_EARLIER_WAITING = (
    select(_EARLIER.id)
    .where(
        _EARLIER.id < Message.id,
        _EARLIER.conversation_id == Message.conversation_id,
        _EARLIER.party == Message.party,
        or_(_EARLIER.party != "counselor", _EARLIER.responder_id == Message.responder_id),
        or_(
            _EARLIER.status == constant(RETRYING),
            and_(_EARLIER.status == "claimed", _EARLIER.error_code.is_not(None), _EARLIER.message_sid.is_(None)),
        ),
        _EARLIER.idempotency_key.not_like("%:offer:%"),
    )
    .exists()
)
_TRY_AGAIN = (
    update(Message)
    .where(Message.id == bindparam("message"), Message.status == RETRYING, ~_EARLIER_WAITING)
    # A code while in flight (0 for a text held only for order), so later texts to the same
    # person still wait behind it (``_WAITING_BEFORE``); sent, ``_SENT`` clears it.
    .values(status="claimed", error_code=func.coalesce(Message.error_code, 0))
    .execution_options(synchronize_session=False)
)


def retry_refused(
    message_id: int, to_number: str, from_number: str, *, responder_id: str | None, texter: Texter | None,
    last_try: bool,
) -> str:  # fmt: skip
    """One more try of a text Twilio refused for now (``RETRYING``), by whichever process claims
    it first (back to ``claimed``: one try at a time, never two copies). Refused for now again:
    ``RETRYING`` again, unless ``last_try``, when it fails for good. What became of it: "sent",
    "refused" (for now, or for good), "unreachable" (left claimed, as any text Twilio could not
    be asked about: it may have gone out), or "taken" (another process has this try, or an
    earlier text to the same person still waits or is being tried: it goes first)."""
    claimed = db.session.execute(_TRY_AGAIN, {"message": message_id}).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if not claimed:
        return "taken"
    sealed = db.session.scalar(select(Message.sealed_body).where(Message.id == message_id))
    part = vault().open(sealed, context=BODY_CONTEXT) if sealed else ""
    outcome = _send_over_rest(message_id, to_number, from_number, part, responder_id=responder_id,
                              texter=texter, retry_refused=not last_try)  # fmt: skip
    if outcome is True:
        return "sent"
    if outcome is False and db.session.scalar(select(Message.status).where(Message.id == message_id)) == "claimed":
        # Left claimed for review (it may have gone out): it no longer holds later texts back.
        db.session.execute(
            update(Message).where(Message.id == message_id, Message.status == "claimed").values(error_code=None)
        )
        db.session.commit()
        return "unreachable"
    return "refused"


def give_up_refused(message_id: int) -> None:
    """A text refused for now that will not be tried again (its recipient is gone, or no longer
    the one it was for): failed with the refusal's code, as a refusal for good is."""
    failing = update(Message).where(Message.id == message_id, Message.status == RETRYING)
    failed = db.session.execute(failing.values(status="failed", status_rank=4)).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if failed:
        _tell_if_a_relay_to_a_texter(message_id)


def handed_to_twilio(message_ids: Iterable[int]) -> None:
    """Replies now in a webhook's TwiML: ``queued`` at Twilio, as a REST send's would be, their
    SIDs known from their first status callback (``record_status``). Rows a callback moved on
    already stay as they are."""
    ids = list(message_ids)
    if ids:
        db.session.execute(
            update(Message).where(Message.id.in_(ids), Message.status_rank < 1).values(status="queued", status_rank=1)
        )
        db.session.commit()


def tell_supervisors(
    document: RoutingDocument, *, key: str, body: str, from_number: str, earlier: Sequence[str] = ()
) -> int:
    """Text ``body`` to every supervisor in the routing, once each for ``key``; returns how many
    were sent now. ``body`` names a case, never a number or what anyone wrote. ``earlier``: the
    keys it went out under before (an alert's earlier rounds): one who has it under one of
    them (``supervisors_told``) is not texted again."""
    told_before = supervisors_told(document, earlier) if earlier else set()
    told = 0
    for supervisor in document.supervisors:
        if supervisor.id in told_before:
            continue
        told += int(
            send_text(key=f"{key}:{supervisor.id}", to_number=supervisor.phone, from_number=from_number, body=body,
                      party="supervisor")
        )  # fmt: skip
    return told


def supervisors_told(document: RoutingDocument, keys: Sequence[str]) -> set[str]:
    """The supervisors (ids) who have the text ``tell_supervisors`` sent under one of ``keys``:
    taken by Twilio, or perhaps (its request's answer lost: never sent blindly again); not one
    Twilio refused."""
    by_key = {f"{key}:{supervisor.id}": supervisor.id for supervisor in document.supervisors for key in keys}
    if not by_key:
        return set()
    found = db.session.scalars(
        select(Message.idempotency_key).where(
            Message.idempotency_key.in_(list(by_key)), Message.status.not_in(UNSENT_STATUSES)
        )
    )
    return {by_key[key] for key in found if key is not None}


# Built once: every text sent runs it (``crisisline.db``, "Statements built once").
# A status callback may come before it: the SID is kept, the status never moved back. A text
# taken on a retry drops its refusal's code (else a later failure would be told as that refusal).
_SENT = (
    update(Message)
    .where(Message.id == bindparam("message"))
    .values(
        message_sid=bindparam("sid"),
        status=case((Message.status_rank < 1, "queued"), else_=Message.status),
        status_rank=case((Message.status_rank < 1, 1), else_=Message.status_rank),
        error_code=case((Message.status_rank < 1, None), else_=Message.error_code),
    )
    .execution_options(synchronize_session=False)
)


def _set(message_id: int | None, **values: object) -> None:
    db.session.execute(update(Message).where(Message.id == message_id).values(**values))


def record_status(message_id: int, status: str, error_code: str | None, message_sid: str | None = None) -> None:
    """A delivery status callback; out-of-order and repeated ones never move a text backwards.
    ``message_sid``: the callback's, kept for a reply sent in TwiML (its row had none).

    Also a TwiML reply's ``action`` request, whose parameters Twilio's documents do not pin
    down: if they are the inbound text's ("received", its SID), they say nothing of our text."""
    if status in INBOUND_STATUSES:
        return
    rank = STATUS_RANK.get(status, 0)
    values: dict[str, object] = {"status": status, "status_rank": rank}
    if message_sid:
        values["message_sid"] = func.coalesce(Message.message_sid, message_sid)
    if error_code and error_code.isdigit():
        values["error_code"] = int(error_code)
    moving = update(Message).where(Message.id == message_id, Message.status_rank < rank)
    try:
        moved = db.session.execute(moving.values(**values)).rowcount  # type: ignore[attr-defined]
    except IntegrityError:  # the SID is another text's: the status alone
        db.session.rollback()
        values.pop("message_sid", None)
        moved = db.session.execute(moving.values(**values)).rowcount  # type: ignore[attr-defined]
    # Only a callback that moved the row is news: a TwiML reply's failure comes twice (its action
    # and its status callback), and Twilio may repeat either, after the person's START too.
    blocked: str | None = None
    if moved and error_code == str(OPTED_OUT):
        refused = _texter_of(message_id)
        if refused is not None:  # as of when it was sent: a text sent before their START says nothing now
            mark_opted_out(refused[0], at=refused[1])
        blocked = db.session.scalar(_COUNSELOR_OF, {"message": message_id})
        if blocked is not None:  # a reply in TwiML to a counselor who sent STOP, say
            _pause_blocked(blocked)
    db.session.commit()
    if blocked is not None:  # their phone ringing for a caller: the caller's next person now
        events.send_responder_paused(blocked)
    if moved and status in UNSENT_STATUSES:  # a repeated or late callback tells nobody again
        _tell_if_a_relay_to_a_texter(message_id)


_COUNSELOR_OF = select(Message.responder_id).where(
    Message.id == bindparam("message"), Message.party == "counselor", Message.responder_id.is_not(None)
)


def _pause_blocked(responder_id: str) -> None:
    """A counselor whose phone blocks the line (21610: they texted STOP) can't get offers:
    pause them, loudly (not committed). A text offer open to them is made due at once: its
    texter is handed on by the clock's next sweep, not left waiting out an offer never read."""
    set_paused(responder_id, True, TEXTS_BLOCKED)
    make_offers_due(responder_id)
    log.error("responder %s blocks texts from the line (21610): paused", responder_id)


def _tell_if_a_relay_to_a_texter(message_id: int) -> None:
    """Send ``relay_to_texter_failed`` if this failed text was a counselor's words to a texter.
    A receiver's failure is logged: the console's thread shows the failure anyway."""
    found = db.session.execute(_FAILED_TEXT, {"message": message_id}).first()
    if found is None or found.conversation_id is None or ":relay:" not in (found.idempotency_key or ""):
        return
    try:
        relay_to_texter_failed.send(message_id, conversation_id=found.conversation_id, error_code=found.error_code)
    except Exception as error:
        log.error("relay-to-texter-failed receiver failed: %s", type(error).__name__)
        db.session.rollback()


_FAILED_TEXT = select(Message.conversation_id, Message.idempotency_key, Message.error_code).where(
    Message.id == bindparam("message"), Message.party == "texter"
)


def _texter_of(message_id: int) -> tuple[Texter, datetime] | None:
    """The texter a text went to, and when it was sent (claimed)."""
    message = db.session.get(Message, message_id)
    if message is None or message.conversation_id is None or message.party != "texter":
        return None
    conversation = db.session.get(Conversation, message.conversation_id)
    texter = db.session.get(Texter, conversation.texter_id) if conversation else None
    return (texter, message.created_at) if texter is not None else None


def mark_opted_out(texter: Texter, *, at: datetime | None = None) -> bool:
    """The person opted out at ``at`` (a STOP's arrival, a text Twilio refused with 21610 by when
    it was sent; now if not given). Not committed. False: they opted in (or out) later than
    that, and that stands (``Texter.opt_changed_at``). ``opted_out_at`` stays the first of this
    opt-out: texts written since then are the ones a person must see to."""
    when = at or utcnow()
    return _change_opt(texter, when, opted_out=True, opted_out_at=func.coalesce(Texter.opted_out_at, when))


def mark_opted_in(texter: Texter, *, at: datetime) -> bool:
    """The person opted in (START) at ``at``: as ``mark_opted_out``, the other way."""
    return _change_opt(texter, at, opted_out=False, opted_out_at=None)


def _change_opt(texter: Texter, at: datetime, **values: object) -> bool:
    # One conditional UPDATE: of a STOP and a START handled at once, the later sent wins
    # whichever commits last (the second waits for the row, then reads the first's time).
    changed = db.session.scalars(
        update(Texter)
        .where(Texter.id == texter.id, or_(Texter.opt_changed_at.is_(None), Texter.opt_changed_at <= at))
        .values(opt_changed_at=at, **values)
        .returning(Texter)
        .execution_options(populate_existing=True)  # ``texter`` as the row now is
    ).one_or_none()
    return changed is not None
