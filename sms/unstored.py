"""Texts that arrived while the database could not store them: kept in Redis, sealed, until
the clock stores and handles them. The webhook's fail-safe reply already pointed the sender
to the backup line; this keeps what they wrote, so a counselor still gets to read it.

Only what storing needs is kept (the message id, the sender, the line's number, the body,
the media count, when it arrived), sealed whole with the Vault: Redis never holds a number
or words in clear. A text that Redis could not take either is lost, loudly (logged by its
MessageSid, Twilio's id, with which an operator can still find it in Twilio's logs).

A person must learn of a kept text that could never be stored, even while the database (where
every text out is claimed first, once) still refuses writes: its alert is owed in Redis until
the supervisors have been told, and every run tries it again.

Twilio keeps its own copy of a kept text (their number and words) and of the fail-safe reply
(their number), as of any text. The retention purge that removes a kept text from Redis has
them deleted there too, as a stored text's are (``workers.twilio_records``, kind ``texts``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from crisisline import twilio_params
from crisisline.db import db
from crisisline.phone import caller_number
from crisisline.privacy import DecryptionError
from crisisline.retention import Cutoffs, registers_purge
from crisisline.settings import Settings
from crisisline.texts_at_twilio import cutoff_stamp, note_texts
from ivr.call_log import PHONE_CONTEXT  # as ``Texter.sealed_number`` is sealed: the deleting job opens it so
from sms import outbox
from sms.conversations import SUMMARY_ABOVE

log = logging.getLogger(__name__)
KEY = "sms:unstored"
DEAD_KEY = "sms:unstored:dead"  # kept texts that could never be stored: for a person (sealed)
# Alerts owed for them: MessageSid -> the line's number it was sent to, sealed (no texter's
# number, no words). No expiry: an entry goes once the supervisors are told.
ALERT_OWED_KEY = "sms:unstored:dead:alert-owed"
CONTEXT = "sms-unstored"
ALERT_CONTEXT = "sms-unstored-alert"
# Kept texts the purge removed, whose copies at Twilio (the text, the fail-safe reply) are still
# to be noted for deleting: MessageSid -> both numbers and the purge's cutoff, sealed (no words).
# Put in the kept text's place in one MULTI, and gone once a purge that noted its row has
# committed: a row is never lost with the text already gone. No expiry, as for alerts owed.
TWILIO_OWED_KEY = "sms:unstored:twilio-owed"
TWILIO_CONTEXT = "sms-unstored-twilio"
_NOTED = "sms.unstored.twilio_owed_noted"  # Session.info: Redis, and the entries this transaction noted
FIELDS = ("MessageSid", "From", "To", "Body", "NumMedia", "OptOutType", "MessagingServiceSid")
KEPT_FOR = timedelta(days=7)  # an outage longer than this is for a human; the key then expires
# A hung Redis must not hold a texter's webhook: it is already failing over.
REDIS_TIMEOUT_SECONDS = 0.5
BATCH = 100
BUDGET_SECONDS = 30.0
GIVE_UP_AFTER = timedelta(hours=6)
# Owed alerts are tried after the kept texts: with the database away each try may wait for it.
ALERT_BUDGET_SECONDS = 10.0


@dataclass(frozen=True)
class KeptText:
    params: dict[str, str]  # the webhook's parameters that storing reads (``FIELDS``)
    received_at: datetime


def _redis() -> redis.Redis:
    client: redis.Redis | None = current_app.extensions.get("crisisline.unstored_redis")
    if client is None:
        settings: Settings = current_app.extensions["crisisline.settings"]
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
        )
        current_app.extensions["crisisline.unstored_redis"] = client
    return client


def keep(params: Mapping[str, str], received_at: datetime) -> bool:
    """Keep one text the database would not take. True if Redis has it. Never raises."""
    # The MessageSid is Twilio's id, not personal: with it an operator can find a lost text.
    sid = twilio_params.message_key(params.get("MessageSid", ""))
    try:
        record = {name: params.get(name, "") for name in FIELDS} | {"received_at": received_at.isoformat()}
        sealed = outbox.vault().seal(json.dumps(record), context=CONTEXT)
        with _redis().pipeline() as pipe:  # one round trip: kept and its expiry renewed together
            pipe.rpush(KEY, sealed)
            pipe.expire(KEY, KEPT_FOR)
            pipe.execute()
    except Exception as error:  # Redis away or hung, or anything else: the answer goes out regardless
        log.error("text %s could not be stored or kept, it is lost (%s)", sid, type(error).__name__)
        return False
    log.warning("text %s could not be stored: kept in Redis for the clock", sid)
    return True


def store_kept(
    store: Callable[[KeptText], bool],
    *,
    on_dead: Callable[[str, str | None], None],
    on_many_dead: Callable[[list[str], str | None], None] | None = None,
    budget_seconds: float = BUDGET_SECONDS,
) -> int:
    """Store each kept text with ``store``, which returns True if it stored it now (False: it
    was stored already; it must be idempotent by MessageSid, as two runs may overlap), and
    forget it once stored. One that fails, or cannot be opened (sealed under a key this process
    lacks, mid-rotation), goes to the back of the list: it holds no other up. One still failing
    after ``GIVE_UP_AFTER`` moves to ``DEAD_KEY`` with its alert owed (one transaction), and
    ``on_dead(its MessageSid, the line's number it was sent to or None)`` tells a person: after
    the kept texts, this run and every run until it returns (so it must be idempotent by the
    MessageSid), each alert's failure holding no other up. More than ``MANY_DEAD`` owed at once
    (an outage that outlasted ``GIVE_UP_AFTER`` for many texts) go to ``on_many_dead(their
    MessageSids, the first one's line number)`` instead, one alert for them all. Stops after
    ``budget_seconds`` (the clock has other work). Returns how many were stored now."""
    client = _redis()
    stored = 0
    started = time.monotonic()
    for item in client.lrange(KEY, 0, BATCH - 1):
        if time.monotonic() - started > budget_seconds:
            break
        token = item.decode() if isinstance(item, bytes) else str(item)
        try:
            record = json.loads(outbox.vault().open(token, context=CONTEXT))
            kept = KeptText(
                {name: str(record.get(name, "")) for name in FIELDS}, datetime.fromisoformat(record["received_at"])
            )
        except (DecryptionError, ValueError, KeyError, TypeError) as error:
            log.error("a kept text could not be opened (%s): left for a process with its key", type(error).__name__)
            _to_the_back(client, token)
            continue
        sid = twilio_params.message_key(kept.params["MessageSid"])
        try:
            stored += int(store(kept))
        except Exception as error:  # class name only: the text may be in it
            db.session.rollback()
            if datetime.now(UTC) - kept.received_at <= GIVE_UP_AFTER:
                log.error("kept text %s could not be stored yet: %s", sid, type(error).__name__)
                _to_the_back(client, token)
                continue
            log.error("kept text %s still could not be stored: moved to %s for a person", sid, DEAD_KEY)
            owed = outbox.vault().seal(json.dumps({"To": kept.params["To"]}), context=ALERT_CONTEXT)
            with client.pipeline() as pipe:  # MULTI: never given up on without its alert owed
                pipe.rpush(DEAD_KEY, token)
                pipe.expire(DEAD_KEY, KEPT_FOR)
                pipe.hset(ALERT_OWED_KEY, sid, owed)
                pipe.lrem(KEY, 1, token)
                pipe.execute()
            continue
        client.lrem(KEY, 1, token)
    _tell_owed(client, on_dead, on_many_dead)
    return stored


# More dead texts than this owed at once are told of in one alert (``store_kept``): a text per
# text would bury it, as for texts stuck in the sweep, whose threshold this is.
MANY_DEAD = SUMMARY_ABOVE


def _tell_owed(
    client: redis.Redis, on_dead: Callable[[str, str | None], None],
    on_many_dead: Callable[[list[str], str | None], None] | None = None,
) -> None:  # fmt: skip
    """Each alert still owed is tried; one that returns is no longer owed. One that raises (the
    database still refusing its rows) stays owed for the next run. Past ``MANY_DEAD``, one
    alert for them all, owed until it returns."""
    owed: list[tuple[str, str | None]] = []
    for field, value in sorted(client.hgetall(ALERT_OWED_KEY).items()):
        sid = field.decode() if isinstance(field, bytes) else str(field)
        sealed = value.decode() if isinstance(value, bytes) else str(value)
        try:
            to_number: str | None = str(json.loads(outbox.vault().open(sealed, context=ALERT_CONTEXT))["To"])
        except (DecryptionError, ValueError, KeyError, TypeError):
            to_number = None  # sealed under a key this process lacks: no key is worth a person not told
        owed.append((sid, to_number))
    if on_many_dead is not None and len(owed) > MANY_DEAD:
        try:
            on_many_dead([sid for sid, _ in owed], owed[0][1])
        except Exception as error:  # class name only; the next run tries again
            db.session.rollback()
            log.error("supervisors not told yet of %d dead kept texts: %s", len(owed), type(error).__name__)
            return
        client.hdel(ALERT_OWED_KEY, *(sid for sid, _ in owed))
        return
    started = time.monotonic()
    for sid, to_number in owed:
        if time.monotonic() - started > ALERT_BUDGET_SECONDS:
            break
        try:
            on_dead(sid, to_number)
        except Exception as error:  # class name only; the next run tries again
            db.session.rollback()
            log.error("supervisors not told yet of dead kept text %s: %s", sid, type(error).__name__)
            continue
        client.hdel(ALERT_OWED_KEY, sid)


@registers_purge("kept_texts")
def purge_kept(cutoffs: Cutoffs) -> int:
    """Kept texts (still to be stored, or given up on) that arrived before the texts'
    retention cutoff are removed, as stored texts are: a list's expiry is renewed by every
    text added, so it alone would keep an old one for as long as outages keep coming. One that
    cannot be opened (sealed under a retired key) is left to that expiry. Alerts owed for them
    (``ALERT_OWED_KEY``) hold nothing personal (a MessageSid, the line's own number, sealed),
    and go once told: they are not purged, so none is lost.

    Twilio's copies of each removed text go too: what finding them takes (no words) is owed in
    its place (``TWILIO_OWED_KEY``), and every owed one is noted as a ``TwilioRecord`` of kind
    texts in the purge's transaction, then forgotten once that commits (never before: a commit
    that fails leaves it for the next purge, which notes it again, once, by its key). Never
    raises for Redis: with Redis away, the rest of the purge goes on."""
    removed = 0
    try:
        client = _redis()
        for key in (KEY, DEAD_KEY):
            for item in client.lrange(key, 0, -1):
                token = item.decode() if isinstance(item, bytes) else str(item)
                try:
                    record = json.loads(outbox.vault().open(token, context=CONTEXT))
                    received_at = datetime.fromisoformat(record["received_at"])
                except (DecryptionError, ValueError, KeyError, TypeError):
                    continue
                if received_at < cutoffs.texts and _forget_kept(client, key, token, record, cutoffs.texts):
                    removed += 1
                    if key == KEY:  # never stored: lost to its retention window, as an operator should know
                        sid = twilio_params.message_key(str(record.get("MessageSid", "")))
                        log.error("kept text %s was never stored and is past its retention: removed", sid)
        owed = client.hgetall(TWILIO_OWED_KEY)
    except Exception as error:  # Redis away, or anything else: the rest of the purge goes on
        log.error("kept texts not purged this time: %s", type(error).__name__)
        return removed
    _note_owed(client, owed, cutoffs.now)
    return removed


def _forget_kept(client: redis.Redis, key: str, token: str, record: Mapping[str, Any], cutoff: datetime) -> bool:
    """The kept text goes from ``key`` and what deleting its copies at Twilio takes is owed in
    its place, in one MULTI. False if another purge removed it first."""
    texter, line = caller_number(str(record.get("From", ""))), caller_number(str(record.get("To", "")))
    owed = None
    if texter and line:  # withheld or unreadable: Twilio cannot be asked for texts by it
        owed = outbox.vault().seal(json.dumps({"From": texter, "To": line, "cutoff": cutoff.isoformat()}),
                                   context=TWILIO_CONTEXT)  # fmt: skip
    with client.pipeline() as pipe:
        pipe.lrem(key, 1, token)
        if owed is not None:
            pipe.hset(TWILIO_OWED_KEY, twilio_params.message_key(str(record.get("MessageSid", ""))), owed)
        return bool(pipe.execute()[0])


def _note_owed(client: redis.Redis, owed: Mapping[Any, Any], now: datetime) -> None:
    """Each owed entry becomes a ``TwilioRecord`` of kind texts in the caller's transaction
    (database errors are the purge's: it fails whole, and the entries stay owed); the entries
    noted are forgotten once it commits (``_forget_noted``). One this process cannot open is
    left for a process with its key."""
    noted = []
    for field, value in owed.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        try:
            sealed = value.decode() if isinstance(value, bytes) else str(value)
            entry = json.loads(outbox.vault().open(sealed, context=TWILIO_CONTEXT))
            texter, line, cutoff = str(entry["From"]), str(entry["To"]), datetime.fromisoformat(entry["cutoff"])
        except (DecryptionError, ValueError, KeyError, TypeError):
            continue
        note_texts(_record_key(name, cutoff), sealed_number=outbox.vault().seal(texter, context=PHONE_CONTEXT),
                   line_number=line, sent_before=cutoff, now=now)  # fmt: skip
        noted.append(name)
    if noted:  # after the INSERTs: the transaction has begun, so its end drops these with it
        db.session.info.setdefault(_NOTED, (client, set()))[1].update(noted)


def _record_key(field: str, cutoff: datetime) -> str:
    """The row's key: 61 characters for a MessageSid (``TwilioRecord.sid`` holds 64); a
    malformed one (kept under its digest) by a digest of the same length."""
    ref = field if twilio_params.SID.fullmatch(field) else hashlib.sha256(field.encode()).hexdigest()[:34]
    return f"texts:kept:{ref}:{cutoff_stamp(cutoff)}"


@event.listens_for(Session, "after_commit")
def _forget_noted(session: Session) -> None:
    """The owed entries a purge noted go once its transaction has committed (a savepoint's
    commit is not that). Redis away now: they stay, and the next purge notes them again."""
    if session.in_nested_transaction():
        return
    noted: tuple[redis.Redis, set[str]] | None = session.info.pop(_NOTED, None)
    if noted is None:
        return
    client, fields = noted
    try:
        client.hdel(TWILIO_OWED_KEY, *fields)
    except Exception as error:  # the commit has happened: never fail it
        log.warning("kept texts' Twilio copies noted, not forgotten in Redis yet: %s", type(error).__name__)


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    """A rollback or close: nothing was noted, so the entries stay owed."""
    if transaction.parent is None:
        session.info.pop(_NOTED, None)


def _to_the_back(client: redis.Redis, token: str) -> None:
    with client.pipeline() as pipe:
        pipe.lrem(KEY, 1, token)
        pipe.rpush(KEY, token)
        pipe.execute()
