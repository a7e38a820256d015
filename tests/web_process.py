"""The Procfile's web process (gunicorn with ``gunicorn.conf.py``) for tests that need it as
deployed: its own interpreter, its workers and threads, real HTTP."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, procfile_argv

GUNICORN = procfile_argv("web")


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], what: str, logs: Callable[[], str]) -> None:
    """Until ``url``'s ``/healthz`` answers (30 s at most); fails the test, with ``logs()``, if
    the process exits or never answers."""
    for _ in range(150):
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{logs()}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"{what} did not start:\n{logs()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it has not gone in 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def gunicorn_serving(env: dict[str, str], port: int, log_path: Path | None = None) -> Iterator[str]:
    """gunicorn as the Procfile starts it, with ``env`` (``PORT`` is set here), until the block
    ends; yields its loopback URL. Its output goes to ``log_path`` (else nowhere)."""
    url = f"http://127.0.0.1:{port}"
    env = {**env, "PORT": str(port), "BIND_HOST": "127.0.0.1"}
    if log_path is None:
        process = subprocess.Popen(GUNICORN, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    else:
        with log_path.open("wb") as log_file:  # the child keeps its own copy of the handle
            process = subprocess.Popen(GUNICORN, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603

    def logs() -> str:
        if log_path is None or not log_path.exists():
            return "(no log kept)"
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])

    try:
        wait_until_healthy(url, process, "gunicorn", logs)
        yield url
    finally:
        stop(process)
