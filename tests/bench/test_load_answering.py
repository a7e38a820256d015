"""``bench.load``'s answering phase against the line over real HTTP: callers go through the menus,
then the rings their need answers placed are answered, played as Twilio plays them, while the
others keep holding. Every answered-call kind shows up, nothing errs, and each transfer accepted
has one acceptance. (Figures are not checked: this is the bench's logic, not its speed.)"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from flask import Flask

from bench import load
from bench.common import ACCOUNT_SID, ANSWERED_KINDS, AUTH_TOKEN, MemorySampler
from crisisline.redis_server import free_port
from tests.conftest import serving, settings_for
from twilio_fake.server import FakeTwilioServer

CALLERS = 8  # more than the example routing's counselors: some still wait when the first hang up


def on_call_all_day(document: dict[str, Any]) -> None:
    for counselor in document["counselors"]:
        counselor.pop("overrides", None)
        counselor["shifts"] = [{"days": "daily", "start": "00:00", "end": "12:00"},
                               {"days": "daily", "start": "12:00", "end": "24:00"}]  # fmt: skip


def run(name: str, tasks: Iterator[load.Task], line: list[load.Connection], seconds: float) -> load.PhaseResult:
    return load.run_phase(name, tasks, line, seconds, MemorySampler(), "web")


def test_the_answering_phase_plays_whole_answered_calls_with_every_kind_and_no_errors(
    app: Flask, database_url: str, redis_url: str, make_app: Callable[..., Flask], publish_routing: Callable[..., int]
) -> None:
    publish_routing(on_call_all_day)
    random.seed(14)
    port = free_port()
    # The bench's account and token (its webhooks are signed with them), its own fake Twilio.
    with FakeTwilioServer(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as twilio:
        bench_account = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
        settings = settings_for(database_url, redis_url, **bench_account, TWILIO_API_BASE_URL=twilio.base_url,
                                PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")  # fmt: skip
        with serving(make_app(settings), port) as url:
            line = [load.Connection(url, url) for _ in range(4)]
            flow = load.CallFlow()
            for name, tasks in (("incoming", islice(flow.incoming(), CALLERS)), ("language", flow.language()),
                                ("need", flow.need())):  # fmt: skip
                assert not [s for s in run(name, tasks, line, 60.0).samples if s.error]
            answering = load.Answering(flow, twilio.base_url, seconds=3.0)
            assert answering.know_the_callers(url, threads=4) == CALLERS
            result = run("answering", answering.tasks(), line, 60.0)
            checks = answering.checks(database_url, result)
            for connection in line:
                connection.close()

    kinds = {sample.kind for sample in result.samples}
    assert set(ANSWERED_KINDS) <= kinds
    assert [(s.kind, s.error) for s in result.samples if s.error] == []
    assert answering.outcomes["accepted"] >= 5  # every counselor took a caller
    assert sum(answering.outcomes.values()) == answering.rings_found
    assert checks["ok"], checks
    assert checks["transfers_accepted"] == answering.outcomes["accepted"]
    assert result.wall_seconds < 30  # the calls under way finished; the phase did not run out its time
