"""Forms' changes as edits of the YAML text: a new responder, a new weekly shift.

The live text is edited in place, not loaded and dumped again, so its comments and layout
survive and the diff the administrator previews shows only the lines the form added. Where
each value is comes from PyYAML's node tree (line and column of every node). The result is
a draft: it goes through the same preview and publish as any edit in the YAML editor.
"""

from __future__ import annotations

import itertools
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


# --- edits at any place of the text: set, add, remove ----------------------------------------
#
# Each form's change is a handful of edits of one composed text, as spans (start, end, new
# text) applied from the end backwards, so every span is found in the same tree and comments
# and layout outside them are kept.

Key = str | int
Span = tuple[int, int, str]


def compose(text: str) -> yaml.MappingNode:
    """The text's node tree (each node with its place), or DraftError when it cannot be read."""
    return _root(text)


def apply(text: str, spans: Sequence[Span]) -> str:
    """``text`` with every span replaced; spans may not overlap."""
    ordered = sorted(spans, key=lambda span: (span[0], span[1]))
    for before, after in itertools.pairwise(ordered):
        if after[0] < before[1]:
            raise DraftError("two changes of this form touch the same place; make them one at a time")
    for start, end, new in reversed(ordered):
        text = text[:start] + new + text[end:]
    return text


def child(node: yaml.Node, key: Key) -> yaml.Node | None:
    """``node[key]``: a mapping's value by key, a sequence's item by index."""
    if isinstance(key, int):
        if isinstance(node, yaml.SequenceNode) and 0 <= key < len(node.value):
            return node.value[key]
        return None
    return _value(node, key) if isinstance(node, yaml.MappingNode) else None


def node_at(root: yaml.Node, keys: Sequence[Key]) -> yaml.Node:
    node = root
    for depth, key in enumerate(keys):
        found = child(node, key)
        if found is None:
            raise DraftError(f"{_path(keys[: depth + 1])} is not in the text; edit it in the YAML editor")
        node = found
    return node


def _path(keys: Sequence[Key]) -> str:
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in keys).lstrip(".")


def _line_start(text: str, line: int) -> int:
    """The index where the 0-based ``line`` starts (the text's end past its last line)."""
    index = 0
    for _ in range(line):
        found = text.find("\n", index)
        if found < 0:
            return len(text)
        index = found + 1
    return index


def _line_end(text: str, line: int) -> int:
    """The index just past the newline ending the 0-based ``line``."""
    return _line_start(text, line + 1)


def _insert_after_line(text: str, line: int, lines: Sequence[str]) -> Span:
    at = _line_end(text, line)
    lead = "" if at == 0 or text[at - 1] == "\n" else "\n"
    return at, at, lead + "".join(row + "\n" for row in lines)


def block_lines(key: str, value: object, indent: int) -> list[str]:
    """``key: value`` at ``indent``: a short value on one line in flow style, a long mapping
    in block style (one key a line), as a person would write it."""
    pad = " " * indent
    one_line = f"{pad}{key}: {flow(value)}"
    if not isinstance(value, dict) or not value or len(one_line) <= 100:
        return [one_line]
    lines = [f"{pad}{key}:"]
    for name, item in value.items():
        lines += block_lines(str(name), item, indent + 2)
    return lines


def _item_block(item: dict[str, object], dash_column: int) -> list[str]:
    lines: list[str] = []
    for key, value in item.items():
        lines += block_lines(key, value, dash_column + 2)
    if lines:
        lines[0] = " " * dash_column + "- " + lines[0].lstrip()
    return lines


def set_span(text: str, root: yaml.MappingNode, keys: Sequence[Key], value: object) -> Span:
    """The span that sets ``keys`` to ``value``: replaced where it is, or added as a new key
    at the end of its mapping (block or ``{…}``)."""
    parent = node_at(root, keys[:-1])
    last = keys[-1]
    target = child(parent, last)
    if target is None:
        if not isinstance(parent, yaml.MappingNode) or not isinstance(last, str):
            raise DraftError(f"{_path(keys)} cannot be added here; edit it in the YAML editor")
        if parent.flow_style:
            close = parent.end_mark.index - 1  # the closing brace
            joiner = ", " if parent.value else ""
            return close, close, f"{joiner}{last}: {flow(value)}"
        if not parent.value:
            raise DraftError(f"{_path(keys)} cannot be added to an empty section; edit it in the YAML editor")
        indent = parent.value[0][0].start_mark.column
        return _insert_after_line(text, _last_line(parent), block_lines(last, value, indent))
    if isinstance(target, yaml.ScalarNode) or getattr(target, "flow_style", False):
        start, end = target.start_mark.index, target.end_mark.index
        rendered = flow(value)
        if isinstance(target, yaml.ScalarNode) and target.style in ("|", ">") and text[end - 1 : end] == "\n":
            rendered += "\n"  # a block scalar's span takes its line break
        return start, end, rendered
    # A block collection below its key: the new value in flow style on the key's line.
    pair = next((k for k, v in getattr(parent, "value", []) if v is target), None)
    if pair is None:
        raise DraftError(f"{_path(keys)} is a list item; edit it in the YAML editor")
    end = _line_end(text, _last_line(target)) - 1
    return pair.end_mark.index, end, f": {flow(value)}"


def remove_span(text: str, root: yaml.MappingNode, keys: Sequence[Key]) -> Span:
    """The span that removes ``keys`` (a mapping's key and value, or a list's item)."""
    parent = node_at(root, keys[:-1])
    last = keys[-1]
    if isinstance(parent, yaml.MappingNode):
        index = next((i for i, (k, _) in enumerate(parent.value) if getattr(k, "value", None) == last), None)
        pairs = [(k, v) for k, v in parent.value]
        if index is None:
            raise DraftError(f"{_path(keys)} is not in the text")
        first, value = pairs[index][0], pairs[index][1]
        entries: list[tuple[yaml.Node, yaml.Node]] = pairs
    elif isinstance(parent, yaml.SequenceNode) and isinstance(last, int) and 0 <= last < len(parent.value):
        index = last
        first = value = parent.value[last]
        entries = [(item, item) for item in parent.value]
    else:
        raise DraftError(f"{_path(keys)} is not in the text")
    if not parent.flow_style:
        # Whole lines: from the key's (or the item's dash's) line to the value's last line.
        return _line_start(text, first.start_mark.line), _line_end(text, _last_line(value)), ""
    if index > 0:  # ", item" after the one before it
        return entries[index - 1][1].end_mark.index, value.end_mark.index, ""
    if len(entries) > 1:  # "item, " before the next one
        return first.start_mark.index, entries[1][0].start_mark.index, ""
    return first.start_mark.index, value.end_mark.index, ""


def append_span(text: str, root: yaml.MappingNode, keys: Sequence[Key], item: object) -> Span:
    """The span that adds ``item`` at the end of the list at ``keys`` (which must exist)."""
    sequence = node_at(root, keys)
    if not isinstance(sequence, yaml.SequenceNode):
        raise DraftError(f"{_path(keys)} is not a list in the text; edit it in the YAML editor")
    if sequence.flow_style or not sequence.value:
        close = sequence.end_mark.index - 1
        if sequence.flow_style:
            return close, close, (", " if sequence.value else "") + flow(item)
        raise DraftError(f"{_path(keys)} is empty; edit it in the YAML editor")
    dash_column = max(0, sequence.value[0].start_mark.column - 2)
    lines = _item_block(item, dash_column) if isinstance(item, dict) else [f"{' ' * dash_column}- {flow(item)}"]
    return _insert_after_line(text, _last_line(sequence), lines)


def responder_keys(root: yaml.MappingNode, responder_id: str) -> tuple[str, int]:
    """(section, index) of the responder ``responder_id`` in the text."""
    for section in SECTIONS.values():
        listed = _value(root, section)
        if not isinstance(listed, yaml.SequenceNode):
            continue
        for index, item in enumerate(listed.value):
            found = _value(item, "id") if isinstance(item, yaml.MappingNode) else None
            if isinstance(found, yaml.ScalarNode) and found.value == responder_id:
                return section, index
    raise DraftError(f"no responder {responder_id!r} in the routing")


def add_override(text: str, responder_id: str, override: dict[str, object]) -> str:
    """The text with a dated override (cover or leave) for the responder ``responder_id``."""
    root = _root(text)
    section, index = responder_keys(root, responder_id)
    item = node_at(root, (section, index))
    assert isinstance(item, yaml.MappingNode)
    if item.flow_style:
        raise DraftError(f"{responder_id} is written on one line; add the override in the YAML editor")
    return _append_to_sequence(text, item, "overrides", override, item.start_mark.column)
