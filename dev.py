#!/usr/bin/env python3
"""Set up and run the crisis line on a machine that has only Python 3.11+.

    python3 dev.py run    # web + worker on http://127.0.0.1:5000, SQLite, a private Redis
    python3 dev.py test   # lint, type-check and the whole test suite

The first run makes .venv/ and installs requirements; later runs reinstall only when a
requirements file changed. Uses only the standard library until the venv exists.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".requirements.sha256"
REQUIREMENTS = ["requirements.txt", "requirements-dev.txt"]


def ensure_venv() -> None:
    """Create .venv and install pinned requirements when they changed since the last install."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by an older python3
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print("creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in REQUIREMENTS)).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    print("installing requirements …", flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "-r", str(ROOT / "requirements-dev.txt")], check=True
    )
    STAMP.write_text(digest)


def in_venv(*args: str) -> None:
    """Re-run this script inside the venv, where the project's packages are importable."""
    os.execv(str(PYTHON), [str(PYTHON), str(ROOT / "dev.py"), *args])


def flask(*args: str, env: dict[str, str]) -> None:
    subprocess.run([str(BIN / "flask"), "--app", "crisisline", *args], check=True, env=env, cwd=ROOT)


def run_line() -> int:
    """Start Redis if none is configured, migrate, publish the example routing, start web + worker."""
    from crisisline.redis_server import start_redis  # only importable inside the venv

    env = dict(os.environ)
    env.setdefault("CRISISLINE_ENV", "development")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("PORT", "5000")
    env.setdefault("BIND_HOST", "127.0.0.1")  # local only; a tunnel (e.g. ngrok) reaches it
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # honcho's shells find gunicorn, flask
    redis_process = None
    if not env.get("REDIS_URL"):
        redis_process = start_redis(ROOT / "instance" / "redis")
        env["REDIS_URL"] = redis_process.url
        print(f"started a private Redis at {redis_process.url} (data in instance/redis)", flush=True)
    twilio_process = None
    try:
        flask("db", "upgrade", env=env)
        flask("line", "bootstrap", env=env)
        port = env["PORT"]
        env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
        if not env.get("TWILIO_ACCOUNT_SID") and not env.get("TWILIO_API_BASE_URL"):
            twilio_process = start_local_twilio(env)
        print(
            f"\nThe line is up at http://127.0.0.1:{port}  (Ctrl-C stops it)\n"
            f"Place a test call:  {PYTHON} -m twilio_fake.phone --base-url http://127.0.0.1:{port}"
            " --press 2 --press 3\n",
            flush=True,
        )
        honcho = subprocess.Popen([str(BIN / "honcho"), "start", "web", "worker", "clock"], env=env, cwd=ROOT)

        def stop(signum: int, _frame: object) -> None:
            honcho.send_signal(signal.SIGTERM)  # honcho stops web, worker and clock in turn

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        return honcho.wait()
    finally:
        if twilio_process:
            twilio_process.terminate()
        if redis_process:
            redis_process.stop()


def start_local_twilio(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """No Twilio account configured: run the local stand-in of Twilio's REST API, so the line
    can ring responders and send texts end to end without reaching the internet."""
    import json

    from crisisline.redis_server import free_port

    secrets = json.loads((ROOT / "instance" / "development-secrets.json").read_text())
    port = free_port()
    process = subprocess.Popen(
        [str(PYTHON), "-m", "twilio_fake.server", "--port", str(port), "--auto-deliver",
         "--account-sid", secrets["TWILIO_ACCOUNT_SID"], "--auth-token", secrets["TWILIO_AUTH_TOKEN"]],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    env["TWILIO_API_BASE_URL"] = f"http://127.0.0.1:{port}"
    print(f"no Twilio account set: local Twilio stand-in on http://127.0.0.1:{port} (state: /_fake/state)")
    return process


def run_tests(pytest_args: list[str]) -> int:
    """Lint, type-check, then run pytest (its exit code is returned unchanged)."""
    for command in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]):
        print("$", " ".join(command), flush=True)
        if subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT).returncode:
            return 1
    return subprocess.run([str(PYTHON), "-m", "pytest", *pytest_args], cwd=ROOT).returncode


def main() -> int:
    command, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command not in ("run", "test", "_run", "_test"):
        print(__doc__)
        return 2
    if command in ("run", "test"):
        ensure_venv()
        in_venv(f"_{command}", *rest)
    sys.path.insert(0, str(ROOT))
    return run_line() if command == "_run" else run_tests(rest)


if __name__ == "__main__":
    sys.exit(main())
