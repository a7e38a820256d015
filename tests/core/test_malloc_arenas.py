"""``gunicorn.conf.py`` caps glibc's malloc arenas for the web workers it forks: with an arena
per thread, a worker's many threads each kept memory of their own (``cap_malloc_arenas``)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Eight threads each allocate while all are alive, then glibc reports its arenas (one
# ``<heap nr=`` per arena) into a file.
ARENAS_AFTER_THREADS = """
import ctypes, runpy, sys, threading

if sys.argv[1] == "with-config":
    runpy.run_path(sys.argv[2])  # as gunicorn reads its config file, before any worker thread
all_allocated = threading.Barrier(8)
kept = []

def allocate():
    kept.append([str(n) * 3 for n in range(20_000)])
    all_allocated.wait()

threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
report = libc.fopen(sys.argv[3].encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(report))
libc.fclose(ctypes.c_void_p(report))
"""


def _glibc() -> bool:
    try:
        ctypes.CDLL(None).malloc_info  # noqa: B018 - present in glibc only
    except AttributeError:
        return False
    return True


def arenas_after_eight_threads(mode: str, tmp_path: Path) -> int:
    report = f"{tmp_path}/malloc-{mode}.xml"
    env = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"}
    subprocess.run(  # noqa: S603
        [sys.executable, "-c", ARENAS_AFTER_THREADS, mode, str(ROOT / "gunicorn.conf.py"), report],
        env=env,
        check=True,
        timeout=60,
    )
    with open(report) as xml:
        return xml.read().count("<heap nr=")


@pytest.mark.skipif(not _glibc(), reason="malloc arenas are glibc's (this machine has another C library)")
def test_the_web_config_keeps_a_workers_threads_to_two_malloc_arenas(tmp_path: Path) -> None:
    assert arenas_after_eight_threads("without-config", tmp_path) > 2  # glibc's own: one per thread
    assert arenas_after_eight_threads("with-config", tmp_path) <= 2
