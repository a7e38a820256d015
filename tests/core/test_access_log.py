"""gunicorn's access log, as ``gunicorn.conf.py`` sets it up: method, path, status and time,
never the query string (a GET webhook from a misconfigured number carries From and Body).

gunicorn's own Logger renders the line in a separate interpreter: importing gunicorn here would
tell the app factory it runs in a web worker (``crisisline.db.init_migrations``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

QUERY = "From=%2B13125550171&To=%2B13125550100&Body=I+took+pills"

RENDER = """
import runpy, sys
from datetime import timedelta
from types import SimpleNamespace

from gunicorn.config import Config
from gunicorn.glogging import Logger

config_file, access_log, query = sys.argv[1:]
cfg = Config()
for name, value in runpy.run_path(config_file).items():  # as gunicorn reads its config file
    if name in cfg.settings:
        cfg.set(name, value)
cfg.set("accesslog", access_log)
environ = {
    "REQUEST_METHOD": "GET", "RAW_URI": "/sms/incoming?" + query, "PATH_INFO": "/sms/incoming",
    "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
}
request = SimpleNamespace(headers=[("X-TWILIO-SIGNATURE", "abc")])
response = SimpleNamespace(status="405 METHOD NOT ALLOWED", sent=153, headers=[])
Logger(cfg).access(response, request, environ, timedelta(microseconds=12000))
"""


def test_the_access_log_line_has_the_method_path_status_and_time_but_no_query_string(tmp_path: Path) -> None:
    access_log = tmp_path / "access.log"
    subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", RENDER, str(ROOT / "gunicorn.conf.py"), str(access_log), QUERY],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    line = access_log.read_text()

    assert '"GET /sms/incoming" 405 153 0.012000s' in line, line
    assert "?" not in line and "From=" not in line and "Body=" not in line and "5550171" not in line, line
