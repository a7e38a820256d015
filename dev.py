#!/usr/bin/env python3
"""Set up and run the crisis line on a machine that has only Python 3.11+.

    python3 dev.py run [--port N]   # web + worker + clock on http://127.0.0.1:5000 (or PORT), SQLite,
                                    # a private Redis, the local Twilio stand-in
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
    # The web process runs under -OO (Procfile), whose .opt-2.pyc files pip does not write: without
    # them every web worker compiles its libraries at start (1.4 s more here), and where
    # PYTHONDONTWRITEBYTECODE is set, at every start. About 10 s, once per install.
    print("compiling the libraries for python -OO …", flush=True)
    libraries = subprocess.run(
        [str(PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run([str(PYTHON), "-OO", "-m", "compileall", "-q", libraries], check=False, stdout=subprocess.DEVNULL)
    STAMP.write_text(digest)


def in_venv(*args: str) -> None:
    """Re-run this script inside the venv, where the project's packages are importable."""
    os.execv(str(PYTHON), [str(PYTHON), str(ROOT / "dev.py"), *args])


def flask(*args: str, env: dict[str, str]) -> None:
    subprocess.run([str(BIN / "flask"), "--app", "crisisline", *args], check=True, env=env, cwd=ROOT)


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (gunicorn would then stop on
    "Connection in use" after we said the line was up)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def wait_until_up(url: str, process: subprocess.Popen[bytes], seconds: float = 60.0) -> bool:
    """Poll ``url`` until it answers 200, the process dies, or ``seconds`` pass."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - our own loopback URL
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def run_line(args: list[str]) -> int:
    """Start Redis if none is configured, migrate, publish the example routing, start web + worker
    + clock (and the local Twilio stand-in when no account is set); say where each one is."""
    from crisisline.redis_server import free_port, start_redis  # only importable inside the venv
    from twilio_fake.local_line import DEFAULT_LINE_NUMBER, LocalLine, remove_local_line, write_local_line

    env = dict(os.environ)
    if "--port" in args:
        if args.index("--port") + 1 >= len(args) or not args[args.index("--port") + 1].isdigit():
            print("--port needs a number, e.g. python3 dev.py run --port 5050", file=sys.stderr)
            return 2
        env["PORT"] = args[args.index("--port") + 1]
    env.setdefault("CRISISLINE_ENV", "development")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("PORT", "5000")
    env.setdefault("BIND_HOST", "127.0.0.1")  # local only; a tunnel (e.g. ngrok) reaches it
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # honcho's shells find gunicorn, flask
    host, port = env["BIND_HOST"], env["PORT"]
    if port_in_use(host, int(port)):
        print(
            f"Port {port} on {host} is already in use, so the line cannot start there.\n"
            f"Pick another port:  python3 dev.py run --port 5050   (or PORT=5050 python3 dev.py run)",
            file=sys.stderr,
        )
        return 1
    redis_process = None
    if not env.get("REDIS_URL"):
        # On Redis's default port when it is free; on any port, the line's own CLIs (`flask
        # workers status`) find it through instance/line.json while this runs.
        redis_port = 6379 if not port_in_use("127.0.0.1", 6379) else free_port()
        redis_process = start_redis(ROOT / "instance" / "redis", port=redis_port)
        env["REDIS_URL"] = redis_process.url
        print(f"started a private Redis at {redis_process.url} (data in instance/redis)", flush=True)
    twilio_process = None
    honcho: subprocess.Popen[bytes] | None = None
    try:
        flask("db", "upgrade", env=env)
        flask("line", "bootstrap", env=env)
        env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
        base_url = f"http://127.0.0.1:{port}"
        if not env.get("TWILIO_ACCOUNT_SID") and not env.get("TWILIO_API_BASE_URL"):
            twilio_process = start_local_twilio(env, base_url, env.get("LINE_PHONE_NUMBER") or DEFAULT_LINE_NUMBER)
        twilio_url = env.get("TWILIO_API_BASE_URL") if twilio_process else None
        write_local_line(
            LocalLine(base_url, env["REDIS_URL"], twilio_url, env.get("LINE_PHONE_NUMBER") or DEFAULT_LINE_NUMBER,
                      os.getpid())
        )  # fmt: skip
        honcho = subprocess.Popen([str(BIN / "honcho"), "start", "web", "worker", "clock"], env=env, cwd=ROOT)

        def stop(signum: int, _frame: object) -> None:
            if honcho is not None:
                honcho.send_signal(signal.SIGTERM)  # honcho stops web, worker and clock in turn

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if not wait_until_up(f"{base_url}/healthz", honcho):
            print(f"\nThe web process did not come up on {base_url}; see its output above.", flush=True)
            honcho.send_signal(signal.SIGTERM)
            return honcho.wait() or 1
        print(
            f"\nThe line is up at {base_url}  (Ctrl-C stops it; its addresses are in instance/line.json)\n"
            + (f"Twilio stand-in: {twilio_url}  (state: {twilio_url}/_fake/state)\n" if twilio_url else "")
            + (f"Browser phone:   {twilio_url}/phone/  (call, text, answer: a web page)\n" if twilio_url else "")
            + f'Place a test call:   {PYTHON} -m twilio_fake.phone --press 2 --say "quiero morir"\n'
            f"Be the counselor:    {PYTHON} -m twilio_fake.phone answer-as any\n"
            f'Text the line:       {PYTHON} -m twilio_fake.phone text "I need to talk to someone"\n',
            flush=True,
        )
        return honcho.wait()
    finally:
        remove_local_line()
        if honcho is not None and honcho.poll() is None:
            honcho.terminate()
            honcho.wait(timeout=30)
        if twilio_process:
            twilio_process.terminate()
        if redis_process:
            redis_process.stop()


def start_local_twilio(env: dict[str, str], line_url: str, line_number: str) -> subprocess.Popen[bytes]:
    """No Twilio account configured: run the local stand-in of Twilio's REST API, so the line
    can ring responders and send texts end to end without reaching the internet. Its calls ring
    out to ``no-answer`` after their ring timeout, as on Twilio. It also serves the browser
    phone for the line at ``line_url`` (``<stand-in>/phone/``)."""
    import json

    from crisisline.redis_server import free_port

    secrets = json.loads((ROOT / "instance" / "development-secrets.json").read_text())
    port = free_port()
    log = (ROOT / "instance" / "twilio-stand-in.log").open("ab")
    process = subprocess.Popen(
        [str(PYTHON), "-m", "twilio_fake.server", "--port", str(port), "--auto-deliver", "--ring-timeouts",
         "--account-sid", secrets["TWILIO_ACCOUNT_SID"], "--auth-token", secrets["TWILIO_AUTH_TOKEN"],
         "--line-url", line_url, "--line-number", line_number],
        cwd=ROOT, stdout=log, stderr=log, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    if not wait_until_up(f"{url}/_fake/state", process, seconds=30):
        raise SystemExit(f"the local Twilio stand-in did not start; see {log.name}")
    env["TWILIO_API_BASE_URL"] = url
    print(f"no Twilio account set: local Twilio stand-in on {url} (log: instance/twilio-stand-in.log)")
    return process


def run_tests(pytest_args: list[str]) -> int:
    """Lint, type-check, then run pytest (its exit code is returned unchanged)."""
    for command in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]):
        print("$", " ".join(command), flush=True)
        if subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT).returncode:
            return 1
    compile_the_project()
    return subprocess.run([str(PYTHON), "-m", "pytest", *in_parallel(pytest_args), *pytest_args], cwd=ROOT).returncode


def in_parallel(pytest_args: list[str]) -> list[str]:
    """pytest-xdist's ``-n auto`` (a process per CPU: most tests wait on sockets, sleeps and
    other processes, so two halve the suite's time on two cores) unless the arguments choose
    (``-n 0`` runs it in one process). Not with ``TEST_REDIS_URL``: every process would share
    that one server, and some tests empty it. Each process has its own PostgreSQL database,
    private Redis and Twilio stand-in (tests/conftest.py)."""
    chosen = any(arg.startswith(("-n", "--numprocesses", "--dist")) or arg.endswith("no:xdist") for arg in pytest_args)
    # ``loadgroup``: the tests that start the line's processes run in one test process
    # (tests/conftest.py, ``MANY_PROCESSES``); the rest go wherever a process is free.
    return [] if chosen or os.environ.get("TEST_REDIS_URL") else ["-n", "auto", "--dist", "loadgroup"]


def compile_the_project() -> None:
    """Write the project's bytecode, plain and ``-OO``: the tests start hundreds of worker, web
    and clock processes, and where PYTHONDONTWRITEBYTECODE is set (as on CI) each compiled the
    project again at start (0.4 s of CPU). Stale files are ignored: Python checks the source."""
    skipped = r"[/\\](\.venv|\.git|tests|instance)[/\\]"
    command = ["-m", "compileall", "-q", "-o", "0", "-o", "2", "-x", skipped, str(ROOT)]
    subprocess.run([str(PYTHON), *command], cwd=ROOT, check=False, stdout=subprocess.DEVNULL)


def main() -> int:
    command, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command not in ("run", "test", "_run", "_test"):
        print(__doc__)
        return 2
    if command in ("run", "test"):
        ensure_venv()
        in_venv(f"_{command}", *rest)
    sys.path.insert(0, str(ROOT))
    return run_line(rest) if command == "_run" else run_tests(rest)


if __name__ == "__main__":
    sys.exit(main())
