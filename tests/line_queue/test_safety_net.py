"""A caller's hold turn is the queue's safety net, not its engine: a process runs at most one
safety-net pass a second after any pass began, while every event (a new contact, a responder
freed) runs its own pass at once. SQLite and PostgreSQL, the example routing.

Before, every hold turn of every waiting caller ran a whole pass (the free responders, the
queue's head, who was offered what): with 16 callers holding on 2 cores a hold turn cost
20 ms of CPU, most of it passes that found what the one before them had found.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from flask import Flask

from line_queue import matching
from routing.document import RoutingDocument
from routing.store import active_routing
from tests.conftest import WEDNESDAY_EVENING


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every queue pass that ran (the real one runs)."""
    ran: list[int] = []
    real = matching._fill_pass

    def counted(
        document: object, channels: tuple[str, ...] = matching.CHANNELS, *, may_defer: bool = False
    ) -> tuple[int, int, bool]:
        ran.append(1)
        return real(document, channels, may_defer=may_defer)  # type: ignore[arg-type]

    monkeypatch.setattr(matching, "_fill_pass", counted)
    return ran


@pytest.fixture
def frozen_evening() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(WEDNESDAY_EVENING, tick=False) as traveller:
        yield traveller


@pytest.fixture
def document(app: Flask, frozen_evening: time_machine.Coordinates) -> Iterator[RoutingDocument]:
    """The published routing, inside the app's context for the whole test."""
    with app.app_context():
        active = active_routing()
        assert active is not None
        yield active.document


def test_a_hold_turn_within_a_second_of_a_pass_runs_none(
    document: RoutingDocument, passes: list[int], frozen_evening: time_machine.Coordinates
) -> None:
    matching.fill_soon(document)  # an event: a caller joined the queue
    assert len(passes) == 1
    frozen_evening.shift(timedelta(milliseconds=900))
    assert matching.fill_soon(document, safety_net=True) == 0
    assert len(passes) == 1


def test_the_safety_net_runs_again_once_the_interval_is_over(
    document: RoutingDocument, passes: list[int], frozen_evening: time_machine.Coordinates
) -> None:
    matching.fill_soon(document, safety_net=True)
    frozen_evening.shift(timedelta(seconds=matching.SAFETY_NET_INTERVAL_SECONDS))
    matching.fill_soon(document, safety_net=True)
    assert len(passes) == 2


def test_an_event_runs_its_pass_however_recent_the_last(document: RoutingDocument, passes: list[int]) -> None:
    matching.fill_soon(document, safety_net=True)
    matching.fill_soon(document)  # e.g. a responder's call ended this very moment
    matching.fill_soon(document)
    assert len(passes) == 3


def test_a_pass_of_one_line_alone_does_not_silence_the_safety_net(
    document: RoutingDocument, passes: list[int], frozen_evening: time_machine.Coordinates
) -> None:
    # A hold turn's safety-net pass looks at both lines; a pass of one line stands in for it
    # for neither: a texter left waiting by a lost event is not held back by new callers.
    assert document.queue.channels == "separate"
    matching.fill_soon(document, joined="voice")  # a new caller: the callers' line only
    matching.fill_soon(document, safety_net=True)  # runs
    frozen_evening.shift(timedelta(seconds=matching.SAFETY_NET_INTERVAL_SECONDS))
    matching.fill_soon(document, joined="text")  # a text just sorted: the texts' line only
    matching.fill_soon(document, safety_net=True)  # runs
    matching.fill_soon(document)  # an event: both lines
    matching.fill_soon(document, safety_net=True)  # skipped: a pass over both lines just began
    assert len(passes) == 5


def test_a_clock_set_back_does_not_silence_the_safety_net(
    document: RoutingDocument, passes: list[int], frozen_evening: time_machine.Coordinates
) -> None:
    matching.fill_soon(document)
    frozen_evening.shift(timedelta(minutes=-5))  # NTP stepped the clock back
    matching.fill_soon(document, safety_net=True)
    assert len(passes) == 2
