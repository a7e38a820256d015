"""The shipped nginx config (``deploy/nginx.conf``) writes no webhook query string to any log.

Before: its access log left query strings out, but its error log (``warn``) writes the whole
request line for every upstream failure, so a number misconfigured to GET its webhooks (From and
Body in the query string) during a gunicorn restart put a phone number and a message in the
error log; and the plain-HTTP redirect server used nginx's default access log (the request line,
query string included). Now a webhook path asked for with anything but POST is refused with 405
before it is proxied, our own POSTs with id query strings (``?transfer=12&tick=3``) still go
through, and the redirect server logs like the application server.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from crisisline.redis_server import free_port
from tests.reliability.test_slow_clients import (
    NGINX,
    NGINX_CONF,
    main_config,
    needs_nginx,
    render_for_test,
    top_level_statements,
)

QUERY = "From=%2B13125550199&To=%2B13125550100&Body=I+took+the+Gallowmere+pills"
PERSONAL = ("5550199", "Gallowmere")


@dataclass
class Nginx:
    url: str  # the application server, its upstream (gunicorn) down
    redirect_url: str  # the plain-HTTP redirect server
    workdir: Path

    def logs(self) -> dict[str, str]:
        time.sleep(0.3)  # nginx writes its logs as the request ends
        return {p.name: p.read_text(errors="replace") for p in self.workdir.glob("*.log")}


def redirect_server(conf: str, *, listen_port: int, workdir: Path) -> str:
    (server,) = [s for s in top_level_statements(conf) if s.startswith("server") and "return 301 https://" in s]
    server = re.sub(r"^\s*listen\s[^;]*;\s*$", "", server, flags=re.MULTILINE)
    server = re.sub(r"\baccess_log\s+/\S+", f"access_log {workdir / 'redirect_access'}.log", server)
    return server.replace("{", f"{{\n    listen 127.0.0.1:{listen_port};", 1)


@pytest.fixture
def nginx_with_gunicorn_down() -> Iterator[Nginx]:
    assert NGINX is not None
    nginx_port, redirect_port, dead_upstream = free_port(), free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="crisisline-nginx-logs-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(workdir, nobody.pw_uid, nobody.pw_gid)
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    conf = NGINX_CONF.read_text()
    site = render_for_test(conf, listen_port=nginx_port, upstream_port=dead_upstream, workdir=workdir)
    # The distribution's nginx.conf logs every request in the combined format (the request line,
    # query string included) unless a server says otherwise.
    site = f"access_log {workdir / 'default_access'}.log combined;\n" + site
    site += "\n\n" + redirect_server(conf, listen_port=redirect_port, workdir=workdir)
    (workdir / "nginx.conf").write_text(main_config(site, workdir))
    nginx = subprocess.Popen(  # noqa: S603 - the nginx binary the slow-client test finds
        [NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(workdir / "nginx.conf"),
         "-g", "daemon off;"], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **run_as,
    )  # fmt: skip
    try:
        for _ in range(50):
            try:
                requests.get(f"http://127.0.0.1:{nginx_port}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield Nginx(f"http://127.0.0.1:{nginx_port}", f"http://127.0.0.1:{redirect_port}", workdir)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def leaked(logs: dict[str, str]) -> dict[str, str]:
    return {name: text for name, text in logs.items() if any(word in text for word in PERSONAL)}


@needs_nginx
def test_a_webhook_asked_for_with_get_is_refused_before_it_can_reach_the_error_log(
    nginx_with_gunicorn_down: Nginx,
) -> None:
    line = nginx_with_gunicorn_down
    assert requests.get(f"{line.url}/sms/incoming?{QUERY}", timeout=5).status_code == 405
    assert requests.head(f"{line.url}/voice/incoming?{QUERY}", timeout=5).status_code == 405
    assert requests.get(f"{line.url}/voice//status?{QUERY}", timeout=5).status_code == 405  # as nginx reads it

    assert not leaked(line.logs())


@needs_nginx
def test_twilios_posts_with_our_own_id_query_strings_still_reach_the_app(nginx_with_gunicorn_down: Nginx) -> None:
    line = nginx_with_gunicorn_down
    body = {"From": "+13125550199", "Body": "I took the Gallowmere pills"}
    # 502: proxied to gunicorn (down here), not refused.
    assert requests.post(f"{line.url}/voice/hold?transfer=12&tick=3", data=body, timeout=5).status_code == 502
    assert requests.post(f"{line.url}/sms/incoming", data=body, timeout=5).status_code == 502
    assert requests.get(f"{line.url}/healthz", timeout=5).status_code == 502  # not a webhook: proxied

    logs = line.logs()
    assert "/voice/hold?transfer=12&tick=3" in logs["error.log"] + logs.get("error_log.log", "")
    assert not leaked(logs)


@needs_nginx
def test_the_plain_http_redirect_logs_no_query_string(nginx_with_gunicorn_down: Nginx) -> None:
    line = nginx_with_gunicorn_down
    answer = requests.get(f"{line.redirect_url}/sms/incoming?{QUERY}", timeout=5, allow_redirects=False)
    assert answer.status_code == 301

    logs = line.logs()
    assert "/sms/incoming" in logs.get("redirect_access.log", "")
    assert not leaked(logs)


def test_the_tls_default_server_logs_nothing() -> None:
    (default,) = [s for s in top_level_statements(NGINX_CONF.read_text()) if "default_server" in s]
    assert re.search(r"^\s*access_log\s+off;", default, flags=re.MULTILINE)
