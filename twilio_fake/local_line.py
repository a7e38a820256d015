"""Where the running local line is: ``instance/line.json``, written by ``dev.py run``.

The phone CLI (``python -m twilio_fake.phone``) reads it, so the README's commands reach the
line ``dev.py run`` started (its web URL, the Twilio stand-in's URL, its private Redis) rather
than whatever else holds a port. Standard library only: ``dev.py`` imports it too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE_FILE = ROOT / "instance" / "line.json"
SECRETS_FILE = ROOT / "instance" / "development-secrets.json"
DEFAULT_BASE_URL = "http://127.0.0.1:5000"
DEFAULT_LINE_NUMBER = "+13125550100"


@dataclass(frozen=True)
class LocalLine:
    """The URLs of a line started by ``dev.py run`` (no secrets: those stay in their own file)."""

    base_url: str
    redis_url: str
    twilio_url: str | None  # the local Twilio stand-in; None when a real account is used
    line_number: str = DEFAULT_LINE_NUMBER
    pid: int = 0  # dev.py's process: a file left by a killed run is ignored


def write_local_line(line: LocalLine, path: Path = LINE_FILE) -> None:
    """Write ``line`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(asdict(line), indent=2) + "\n")
    temporary.replace(path)


def remove_local_line(path: Path = LINE_FILE) -> None:
    path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_local_line(path: Path = LINE_FILE) -> LocalLine | None:
    """The running line, or None if none was started (or the one that wrote it is gone)."""
    try:
        data = json.loads(path.read_text())
        line = LocalLine(**data)
    except (OSError, ValueError, TypeError):
        return None
    return line if _alive(line.pid) else None
