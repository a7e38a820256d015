"""Each metric's definition, read from ``docs/metrics.md`` (the one place it is written), so a
number on the page can link to the exact rule it was computed by."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from crisisline.settings import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "metrics.md"
NAME = re.compile(r"`([a-z0-9_]+)`")
TAG = re.compile(r"<[^>]+>")  # the doc's own anchors (<a id="offered"></a>)


@dataclass(frozen=True)
class Definition:
    names: tuple[str, ...]
    rule: str
    counterpart: str  # the 988 network's name for it, if any


@functools.cache
def definitions() -> tuple[Definition, ...]:
    """The rows of the "The metrics" table, in order. Shorthand names (`_median` after
    `time_to_callback_mean`) are expanded."""
    try:
        text = DOC.read_text(encoding="utf-8")
    except OSError:
        return ()
    section = text.split("## The metrics", 1)[-1].split("\n## ", 1)[0]
    found = []
    for line in section.splitlines():
        cells = [TAG.sub("", cell).strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        names: list[str] = []
        for token in NAME.findall(cells[0]):
            if token.startswith("_") and names:
                token = names[0].rsplit("_", 1)[0] + token
            names.append(token)
        counterpart = cells[2] if len(cells) > 2 and cells[2] not in ("—", "") else ""
        found.append(Definition(tuple(names), cells[1], counterpart))
    return tuple(found)


def defined_names() -> frozenset[str]:
    return frozenset(name for definition in definitions() for name in definition.names)
