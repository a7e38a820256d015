"""What each routing form changes, as edits of the YAML text (see :mod:`drafts`).

Plain functions: the text a form was read from and what the administrator asked for in, the
new text out (or :class:`drafts.DraftError` saying why it cannot be done here). Only what
changed is written, so the diff shows exactly the form's change; whether the result is a
valid routing is for the one validator to say, in the preview.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import yaml

from console.routing_pages import drafts
from console.routing_pages.drafts import DraftError, Key, Span
from routing.document import RoutingDocument


def index_in(root: yaml.MappingNode, section: str, field_name: str, value: str) -> int:
    """The index of the item of the list ``section`` whose ``field_name`` is ``value``."""
    listed = drafts.child(root, section)
    if isinstance(listed, yaml.SequenceNode):
        for index, item in enumerate(listed.value):
            found = drafts.child(item, field_name)
            if isinstance(found, yaml.ScalarNode) and found.value == value:
                return index
    raise DraftError(f"no {section} entry with {field_name} {value!r} in the routing")


def _scalars(node: yaml.Node | None) -> list[str]:
    """The items of a list of plain values, as text (empty for anything else)."""
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [item.value for item in node.value if isinstance(item, yaml.ScalarNode)]


def set_values(text: str, values: Mapping[tuple[Key, ...], object]) -> str:
    """``text`` with each path set to its value (one composition, so spans agree)."""
    if not values:
        return text
    root = drafts.compose(text)
    return drafts.apply(text, [drafts.set_span(text, root, keys, value) for keys, value in values.items()])


# --- languages -----------------------------------------------------------------------------


def edit_language(text: str, code: str, changed: Mapping[str, object]) -> str:
    """The language ``code`` with the fields in ``changed`` (name, voice, digit …) set."""
    root = drafts.compose(text)
    index = index_in(root, "languages", "code", code)
    return drafts.apply(
        text, [drafts.set_span(text, root, ("languages", index, name), value) for name, value in changed.items()]
    )


def add_language(text: str, document: RoutingDocument, entry: dict[str, object], copy_from: str) -> str:
    """A new language at the end of ``languages``, its prompts, texts and need labels copied
    from ``copy_from`` (to be translated on the prompts and needs pages before publishing)."""
    source = next((language for language in document.languages if language.code == copy_from), None)
    if source is None:
        raise DraftError(f"no language {copy_from!r} to copy the prompts from")
    code = str(entry["code"])
    root = drafts.compose(text)
    item = {**entry, "prompts": dict(source.prompts), "sms": dict(source.sms)}
    spans = [drafts.append_span(text, root, ("languages",), item)]
    for index, need in enumerate(document.needs):
        spans.append(drafts.set_span(text, root, ("needs", index, "labels", code), need.labels.get(copy_from, "")))
    return drafts.apply(text, spans)


def remove_language(text: str, document: RoutingDocument, code: str) -> str:
    """The language ``code`` gone, with its need labels and words, and from every responder
    and service that lists it. Refused when something would be left without a language."""
    if document.menu.default_language == code:
        raise DraftError("it is the default language: choose another default on the Menus page first")
    if len(document.languages) == 1:
        raise DraftError("it is the line's only language")
    root = drafts.compose(text)
    spans: list[Span] = [drafts.remove_span(text, root, ("languages", index_in(root, "languages", "code", code)))]
    needs = drafts.child(root, "needs")
    for index, need in enumerate(needs.value if isinstance(needs, yaml.SequenceNode) else []):
        for part in ("labels", "speech_words"):
            holder = drafts.child(need, part)
            if holder is not None and drafts.child(holder, code) is not None:
                spans.append(drafts.remove_span(text, root, ("needs", index, part, code)))
    for section, what in (("counselors", "id"), ("co_responder_units", "id"), ("services", "id")):
        listed = drafts.child(root, section)
        for index, item in enumerate(listed.value if isinstance(listed, yaml.SequenceNode) else []):
            spoken = _scalars(drafts.child(item, "languages"))
            if code not in spoken:
                continue
            if len(spoken) == 1:
                found = drafts.child(item, what)
                name = found.value if isinstance(found, yaml.ScalarNode) else f"[{index}]"
                raise DraftError(f"{section} {name} lists only this language; change it first")
            spans.append(drafts.remove_span(text, root, (section, index, "languages", spoken.index(code))))
    return drafts.apply(text, spans)


# --- needs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeedChange:
    """What a need form asks for: the fields to set, the labels per language, the counselors
    who take it, and whether to drop the fallback."""

    fields: dict[str, object] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    counselors: frozenset[str] | None = None  # None: leave as they are
    drop_fallback: bool = False


def _skill_spans(
    text: str, root: yaml.MappingNode, skill: str, counselors: frozenset[str], others: frozenset[str]
) -> list[Span]:
    """Add ``skill`` to ``counselors``' skills and take it from every other counselor, except
    where another need shares it (``others``: skills still in use elsewhere)."""
    spans: list[Span] = []
    listed = drafts.child(root, "counselors")
    for index, item in enumerate(listed.value if isinstance(listed, yaml.SequenceNode) else []):
        found = drafts.child(item, "id")
        responder = found.value if isinstance(found, yaml.ScalarNode) else ""
        skills_node = drafts.child(item, "skills")
        skills = _scalars(skills_node)
        if responder in counselors and skill not in skills:
            if skills_node is None or (isinstance(skills_node, yaml.SequenceNode) and not skills_node.value):
                spans.append(drafts.set_span(text, root, ("counselors", index, "skills"), [skill]))
            else:
                spans.append(drafts.append_span(text, root, ("counselors", index, "skills"), skill))
        elif responder not in counselors and skill in skills and skill not in others:
            spans.append(drafts.remove_span(text, root, ("counselors", index, "skills", skills.index(skill))))
    return spans


def edit_need(text: str, document: RoutingDocument, key: str, change: NeedChange) -> str:
    root = drafts.compose(text)
    index = index_in(root, "needs", "key", key)
    spans = [drafts.set_span(text, root, ("needs", index, name), value) for name, value in change.fields.items()]
    spans += [
        drafts.set_span(text, root, ("needs", index, "labels", code), label) for code, label in change.labels.items()
    ]
    if change.drop_fallback and drafts.child(drafts.node_at(root, ("needs", index)), "fallback") is not None:
        spans.append(drafts.remove_span(text, root, ("needs", index, "fallback")))
    need = document.need(key)
    if change.counselors is not None and need is not None:
        others = frozenset(other.skill for other in document.needs if other.key != key)
        spans += _skill_spans(text, root, need.skill, change.counselors, others)
    return drafts.apply(text, spans)


def add_need(text: str, entry: dict[str, object], counselors: frozenset[str]) -> str:
    """A new need at the end of ``needs``, taken by ``counselors`` (its key is its skill)."""
    root = drafts.compose(text)
    spans = [drafts.append_span(text, root, ("needs",), entry)]
    spans += _skill_spans(text, root, str(entry["key"]), counselors, frozenset())
    return drafts.apply(text, spans)


def remove_need(text: str, document: RoutingDocument, key: str) -> str:
    """The need ``key`` gone, and its skill from counselors (unless another need uses it), its
    check-in delay, and its place in services' lists. Refused for the default need."""
    need = document.need(key)
    if need is None:
        raise DraftError(f"no need {key!r}")
    if document.menu.default_need == key:
        raise DraftError("it is the default need: choose another default on the Menus page first")
    root = drafts.compose(text)
    spans = [drafts.remove_span(text, root, ("needs", index_in(root, "needs", "key", key)))]
    others = frozenset(other.skill for other in document.needs if other.key != key)
    if need.skill not in others:
        spans += _skill_spans(text, root, need.skill, frozenset(), others)
    hours = drafts.child(drafts.child(root, "followups") or root, "checkin_after_hours")
    if hours is not None and drafts.child(hours, key) is not None:
        spans.append(drafts.remove_span(text, root, ("followups", "checkin_after_hours", key)))
    services = drafts.child(root, "services")
    for index, item in enumerate(services.value if isinstance(services, yaml.SequenceNode) else []):
        helped = _scalars(drafts.child(item, "needs"))
        if key in helped:
            if len(helped) == 1:
                raise DraftError(f"services[{index}] helps only with this need; change it first")
            spans.append(drafts.remove_span(text, root, ("services", index, "needs", helped.index(key))))
    return drafts.apply(text, spans)


# --- prompts -------------------------------------------------------------------------------


def edit_prompts(text: str, code: str, changed: Mapping[tuple[str, str], str]) -> str:
    """The language ``code``'s prompts set: ``("prompts", "greeting") → text``."""
    root = drafts.compose(text)
    index = index_in(root, "languages", "code", code)
    return drafts.apply(
        text,
        [drafts.set_span(text, root, ("languages", index, part, key), value) for (part, key), value in changed.items()],
    )


# --- overrides -----------------------------------------------------------------------------


def override_entry(day: date, start: str, end: str, on_call: bool) -> dict[str, object]:
    """An override for ``day`` from ``start`` to ``end`` (``24:00`` or an end before the start:
    the next day), as the config writes it."""
    begins = datetime.combine(day, time.fromisoformat(start))
    if end == "24:00":
        ends = datetime.combine(day + timedelta(days=1), time(0))
    else:
        ends = datetime.combine(day, time.fromisoformat(end))
        if ends <= begins:
            ends += timedelta(days=1)
    return {"start": begins.strftime("%Y-%m-%dT%H:%M"), "end": ends.strftime("%Y-%m-%dT%H:%M"), "on_call": on_call}


def remove_override(text: str, responder_id: str, index: int) -> str:
    """The responder's override ``index`` gone (and the ``overrides:`` key with its last one)."""
    root = drafts.compose(text)
    section, position = drafts.responder_keys(root, responder_id)
    listed = drafts.child(drafts.node_at(root, (section, position)), "overrides")
    if not isinstance(listed, yaml.SequenceNode) or not 0 <= index < len(listed.value):
        raise DraftError(f"{responder_id} has no override {index + 1}")
    if len(listed.value) == 1:
        return drafts.apply(text, [drafts.remove_span(text, root, (section, position, "overrides"))])
    return drafts.apply(text, [drafts.remove_span(text, root, (section, position, "overrides", index))])
