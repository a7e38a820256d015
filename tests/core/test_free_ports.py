"""``free_port`` in a process of several picking ports at once (the test suite under pytest -n):
from its own range, skipping one in use, and never from a range another process owns."""

from __future__ import annotations

import os
import socket

import pytest

from crisisline import redis_server
from crisisline.redis_server import FREE_PORTS, free_port

EPHEMERAL_LOW = 32768  # Linux's default ip_local_port_range starts here


def test_a_process_with_a_range_of_its_own_takes_ports_from_it_skipping_one_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FREE_PORTS, f"10990-10993@{os.getpid()}")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 10991))
        held.listen()
        picked = {free_port() for _ in range(6)}
    assert picked == {10990, 10992, 10993}


def test_a_range_named_for_another_process_is_not_used_by_this_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FREE_PORTS, f"10990-10993@{os.getppid()}")  # a child inherits its parent's
    assert free_port() not in range(10990, 10994)


def test_under_pytest_n_each_test_process_has_a_range_below_the_ephemeral_ports() -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("run in one process: no range of its own")
    assert redis_server._own_port_range().stop <= EPHEMERAL_LOW
    assert free_port() in redis_server._own_port_range()
