"""Every Procfile process masks phone numbers in what it logs, not only what reaches the root
logger: gunicorn's error log does not propagate there, and RQ gives its loggers handlers of
their own (not propagating) when nothing above them has one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from crisisline.redis_server import free_port
from tests.conftest import ROOT, deployment_environment
from tests.web_process import gunicorn_serving

# A header line without its colon: gunicorn refuses the request and logs the line it could not
# read, quoted, on its error log ("Invalid request from ip=...: Invalid HTTP Header: '...'").
UNREADABLE_HEADERS = (b"X-Caller +44 7911 123456", b"X-Caller 07911 123456")


def test_gunicorns_error_log_masks_numbers_in_a_request_it_could_not_read(tmp_path: Path, redis_url: str) -> None:
    log_path, port = tmp_path / "web.log", free_port()
    env = {**os.environ, **deployment_environment(f"sqlite:///{tmp_path / 'line.db'}", redis_url,
                                                  DEFAULT_REGION="GB", LOG_LEVEL="INFO")}  # fmt: skip
    with gunicorn_serving(env, port, log_path):
        for header in UNREADABLE_HEADERS:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: line\r\n" + header + b"\r\n\r\n")
                assert client.recv(64).startswith(b"HTTP/1.1 400")
        for _ in range(50):  # the worker writes its line after answering
            if log_path.read_text().count("Invalid HTTP Header") == len(UNREADABLE_HEADERS):
                break
            time.sleep(0.1)
    log = log_path.read_text()

    refused = [line for line in log.splitlines() if "Invalid HTTP Header" in line]
    assert len(refused) == 2 and all("'X-Caller [redacted-number]'" in line for line in refused), log
    assert "7911" not in log and "123456" not in log, log


WORKER_LOGGING = """
import logging
from rq.logutils import setup_loghandlers
from crisisline import create_app

create_app()
for name in ("rq.worker", "rq.job"):  # as RQ's Worker.bootstrap does, once the app is made
    setup_loghandlers("INFO", name=name)
logging.getLogger("rq.worker").warning("Worker w1: job for %s", "07911 123456")
logging.getLogger("rq.job").warning("job for %s", "+44 7911 123456")
logging.getLogger("workers.clock").error("clock: contact for %s", "07911 123456")
"""


def test_the_worker_and_clock_processes_mask_numbers_in_rqs_loggers_and_their_own(
    tmp_path: Path, redis_url: str
) -> None:
    env = {**os.environ, **deployment_environment(f"sqlite:///{tmp_path / 'line.db'}", redis_url,
                                                  DEFAULT_REGION="GB")}  # fmt: skip
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", WORKER_LOGGING], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    output = done.stdout + done.stderr

    assert output.count("[redacted-number]") == 3, output
    assert "7911" not in output, output
