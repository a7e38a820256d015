"""The rollup (``metric_facts``) on hand-built event logs and rows, on SQLite and PostgreSQL:
the report aggregated from it in SQL is the report replayed from the log in Python, it is
brought up to date incrementally (contacts in progress included), one runner refreshes at a
time, and it holds nothing personal and survives the retention purge."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text, update

from crisisline.db import db
from crisisline.models import (
    Call,
    Callback,
    CallEvent,
    CheckIn,
    Conversation,
    ConversationOffer,
    Message,
    MetricFact,
    MetricRollupState,
    SurveyResponse,
    Texter,
    Transfer,
)
from metrics import BREAKDOWNS, CHANNELS, Period, build_report, build_staffing, refresh, report_from_events
from metrics.load import load_facts
from metrics.rollup import LEASE, SETTLE
from metrics.staffing import staffing
from routing.document import RoutingDocument
from routing.store import active_routing
from tests.metrics.conftest import assert_same_report

T0 = datetime(2026, 12, 2, 23, 0, tzinfo=UTC)  # Wednesday 17:00 in Chicago
LATE = datetime(2026, 12, 3, 5, 59, tzinfo=UTC)  # Wednesday 23:59 in Chicago, Thursday in UTC
FIRST_ONE, SECOND_ONE = (
    datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
    datetime(2026, 11, 1, 7, 30, tzinfo=UTC),
)  # 01:30 twice
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PERIODS = (Period(date(2026, 12, 2), date(2026, 12, 3)), Period(date(2026, 10, 30), date(2026, 12, 5)))


@pytest.fixture
def document(app: Flask) -> Iterator[RoutingDocument]:
    with app.app_context():
        active = active_routing()
        assert active is not None
        yield active.document


class Line:
    """Rows written straight to the database, as the line records them."""

    def __init__(self) -> None:
        self.calls = 0

    def call(
        self,
        started: datetime,
        *events: tuple[str, float, dict[str, Any]],
        status: str = "completed",
        language: str | None = "en",
        need: str | None = "suicide",
        inbound: bool = True,
    ) -> Call:
        self.calls += 1
        call = Call(call_sid=f"CA{self.calls:032d}", language=language, need=need, status=status, started_at=started)
        db.session.add(call)
        db.session.flush()
        if inbound:
            self.event(call, "call.started", started, {})
        for n, (kind, seconds, detail) in enumerate(events):
            self.event(call, kind, started + timedelta(seconds=seconds), detail, key=f"{kind}:{n}")
        return call

    def event(
        self,
        call: Call,
        kind: str,
        at: datetime,
        detail: dict[str, Any],
        key: str | None = None,
        event_id: int | None = None,
    ) -> None:
        db.session.add(
            CallEvent(id=event_id, call_id=call.id, kind=kind, occurred_at=at, dedupe_key=key or kind, detail=detail)
        )
        db.session.flush()

    def search(self, call: Call, round_: int, mode: str = "live") -> int:
        transfer = Transfer(
            id=900 + round_,  # not 1: the live searches below are transfer 1
            call_id=call.id,
            caller_call_sid=call.call_sid,
            round=round_,
            language="en",
            need="suicide",
            mode=mode,
            started_at=call.started_at,
            queued_since=call.started_at,
        )
        db.session.add(transfer)
        db.session.flush()
        return transfer.id

    def callback(self, call: Call, origin: str, asked: datetime, outcome: str | None, after: float) -> None:
        row = Callback(
            dedupe_key=f"cb:{call.id}",
            origin=origin,
            call_id=call.id,
            language="es",
            need="suicide",
            state=outcome or "waiting",
            queue_since=asked,
            requested_at=asked,
        )
        db.session.add(row)
        db.session.flush()
        self.event(call, "callback.requested", asked, {"origin": origin}, key=f"callback:{row.id}:requested")
        if outcome:
            self.event(
                call,
                f"callback.{outcome}",
                asked + timedelta(seconds=after),
                {"outcome": outcome},
                key=f"callback:{row.id}:outcome",
            )

    def conversation(
        self,
        started: datetime,
        *,
        queued: float | None = 30,
        assigned: float | None = None,
        expired: tuple[float, ...] = (),
        relay: float | None = None,
        closed: float | None = 900,
        reason: str = "ended",
        backup: float | None = None,
        language: str | None = "en",
    ) -> None:
        texter = Texter(number_hash=f"h{started.timestamp()}{queued}{assigned}{reason}{language}", created_at=started)
        db.session.add(texter)
        db.session.flush()

        def at(seconds: float | None) -> datetime | None:
            return None if seconds is None else started + timedelta(seconds=seconds)

        convo = Conversation(
            texter_id=texter.id,
            state="closed" if closed is not None else "active",
            language=language,
            need="mental_health",
            started_at=started,
            queued_at=at(queued),
            assigned_at=at(assigned),
            backup_offered_at=at(backup),
            closed_at=at(closed),
            close_reason=reason if closed is not None else None,
            last_activity_at=started,
        )
        db.session.add(convo)
        db.session.flush()
        for seconds in expired:
            db.session.add(
                ConversationOffer(
                    conversation_id=convo.id,
                    responder_id="ben-carter",
                    state="expired",
                    created_at=at(seconds),
                    expires_at=at(seconds + 120),
                )
            )
        if relay is not None:
            db.session.add(
                Message(
                    conversation_id=convo.id,
                    direction="out",
                    party="texter",
                    status="sent",
                    idempotency_key=f"c{convo.id}:relay:1",
                    created_at=at(relay),
                )
            )
        db.session.flush()


def a_busy_week(line: Line) -> None:
    """Every kind of contact the definitions name (each worked by hand in test_definitions)."""
    routed, queued = ("route.decided", 10, {"target": "counselors"}), ("transfer.started", 10, {"transfer": 1})
    line.call(
        T0,
        routed,
        queued,
        ("offer.missed", 30, {"transfer": 1, "responder": "ben-carter", "outcome": "no_answer"}),
        ("offer.accepted", 52, {"transfer": 1, "responder": "ana-ruiz"}),
        ("call.status", 400, {"status": "completed"}),
    )
    line.call(
        T0 + timedelta(minutes=5),
        routed,
        queued,
        ("transfer.abandoned", 25, {"transfer": 1, "waited_seconds": 15}),
        ("offer.ended", 26, {"transfer": 1, "responder": "ben-carter", "outcome": "superseded"}),
    )
    line.call(
        T0 + timedelta(minutes=7), routed, queued, ("transfer.abandoned", 70, {"transfer": 1, "waited_seconds": 60})
    )
    line.call(
        T0 + timedelta(minutes=9),
        routed,
        queued,
        ("offer.accepted", 20, {"transfer": 1, "responder": "ana-ruiz"}),
        ("transfer.staff_left", 300, {"transfer": 1}),
        ("transfer.started", 301, {"transfer": 2}),
        ("transfer.to_backup", 400, {"transfer": 2, "waited_seconds": 99}),
    )
    line.call(
        T0 + timedelta(minutes=11),
        ("route.decided", 5, {"target": "co_responders"}),
        queued,
        ("offer.accepted", 35, {"transfer": 1, "responder": "unit-north"}),
        need="danger_now",
    )
    line.call(
        T0 + timedelta(minutes=13),
        routed,
        queued,
        ("offer.accepted", 20, {"transfer": 1, "responder": "ana-ruiz"}),
        ("offer.accepted", 200, {"transfer": 1, "responder": "unit-north", "purpose": "join"}),
    )
    chose = line.call(
        T0 + timedelta(minutes=15),
        routed,
        queued,
        ("callback.requested", 70, {"transfer": 1, "waited_seconds": 60}),
        language="es",
    )
    search = line.search(chose, 2, mode="callback")
    line.event(chose, "offer.accepted", T0 + timedelta(minutes=30), {"transfer": search, "responder": "ana-ruiz"})
    line.callback(chose, "call", T0 + timedelta(minutes=16), "connected", 900)
    line.call(T0 + timedelta(minutes=20), ("backup.dialled", 1, {"attempt": 1, "reason": "system_down"}))
    line.call(T0 + timedelta(minutes=22), language=None, need=None)  # hung up in the menus
    line.call(T0 + timedelta(minutes=24), routed, queued, status="in-progress")  # still waiting
    line.call(LATE, routed, queued, ("offer.accepted", 45, {"transfer": 1, "responder": "ben-carter"}))
    line.call(FIRST_ONE, routed, queued, ("offer.accepted", 12, {"transfer": 1, "responder": "ana-ruiz"}))
    line.call(SECOND_ONE, routed, queued, ("transfer.abandoned", 20, {"transfer": 1, "waited_seconds": 10}))
    texted = line.call(T0 + timedelta(minutes=40), status="callback", inbound=False)  # a texter's CALL
    line.callback(texted, "text", T0 + timedelta(minutes=40), "gave_up", 3600)
    line.conversation(T0, assigned=90, expired=(30,), relay=150)
    line.conversation(T0 + timedelta(minutes=3), relay=200)  # relayed without YES: answered
    line.conversation(T0 + timedelta(minutes=4), closed=300, reason="callback")
    line.conversation(T0 + timedelta(minutes=5), backup=930, closed=2000, reason="idle")
    line.conversation(T0 + timedelta(minutes=6), closed=50, reason="texter_left", language="es")
    line.conversation(T0 + timedelta(minutes=8), closed=None)  # waiting, open
    line.conversation(T0 + timedelta(minutes=9), queued=None, closed=3600, reason="idle")  # never left the menus
    for n, (sent, replied, flagged) in enumerate(((True, True, False), (True, False, True), (False, False, False))):
        due = T0 + timedelta(hours=n)
        db.session.add(
            CheckIn(
                dedupe_key=f"text:{n}",
                origin="text",
                language="en",
                need="suicide",
                state="sent",
                asked_at=due - timedelta(hours=24),
                consented_at=due - timedelta(hours=24),
                due_at=due,
                sent_at=due if sent else None,
                replied_at=due if replied else None,
                flagged_at=due if flagged else None,
            )
        )
    db.session.add(CheckIn(dedupe_key="call:9", origin="call", language="en", state="declined", asked_at=T0))
    for n, rating in enumerate((5, 2, None)):
        db.session.add(
            SurveyResponse(
                dedupe_key=f"survey:{n}",
                origin="text",
                language="en",
                asked_at=T0,
                answered_at=T0 + timedelta(minutes=n) if rating else None,
                rating=rating,
            )
        )
    db.session.commit()


def assert_both_paths_agree(document: RoutingDocument) -> None:
    for period in PERIODS:
        for channel in CHANNELS:
            for breakdown in (None, *BREAKDOWNS):
                assert_same_report(
                    build_report(db.session, document, period, channel, breakdown, budget=0),
                    report_from_events(db.session, document, period, channel, breakdown),
                )


def test_the_rollup_gives_the_report_replayed_from_the_log_for_every_channel_and_breakdown(
    app: Flask, document: RoutingDocument
) -> None:
    with app.app_context():
        a_busy_week(Line())
        assert refresh(db.session, document, NOW).caught_up

        assert_both_paths_agree(document)
        wednesday = build_report(db.session, document, PERIODS[0], "voice", budget=0).overall.values
        # 10 calls left the menus that Wednesday (local), one hung up in them; the texter's CALL is no call.
        assert (wednesday["offered"], wednesday["ended_in_menu"], wednesday["answered"]) == (10, 1, 5)
        assert (wednesday["callbacks_requested"], wednesday["callbacks_completed"]) == (1, 1)


def test_staffing_from_the_rollup_counts_what_the_facts_count(app: Flask, document: RoutingDocument) -> None:
    with app.app_context():
        a_busy_week(Line())
        refresh(db.session, document, NOW)
        end = date(2026, 12, 5)
        for language in (None, "en", "es"):
            grid = build_staffing(db.session, document, end, 6, language, budget=0)
            facts = load_facts(db.session, Period(end - timedelta(weeks=6), end), document)
            assert grid == staffing(document, facts.contacts, end, 6, language)
        assert build_staffing(db.session, document, end, 6, budget=0).busiest > 0


def test_a_refresh_counts_only_what_changed_and_a_contact_in_progress_is_counted_as_waiting(
    app: Flask, document: RoutingDocument
) -> None:
    with app.app_context():
        line = Line()
        waiting = line.call(T0, ("route.decided", 10, {"target": "counselors"}), status="in-progress")
        db.session.commit()
        first = refresh(db.session, document, T0 + timedelta(minutes=1))
        assert (first.looked_at, first.written) == (1, 1)
        period = PERIODS[0]
        assert build_report(db.session, document, period, "voice", budget=0).overall.values["answered"] == 0
        idle = refresh(db.session, document, T0 + timedelta(minutes=2))
        assert idle.written == 0

        line.event(waiting, "offer.accepted", T0 + timedelta(seconds=40), {"responder": "ana-ruiz"}, key="accepted")
        db.session.commit()
        second = refresh(db.session, document, T0 + timedelta(minutes=3))

        assert (second.looked_at, second.written) == (1, 1)  # the one call with a new event
        values = build_report(db.session, document, period, "voice", budget=0).overall.values
        assert (values["answered"], values["speed_to_answer_mean"]) == (1, 30)


def test_an_event_committed_after_a_later_one_is_still_counted(app: Flask, document: RoutingDocument) -> None:
    with app.app_context():
        line = Line()
        early = line.call(T0, ("route.decided", 10, {"target": "counselors"}), status="in-progress")
        later = line.call(T0 + timedelta(seconds=5), ("route.decided", 10, {"target": "counselors"}))
        db.session.commit()
        refresh(db.session, document, T0 + timedelta(minutes=1))
        top = db.session.scalar(select(CallEvent.id).order_by(CallEvent.id.desc()).limit(1))
        assert top is not None
        # Two transactions took ids top+1 and top+2; the second commits first and a refresh runs.
        line.event(later, "transfer.abandoned", T0 + timedelta(minutes=4), {"waited_seconds": 5}, event_id=top + 2)
        db.session.commit()
        refresh(db.session, document, T0 + timedelta(minutes=4))
        line.event(early, "transfer.abandoned", T0 + timedelta(minutes=4), {"waited_seconds": 50}, event_id=top + 1)
        db.session.commit()

        refresh(db.session, document, T0 + timedelta(minutes=5))

        values = build_report(db.session, document, PERIODS[0], "voice", budget=0).overall.values
        assert (values["abandoned"], values["abandoned_within_30s"]) == (2, 1)


def test_of_two_runners_one_refreshes_and_the_other_returns_at_once(app: Flask, document: RoutingDocument) -> None:
    with app.app_context():
        a_busy_week(Line())
        assert refresh(db.session, document, NOW, budget=3).claimed  # creates the state row
        db.session.execute(update(MetricRollupState).values(lease_owner="other", lease_until=NOW + LEASE))
        db.session.commit()
        before = db.session.scalar(select(MetricFact.id).order_by(MetricFact.id.desc()).limit(1))

        loser = refresh(db.session, document, NOW)

        assert (loser.claimed, loser.looked_at) == (False, 0)
        assert db.session.scalar(select(MetricFact.id).order_by(MetricFact.id.desc()).limit(1)) == before
        after_lease = refresh(db.session, document, NOW + LEASE + timedelta(seconds=1))  # the other run died
        assert after_lease.claimed and after_lease.caught_up
        assert_both_paths_agree(document)


def test_a_small_budget_catches_up_over_several_runs_with_the_same_result(
    app: Flask, document: RoutingDocument
) -> None:
    with app.app_context():
        a_busy_week(Line())
        runs = []
        moment = NOW
        while not runs or not runs[-1].caught_up:
            runs.append(refresh(db.session, document, moment, budget=4))
            moment += timedelta(seconds=10)
            assert len(runs) < 40
        assert len(runs) > 3 and all(run.looked_at <= 4 for run in runs)
        assert_both_paths_agree(document)


def test_a_long_first_build_refreshes_the_statistics_as_it_goes(
    app: Flask, document: RoutingDocument, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planned from an empty table's statistics, a 1,000,000-contact build slowed quadratically
    (``metrics.rollup._analyze``): on PostgreSQL it ANALYZEs every ``ANALYZE_EVERY`` sources."""
    monkeypatch.setattr("metrics.rollup.ANALYZE_EVERY", 3)
    with app.app_context():
        a_busy_week(Line())
        assert refresh(db.session, document, NOW).caught_up
        if db.session.get_bind().dialect.name == "postgresql":
            analyzed = db.session.execute(
                text("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'metric_facts'")
            ).scalar()
            assert analyzed  # the statistics collector may lag a moment, but the count is there
        assert_both_paths_agree(document)


def test_a_new_time_zone_rebuilds_local_days_and_hours(app: Flask, document: RoutingDocument) -> None:
    with app.app_context():
        a_busy_week(Line())
        refresh(db.session, document, NOW)
        db.session.execute(update(MetricFact).values(local_hour=8, local_weekday=3, local_day="2026-12-03"))
        db.session.execute(update(MetricRollupState).values(timezone="Asia/Tokyo"))  # built elsewhere
        db.session.commit()

        refresh(db.session, document, NOW)

        assert_both_paths_agree(document)


def test_the_rollup_holds_nothing_personal_and_the_purge_leaves_it(app: Flask, document: RoutingDocument) -> None:
    from workers.upkeep import purge_personal_data

    columns = set(MetricFact.__table__.columns.keys())
    assert not {c for c in columns if any(w in c for w in ("number", "hash", "body", "sealed", "caller", "reply"))}
    with app.app_context():
        a_busy_week(Line())
        refresh(db.session, document, NOW)
        facts = db.session.execute(select(MetricFact.source, MetricFact.source_id, MetricFact.outcome)).all()

        purge_personal_data((NOW + timedelta(days=4000)).isoformat())
        refresh(db.session, document, NOW + timedelta(days=4000))

        assert sorted(
            db.session.execute(select(MetricFact.source, MetricFact.source_id, MetricFact.outcome)).all()
        ) == sorted(facts)
        assert_both_paths_agree(document)


def test_the_clock_refreshes_the_rollup_every_five_minutes(app: Flask) -> None:
    from workers.upkeep import PERIODIC_JOBS

    assert [(job.__name__, schedule) for job, schedule, _ in PERIODIC_JOBS if "metrics" in job.__name__] == [
        ("refresh_metrics_rollup", "*/5 * * * *")
    ]
    with app.app_context():
        from metrics.rollup import refresh_metrics_rollup

        assert refresh_metrics_rollup()["claimed"] == 1
        assert timedelta(minutes=5) > SETTLE


def test_sql_means_medians_and_percentiles_are_the_python_ones_to_the_last_bit(
    app: Flask, document: RoutingDocument, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the seconds are summarized in SQL (``metrics.query._summaries``): the
    mean must be ``math.fsum`` over n, not SQL's step-by-step float sum, the median the mean of
    the two middle values, the p90 the nearest rank. Awkward floats (microseconds, sums that a
    naive order rounds differently), odd and even counts, per group and overall."""
    import random

    from metrics.compute import report
    from metrics.facts import Contact, Facts
    from metrics.query import report_from_rollup
    from metrics.rollup import contact_fact

    rng = random.Random(12)
    contacts = []
    for n in range(2001):  # odd overall; each language's count differs
        waited = timedelta(seconds=rng.choice((0, 1, 7, 59, 600, 86_399)), microseconds=rng.randrange(1_000_000))
        language = ("en", "es", "fr")[n % 3] if n % 7 else "en"
        contacts.append(
            Contact("voice", T0 + timedelta(seconds=n), language, "suicide", True, "answered",
                    speed_to_answer_seconds=waited.total_seconds())
        )  # fmt: skip
    contacts.append(Contact("voice", T0, "es", "suicide", True, "answered", speed_to_answer_seconds=1e-6))
    period = PERIODS[0]
    with app.app_context():
        zone = document.timezone
        db.session.add_all(
            MetricFact(**contact_fact("call", n + 1, contact, zone)) for n, contact in enumerate(contacts)
        )
        db.session.commit()
        facts = Facts(contacts=tuple(contacts), timezone=zone)
        if db.session.get_bind().dialect.name == "postgresql":  # in SQL, not fetched
            monkeypatch.setattr("metrics.query._fetch", lambda *_: pytest.fail("fetched into Python"))
        for breakdown in (None, "language"):
            expected = report(facts, period, "voice", breakdown)
            assert_same_report(report_from_rollup(db.session, period, "voice", breakdown, zone), expected)
        assert report(facts, period, "voice").overall.values["speed_to_answer_mean"] != sum(
            c.speed_to_answer_seconds or 0 for c in contacts
        ) / len(contacts)  # a naive sum would not do
