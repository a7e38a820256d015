"""Metrics bench: a year of a busy line in PostgreSQL, the rollup, and how long the pages take.

A fresh scratch database (``metrics_bench_<pid>``, dropped afterwards), migrated by the release
step (``flask db upgrade``), is filled with a year of synthetic contacts of a busy line
(default 1,000,000: about 70 % calls, 30 % text conversations) in the shapes ``metrics/load.py``
reads:

- calls with their event log: ``call.started``, the menu's events, ``route.decided``,
  ``transfer.started``, missed / passed offers (``offer.missed``, ``offer.passed``,
  ``offer.ended``), then ``offer.accepted`` + ``transfer.connected`` + ``offer.left`` +
  ``transfer.ended``, or ``transfer.abandoned``, ``transfer.to_backup`` + ``backup.dialled``,
  or ``callback.requested``; calls that end in the menus; calls routed straight to the backup
  line; co-responder units joining; ``call.status``. Answered calls wait tens of seconds, more
  in the evening peak; the callbacks' own searches are ``mode='callback'`` transfers;
- callbacks (from calls and from texts' ``CALL``) with their ``callback.*`` outcome events;
- text conversations with their offers (expired, then taken) and messages (the menus, the
  texter's words, the counselor's relayed words ``c<id>:relay:<n>``);
- check-ins (asked, consented or declined; sent, replied, escalated) and survey answers.

Demand follows the hour of day (a night trough, an evening peak), the weekday and the season,
in the line's time zone (America/Chicago, DST included). Rows go in with ``COPY`` (psycopg),
one day per transaction, all but the last day: a second process generates the days and
formats them as COPY text while this one feeds the server, and the load skips the foreign keys'
per-row checks (``session_replication_role = replica``; the ids are consistent by construction).
The indexes are kept, filled as the app's inserts fill them. Then, each in a fresh process (``spawn``) so
its peak RSS is its own:

1. the rollup's first build (``metrics.rollup.refresh`` over everything);
2. the last day is loaded, and an incremental refresh timed (what the clock's job does);
3. the pages on the rollup (``metrics.build_report``: refresh the tail, then SQL aggregates)
   for a month, a quarter and the year, voice and sms, overall and by hour; the year's voice
   by language, need and weekday; ``metrics.build_staffing`` for the last 4 weeks;
4. the baseline: the old path (``metrics.report_from_events``, every event of the period
   replayed in Python) on the month.

Each run reports wall seconds, the seconds spent in SQL, the slowest statement (the app's
engine kills a statement after ``STATEMENT_TIMEOUT_MS``, 4 s), and peak RSS. The month's and
the year's voice aggregates are ``EXPLAIN (ANALYZE, BUFFERS)``ed.

    .venv/bin/python -m bench.metrics_year [--contacts 1000000] [--quick] [--output PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from bench.common import (
    LINE_NUMBER,
    RESULTS,
    deployment_env,
    flask,
    fresh_database,
    machine,
    postgres_admin_url,
    redis_for_bench,
)
from crisisline.redis_server import free_port
from crisisline.settings import DEFAULT_ROUTING_FILE

YEAR_START, YEAR_END = date(2025, 11, 1), date(2026, 11, 1)  # local dates; the end excluded
PERIODS = {
    "month": (date(2026, 10, 1), YEAR_END),
    "quarter": (date(2026, 8, 1), YEAR_END),
    "year": (YEAR_START, YEAR_END),
}
STAFFING_WEEKS = 4
EXPLAINED = {("month", "voice", None), ("year", "voice", None)}

TZ = ZoneInfo("America/Chicago")
VOICE_SHARE = 0.70
# Relative demand per local hour (a night trough, an evening peak) and weekday (Mon first).
HOUR_WEIGHTS = (3, 2.4, 2, 1.6, 1.3, 1.2, 1.5, 2.2, 3, 3.8, 4.3, 4.6, 4.8, 4.9, 5, 5.1, 5.3, 5.6, 6, 6.4, 6.6, 6.4,
                5.6, 4.3)  # fmt: skip
WEEKDAY_WEIGHTS = (1.08, 1.04, 1.02, 1.0, 0.97, 0.92, 0.97)
LANGUAGES = (("en", 0.83), ("es", 0.17))
NEEDS = (("danger_now", 0.03), ("suicide", 0.22), ("mental_health", 0.40), ("substance_use", 0.10),
         ("domestic_violence", 0.08), ("something_else", 0.17))  # fmt: skip
COUNSELORS = ("ana-ruiz", "ben-carter", "chloe-nguyen", "diego-morales", "erin-walsh", "sam-okafor")
UNITS = ("unit-north", "county-mobile-crisis")

COLUMNS = {
    "calls": ("id", "call_sid", "line_number", "language", "need", "language_attempts", "need_attempts", "route",
              "status", "status_sequence", "duration_seconds", "started_at", "menu_completed_at", "ended_at"),
    "callbacks": ("id", "dedupe_key", "origin", "call_id", "conversation_id", "language", "need", "state",
                  "attempts", "queue_since", "requested_at", "connected_at", "finished_at", "outcome"),
    "transfers": ("id", "call_id", "caller_call_sid", "round", "language", "need", "state", "language_matched",
                  "started_at", "accepted_at", "connected_at", "ended_at", "end_reason", "mode", "callback_id",
                  "priority", "queued_since"),
    "call_events": ("id", "call_id", "occurred_at", "kind", "dedupe_key", "detail"),
    "texters": ("id", "number_hash", "opted_out", "created_at"),
    "conversations": ("id", "texter_id", "state", "language", "need", "priority", "menu_attempts", "counselor_id",
                      "line_number", "started_at", "queued_at", "assigned_at", "last_texter_at", "last_counselor_at",
                      "last_activity_at", "backup_offered_at", "closed_at", "close_reason"),
    "conversation_offers": ("id", "conversation_id", "responder_id", "state", "created_at", "expires_at",
                            "decided_at"),
    "messages": ("id", "conversation_id", "direction", "party", "message_sid", "idempotency_key", "responder_id",
                 "texter_id", "line_number", "num_media", "segments", "status", "status_rank", "created_at",
                 "handled_at"),
    "checkins": ("id", "dedupe_key", "origin", "call_id", "conversation_id", "texter_id", "language", "need",
                 "state", "asked_at", "consented_at", "due_at", "sent_at", "second_sent_at", "replied_at", "reply",
                 "flagged_at", "flag_reason"),
    "survey_responses": ("id", "dedupe_key", "origin", "need", "language", "asked_at", "answered_at", "rating"),
}  # fmt: skip
# Foreign keys point only backwards in this order (a text's callback names its conversation).
TABLE_ORDER = ("texters", "conversations", "conversation_offers", "messages", "calls", "callbacks", "transfers",
               "call_events", "checkins", "survey_responses")  # fmt: skip


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    roll, total = rng.random(), 0.0
    for value, weight in weighted:
        total += weight
        if roll < total:
            return value
    return weighted[-1][0]


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


@dataclass
class Day:
    """The rows of one day, per table, ready for COPY."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {table: [] for table in COLUMNS})


class Year:
    """Synthetic contacts, a day at a time; ids are assigned here (sequences set afterwards)."""

    def __init__(self, contacts: int, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - synthetic data, reproducible by seed
        self.contacts = contacts
        self.next_id = {table: 1 for table in COLUMNS}
        self.days = [YEAR_START + timedelta(days=n) for n in range((YEAR_END - YEAR_START).days)]
        weights = [
            WEEKDAY_WEIGHTS[day.weekday()] * (1 + 0.08 * math.cos(2 * math.pi * (day.timetuple().tm_yday - 20) / 365))
            for day in self.days
        ]
        total = sum(weights)
        exact = [contacts * weight / total for weight in weights]
        self.per_day = [int(value) for value in exact]
        for index in sorted(range(len(exact)), key=lambda i: exact[i] - self.per_day[i], reverse=True):
            if sum(self.per_day) >= contacts:
                break
            self.per_day[index] += 1
        self.hour_cum = [sum(HOUR_WEIGHTS[: h + 1]) for h in range(24)]
        self.texters = 0

    def _id(self, table: str) -> int:
        value = self.next_id[table]
        self.next_id[table] = value + 1
        return value

    def generate(self) -> Iterator[Day]:
        for day, count in zip(self.days, self.per_day, strict=True):
            rows = Day()
            for _ in range(count):
                hour = self.rng.choices(range(24), cum_weights=self.hour_cum)[0]
                local = datetime(day.year, day.month, day.day, hour, self.rng.randrange(60), self.rng.randrange(60))
                started = local.replace(tzinfo=TZ).astimezone(UTC)
                busy = HOUR_WEIGHTS[hour] / max(HOUR_WEIGHTS)  # waits are longer in the evening peak
                if self.rng.random() < VOICE_SHARE:
                    self.call(rows, started, busy)
                else:
                    self.conversation(rows, started, busy)
            yield rows

    # Voice ---------------------------------------------------------------------------------

    def call(self, out: Day, started: datetime, busy: float) -> None:
        rng = self.rng
        call_id = self._id("calls")
        sid = f"CA{call_id:032x}"
        events: list[tuple[datetime, str, str, dict[str, Any]]] = [
            (started, "call.started", "started", {"routing_version": 1})
        ]
        language = _pick(rng, LANGUAGES)
        need: str | None = None
        route: str | None = None
        clock = started + _seconds(rng.uniform(8, 20))
        events.append(
            (clock, "menu.language.chosen", "language:1", {"attempt": 1, "via": "dtmf", "language": language})
        )
        ended_in_menu = rng.random() < 0.07
        if ended_in_menu:
            end = clock + _seconds(rng.uniform(3, 30))
            self._call_row(out, call_id, sid, language, None, None, started, None, end)
            self._events(out, call_id, events, end)
            return
        need = _pick(rng, NEEDS)
        clock += _seconds(rng.uniform(10, 35))
        events.append((clock, "menu.need.chosen", "need:1", {"attempt": 1, "via": "dtmf", "need": need}))
        menu_done = clock
        if rng.random() < 0.03:  # nobody on call for this need and language: the backup line at once
            route = "backup"
            events.append((clock, "route.decided", "route", {"target": "backup", "reason": "nobody_available",
                                                            "language_matched": True, "responders": []}))  # fmt: skip
            events.append((clock, "backup.dialled", "backup:1", {"attempt": 1, "reason": "nobody_available"}))
            end = clock + _seconds(rng.uniform(60, 900))
            events.append((end, "backup.result", "backup-result:1", {"attempt": 1, "status": "completed"}))
            self._call_row(out, call_id, sid, language, need, route, started, menu_done, end)
            self._events(out, call_id, events, end)
            return
        units = need == "danger_now" and rng.random() < 0.5
        route = "co_responders" if units else "counselors"
        pool = UNITS if units else COUNSELORS
        events.append((clock, "route.decided", "route", {"target": route, "reason": "on_call", "language_matched": True,
                                                        "responders": list(pool[:3])}))  # fmt: skip
        transfer_id = self._id("transfers")
        queued = clock
        tag = {"transfer": transfer_id, "round": 1}
        events.append((clock, "transfer.started", f"transfer:{transfer_id}:started",
                       {**tag, "need": need, "language": language, "language_matched": True}))  # fmt: skip
        roll = rng.random()
        outcome = ("answered" if roll < 0.90 - 0.06 * busy else "abandoned" if roll < 0.96 - 0.03 * busy
                   else "to_backup" if roll < 0.98 else "callback")  # fmt: skip
        offer = self.next_id["transfers"] * 10  # offer ids only appear in dedupe keys
        misses = 0
        while rng.random() < 0.25 + 0.25 * busy and misses < 5:
            misses += 1
        give_up = {
            "abandoned": rng.expovariate(1 / (45 + 60 * busy)),
            "to_backup": 240.0,
            "callback": rng.uniform(30, 200),
        }.get(outcome, math.inf)
        for _ in range(misses):
            ring = rng.uniform(15, 22)
            if (clock - queued).total_seconds() + ring > give_up:
                break
            clock += _seconds(ring)
            offer += 1
            miss = rng.random()
            kind, detail = ("offer.missed", {"outcome": "no_answer"})
            if miss >= 0.85:
                kind, detail = ("offer.passed", {}) if miss < 0.95 else ("offer.ended", {"outcome": "no_decision"})
            events.append((clock, kind, f"offer:{offer}:outcome", {**tag, "responder": rng.choice(pool), **detail}))
        transfer_state, end_reason = "ended", "completed"
        accepted_at: datetime | None = None
        connected_at: datetime | None = None
        if outcome == "answered":
            clock += _seconds(rng.uniform(6, 20) + rng.expovariate(1 / (5 + 25 * busy)))
            offer += 1
            waited = (clock - queued).total_seconds()
            responder = rng.choice(pool)
            events.append((clock, "offer.accepted", f"offer:{offer}:outcome",
                           {**tag, "responder": responder, "speed_to_answer_seconds": round(waited)}))  # fmt: skip
            accepted_at = clock
            clock += _seconds(rng.uniform(1, 4))
            connected_at = clock
            events.append((clock, "transfer.connected", f"transfer:{transfer_id}:connected", tag))
            talk = rng.lognormvariate(math.log(600), 0.8)
            if not units and rng.random() < 0.03:
                offer += 1
                joined = clock + _seconds(talk / 2)
                events.append((joined, "offer.accepted", f"offer:{offer}:outcome",
                               {**tag, "responder": rng.choice(UNITS), "purpose": "join"}))  # fmt: skip
            clock += _seconds(talk)
            events.append((clock, "offer.left", f"offer:{offer}:left", {**tag, "responder": responder}))
            events.append((clock, "transfer.ended", f"transfer:{transfer_id}:ended", tag))
            if rng.random() < 0.15:
                self._checkin(out, "call", call_id, None, language, need, clock)
        elif outcome == "abandoned":
            clock = queued + _seconds(give_up)
            events.append((clock, "transfer.abandoned", f"transfer:{transfer_id}:abandoned",
                           {**tag, "waited_seconds": round(give_up)}))  # fmt: skip
            transfer_state, end_reason = "abandoned", "caller_left"
        elif outcome == "to_backup":
            clock = queued + _seconds(give_up)
            events.append((clock, "transfer.to_backup", f"transfer:{transfer_id}:backup",
                           {**tag, "reason": "max_hold", "waited_seconds": round(give_up)}))  # fmt: skip
            events.append((clock, "backup.dialled", "backup:1", {"attempt": 1, "reason": "max_hold"}))
            transfer_state, end_reason = "to_backup", "max_hold"
            clock += _seconds(rng.uniform(60, 900))
        else:
            clock = queued + _seconds(give_up)
            callback_id = self._id("callbacks")
            events.append((clock, "callback.requested", f"callback:{callback_id}:requested",
                           {**tag, "waited_seconds": round(give_up)}))  # fmt: skip
            end_reason = "callback"
            self._callback(out, events, "call", call_id, sid, callback_id, None, language, need, queued, clock)
        self._transfer(out, transfer_id, call_id, sid, 1, language, need, transfer_state, queued, accepted_at,
                       connected_at, clock, end_reason, "live", None)  # fmt: skip
        end = clock + _seconds(1)  # a callback's own search and outcome come after the call
        self._call_row(out, call_id, sid, language, need, route, started, menu_done, end)
        self._events(out, call_id, events, end)

    def _callback(
        self, out: Day, events: list[tuple[datetime, str, str, dict[str, Any]]], origin: str, call_id: int,
        sid: str, callback_id: int, conversation_id: int | None, language: str, need: str, since: datetime,
        requested: datetime,
    ) -> None:  # fmt: skip
        """A callback row, its own search (a ``mode='callback'`` transfer) and its outcome event."""
        rng = self.rng
        transfer_id = self._id("transfers")
        tag = {"transfer": transfer_id, "round": 2}
        search = requested + _seconds(1)
        events.append((search, "transfer.started", f"transfer:{transfer_id}:started",
                       {**tag, "need": need, "language": language, "language_matched": True}))  # fmt: skip
        roll = rng.random()
        outcome = "connected" if roll < 0.75 else "gave_up" if roll < 0.9 else "canceled"
        finished = requested + _seconds(rng.lognormvariate(math.log(900), 0.7))
        connected = finished if outcome == "connected" else None
        if outcome == "connected":
            events.append((finished - _seconds(20), "offer.accepted", f"offer:{transfer_id * 10}:outcome",
                           {**tag, "responder": rng.choice(COUNSELORS), "speed_to_answer_seconds": 60}))  # fmt: skip
        kind = f"callback.{outcome}"
        events.append((finished, kind, f"callback:{callback_id}:outcome",
                       {"callback": callback_id, "origin": origin, "outcome": outcome, "attempts": 1}))  # fmt: skip
        out.rows["callbacks"].append((
            callback_id, f"{origin}:{call_id}:{transfer_id}", origin, call_id, conversation_id, language, need,
            outcome, 1 if outcome == "canceled" else 2, since, requested, connected, finished, outcome,
        ))  # fmt: skip
        self._transfer(out, transfer_id, call_id, sid, 2, language, need, "ended", search, connected, connected,
                       finished, outcome, "callback", callback_id)  # fmt: skip

    def _transfer(
        self, out: Day, transfer_id: int, call_id: int, sid: str, round_: int, language: str, need: str, state: str,
        started: datetime, accepted: datetime | None, connected: datetime | None, ended: datetime, reason: str,
        mode: str, callback_id: int | None,
    ) -> None:  # fmt: skip
        out.rows["transfers"].append((transfer_id, call_id, sid, round_, language, need, state, True, started,
                                      accepted, connected, ended, reason, mode, callback_id, 0, started))  # fmt: skip

    def _call_row(
        self, out: Day, call_id: int, sid: str, language: str | None, need: str | None, route: str | None,
        started: datetime, menu_done: datetime | None, end: datetime,
    ) -> None:  # fmt: skip
        duration = round((end - started).total_seconds())
        out.rows["calls"].append((call_id, sid, LINE_NUMBER, language, need, 1, 1 if need else 0, route, "completed",
                                  4, duration, started, menu_done, end))  # fmt: skip

    def _events(
        self, out: Day, call_id: int, events: list[tuple[datetime, str, str, dict[str, Any]]], end: datetime
    ) -> None:
        events.append((end, "call.status", "status:completed", {"status": "completed"}))
        rows = out.rows["call_events"]
        for occurred, kind, key, detail in events:
            rows.append((self._id("call_events"), call_id, occurred, kind, key, json.dumps(detail)))

    # Texts ---------------------------------------------------------------------------------

    def conversation(self, out: Day, started: datetime, busy: float) -> None:
        rng = self.rng
        cid = self._id("conversations")
        if self.texters and rng.random() < 0.2:
            texter = rng.randint(1, self.texters)  # someone who texted before
        else:
            texter = self._id("texters")
            self.texters = texter
            out.rows["texters"].append((texter, f"{texter:064x}", False, started))
        language, need = _pick(rng, LANGUAGES), _pick(rng, NEEDS)
        messages = out.rows["messages"]

        def message(at: datetime, direction: str, party: str, key: str | None, responder: str | None) -> None:
            mid = self._id("messages")
            message_sid = f"SM{mid:032x}" if direction == "in" else None
            idempotency = f"{key}:{mid}" if key else None
            messages.append((mid, cid, direction, party, message_sid, idempotency, responder, texter, LINE_NUMBER,
                             0, 1, "received" if direction == "in" else "delivered", 3, at,
                             at if direction == "in" else None))  # fmt: skip

        clock = started
        message(clock, "in", "texter", None, None)
        for _ in range(2):  # the language and need menus
            clock += _seconds(rng.uniform(1, 3))
            message(clock, "out", "line", f"c{cid}:menu", None)
            clock += _seconds(rng.uniform(10, 60))
            message(clock, "in", "texter", None, None)
        queued: datetime | None = None
        assigned: datetime | None = None
        backup_offered: datetime | None = None
        counselor: str | None = None
        reason = "idle"
        if rng.random() < 0.08:  # left in the menus
            closed = clock + _seconds(3600)
        else:
            queued = clock
            offers = out.rows["conversation_offers"]
            expired = 0
            while rng.random() < 0.2 + 0.3 * busy and expired < 6:
                expired += 1
            for n in range(expired):
                at = queued + _seconds(120 * n)
                offers.append((self._id("conversation_offers"), cid, rng.choice(COUNSELORS), "expired", at,
                               at + _seconds(120), at + _seconds(120)))  # fmt: skip
            clock = queued + _seconds(120 * expired)
            roll = rng.random()
            if roll < 0.86 - 0.1 * busy:
                counselor = rng.choice(COUNSELORS)
                offered = clock
                clock += _seconds(rng.uniform(5, 100))
                assigned = clock
                offers.append((self._id("conversation_offers"), cid, counselor, "taken", offered,
                               offered + _seconds(120), assigned))  # fmt: skip
                for _ in range(rng.randint(1, 5)):  # the counselor's words relayed, the texter's replies
                    clock += _seconds(rng.uniform(20, 240))
                    message(clock, "out", "texter", f"c{cid}:relay", counselor)
                    clock += _seconds(rng.uniform(20, 300))
                    message(clock, "in", "texter", None, None)
                reason = "ended"
                closed = clock + _seconds(rng.uniform(60, 600))
                if rng.random() < 0.12:
                    self._checkin(out, "text", None, cid, language, need, closed, texter)
            elif roll < 0.88:  # CALL: a callback instead; a text-born callback has its own Call row
                clock += _seconds(rng.uniform(30, 400))
                closed, reason = clock, "callback"
                call_id = self._id("calls")
                sid = f"CA{call_id:032x}"
                callback_id = self._id("callbacks")
                events: list[tuple[datetime, str, str, dict[str, Any]]] = [
                    (clock, "callback.requested", f"callback:{callback_id}:requested", {"origin": "text"})
                ]
                self._callback(out, events, "text", call_id, sid, callback_id, cid, language, need, queued, clock)
                self._call_row(out, call_id, sid, language, need, "callback", clock, None, events[-1][0])
                self._events(out, call_id, events, events[-1][0])
            elif roll < 0.93:
                backup_offered = queued + _seconds(900)
                closed = backup_offered + _seconds(rng.uniform(60, 3600))
            else:
                clock += _seconds(rng.expovariate(1 / 400))
                closed, reason = clock, "texter_left"
        out.rows["conversations"].append((
            cid, texter, "closed", language, need, 0, 1, counselor, LINE_NUMBER, started, queued, assigned, clock,
            assigned and clock, closed, backup_offered, closed, reason,
        ))  # fmt: skip

    # Follow-ups ----------------------------------------------------------------------------

    def _checkin(
        self, out: Day, origin: str, call_id: int | None, conversation_id: int | None, language: str, need: str,
        asked: datetime, texter: int | None = None,
    ) -> None:  # fmt: skip
        rng = self.rng
        checkin_id = self._id("checkins")
        key = f"call:{call_id}" if call_id else f"text:{conversation_id}"
        if rng.random() < 0.3:
            out.rows["checkins"].append((
                checkin_id, key, origin, call_id, conversation_id, texter, language, need, "declined", asked,
                None, None, None, None, None, None, None, None,
            ))  # fmt: skip
            return
        due = asked + timedelta(hours=12 if need in ("suicide", "danger_now") else 24)
        sent = due + _seconds(rng.uniform(1, 60)) if rng.random() < 0.97 else None
        replied: datetime | None = None
        second: datetime | None = None
        flagged: datetime | None = None
        reply: str | None = None
        flag_reason: str | None = None
        state = "consented"
        if sent is not None:
            state = "sent"
            if rng.random() < 0.55:
                replied, reply, state = (
                    sent + _seconds(rng.uniform(60, 7200)),
                    rng.choice(("ok", "talk", "text")),
                    "answered",
                )
            else:
                second, state = sent + timedelta(hours=4), "second_sent"
                if rng.random() < 0.8:
                    flagged, flag_reason, state = second + timedelta(hours=4), "no_reply", "flagged"
        out.rows["checkins"].append((
            checkin_id, key, origin, call_id, conversation_id, texter, language, need, state, asked, asked, due,
            sent, second, replied, reply, flagged, flag_reason,
        ))  # fmt: skip
        if replied is not None and rng.random() < 0.4:
            rating = _pick(self.rng, (("5", 0.45), ("4", 0.3), ("3", 0.13), ("2", 0.07), ("1", 0.05)))
            out.rows["survey_responses"].append((self._id("survey_responses"), f"survey:{key}", origin, need,
                                                 language, replied, replied + _seconds(120), int(rating)))  # fmt: skip


CopyDay = dict[str, tuple[int, bytes]]  # per table: rows, and their COPY text


def _copy_field(value: Any) -> str:
    """One value in COPY's text format (no personal data here: all synthetic)."""
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return str(value)


def copy_text(day: Day) -> CopyDay:
    """A day's rows as COPY text, per table."""
    return {
        table: (len(rows), "".join("\t".join(map(_copy_field, row)) + "\n" for row in rows).encode())
        for table, rows in day.rows.items()
        if rows
    }


def _produce(contacts: int, seed: int, days: Any) -> None:
    """The generator's own process: the year a day at a time, as COPY text, while the main
    process feeds PostgreSQL (two cores: Python and the server work at once). None: done."""
    for day in Year(contacts, seed).generate():
        days.put(copy_text(day))
    days.put(None)


def load(database_url: str, contacts: int, seed: int) -> tuple[dict[str, Any], CopyDay]:
    """Generate the year into the database with COPY, all but its last day, which is returned
    (the bench loads it after the rollup's first build, to time an incremental refresh).

    Fast: the rows are generated and formatted in a second process; COPY (text format, one day
    per transaction) runs with ``session_replication_role = replica``, which skips the foreign
    keys' per-row checks (the generator's ids are consistent by construction: every row
    points to one written before it), and without waiting for each commit's WAL flush. The
    indexes are kept and filled as the app's own inserts would fill them."""
    context = get_context("spawn")
    days = context.Queue(maxsize=16)
    producer = context.Process(target=_produce, args=(contacts, seed, days), daemon=True)
    copy_seconds: dict[str, float] = {table: 0.0 for table in COLUMNS}
    started = time.perf_counter()
    held_back: CopyDay | None = None
    producer.start()
    try:
        with psycopg.connect(_plain(database_url)) as connection:
            connection.execute("SET session_replication_role = replica")
            connection.execute("SET synchronous_commit = off")
            connection.commit()
            index = 0
            while (day := days.get()) is not None:
                if held_back is not None:
                    _copy_day(connection, held_back, copy_seconds)
                held_back = day
                index += 1
                if index % 30 == 0:
                    print(f"  loaded {index} days, {time.perf_counter() - started:.0f} s", flush=True)
            _set_sequences(connection)
    finally:
        producer.join(timeout=10)
        if producer.is_alive():
            producer.terminate()
    assert held_back is not None
    load_seconds = time.perf_counter() - started
    begun = time.perf_counter()
    with psycopg.connect(_plain(database_url), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        counts = {}
        for table in COLUMNS:
            counted = connection.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - our table names
            counts[table] = counted[0] if counted else 0
        sized = connection.execute("SELECT pg_database_size(current_database())").fetchone()
        size = sized[0] if sized else 0
    return {
        "contacts": contacts,
        "load_seconds": round(load_seconds, 1),
        "copy_seconds": {table: round(value, 1) for table, value in copy_seconds.items()},
        "vacuum_analyze_seconds": round(time.perf_counter() - begun, 1),
        "rows": counts,
        "database_mib": round(size / 2**20),
    }, held_back


def _copy_day(connection: psycopg.Connection[Any], day: CopyDay, copy_seconds: dict[str, float]) -> None:
    with connection.transaction():
        for table in TABLE_ORDER:
            if table not in day:
                continue
            begun = time.perf_counter()
            with (
                connection.cursor() as cursor,
                cursor.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as copy,
            ):
                copy.write(day[table][1])
            copy_seconds[table] = copy_seconds.get(table, 0.0) + time.perf_counter() - begun


def _set_sequences(connection: psycopg.Connection[Any]) -> None:
    connection.autocommit = True
    for table in COLUMNS:
        highest = f"SELECT coalesce(max(id), 1) FROM {table}"  # noqa: S608 - our own table names
        connection.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), ({highest}))")


def load_last_day(database_url: str, day: CopyDay) -> int:
    """The held-back last day, as the line would have recorded it since the last refresh (with
    the foreign keys checked, as the app's own inserts are)."""
    with psycopg.connect(_plain(database_url)) as connection:
        _copy_day(connection, day, {})
        _set_sequences(connection)
    return sum(rows for rows, _ in day.values())


@contextmanager
def scratch_database(prefix: str, keep: bool) -> Iterator[str]:
    """``bench.common.fresh_database``, or a new database left in place (``--keep-database``)."""
    if not keep:
        with fresh_database(prefix) as url:
            yield url
        return
    name = f"{prefix}_{os.getpid()}"
    with psycopg.connect(_plain(postgres_admin_url()), autocommit=True, connect_timeout=3) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    url = f"{postgres_admin_url().rpartition('/')[0]}/{name}"
    yield url
    print(f"kept the database: {url} (drop it with DROP DATABASE {name})", flush=True)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@dataclass(frozen=True)
class Job:
    database_url: str
    what: str  # report | staffing | rollup (a refresh: the first build, or one day's tail)
    period: str
    channel: str | None
    breakdown: str | None
    explain: bool
    path: str = "rollup"  # rollup (the page's: refresh the tail, aggregate in SQL) | events (the old replay)


def measure(job: Job) -> dict[str, Any]:
    """One page's work in this (fresh) process: seconds, SQL seconds, slowest statement, peak RSS."""
    from sqlalchemy import create_engine, event, text
    from sqlalchemy.orm import Session

    from metrics import Period, build_report, build_staffing, refresh, report_from_events
    from routing.validation import load_document

    engine = create_engine(job.database_url)
    statements: list[dict[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _before(_conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
        context._bench_started = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(_conn: Any, cursor: Any, statement: str, params: Any, context: Any, _many: bool) -> None:
        # The parameters only for EXPLAIN: a first build's thousands of 2,000-id lookups would
        # hold gigabytes (a first run's "peak RSS 2,031 MiB" was this list, not the rollup).
        statements.append({"sql": statement, "params": params if job.explain else None, "rows": cursor.rowcount,
                           "seconds": time.perf_counter() - context._bench_started})  # fmt: skip

    document = load_document(DEFAULT_ROUTING_FILE.read_text())
    start, end = PERIODS.get(job.period, PERIODS["year"])
    result: dict[str, Any] = {"what": job.what, "period": job.period, "channel": job.channel, "by": job.breakdown,
                              "path": job.path}  # fmt: skip
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        statements.clear()
        gc.collect()
        rss_before = _rss_mib()
        begun = time.perf_counter()
        if job.what == "rollup":
            done = refresh(session, document)
            result.update(looked_at=done.looked_at, written=done.written, caught_up=done.caught_up)
        elif job.what == "report":
            assert job.channel is not None
            build = build_report if job.path == "rollup" else report_from_events
            report = build(session, document, Period(start, end), job.channel, job.breakdown)
            result["offered"] = report.overall.values["offered"]
            result["answer_rate"] = report.overall.values["answer_rate"]
            result["groups"] = len(report.rows) - 1
        else:
            grid = build_staffing(session, document, end, STAFFING_WEEKS)
            result["busiest_per_week"] = round(grid.busiest, 1)
        result["seconds"] = round(time.perf_counter() - begun, 2)
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        result["rss_before_mib"] = round(rss_before)
        result["sql_seconds"] = round(sum(s["seconds"] for s in statements), 2)
        result["statements"] = [
            {"table": _table_of(s["sql"]), "seconds": round(s["seconds"], 3), "rows": s["rows"]} for s in statements
        ]
        if job.what == "rollup":  # thousands of statements: keep the slowest
            result["statements"] = sorted(result["statements"], key=lambda s: -s["seconds"])[:5]
            statements.clear()
        if job.explain:
            result["plans"] = []
            raw = session.connection().connection.dbapi_connection
            assert isinstance(raw, psycopg.Connection)
            cursor = psycopg.ClientCursor(raw)  # parameters inlined: EXPLAIN takes none
            # The aggregates only: the refresh's UPDATEs would run again under EXPLAIN ANALYZE.
            # The page's aggregates, not the refresh's lookups by id.
            explained = [
                s for s in statements
                if s["sql"].lstrip().startswith("SELECT") and "metric_facts" in s["sql"]
                and "source_id IN" not in s["sql"]
            ]  # fmt: skip
            result["statements"] = [
                {"table": _table_of(s["sql"]), "seconds": round(s["seconds"], 3), "rows": s["rows"]} for s in explained
            ]
            for s in explained:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + s["sql"], s["params"])
                plan = "\n".join(line[0] for line in cursor.fetchall())
                result["plans"].append({"table": _table_of(s["sql"]), "plan": plan})
            cursor.close()
    engine.dispose()
    return result


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _table_of(sql: str) -> str:
    """The table a statement reads first (``FROM x``), with the events it asks for."""
    words = sql.replace("\n", " ").split()
    table = words[words.index("FROM") + 1] if "FROM" in words else "?"
    if table == "call_events" and "LIKE" in sql:
        return "call_events (callback.*)"
    return table


def measure_one(job: Job) -> dict[str, Any]:
    # A fresh interpreter per measurement: its peak RSS is this page's alone.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(measure, job).result()
    print(f"  {_label(result):44} {result['seconds']:7.2f} s (SQL {result['sql_seconds']:.2f} s), "
          f"peak RSS {result['peak_rss_mib']} MiB", flush=True)  # fmt: skip
    return result


def page_jobs(database_url: str) -> list[Job]:
    """What the console's pages call, on the rollup: each period and channel, overall and by
    hour; the year by every breakdown; the staffing view."""
    jobs = [
        Job(database_url, "report", period, channel, breakdown, (period, channel, breakdown) in EXPLAINED)
        for period in PERIODS
        for channel in ("voice", "sms")
        for breakdown in (None, "hour")
    ]
    jobs += [Job(database_url, "report", "year", "voice", by, False) for by in ("language", "need", "weekday")]
    jobs.append(Job(database_url, "staffing", "year", None, None, False))
    return jobs


def baseline_jobs(database_url: str) -> list[Job]:
    """The old path (every event of the period replayed in Python) on the month only: on the
    year it needs minutes and gigabytes."""
    return [Job(database_url, "report", "month", channel, None, False, path="events") for channel in ("voice", "sms")]


def _label(result: dict[str, Any]) -> str:
    if result["what"] == "staffing":
        return f"build_staffing, last {STAFFING_WEEKS} weeks"
    if result["what"] == "rollup":
        return f"rollup refresh ({result['period']})"
    path = " (old path: replay in Python)" if result.get("path") == "events" else ""
    return f"{result['period']} {result['channel']}{' by ' + result['by'] if result['by'] else ''}{path}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "period": {name: [str(start), str(end)] for name, (start, end) in PERIODS.items()},
    }
    from crisisline.db import STATEMENT_TIMEOUT_MS

    report["app_statement_timeout_ms"] = STATEMENT_TIMEOUT_MS
    if args.pages_only:
        previous = json.loads(args.output.with_suffix(".json").read_text())
        for key in ("load", "rollup_build", "last_day_rows", "rollup_refresh", "rollup_mib"):
            report[key] = previous[key]
        report["reused_database_from"] = previous["started_at"]
        if args.rebuild:
            with psycopg.connect(_plain(args.pages_only), autocommit=True) as connection:
                connection.execute("TRUNCATE metric_facts")
                connection.execute("DELETE FROM metric_rollup_state")
                connection.execute("VACUUM ANALYZE metric_facts")
            print("the rollup's first build again (the whole year) ...", flush=True)
            report["rollup_build"] = measure_one(Job(args.pages_only, "rollup", "first build", None, None, False))
            report["rollup_build"]["whole_year"] = True
        print("the pages, on the rollup ...", flush=True)
        report["pages"] = [measure_one(job) for job in page_jobs(args.pages_only)]
        print("baseline: the old path on the month ...", flush=True)
        report["baseline"] = [measure_one(job) for job in baseline_jobs(args.pages_only)]
        return report
    with tempfile.TemporaryDirectory(prefix="crisisline-bench-") as scratch, \
            scratch_database("metrics_bench", args.keep_database) as database_url, \
            redis_for_bench(Path(scratch)) as redis_url:  # fmt: skip
        env = deployment_env(database_url, redis_url, "http://127.0.0.1:9", free_port())
        flask(env, "db", "upgrade")
        print(f"generating {args.contacts:,} contacts over {YEAR_START} to {YEAR_END} ...", flush=True)
        report["load"], last_day = load(database_url, args.contacts, args.seed)
        print(f"  {report['load']['load_seconds']} s: {report['load']['rows']}", flush=True)
        print("the rollup's first build (all but the last day) ...", flush=True)
        report["rollup_build"] = measure_one(Job(database_url, "rollup", "first build", None, None, False))
        report["last_day_rows"] = load_last_day(database_url, last_day)
        print("an incremental refresh: the last day's contacts ...", flush=True)
        report["rollup_refresh"] = measure_one(Job(database_url, "rollup", "one more day", None, None, False))
        with psycopg.connect(_plain(database_url), autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE metric_facts")
            sized = connection.execute("SELECT pg_total_relation_size('metric_facts')").fetchone()
            report["rollup_mib"] = round((sized[0] if sized else 0) / 2**20)
        print("the pages, on the rollup ...", flush=True)
        report["pages"] = [measure_one(job) for job in page_jobs(database_url)]
        print("baseline: the old path on the month ...", flush=True)
        report["baseline"] = [measure_one(job) for job in baseline_jobs(database_url)]
    return report


def markdown(report: dict[str, Any]) -> str:
    m, loaded = report["machine"], report["load"]
    timeout = report["app_statement_timeout_ms"] / 1000
    build, tail = report["rollup_build"], report["rollup_refresh"]
    lines = [
        f"# Metrics bench, {report['started_at']}",
        "",
        f"Machine: {m['nproc']} CPU ({m['cpu_model']}), {m['ram_gib']} GiB RAM, load average at start "
        f"{m['load_average_at_start']}, commit {m['git_commit']} (+{m['uncommitted_files']} changed files).",
        "",
        f"{loaded['contacts']:,} contacts from {YEAR_START} to {YEAR_END} (America/Chicago), loaded with COPY in "
        f"{loaded['load_seconds']} s (VACUUM ANALYZE {loaded['vacuum_analyze_seconds']} s); "
        f"database {loaded['database_mib']} MiB.",
        "",
        "| table | rows |",
        "|---|---:|",
        *(f"| {table} | {count:,} |" for table, count in loaded["rows"].items()),
        "",
        "## The rollup (`metric_facts`)",
        "",
        f"- First build ({'the whole year, again' if build.get('whole_year') else 'all but the last day'}): "
        f"{build['seconds']:.1f} s (SQL {build['sql_seconds']:.1f} s), {build['looked_at']:,} sources looked at, "
        f"{build['written']:,} facts written, peak RSS {build['peak_rss_mib']} MiB.",
        f"- Incremental refresh after one more day ({report['last_day_rows']:,} rows): {tail['seconds']:.2f} s, "
        f"{tail['looked_at']:,} sources looked at, {tail['written']:,} facts written.",
        f"- Size: {report['rollup_mib']} MiB with its indexes.",
        "",
        "## The pages (refresh the tail, then aggregate the rollup in SQL)",
        "",
        "| what | offered | s | SQL s | slowest stmt s | peak RSS MiB (before) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in [*report["pages"], *report["baseline"]]:
        slowest = max((s["seconds"] for s in result["statements"]), default=0.0)
        flag = " (over the app's statement_timeout)" if slowest > timeout else ""
        offered = str(result.get("offered", "")) or f"busiest {result.get('busiest_per_week')}/week"
        lines.append(
            f"| {_label(result)} | {offered} | {result['seconds']:.2f} | {result['sql_seconds']:.2f} | "
            f"{slowest:.2f}{flag} | {result['peak_rss_mib']} ({result['rss_before_mib']}) |"
        )
    for result in report["pages"]:
        if "plans" not in result:
            continue
        lines += ["", f"## Plans, {_label(result)}", ""]
        for statement, plan in zip(result["statements"], result["plans"], strict=True):
            lines += [f"`{plan['table']}`: {statement['seconds']} s, {statement['rows']} rows", "", "```",
                      plan["plan"], "```", ""]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000, help="contacts over the year (calls and texts)")
    parser.add_argument("--quick", action="store_true", help="10,000 contacts: a smoke run")
    parser.add_argument("--seed", type=int, default=988)
    parser.add_argument("--output", type=Path, default=RESULTS / "metrics-rollup-latest",
                        help="writes <output>.json and .md (default bench/results/metrics-rollup-latest)")  # fmt: skip
    parser.add_argument(
        "--keep-database", action="store_true", help="keep the scratch database (its URL is printed) for --pages-only"
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="with --pages-only: empty the rollup and time its first build again (the whole year)",
    )
    parser.add_argument("--pages-only", metavar="DATABASE_URL",
                        help="time the pages again on a kept database (the load and the rollup's figures are "
                             "taken from <output>.json)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.contacts = 10_000
    report = run(args)
    text_report = markdown(report)
    print(text_report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    args.output.with_suffix(".md").write_text(text_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
