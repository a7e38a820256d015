"""Slow clients cannot starve webhooks in the documented production setup: nginx
(``deploy/nginx.conf``) in front of gunicorn run as the Procfile runs it.

60 connections send a POST's headers, then dribble its body at a byte a second; meanwhile
genuine signed Twilio webhooks go through the same nginx and must each answer valid TwiML
within the voice deadline plus half a second. nginx reads every request whole before gunicorn
sees it, so the slow clients never hold one of gunicorn's threads. The same proxy refuses an
oversized body (413) and passes a forged signature on to the app's 403. For contrast, the
figure for the same slow clients against gunicorn directly is printed (not asserted).

The nginx config is rendered from ``deploy/nginx.conf`` itself: its upstream, log format and
application server block, with a loopback test port and no TLS (the plain-HTTP parts are what
is under test; the whole shipped file, TLS included, is checked with ``nginx -t``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pwd
import re
import select
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from crisisline.redis_server import free_port
from crisisline.settings import Settings
from tests.conftest import LINE_NUMBER, ROOT, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, deployment_environment, procfile_argv
from tests.web_process import stop, wait_until_healthy
from twilio_fake.server import FakeTwilioServer
from twilio_fake.signing import CallIdentity, sign, signed_headers

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
SLOW_CLIENTS = 60
GENUINE_WEBHOOKS = 20
DEADLINE = 2.0  # VOICE_DEADLINE_SECONDS, the production default
GRACE = 0.5  # the acceptance: valid TwiML within the deadline plus half a second
MAX_BODY = 256 * 1024  # MAX_CONTENT_LENGTH in crisisline/app.py
SLOW_BODY_LENGTH = 2000  # bytes each slow client promises, then sends one a second


def nginx_binary() -> str | None:
    """nginx on PATH, or where Debian puts it (``/usr/sbin`` is not on every user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


NGINX = nginx_binary()
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="no nginx binary (PATH, /usr/sbin): apt-get install nginx-light to run the slow-client test"
)


# --- deploy/nginx.conf, read and rendered --------------------------------------------------


def top_level_statements(conf: str) -> list[str]:
    """The top-level directives and blocks of an nginx config, comments removed."""
    text = re.sub(r"#[^\n]*", "", conf)
    statements, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                statements.append(text[start : index + 1].strip())
                start = index + 1
        elif char == ";" and depth == 0:
            statements.append(text[start : index + 1].strip())
            start = index + 1
    assert depth == 0 and not text[start:].strip(), "unbalanced braces in deploy/nginx.conf"
    return statements


def application_server(conf: str) -> str:
    """The server block that proxies to the app (the TLS one)."""
    servers = [s for s in top_level_statements(conf) if s.startswith("server") and "proxy_pass" in s]
    assert len(servers) == 1, "deploy/nginx.conf should have exactly one server block proxying to the app"
    return servers[0]


def render_for_test(conf: str, *, listen_port: int, upstream_port: int, workdir: Path) -> str:
    """The shipped upstream, log format, maps and application server, on plain HTTP on loopback."""
    kept = []
    for statement in top_level_statements(conf):
        if statement.startswith("upstream"):
            rendered, count = re.subn(r"server\s+127\.0\.0\.1:\d+", f"server 127.0.0.1:{upstream_port}", statement)
            assert count == 1, "the upstream should be gunicorn on 127.0.0.1 (BIND_HOST)"
            kept.append(rendered)
        elif statement.startswith(("log_format", "map")):
            kept.append(statement)
    server = application_server(conf)
    server = re.sub(r"^\s*listen\s[^;]*;\s*$", "", server, flags=re.MULTILINE)
    server = re.sub(r"^\s*ssl_\w+\s[^;]*;\s*$", "", server, flags=re.MULTILINE)
    server = re.sub(r"\b(access_log|error_log)\s+\S+", lambda m: f"{m[1]} {workdir / m[1]}.log", server)
    server = server.replace("{", f"{{\n    listen 127.0.0.1:{listen_port};", 1)
    kept.append(server)
    return "\n\n".join(kept)


def main_config(site: str, workdir: Path) -> str:
    """Everything nginx.conf's main context gives a site, with every path in ``workdir``."""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"worker_processes 1;\npid {workdir / 'nginx.pid'};\nerror_log {workdir / 'error.log'} warn;\n"
        f"events {{ worker_connections 1024; }}\n"
        f"http {{\n    default_type application/octet-stream;\n{temp_paths}\n{site}\n}}\n"
    )


def test_the_shipped_nginx_config_has_the_production_essentials() -> None:
    conf = NGINX_CONF.read_text()
    server = application_server(conf)

    def setting(name: str) -> str:
        found = re.findall(rf"^\s*{name}\s+([^;]+);", server, flags=re.MULTILINE)
        assert len(found) == 1, f"{name} should be set once in the application server block"
        return found[0].strip()

    assert setting("proxy_request_buffering") == "on"
    assert setting("proxy_buffering") == "on"
    assert setting("client_max_body_size") == f"{MAX_BODY // 1024}k"
    assert setting("client_body_buffer_size") == f"{MAX_BODY // 1024}k"  # bodies never in a temp file
    for timeout in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert int(setting(timeout).removesuffix("s")) <= 10, timeout
    assert int(setting("proxy_read_timeout").removesuffix("s")) <= 15  # Twilio's own limit
    headers = dict(
        re.findall(r"^\s*proxy_set_header\s+(\S+)\s+(\S+);", server, flags=re.MULTILINE),
    )
    # Every header ProxyFix trusts with TRUSTED_PROXY_COUNT=1 is set (or removed) by nginx.
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert headers["X-Forwarded-Host"] == "$host"
    assert "X-Forwarded-Port" in headers and "X-Forwarded-Prefix" in headers
    assert re.search(r"listen\s+443\s+ssl", server)
    upstream = next(s for s in top_level_statements(conf) if s.startswith("upstream"))
    assert re.search(r"server\s+127\.0\.0\.1:5000", upstream)  # gunicorn on loopback only
    redirect = [s for s in top_level_statements(conf) if s.startswith("server") and "return 301 https://" in s]
    assert redirect and re.search(r"listen\s+80;", redirect[0])


@needs_nginx
def test_the_whole_shipped_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    """``nginx -t`` on deploy/nginx.conf as shipped (TLS included), with a throwaway
    certificate and log paths in a temporary directory."""
    assert NGINX is not None
    certificate, key = _self_signed_certificate(tmp_path)
    site = NGINX_CONF.read_text()
    site = site.replace("/etc/letsencrypt/live/line.example.org/fullchain.pem", str(certificate))
    site = site.replace("/etc/letsencrypt/live/line.example.org/privkey.pem", str(key))
    site = re.sub(r"/var/log/nginx/", f"{tmp_path}/", site)
    (tmp_path / "nginx.conf").write_text(main_config(site, tmp_path))
    result = subprocess.run(  # noqa: S603 - the nginx binary found above
        [NGINX, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "line.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


# --- the line: gunicorn as the Procfile runs it, nginx in front ---------------------------


@dataclass
class Line:
    public_url: str  # nginx, what Twilio calls (PUBLIC_BASE_URL)
    gunicorn_url: str  # gunicorn itself, on loopback
    logs: Callable[[], str]


@pytest.fixture
def line_behind_nginx(
    app: Flask, settings: Settings, fake_twilio_server: FakeTwilioServer
) -> Iterator[Line]:  # fmt: skip
    """gunicorn (2 workers x 4 threads, far fewer than the slow clients: nginx must be what
    keeps them off gunicorn; loopback only, TRUSTED_PROXY_COUNT=1) and, in front,
    a non-root nginx running the shipped config's essentials on a test port."""
    assert NGINX is not None
    gunicorn_port, nginx_port = free_port(), free_port()
    public_url = f"http://127.0.0.1:{nginx_port}"
    workdir = Path(tempfile.mkdtemp(prefix="crisisline-nginx-"))
    try:
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:  # nginx itself, not only its workers, runs unprivileged
            nobody = pwd.getpwnam("nobody")
            os.chown(workdir, nobody.pw_uid, nobody.pw_gid)
            run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        conf = workdir / "nginx.conf"
        site = render_for_test(NGINX_CONF.read_text(), listen_port=nginx_port, upstream_port=gunicorn_port,
                               workdir=workdir)  # fmt: skip
        conf.write_text(main_config(site, workdir))
        gunicorn_log = workdir / "gunicorn.log"
        env = {
            **os.environ,
            **deployment_environment(
                settings.database_url, settings.redis_url, TWILIO_API_BASE_URL=fake_twilio_server.base_url,
                PUBLIC_BASE_URL=public_url, TRUSTED_PROXY_COUNT="1", VOICE_DEADLINE_SECONDS=str(DEADLINE),
            ),
            "PORT": str(gunicorn_port), "BIND_HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", "WEB_THREADS": "4",
        }  # fmt: skip

        def logs() -> str:
            parts = []
            for path in (gunicorn_log, workdir / "error.log", workdir / "error_log.log"):
                if path.exists():
                    parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
            return "\n".join(parts)

        with gunicorn_log.open("wb") as log_file:
            gunicorn = subprocess.Popen(  # noqa: S603 - the Procfile's own web line
                procfile_argv("web"), env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
            )
        try:
            wait_until_healthy(f"http://127.0.0.1:{gunicorn_port}", gunicorn, "gunicorn", logs)
            nginx = subprocess.Popen(  # noqa: S603 - the nginx binary found above
                [NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf), "-g", "daemon off;"],
                cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **run_as,
            )  # fmt: skip
            try:
                wait_until_healthy(public_url, nginx, "nginx", logs)
                yield Line(public_url, f"http://127.0.0.1:{gunicorn_port}", logs)
            finally:
                stop(nginx)
        finally:
            stop(gunicorn)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class SlowClients:
    """``count`` connections that each send a webhook POST's headers, then its body at one byte
    a second, from one thread, until closed."""

    def __init__(self, url: str, count: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sockets: list[socket.socket] = []
        self.dropped = 0
        self.stopped = threading.Event()
        head = (
            f"POST /voice/incoming HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: TwilioProxy/1.1\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {'x' * 28}\r\n"
            f"Content-Length: {SLOW_BODY_LENGTH}\r\n\r\n"
        ).encode()
        try:
            for _ in range(count):
                self.sockets.append(socket.create_connection((host, int(port)), timeout=5))
                self.sockets[-1].sendall(head + b"A")
        except OSError:
            for connection in self.sockets:
                connection.close()
            raise
        self.thread = threading.Thread(target=self._dribble, daemon=True)
        self.thread.start()

    def _dribble(self) -> None:
        while not self.stopped.wait(1.0):
            for connection in self.sockets:
                if connection.fileno() == -1:
                    continue
                try:
                    connection.send(b"A")
                except OSError:
                    self.dropped += 1
                    connection.close()

    def still_connected(self) -> int:
        """Connections the server has neither answered nor closed (nothing to read on them)."""
        open_ = [connection for connection in self.sockets if connection.fileno() != -1]
        readable, _, _ = select.select(open_, [], [], 0)  # an answer (408, 400…) or EOF
        return len(open_) - len(readable)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        for connection in self.sockets:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


@contextlib.contextmanager
def slow_clients(url: str, count: int = SLOW_CLIENTS) -> Iterator[SlowClients]:
    clients = SlowClients(url, count)
    try:
        time.sleep(1.5)  # every one of them is mid-body now
        yield clients
    finally:
        clients.close()


@dataclass
class Answer:
    seconds: float
    status: int | None  # None: no answer before the client gave up
    twiml: bool = False  # a TwiML document
    menu: bool = False  # the language menu itself (else the deadline's fail-safe: a busy machine)


def genuine_webhook(base_url: str, index: int, timeout: float) -> Answer:
    """A new call's first webhook, exactly as Twilio sends it, signed for ``base_url``."""
    url = f"{base_url}/voice/incoming"
    params = CallIdentity(TEST_ACCOUNT_SID, f"+1312555{4000 + index:04d}", LINE_NUMBER).voice_params("ringing")
    started = time.perf_counter()
    try:
        response = requests.post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params),
                                 timeout=timeout)  # fmt: skip
    except requests.RequestException:
        return Answer(time.perf_counter() - started, None)
    seconds = time.perf_counter() - started
    twiml = menu = False
    if response.status_code == 200 and response.headers.get("Content-Type", "").startswith("text/xml"):
        root = ET.fromstring(response.content)  # noqa: S314 - our own TwiML
        twiml = root.tag == "Response" and len(root) > 0
        menu = twiml and root.find("Gather") is not None
    return Answer(seconds, response.status_code, twiml, menu)


def webhooks_arriving(base_url: str, count: int, timeout: float) -> list[Answer]:
    """``count`` new calls, one every 100 ms (a busy minute compressed), answered concurrently."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = []
        for index in range(count):
            futures.append(pool.submit(genuine_webhook, base_url, index, timeout))
            time.sleep(0.1)
        return [future.result() for future in futures]


def figures(answers: list[Answer]) -> str:
    answered = [a.seconds for a in answers if a.status is not None]
    if not answered:
        return f"0 of {len(answers)} answered"
    return (
        f"{len(answered)} of {len(answers)} answered, p50 {statistics.median(answered) * 1000:.0f} ms, "
        f"max {max(answered) * 1000:.0f} ms"
    )


@needs_nginx
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the HTTP front, once
def test_sixty_slow_clients_do_not_starve_genuine_webhooks_behind_nginx(line_behind_nginx: Line) -> None:
    line = line_behind_nginx
    with slow_clients(line.public_url) as clients:
        answers = webhooks_arriving(line.public_url, GENUINE_WEBHOOKS, timeout=10)
        connected = clients.still_connected()
    print(
        f"\nslow clients: {SLOW_CLIENTS} connections dribbling 1 byte/s through nginx; "
        f"{GENUINE_WEBHOOKS} genuine webhooks: {figures(answers)} "
        f"(deadline {DEADLINE:.1f} s + {GRACE:.1f} s); {sum(a.menu for a in answers)} of them the menu itself (any "
        f"other: the deadline's fail-safe, in time); {connected} slow clients still connected at the end"
    )
    # Signed for the public URL, so a 200 also means the app rebuilt that URL from nginx's headers.
    late = [a for a in answers if a.status != 200 or not a.twiml or a.seconds > DEADLINE + GRACE]
    assert late == [], f"{len(late)} webhooks late or failed: {late}\n{line.logs()}"
    assert connected == SLOW_CLIENTS  # they were there all along, held by nginx

    # The same proxy: an oversized body is refused before it reaches the app, a forgery by it.
    url = f"{line.public_url}/voice/incoming"
    params = CallIdentity(TEST_ACCOUNT_SID, "+13125554999", LINE_NUMBER).voice_params("ringing")
    huge = {**params, "Body": "x" * (MAX_BODY + 1024)}
    assert (
        requests.post(url, data=huge, headers=signed_headers(TEST_AUTH_TOKEN, url, huge), timeout=10).status_code == 413
    )
    forged = {**signed_headers(TEST_AUTH_TOKEN, url, params), "X-Twilio-Signature": sign("0" * 32, url, params)}
    assert requests.post(url, data=params, headers=forged, timeout=10).status_code == 403

    # For contrast (not asserted): the same slow clients against gunicorn directly.
    with slow_clients(line.gunicorn_url):
        direct = webhooks_arriving(line.gunicorn_url, 4, timeout=DEADLINE + GRACE + 1.5)
    in_time = sum(1 for a in direct if a.status == 200 and a.seconds <= DEADLINE + GRACE)
    print(
        f"contrast, gunicorn without nginx: {figures(direct)}; {in_time} of {len(direct)} within "
        f"{DEADLINE + GRACE:.1f} s"
    )
