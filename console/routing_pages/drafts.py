"""Forms' changes as edits of the YAML text: a new responder, a new weekly shift.

The live text is edited in place, not loaded and dumped again, so its comments and layout
survive and the diff the administrator previews shows only the lines the form added. Where
each value is comes from PyYAML's node tree (line and column of every node). The result is
a draft: it goes through the same preview and publish as any edit in the YAML editor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import yaml

from routing.validation import parse_yaml

SECTIONS = {"counselor": "counselors", "co_responder": "co_responder_units"}


class DraftError(ValueError):
    """The live text cannot be edited this way (the message says why, for the administrator)."""


def flow(value: object) -> str:
    """A value as one line of YAML flow style; strings double-quoted (JSON's quoting is valid
    YAML), so nothing like ``no`` or ``08:00`` is read as anything but text."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _root(text: str) -> yaml.MappingNode:
    _, problems = parse_yaml(text)
    if problems:
        raise DraftError("the live routing text cannot be read; fix it in the YAML editor first")
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(node, yaml.MappingNode):
        raise DraftError("the routing text is not a mapping")
    return node


def _value(mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node
    return None


def _last_line(node: yaml.Node) -> int:
    """The 0-based line where ``node``'s own content ends (not the blank lines or comments
    PyYAML counts into a block's end)."""
    if isinstance(node, yaml.MappingNode) and node.value and not node.flow_style:
        return _last_line(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
        return _last_line(node.value[-1])
    end = node.end_mark
    # A block scalar (``|``) ends at the start of the line after it.
    return end.line - 1 if end.column == 0 and end.line > node.start_mark.line else end.line


def _insert_lines(text: str, after_line: int, lines: Sequence[str]) -> str:
    """``lines`` as new lines after the 0-based line ``after_line`` (-1: at the end)."""
    rows = text.splitlines(keepends=True)
    if rows and not rows[-1].endswith("\n"):
        rows[-1] += "\n"
    where = len(rows) if after_line < 0 else after_line + 1
    rows[where:where] = [line + "\n" for line in lines]
    return "".join(rows)


def _item_lines(item: dict[str, object], dash_column: int, block: bool) -> list[str]:
    """A list item: ``- {a: 1, b: 2}`` on one line, or in block style (one key a line) so
    later forms can add to its own lists."""
    if not block:
        return [f"{' ' * dash_column}- {flow(item)}"]
    pad = " " * (dash_column + 2)
    lines = [f"{pad}{key}: {flow(value)}" for key, value in item.items()]
    if lines:
        lines[0] = f"{' ' * dash_column}- " + lines[0].lstrip()
    return lines


def _append_to_sequence(
    text: str, parent: yaml.MappingNode, key: str, item: dict[str, object], indent: int, *, block: bool = False
) -> str:
    """Add ``item`` at the end of the sequence ``parent[key]``, creating the key if need be."""
    sequence = _value(parent, key)
    if sequence is None:
        after = _last_line(parent) if parent.value else -1
        return _insert_lines(text, after, [f"{' ' * indent}{key}:", *_item_lines(item, indent + 2, block)])
    if not isinstance(sequence, yaml.SequenceNode):
        raise DraftError(f"{key!r} is not a list in the text; add the entry in the YAML editor")
    if sequence.flow_style:  # ``[...]``: insert before its closing bracket
        offset = sequence.end_mark.index - 1
        before = text[:offset].rstrip()
        joiner = "" if before.endswith("[") else ", "
        return before + joiner + flow(item) + text[offset:]
    dash_column = max(0, sequence.value[0].start_mark.column - 2)
    return _insert_lines(text, _last_line(sequence), _item_lines(item, dash_column, block))


def add_responder(text: str, kind: str, entry: dict[str, object]) -> str:
    """The text with a new counselor (``kind`` "counselor") or co-responder unit appended."""
    root = _root(text)
    return _append_to_sequence(text, root, SECTIONS[kind], entry, 0, block=True)


def add_shift(text: str, responder_id: str, shift: dict[str, object]) -> str:
    """The text with a new weekly shift for the responder ``responder_id``."""
    root = _root(text)
    for section in SECTIONS.values():
        listed = _value(root, section)
        if not isinstance(listed, yaml.SequenceNode):
            continue
        for item in listed.value:
            if not isinstance(item, yaml.MappingNode):
                continue
            found = _value(item, "id")
            if isinstance(found, yaml.ScalarNode) and found.value == responder_id:
                if item.flow_style:
                    raise DraftError(f"{responder_id} is written on one line; add the shift in the YAML editor")
                return _append_to_sequence(text, item, "shifts", shift, item.start_mark.column)
    raise DraftError(f"no responder {responder_id!r} in the live routing")


def set_value(text: str, keys: Sequence[str], value: object) -> str:
    """The text with the value at ``keys`` (``("line", "mode")``) replaced in place, or added
    as a new key at the end of its mapping."""
    node: yaml.Node = _root(text)
    for depth, key in enumerate(keys[:-1]):
        child = _value(node, key) if isinstance(node, yaml.MappingNode) else None
        if not isinstance(child, yaml.MappingNode):
            raise DraftError(f"{'.'.join(keys[: depth + 1])} is not a section of the text; edit it in the YAML editor")
        node = child
    assert isinstance(node, yaml.MappingNode)
    target = _value(node, keys[-1])
    rendered = flow(value)
    if target is None:
        if node.flow_style or not node.value:
            raise DraftError(f"{'.'.join(keys)} cannot be added here; edit it in the YAML editor")
        indent = node.value[0][0].start_mark.column
        return _insert_lines(text, _last_line(node), [f"{' ' * indent}{keys[-1]}: {rendered}"])
    if not isinstance(target, yaml.ScalarNode):
        raise DraftError(f"{'.'.join(keys)} is not a single value; edit it in the YAML editor")
    return text[: target.start_mark.index] + rendered + text[target.end_mark.index :]
