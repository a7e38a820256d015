"""Packages depend downward only (issue 9): every import of every module, those inside
functions included, is read with ``ast`` and checked against the layers below.

1. ``crisisline`` (core) and ``routing``
2. ``line_queue``: the one queue, and responders' availability
3. channels: ``transfer`` (voice), ``sms`` (texts), and ``ivr`` (the menus, which hand callers to
   ``transfer``)
4. features: ``callbacks``, ``followups``
5. ``workers``: jobs

A lower package never imports a higher one: a feature reacts to a channel by connecting to its
events or hooks when it is imported (see ``crisisline/events.py``). Composition roots (the app
factory, the CLI, the jobs) may import anything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {
    "crisisline": 1,
    "routing": 1,
    "line_queue": 2,
    "transfer": 3,
    "sms": 3,
    "ivr": 3,
    "callbacks": 4,
    "followups": 4,
    "workers": 5,
    "metrics": 5,  # reads the event log and the routing; the console shows it
    "console": 6,  # the staff's web pages: they read the queue and the routing, nothing reads them
}
# Stand-ins and tools outside the line's own layering (nothing above imports them).
NOT_LAYERED = frozenset({"tests", "twilio_fake", "bench", "migrations"})
# They put the line together, so they may import anything.
COMPOSITION_ROOTS = frozenset({"crisisline.app", "crisisline.cli"})
COMPOSITION_PACKAGES = frozenset({"workers"})
# Known exceptions, each with its reason. A new upward import fails this test: add an event or
# a registry in the lower package instead.
ALLOWED_UPWARD = {
    # ``flask routing timing`` measures the seconds of the menus that ivr builds: a check of the
    # routing config, not part of any caller's path (the line itself never imports it).
    ("routing.timing", "ivr.twiml"): "routing timing speaks the ivr menus",
    ("routing.timing", "ivr.menu"): "routing timing speaks the ivr menus",
    # The scheduled-contact registry (``schedule``, ``@sends``) lives in workers today. It
    # belongs in the core, and its one sender (the missed-call text) in a feature.
    ("transfer.flow", "workers.contacts"): "scheduled contacts registry",
    ("callbacks.attempts", "workers.contacts"): "scheduled contacts registry",
    ("callbacks.requests", "workers.contacts"): "scheduled contacts registry",
    ("followups.checkins", "workers.contacts"): "scheduled contacts registry",
}
# Voice and texts are peers and should not need each other. What is left of texts reaching
# into voice (never the other way round); do not add to it.
ALLOWED_BETWEEN_CHANNELS = {
    ("sms.outbox", "transfer.dispatch"): "the shared Twilio REST client (rest_client)",
    ("sms.staff", "transfer.availability"): "STATUS reports a responder's availability",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in LAYERS for path in sorted((ROOT / package).rglob("*.py"))}


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Every first-party module ``module`` imports, at the top or inside a function."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name.split(".")[0] in LAYERS}


IMPORTS = {module: _imports(module, path) for module, path in MODULES.items()}


def _is_root(module: str) -> bool:
    return module in COMPOSITION_ROOTS or module.split(".")[0] in COMPOSITION_PACKAGES


def test_every_package_of_the_line_has_a_layer() -> None:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages - NOT_LAYERED == set(LAYERS), "put a new package in LAYERS (or NOT_LAYERED)"


def test_imports_inside_functions_are_seen() -> None:
    # crisisline.cli imports the purge job inside its command: the walk must find it.
    assert "workers.upkeep" in IMPORTS["crisisline.cli"]


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = sorted(
        f"{module} imports {imported}"
        for module, imported_modules in IMPORTS.items()
        if not _is_root(module)
        for imported in imported_modules
        if LAYERS[imported.split(".")[0]] > LAYERS[module.split(".")[0]] and (module, imported) not in ALLOWED_UPWARD
    )
    assert not upward, "\n".join(upward)


def test_texts_and_voice_do_not_import_each_other() -> None:
    between = sorted(
        f"{module} imports {imported}"
        for module, imported_modules in IMPORTS.items()
        for imported in imported_modules
        if {module.split(".")[0], imported.split(".")[0]} == {"sms", "transfer"}
        and (module, imported) not in ALLOWED_BETWEEN_CHANNELS
    )
    assert not between, "\n".join(between)


def test_the_known_exceptions_still_exist() -> None:
    """An exception that is gone (fixed) leaves the lists, so it cannot come back unnoticed."""
    stale = [pair for pair in {**ALLOWED_UPWARD, **ALLOWED_BETWEEN_CHANNELS} if pair[1] not in IMPORTS.get(pair[0], ())]
    assert not stale, stale


REACTIONS = """
import importlib

from crisisline import events
from sms import conversations, texting
from transfer import flow, views
from workers import contacts

for name in contacts.SENDER_MODULES:
    importlib.import_module(name)
hooks = {
    "texter_opted_out": events.texter_opted_out,
    "conversation_ended_by_counselor": events.conversation_ended_by_counselor,
    "text_between_conversations": texting.text_between_conversations,
    "call_requested": texting.call_requested,
    "staff_left_caller": views.staff_left_caller,
    "callback_accepted": flow.callback_accepted,
    "responder_freed": events.responder_freed,
}
print(" ".join(sorted(name for name, hook in hooks.items() if not hook.receivers)))
print(bool(conversations._INBOUND_HANDLERS))
"""


@pytest.mark.parametrize("entry", ["workers.upkeep", "sms.views"])
def test_a_process_that_loads_the_jobs_or_the_texts_reacts_like_the_web(entry: str) -> None:
    """The clock's text sweep retries texts in a worker: a check-in reply, a CALL or a STOP
    handled there must reach follow-ups and callbacks as in a web request. A fresh
    interpreter that imports only the jobs (or only the SMS webhooks) has every hook connected."""
    script = f"import {entry}\n" + REACTIONS
    result = subprocess.run(  # noqa: S603 - our own interpreter, our own script
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    unconnected, inbound_handler = result.stdout.splitlines()[-2:]
    assert unconnected == ""
    assert inbound_handler == "True"
