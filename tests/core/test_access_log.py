"""gunicorn's access log, as ``gunicorn.conf.py`` sets it up: method, path, status and time,
never the query string (a GET webhook from a misconfigured number carries From and Body)."""

from __future__ import annotations

import runpy
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from gunicorn.config import Config
from gunicorn.glogging import Logger

from tests.conftest import ROOT

QUERY = "From=%2B13125550171&To=%2B13125550100&Body=I+took+pills"


def _gunicorn_config(access_log: Path) -> Config:
    """gunicorn's Config with every setting ``gunicorn.conf.py`` makes, as gunicorn loads it."""
    cfg = Config()
    for name, value in runpy.run_path(str(ROOT / "gunicorn.conf.py")).items():
        if name in cfg.settings:
            cfg.set(name, value)
    cfg.set("accesslog", str(access_log))
    return cfg


def test_the_access_log_line_has_the_method_path_status_and_time_but_no_query_string(tmp_path: Path) -> None:
    access_log = tmp_path / "access.log"
    logger = Logger(_gunicorn_config(access_log))
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/sms/incoming?{QUERY}",
        "PATH_INFO": "/sms/incoming",
        "QUERY_STRING": QUERY,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
    }
    request = SimpleNamespace(headers=[("X-TWILIO-SIGNATURE", "abc")])
    response = SimpleNamespace(status="405 METHOD NOT ALLOWED", sent=153, headers=[])

    try:
        logger.access(response, request, environ, timedelta(seconds=0, microseconds=12000))
    finally:
        for handler in list(logger.access_log.handlers):
            handler.close()
            logger.access_log.removeHandler(handler)
    line = access_log.read_text()

    assert '"GET /sms/incoming" 405 153 0.012000s' in line, line
    assert "?" not in line and "From=" not in line and "Body=" not in line and "5550171" not in line, line
