"""Gunicorn settings for the web process (read automatically from the working directory).

In production gunicorn sits behind nginx (``deploy/nginx.conf``), which reads every request
whole before handing it on: gunicorn's few threads must never wait on a slow client. So it
listens on loopback unless ``BIND_HOST`` says otherwise (a container or platform router that
itself buffers whole requests: ``BIND_HOST=0.0.0.0``).
"""

import ctypes
import ipaddress
import logging
import os
from typing import Any

bind_host = os.environ.get("BIND_HOST", "127.0.0.1")
bind = f"{bind_host}:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Many threads, most of them waiting: a voice webhook runs on the deadline's own pool
# (``crisisline.deadline``) while its gunicorn thread waits for the answer, up to the deadline
# when the database hangs. With 4 threads, 24 callers at once on a hung database were answered
# after up to 10 s, as each waited for a thread before its deadline even began; with 32, all
# within the deadline (``tests/reliability/test_hung_database_under_gunicorn.py``).
threads = int(os.environ.get("WEB_THREADS", "32"))
# Twilio gives up on a webhook after 15 s; a stuck worker must be replaced before that.
timeout = 14
graceful_timeout = 10
accesslog = "-"
# Method, path (without the query string), status, size and time only. Our paths carry no
# personal data, but a query string can: a number misconfigured to GET its webhooks sends
# ``From=%2B1...&Body=...`` in it. ``%(r)s`` (the request line) would log it whole.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
# Gunicorn 23+ opens a control socket at ~/.gunicorn/gunicorn.ctl by default: two web processes
# on one machine (scaling out, or the tests' many) would replace each other's. The line never
# uses it (signals restart and stop workers).
control_socket_disable = True


M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def cap_malloc_arenas(arenas: int) -> bool:
    """Limit glibc's malloc to ``arenas`` arenas in this process and the workers it forks.

    glibc gives each new thread an arena of its own, up to 8 per core, and a worker's dozens
    of threads (webhooks, the deadline's pool, ringing) each keep theirs: freed memory spread
    over many arenas is seldom returned, so a web worker grew about 6 MiB larger for the
    same load (bench.load, 2026-12-04). ``MALLOC_ARENA_MAX`` in the environment still wins.
    False where there is no glibc (musl, macOS), which then keep their own allocator."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


# Read before gunicorn forks its workers and before any of their threads start.
cap_malloc_arenas(2)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def on_starting(server: Any) -> None:
    """Say so when gunicorn is reachable from outside: only safe behind a buffering proxy."""
    if not _loopback(bind_host):
        server.log.warning(
            "listening on %s: slow clients can starve the webhooks unless a proxy that buffers "
            "whole requests (deploy/nginx.conf) is the only way in",
            bind,
        )


# gunicorn's own loggers (its error log: a request it could not read, quoted; an error handling
# one; a worker's traceback when the app fails to load) do not propagate to the root logger the
# app masks phone numbers on (``crisisline.app._configure_logging``), so they get the same filter
# here, on the loggers themselves: gunicorn replaces their handlers when it reloads its
# configuration, never their filters. National numbers are read in the line's region, from the
# environment as the app reads it. The master, which never loads the app and does not log
# requests, is left as it is (importing the app there before forking would preload it). The
# access log is left too: its format (above) has no field a number comes in, and the filter
# would cost every request about a millisecond of CPU (libphonenumber's matcher).
GUNICORN_LOGGERS = ("gunicorn.error",)


def mask_numbers_in_gunicorns_logs() -> None:
    from crisisline.phone import RedactPhoneNumbers

    region = os.environ.get("DEFAULT_REGION", "US").upper()
    for name in GUNICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactPhoneNumbers) for f in logger.filters):
            logger.addFilter(RedactPhoneNumbers(region))


def post_fork(server: Any, worker: Any) -> None:
    """In each worker, before it loads the app (whose failure to load it logs)."""
    mask_numbers_in_gunicorns_logs()
