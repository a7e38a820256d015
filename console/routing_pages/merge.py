"""A line-based three-way merge: a draft edited from an older version, replayed on the live one.

Conservative on purpose: when the two changes touch the same or neighbouring lines there is
no merge, and the administrator merges by hand (a wrong guess here could route a crisis call
to the wrong person). The result is never published as such: it goes back to the editor.
"""

from __future__ import annotations

from difflib import SequenceMatcher

Hunk = tuple[int, int, tuple[str, ...]]  # base lines [start, end) replaced by these lines


def _hunks(base: list[str], other: list[str]) -> list[Hunk]:
    matcher = SequenceMatcher(None, base, other, autojunk=False)
    return [(i1, i2, tuple(other[j1:j2])) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def _clash(ours: Hunk, theirs: Hunk) -> bool:
    if ours == theirs:
        return False  # the same change on both sides
    # Touching counts as a clash (as in git): two insertions at one place have no right order.
    return not (ours[1] < theirs[0] or theirs[1] < ours[0])


def three_way(base: str, ours: str, theirs: str) -> str | None:
    """``ours`` and ``theirs`` both edited from ``base``: both changes applied, or None when
    they overlap."""
    base_lines = base.splitlines(keepends=True)
    if base_lines and not base_lines[-1].endswith("\n"):
        base_lines[-1] += "\n"  # so a line added at the end does not glue onto the last one
    our_hunks = _hunks(base_lines, _lines(ours))
    their_hunks = _hunks(base_lines, _lines(theirs))
    if any(_clash(mine, other) for mine in our_hunks for other in their_hunks):
        return None
    merged = list(base_lines)
    for start, end, lines in sorted(set(our_hunks) | set(their_hunks), reverse=True):
        merged[start:end] = lines
    return "".join(merged)


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines
