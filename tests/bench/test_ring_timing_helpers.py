"""The ring timing bench's own logic (nothing timed): the routings it publishes keep measured
callers away from the background load's responders, the surge rings in parallel on counselors
of its own, and its summaries are what they say."""

from __future__ import annotations

import phonenumbers

from bench.ring_timing import MEASURED, measured_routing, summary, surge_routing
from routing.validation import validate


def test_only_the_measured_counselors_take_the_measured_need() -> None:
    document = measured_routing()

    takers = {c["id"] for c in document["counselors"] if "mental_health" in c["skills"]}

    assert takers == {responder_id for responder_id, _ in MEASURED}
    assert document["transfer"]["strategy"] == "sequential"
    assert validate(document)[1] == []


def test_each_surge_run_rings_three_at_once_on_its_own_free_counselors() -> None:
    base = measured_routing()

    first, second = surge_routing(base, 1, 60), surge_routing(base, 2, 60)

    on_call = [[c for c in doc["counselors"] if c["shifts"]] for doc in (first, second)]
    assert [len(found) for found in on_call] == [60, 60]
    phones = [c["phone"] for found in on_call for c in found]
    assert len(set(phones)) == 120  # a run's legs never land on the other run's phones
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(phone)) for phone in phones)
    assert first["transfer"]["strategy"] == "parallel" and first["transfer"]["parallel_max"] == 3
    assert validate(first)[1] == []


def test_summary_gives_the_percentiles_of_what_it_was_given() -> None:
    values = [float(v) for v in range(1, 101)]

    found = summary(values)

    assert found == {"n": 100, "p50": 51.0, "p99": 100.0, "max": 100.0}
    assert summary([]) == {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
