"""The benches' own logic (not their speed: nothing here is timed): TwiML is followed as Twilio
follows it, the fail-safe counts as an error, the Procfile is read as written, and the baseline
app checks Twilio's signature like the line does."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench import baseline
from bench.common import AUTH_TOKEN, BACKUP_NUMBER, CALL_FLOW_MIX, MemorySampler, mix_ratio, procfile_command
from bench.cpu import Meter, report
from bench.load import PhaseResult, Reply, Sample, check_twiml, mixed_phase_figures, next_path, summarise
from twilio_fake.signing import CallIdentity, signed_headers

HOLD_TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Gather action="/callbacks/hold-key?transfer=3&amp;tick=2" '
    'numDigits="1" timeout="3"><Say>You are number 2 in line.</Say></Gather>'
    "<Redirect>/voice/hold?transfer=3&amp;tick=3</Redirect></Response>"
)


def test_a_caller_who_presses_nothing_follows_the_redirect_and_a_menu_answer_goes_to_the_gather() -> None:
    assert next_path("/voice/hold?transfer=3&tick=2", HOLD_TWIML) == "/voice/hold?transfer=3&tick=3"
    menu = '<Response><Gather action="/voice/menu/need?lang=en&amp;attempt=1"><Say>Press 2</Say></Gather></Response>'
    assert next_path("/voice/menu/language?attempt=1", menu) == "/voice/menu/need?lang=en&attempt=1"
    assert next_path("/voice/status", "<Response/>") == ""


def test_the_backup_line_and_anything_twilio_would_reject_are_errors() -> None:
    ok = Reply(200, "text/xml; charset=utf-8", HOLD_TWIML)
    backup = Reply(200, "text/xml", f"<Response><Dial>{BACKUP_NUMBER}</Dial></Response>")

    assert check_twiml(ok) is None
    assert check_twiml(backup) == "fail-safe (backup line)"
    # The fail-safe dials the routing's backup number once a process has read the routing.
    routing_backup = Reply(200, "text/xml", "<Response><Dial>+18002738255</Dial></Response>")
    assert check_twiml(routing_backup) == "fail-safe (backup line)"
    assert check_twiml(Reply(500, "text/html", "oops")) == "http 500"
    assert check_twiml(Reply(200, "application/json", "{}")) == "not TwiML"
    assert check_twiml(Reply(204, "", ""), expect_status=204) is None


def test_the_benches_start_the_procfiles_own_commands() -> None:
    assert procfile_command("web")[:4] == ["python", "-OO", "-m", "gunicorn"]
    assert "--config" in procfile_command("web")
    assert procfile_command("worker")[:5] == ["flask", "--app", "crisisline", "workers", "run"]


def test_the_baseline_validates_twilios_signature_then_inserts_and_selects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'baseline.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("PUBLIC_BASE_URL", "http://127.0.0.1:5999")
    baseline.create_tables(url)
    client = baseline.create_app().test_client()
    params = CallIdentity("AC" + "b" * 32, "+13125550123", "+13125550100").voice_params("ringing")
    headers = signed_headers(AUTH_TOKEN, "http://127.0.0.1:5999/hook", params)

    first = client.post("/hook", data=params, headers=headers)
    second = client.post("/hook", data=params, headers=headers)
    forged = client.post("/hook", data=params, headers={**headers, "X-Twilio-Signature": "forged"})

    assert first.status_code == 200 and "Seen 1." in first.get_data(as_text=True)
    assert "Seen 2." in second.get_data(as_text=True)
    assert forged.status_code == 403


def test_the_cpu_bench_reports_each_kind_against_the_baselines_median() -> None:
    meter = Meter("")
    meter.cpu["baseline_c_pg"] = [0.004, 0.005, 0.006]
    meter.cpu["need_answer"] = [0.020, 0.025, 0.030]

    rows = {line.split(" | ")[0].strip("| "): line for line in report(meter).splitlines()[2:]}

    assert set(rows) == {"baseline_c_pg", "need_answer"}  # a kind never measured is left out
    assert rows["need_answer"] == "| need_answer | 3 | 25.00 | 25.00 | 0.20 |"
    assert rows["baseline_c_pg"].endswith("| 1.00 |")


def test_the_call_flow_mix_weighs_each_kind_by_its_count_in_a_call_and_its_cost() -> None:
    every_kind_at = {kind: 0.5 for kind in CALL_FLOW_MIX}
    # 8 requests a call: 1 incoming, 1 language, 1 need, 4 hold turns, 1 hang-up
    one_slow_need = {**every_kind_at, "need_answer": 0.1}

    assert mix_ratio(every_kind_at) == pytest.approx(0.5)
    # 7 requests at 2 baseline-costs each and 1 at 10: 8 requests cost 24 baseline requests
    assert mix_ratio(one_slow_need) == pytest.approx(8 / 24)
    assert mix_ratio({**every_kind_at, "hold_turn": 0.0}) is None  # a kind that served nothing
    assert mix_ratio({k: v for k, v in every_kind_at.items() if k != "status_callback"}) is None


def test_the_cpu_bench_reports_the_call_flow_mix_once_every_kind_of_it_was_measured() -> None:
    meter = Meter("")
    meter.cpu["baseline_c_pg"] = [0.002]
    for kind in CALL_FLOW_MIX:
        meter.cpu[kind] = [0.004]

    assert report(meter).splitlines()[-1].endswith(": 0.50x the baseline.")
    del meter.cpu["need_answer"]
    assert "Call-flow mix" not in report(meter)


def test_a_kind_sharing_its_phases_connections_is_rated_as_if_it_had_them_all() -> None:
    # 2 connections for 1 s, busy 0.8 s each: 0.1 s between a connection's requests (on average).
    alone = PhaseResult("hold", [Sample("hold_turn", 0.1, None, 0.0)] * 8, 1.0, 0.0, extra={"connections": 2})
    shared = PhaseResult(
        "answering",
        [Sample("hold_turn_while_answering", 0.1, None, 0.0)] * 6 + [Sample("accept", 0.3, None, 0.5)] * 2,
        1.0, 0.0, extra={"connections": 2},
    )  # fmt: skip

    # One kind: the measured req/s (8 requests in 1 s).
    assert mixed_phase_figures(alone, "hold_turn")["req_per_s"] == summarise(alone, "hold_turn")["req_per_s"] == 8.0
    # Sharing: busy 1.2 s of 2 connection-seconds, 0.1 s between requests; alone, 2 / (0.3 + 0.1).
    figures = mixed_phase_figures(shared, "accept")
    assert figures["req_per_s"] == 5.0
    assert mixed_phase_figures(shared, "hold_turn_while_answering")["req_per_s"] == 10.0
    assert figures["shares_connections"] and figures["req_per_s_in_phase"] == summarise(shared, "accept")["req_per_s"]


def test_the_memory_sampler_counts_pages_shared_with_a_parent_once_in_pss_and_not_in_uss() -> None:
    import subprocess
    import sys

    # A parent that touches 64 MiB, then forks a child that only reads them: the child's RSS
    # counts them whole, its PSS half of them, its USS none.
    script = (
        "import os, time\n"
        "block = bytearray(b'x' * (64 * 2**20))\n"
        "if os.fork() == 0:\n"
        "    total = sum(block[::4096]); time.sleep(30); os._exit(0)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])  # noqa: S603  # our own interpreter, our own script
    try:
        sampler = MemorySampler()
        sampler.track("demo", parent.pid)
        deadline = time.monotonic() + 10
        while "demo/worker-1" not in sampler.sample() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the child's reading pass
        rss = sampler.sample()["demo/worker-1"]
        shared = sampler.sample_shared()["demo/worker-1"]
    finally:
        parent.kill()
        parent.wait()
    assert rss > 64
    assert shared["pss"] < rss - 25  # about half of the 64 MiB block is the parent's
    assert shared["uss"] < rss - 55
