"""Routing YAML → :class:`RoutingDocument`, or every problem with its place in the file.

Problems read like ``needs[2].digit: 3 is already used by needs[0]``. Errors refuse the
document whole; warnings (e.g. a language nobody on the rota speaks) are reported but allowed.
"""

from __future__ import annotations

import re
import reprlib
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, time
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from crisisline.phone import InvalidPhoneNumber, extension_of, to_e164
from crisisline.settings import LINE_MODES
from crisisline.sms_segments import is_gsm7, segment_count
from routing.document import (
    PROMPT_PLACEHOLDERS,
    QUEUE_CHANNELS,
    SMS_PROMPT_PLACEHOLDERS,
    STAFF_PROMPT_PLACEHOLDERS,
    STRATEGIES,
    TARGETS,
    CallbackSettings,
    FollowupSettings,
    Language,
    MenuSettings,
    Need,
    Override,
    QueueSettings,
    Responder,
    RoutingDocument,
    Service,
    Shift,
    SmsSettings,
    Supervisor,
    TransferSettings,
)
from routing.voices import check_voice

T = TypeVar("T")
WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
DAY_GROUPS = {"daily": set(range(7)), "weekdays": set(range(5)), "weekends": {5, 6}}
FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_WORDS = {**WEEKDAYS, **{name: number for number, name in enumerate(FULL_DAY_NAMES)}}
# What an id (a responder's, a supervisor's, a service's) or a need's key may be, and a
# language's code: the console's forms check their fields with these very rules.
IDENTIFIER_RULE = r"[a-z][a-z0-9_-]{0,63}"
LANGUAGE_CODE_RULE = r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?"
# ``$`` as published versions were checked with (a trailing line break passes): a live version must load.
IDENTIFIER = re.compile(rf"^{IDENTIFIER_RULE}$")
LANGUAGE_CODE = re.compile(rf"^{LANGUAGE_CODE_RULE}$")
TIME_OF_DAY = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")
HOUR, DAY = 3600, 86400
UNIT_SECONDS = {"s": 1, "m": 60, "h": HOUR, "d": DAY}
UNIT_NAMES = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_EXPANDED_VALUES = 100_000  # the example routing is 1 204; a line of 500 counselors about 20 000
MAX_NUMBER_DIGITS = 100  # in the YAML; the longest real value (a phone number) has 15
MAX_DURATION_DIGITS = 9  # 999999999 s is 31 years: far past every duration's upper bound
DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?\Z")

# Prompts added after the first configs were written: an older config without them stays
# valid and says these stand-ins, built from prompts it already has in the same language.
LATER_PROMPTS: dict[str, Callable[[dict[str, str]], str]] = {
    "need_unclear": lambda prompts: prompts.get("invalid_input", ""),
    "need_confirm": lambda prompts: prompts.get("need_option", "").replace("{digit}", "1"),
    "need_confirm_key": lambda prompts: prompts.get("invalid_input", ""),
    "hold_position": lambda prompts: prompts.get("hold_wait", ""),  # a config from before the one queue
}
LATER_STAFF_PROMPTS: dict[str, Callable[[dict[str, str]], str]] = {
    "caller_on_backup": lambda prompts: "The caller has been passed to our backup line. Thank you.",
    "unit_unavailable": lambda prompts: "No co-responder unit is free right now. Going back to the caller.",
    "unit_not_reached": lambda prompts: (
        "The co-responder unit did not answer, and no other unit is free. Press star, then 1, to try again."
        " Going back to the caller."
    ),
    "unit_not_needed": lambda prompts: (
        "The counselor has left this call and the caller is being connected to someone else, so you are not"
        " needed on it. Thank you."
    ),
    "callback_no_answer_last": lambda prompts: (
        "They did not answer, and that was our last try. We will text them how to reach us. Thank you."
    ),
    "callback_number_refused": lambda prompts: (
        "Our phone service will not call this number, so we will not try again. Thank you."
    ),
    "callback_called_in": lambda prompts: (
        "They have reached us again since they asked, so we will not call them. Thank you."
    ),
    "callback_person_holding": lambda prompts: (
        "They have just called the line again and are holding, so we will not call them now. Please hang up:"
        " you may be rung for their call."
    ),
    "sms_picture": lambda prompts: (
        "[#{tag} sent a picture: the line cannot pass pictures on. Ask them to describe it.]"
    ),
    "sms_not_delivered": lambda prompts: (
        "[#{tag}: your last text did not reach them ({reason}). You may say it another way.]"
    ),
    "sms_line_trouble": lambda prompts: (
        "Crisis line: the line is having trouble with your text. It is kept and will be handled as soon as it"
        " can be; an answer may come late."
    ),
    "not_rung": lambda prompts: (
        "The line no longer rings this phone: the console account linked to it was closed, so this caller goes to"
        " someone else. If that is a mistake, ask an administrator."
    ),
    "not_rung_sms": lambda prompts: (
        "Crisis line: the line no longer rings or texts this phone: the console account linked to it was closed."
        " If that is a mistake, ask an administrator."
    ),
    "sms_line_lost": lambda prompts: (
        "Crisis line: the line could not take your text just now. Please send it again in a few minutes."
    ),
    "sms_at_limit": lambda prompts: (
        "Not taken: you are at your limit of open conversations ({count}). #{tag} goes to someone else. To take"
        " more, END or PASS one first."
    ),
    "sms_empty_reply": lambda prompts: (
        "Not sent: nothing came after #{tag}. Write your words after the tag, like #{tag} I'm here."
    ),
    "sms_command_alone": lambda prompts: (
        "Not sent, and nothing done: write {command} and the number alone, like {command} 12. To send words"
        " to your texter, start with their number: #12 your words."
    ),
    "sms_staff_picture": lambda prompts: (
        "Your picture was not sent: the line cannot pass pictures on. Describe it in words instead."
    ),
    "sms_supervisor_text": lambda prompts: (
        "Crisis line: texts from supervisors are not passed on to anyone. The live board shows the cases."
        " (Replying STOP would stop the line's alerts to you.) If you need help yourself, call or text 988."
    ),
    "sms_started": lambda prompts: (
        "Crisis line: the line can text this phone again. You are {status}. Reply ON to take calls, OFF to pause."
    ),
    "sms_blocked_on": lambda prompts: (
        "Crisis line: you stay paused: this phone blocks the line's texts, so it cannot be offered texts. Text"
        " START to the line first, then ON."
    ),
    "checkin_answered_sms": lambda prompts: (
        "Crisis line: check-in case {case} has now replied; the line is looking after them."
    ),
    "callback_unreached_sms": lambda prompts: (
        "Crisis line: a callback the line promised never reached the person who asked for it. Please follow up:"
        " the emergency unmask page lists it for a day."
    ),
    "text_stuck_sms": lambda prompts: (
        "Crisis line: text {case} could not be handled for {minutes} minutes. Please see the live board."
    ),
    "texts_stuck_sms": lambda prompts: (
        "Crisis line: {count} texts could not be handled, among them {cases}. Something may be failing for every"
        " text: please see the live board."
    ),
    "text_after_stop_sms": lambda prompts: (
        "Crisis line: text {case} is from someone who had texted STOP: the line cannot text them back."
        " If they may be at risk, their number is on the board's emergency page."
    ),
}
# Texts to texters added later: no stand-in could be in each line's own words and languages,
# so an older config without one stays valid, warned of what the line does without it.
OPTIONAL_SMS_PROMPTS = {
    "still_waiting": "missing: a waiting texter who writes again gets no reply until it is added",
}

# ``languages[i].words``: how speech is understood. A language without them (a config written
# before they were configurable) gets English and Spanish together, as the line used to.
SPEECH_WORD_LISTS = ("fillers", "negations", "not_negations", "hedges", "clause_breaks", "yes_words", "no_words")
DEFAULT_DIGIT_WORDS = {
    "zero": 0, "cero": 0, "one": 1, "uno": 1, "una": 1, "two": 2, "dos": 2, "three": 3,
    "tres": 3, "four": 4, "cuatro": 4, "five": 5, "cinco": 5, "six": 6, "seis": 6,
    "seven": 7, "siete": 7, "eight": 8, "ocho": 8, "nine": 9, "nueve": 9,
}  # fmt: skip
DEFAULT_SPEECH_WORDS: dict[str, tuple[str, ...]] = {
    "fillers": ("um", "uh", "number", "option", "press", "the", "please", "eh", "número", "opción", "el", "la"),
    "negations": ("not", "no", "never", "don't", "dont", "isn't", "aren't", "wasn't", "nobody", "no one",
                  "nothing", "nunca", "nadie", "nada", "sin", "ni"),
    "not_negations": ("not okay", "not ok", "not good", "not well", "don't know what to do", "no estoy bien",
                      "no me siento bien", "no sé qué hacer", "no puedo"),
    "hedges": ("maybe", "perhaps", "not sure", "kind of", "sort of", "i guess", "tal vez", "quizás", "quizá",
               "a lo mejor", "no sé si"),
    "clause_breaks": ("but", "and", "just", "because", "pero", "y", "sino", "solo", "sólo", "porque", "aunque"),
    "yes_words": ("yes", "yeah", "yep", "correct", "right", "sí", "si", "correcto", "claro"),
    "no_words": ("no", "nope", "wrong", "incorrecto", "otra vez"),
}  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """One error or warning: ``path`` names the value (``counselors[3].phone``); ``line`` and
    ``column`` (1-based) are where that value is in the YAML text, when it came from text."""

    path: str
    message: str
    severity: str = "error"
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        return f"{prefix}{self.path}: {self.message}" if self.path else f"{prefix}{self.message}"

    @property
    def place(self) -> str:
        """``line 12, column 5``, or empty when the problem has no place in a text."""
        return f"line {self.line}, column {self.column}" if self.line is not None else ""

    def describe(self) -> str:
        """The problem with its place first, as ``flask routing check`` prints it."""
        return f"{self.place}: {self}" if self.place else str(self)


class InvalidRoutingDocument(ValueError):
    """A routing document with at least one error; ``problems`` lists them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(problem.describe() for problem in problems))


class _StrictLoader(yaml.SafeLoader):
    """YAML without YAML 1.1's surprises: ``no`` stays a string (Norwegian), ``9:30`` stays
    a time rather than the integer 570, and dates stay text for our own parser."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)


class SourceMap:
    """Where each value of a YAML text is: problem path (``needs[2].digit``) → (line, column).

    Built from PyYAML's node tree (``compose``), whose nodes carry their marks, so paths are
    spelt exactly as the validator spells them. A path with no node of its own (a missing
    key) is placed at its nearest ancestor.
    """

    MAX_NODES = 200_000  # aliases can make a small text a huge tree; stop mapping there

    def __init__(self, root: yaml.Node | None) -> None:
        self.marks: dict[str, tuple[int, int]] = {}
        self.duplicates: list[Problem] = []
        self.too_long: list[Problem] = []  # numbers too long to read: refused before constructing
        self._visited = 0
        if root is not None:
            self.marks[""] = _position(root.start_mark)
            self._walk(root, "", ())

    def _walk(self, node: yaml.Node, path: str, ancestors: tuple[int, ...]) -> None:
        self._visited += 1
        if self._visited > self.MAX_NODES or id(node) in ancestors:
            return
        inside = (*ancestors, id(node))
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                child = _join(path, str(key_node.value))
                key_line = key_node.start_mark.line + 1
                if key_node.value in first_seen:
                    # PyYAML would keep the last one silently; a second ``overrides:`` or
                    # ``backup_number:`` is almost always a paste mistake that loses data.
                    self.duplicates.append(
                        Problem(
                            child,
                            f"{_shown(key_node.value)} appears twice in the same mapping (first at line "
                            f"{first_seen[key_node.value]}); keep one",
                            line=key_line,
                            column=key_node.start_mark.column + 1,
                        )
                    )
                else:
                    first_seen[key_node.value] = key_line
                # Scalars and one-line {…}/[…] values are pointed at; a block below its key at the key.
                on_its_line = isinstance(value_node, yaml.ScalarNode) or bool(getattr(value_node, "flow_style", False))
                self.marks[child] = _position((value_node if on_its_line else key_node).start_mark)
                self._walk(value_node, child, inside)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = f"{path}[{index}]"
                self.marks[child] = _position(item.start_mark)
                self._walk(item, child, inside)
        elif node.tag == "tag:yaml.org,2002:int" and len(str(node.value)) > MAX_NUMBER_DIGITS:
            # Python refuses to read an integer of over 4300 digits (a ValueError, not a YAML
            # error); no setting takes a number anywhere near this long anyway.
            self.too_long.append(
                Problem(
                    path,
                    f"a number {len(str(node.value))} digits long: too long for any setting",
                    line=node.start_mark.line + 1,
                    column=node.start_mark.column + 1,
                )
            )

    def locate(self, path: str) -> tuple[int, int] | None:
        """(line, column) of ``path``, or of its nearest ancestor that is in the text."""
        while True:
            if path in self.marks:
                return self.marks[path]
            if not path:
                return None
            path = _parent_path(path)

    def place(self, problem: Problem) -> Problem:
        """``problem`` with its line and column filled in (unless it has them already)."""
        if problem.line is not None:
            return problem
        found = self.locate(problem.path)
        if found is None:
            return problem
        return replace(problem, line=found[0], column=found[1])


def _position(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def _parent_path(path: str) -> str:
    if path.endswith("]") and "[" in path:
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` is with every alias followed; each node counted once per use
    but computed once (``sizes``), so ten levels of ten aliases cost ten steps, not 10**10.
    A node that contains itself is endless."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_EXPANDED_VALUES + 1  # while inside it: a loop back to it is endless
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    total = 1
    for child in children:
        total = min(total + _expanded_size(child, sizes), MAX_EXPANDED_VALUES + 1)
    sizes[id(node)] = total
    return total


def compose(text: str, *, published: bool = False) -> tuple[Any, SourceMap, list[Problem]]:
    """Parse YAML text: (data, where each value is, problems). A syntax error, any key given
    twice in one mapping, or (unless ``published``: a version already live) aliases that make
    the text more than ``MAX_EXPANDED_VALUES`` values, is a problem with its line and column."""
    try:
        loader = _StrictLoader(text)  # its reader refuses a control character here, before parsing
    except yaml.reader.ReaderError as error:
        return None, SourceMap(None), [_unreadable_character(text, error)]
    try:
        root = loader.get_single_node()
        if not published and root is not None and _expanded_size(root, {}) > MAX_EXPANDED_VALUES:
            # Aliases are allowed (``yaml.safe_dump`` writes them for a value used twice), but
            # nested ones make a 30 KB text millions of values: every check would take minutes.
            message = (
                f"YAML aliases (*name) make this text more than {MAX_EXPANDED_VALUES} values; "
                "write the repeated values out, or repeat fewer"
            )
            return None, SourceMap(None), [Problem("", message)]
        source_map = SourceMap(root)
        if source_map.too_long:
            return None, source_map, source_map.too_long
        raw = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line, column = _position(mark) if mark else (None, None)
        return None, SourceMap(None), [Problem("", f"YAML syntax error: {error.problem}", line=line, column=column)]
    except yaml.YAMLError as error:
        return None, SourceMap(None), [Problem("", f"YAML error: {error}")]
    except RecursionError:  # PyYAML composes recursively: thousands of nested brackets
        return None, SourceMap(None), [Problem("", "YAML error: nested too deeply")]
    except ValueError:  # a value PyYAML's constructors cannot read (the long numbers are caught above)
        return None, SourceMap(None), [Problem("", "YAML error: a value that cannot be read (a number too long?)")]
    finally:
        loader.dispose()
    return raw, source_map, source_map.duplicates


def _unreadable_character(text: str, error: yaml.reader.ReaderError) -> Problem:
    """A character YAML does not allow (a vertical tab from Word's Shift+Enter, a NUL), where."""
    before = text[: max(0, error.position)]
    line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
    code = error.character if isinstance(error.character, int) else ord(str(error.character)[:1] or "?")
    message = (
        f"a special character (U+{code:04X}) that YAML does not allow, often pasted from a word processor: "
        "delete it and type that part again"
    )
    return Problem("", message, line=line, column=column)


def parse_yaml(text: str) -> tuple[Any, list[Problem]]:
    """Parse YAML text; a syntax error or a duplicate key becomes a problem with its line and column."""
    raw, _, problems = compose(text)
    return (None if problems else raw), problems


def validate_text(text: str, *, strict: bool = True) -> tuple[RoutingDocument | None, list[Problem]]:
    """Validate routing YAML. Returns the document only when there are no errors; every
    problem carries the line and column of the value it is about.

    ``strict=False`` reads a version that is already published: checks added since it was
    published (duplicate keys, voices) must not take a working line down, so they are
    ignored or only warned about. Publishing is always strict.
    """
    raw, source_map, problems = compose(text, published=not strict)
    if not strict:
        problems = [problem for problem in problems if problem not in source_map.duplicates]
    if problems:
        return None, problems
    document, found = validate(raw, strict=strict)
    return document, [source_map.place(problem) for problem in found]


def load_document(text: str, *, strict: bool = True) -> RoutingDocument:
    """Validate routing YAML or raise :class:`InvalidRoutingDocument` (see :func:`validate_text`)."""
    document, problems = validate_text(text, strict=strict)
    if document is None:
        raise InvalidRoutingDocument([p for p in problems if p.severity == "error"])
    return document


def validate(raw: Any, *, strict: bool = True) -> tuple[RoutingDocument | None, list[Problem]]:
    """Validate an already-parsed document (a dict, as from YAML or JSON)."""
    checker = _Checker(strict=strict)
    document = checker.document(raw)
    errors = [p for p in checker.problems if p.severity == "error"]
    return (None if errors else document), checker.problems


# A spoken prompt's longest: Twilio's <Say> takes 3,000 characters with Polly voices (warning
# 13521, and the text is not said in full); the rest is room for its placeholders filled in.
MAX_SPOKEN_PROMPT = 2_500


class _Checker:
    """Walks the raw document once, collecting every problem instead of stopping at the first."""

    def __init__(self, *, strict: bool = True) -> None:
        self.problems: list[Problem] = []
        self.strict = strict  # False: a published version; newer checks only warn

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, "warning"))

    # --- small typed readers -------------------------------------------------------------

    def mapping(self, raw: Any, path: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.error(path, f"must be a mapping, not {_kind(raw)}")
            return {}
        for key in raw:
            if key not in allowed:
                self.error(_join(path, str(key)), "unknown key (check the spelling)")
        for key in sorted(required - raw.keys()):
            self.error(_join(path, key), "missing")
        return raw

    def text(self, raw: dict[str, Any], key: str, path: str, default: str | None = None) -> str:
        value = raw.get(key, default)
        if value is None:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.error(_join(path, key), f"must be non-empty text, not {_kind(value)}")
            return ""
        return value.strip()

    def integer(self, raw: dict[str, Any], key: str, path: str, low: int, high: int, default: int) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(_join(path, key), f"must be a whole number, not {_kind(value)}")
            return default
        if not low <= value <= high:
            self.error(_join(path, key), f"must be between {low} and {high}, not {_shown(value)}")
            return default
        return value

    def duration(self, raw: dict[str, Any], key: str, path: str, unit: str, low: int, high: int, default: int) -> int:
        """A duration in seconds: ``90s``, ``15m``, ``2h``, ``3d`` (or ``1h30m``), or a plain
        number in the key's own ``unit`` as configs have always written it. ``low``/``high``/
        ``default`` are in seconds."""
        value = raw.get(key, default // UNIT_SECONDS[unit])
        seconds = parse_duration(value, unit)
        where = _join(path, key)
        if seconds is None:
            self.error(
                where,
                f"must be a duration like 90s, 15m, 2h or 3d (or a number of {UNIT_NAMES[unit]}), not {_shown(value)}",
            )
            return default
        if not low <= seconds <= high:
            plain = isinstance(value, int)  # say it in the unit it was written in
            shown = (
                (low // UNIT_SECONDS[unit], high // UNIT_SECONDS[unit], _shown(value))
                if plain and low % UNIT_SECONDS[unit] == 0 and high % UNIT_SECONDS[unit] == 0
                else (format_duration(low), format_duration(high), format_duration(seconds))
            )
            self.error(where, f"must be between {shown[0]} and {shown[1]}, not {shown[2]}")
            return default
        return seconds

    def whole_minutes(self, raw: dict[str, Any], key: str, path: str, low: int, high: int, default: int) -> int:
        """A duration kept in whole minutes (``idle_close_minutes`` …); bounds in minutes."""
        seconds = self.duration(raw, key, path, "m", low * 60, high * 60, default * 60)
        if seconds % 60:
            self.error(_join(path, key), f"must be whole minutes, not {format_duration(seconds)}")
            return default
        return seconds // 60

    def hours(self, raw: dict[str, Any], key: str, path: str, low: int, high: int, default: int) -> float:
        """A duration kept in hours, which may now be a part of one (``30m`` is 0.5); bounds in seconds."""
        return self.duration(raw, key, path, "h", low, high, default) / 3600

    def items(self, raw: Any, path: str) -> list[Any]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.error(path, f"must be a list, not {_kind(raw)}")
            return []
        return raw

    def words(self, raw: Any, path: str) -> tuple[str, ...]:
        words = []
        for index, word in enumerate(self.items(raw, path)):
            if not isinstance(word, str) or not word.strip():
                self.error(f"{path}[{index}]", "must be non-empty text")
            else:
                words.append(word.strip())
        return tuple(words)

    def digit(self, raw: dict[str, Any], path: str, seen: dict[int, str]) -> int:
        value = raw.get("digit")
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
            self.error(_join(path, "digit"), f"must be a single keypad digit 0-9, not {_shown(value)}")
            return -1
        if value in seen:
            self.error(_join(path, "digit"), f"{value} is already used by {seen[value]}")
        else:
            seen[value] = path
        return value

    def phone(self, raw: dict[str, Any], key: str, path: str, region: str, *, dialled: bool = True) -> str:
        """E.164. ``dialled=False``: a number people read (a referral), which keeps its extension."""
        value = raw.get(key)
        if not isinstance(value, str | int) or isinstance(value, bool):
            self.error(_join(path, key), "missing or not text; quote phone numbers")
            return ""
        try:
            number = to_e164(str(value), region)
        except InvalidPhoneNumber:
            self.error(_join(path, key), "not a valid phone number")
            return ""
        extension = extension_of(str(value), region)
        if extension and not dialled:
            return f"{number} ext. {extension}"
        if extension:
            # Dialled or texted without it, the switchboard gets it instead of the person (or
            # the partner's main menu instead of the backup line). Only a warning in a version
            # already published.
            (self.error if self.strict else self.warn)(
                _join(path, key), "has an extension, which the line cannot dial or text: give a direct number"
            )
        return number

    def unique_id(self, raw: dict[str, Any], path: str, seen: dict[str, str], what: str) -> str:
        key_name = "key" if what == "need" else ("code" if what == "language" else "id")
        value = raw.get(key_name)
        pattern = LANGUAGE_CODE if what == "language" else IDENTIFIER
        if not isinstance(value, str) or not pattern.match(value):
            hint = "a code like 'en' or 'es'" if what == "language" else "lowercase letters, digits, - or _"
            self.error(_join(path, key_name), f"{_shown(value)} is not valid ({hint})")
            return ""
        if value in seen:
            self.error(_join(path, key_name), f"{_shown(value)} is already used by {seen[value]}")
        else:
            seen[value] = path
        return value

    # --- sections --------------------------------------------------------------------------

    def document(self, raw: Any) -> RoutingDocument | None:
        top = self.mapping(
            raw,
            "",
            {
                "version",
                "line",
                "menu",
                "transfer",
                "sms",
                "followups",
                "callbacks",
                "queue",
                "supervisors",
                "languages",
                "needs",
                "counselors",
                "co_responder_units",
                "staff_prompts",
                "services",
            },
            {"line", "menu", "languages", "needs", "staff_prompts"},
        )
        if not top:
            return None
        if top.get("version", 1) != 1:
            self.error("version", "only version 1 is understood")
        line = self.mapping(
            top.get("line", {}),
            "line",
            {"name", "timezone", "region", "mode", "backup_number"},
            {"name", "timezone", "backup_number"},
        )
        name = self.text(line, "name", "line")
        timezone = self.timezone(line)
        region = self.text(line, "region", "line", "US").upper()
        mode = self.text(line, "mode", "line", "normal")
        if mode and mode not in LINE_MODES:
            self.error("line.mode", f"{_shown(mode)} is not one of {', '.join(LINE_MODES)}")
        backup = self.phone(line, "backup_number", "line", region)

        languages = self.languages(top.get("languages"))
        codes = {language.code for language in languages}
        needs = self.needs(top.get("needs"), codes, single_language=len(languages) == 1)
        keys = {need.key for need in needs}
        responders = self.responders(top, codes, keys, region)
        menu = self.menu(top.get("menu", {}), codes, keys)
        transfer = self.transfer(top.get("transfer", {}))
        sms = self.sms_settings(top.get("sms", {}))
        followups = self.followups(top.get("followups", {}), keys)
        callbacks = self.callbacks(top.get("callbacks", {}))
        queue = self.queue(top.get("queue", {}), transfer)
        supervisors = self.supervisors(top.get("supervisors"), region)
        services = self.services(top.get("services"), codes, keys, region)
        if followups.checkins and not supervisors:
            self.warn("supervisors", "check-ins that get no reply are flagged, but nobody is listed to be told")
        staff_prompts = self.prompts(top.get("staff_prompts"), "", STAFF_PROMPT_PLACEHOLDERS, "staff_prompts")
        self.coverage_warnings(languages, needs, responders)
        self.sms_cost_warnings(languages)
        if not languages or not needs or timezone is None:
            return None
        return RoutingDocument(
            line_name=name,
            timezone=timezone,
            region=region,
            mode=mode,
            backup_number=backup,
            staff_prompts=staff_prompts,
            sms=sms,
            followups=followups,
            callbacks=callbacks,
            supervisors=tuple(supervisors),
            queue=queue,
            menu=menu,
            transfer=transfer,
            languages=tuple(languages),
            needs=tuple(needs),
            responders=tuple(responders),
            services=tuple(services),
        )

    def timezone(self, line: dict[str, Any]) -> ZoneInfo | None:
        value = line.get("timezone")
        if value is None:
            return None  # reported as missing already
        if not isinstance(value, str):
            self.error("line.timezone", f"must be an IANA time zone like 'America/Chicago', not {_kind(value)}")
            return None
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            # OSError: a folder of zones ('America' is IsADirectoryError) or a name too long for a path.
            self.error("line.timezone", f"{_shown(value)} is not an IANA time zone like 'America/Chicago'")
            return None

    def languages(self, raw: Any) -> list[Language]:
        result: list[Language] = []
        codes: dict[str, str] = {}
        digits: dict[int, str] = {}
        words: dict[str, str] = {}
        entries = self.items(raw, "languages")
        if raw is not None and not entries:
            self.error("languages", "at least one language is needed")
        if len(entries) > 9:
            self.error("languages", "at most 9 languages fit on a keypad menu")
        for index, entry in enumerate(entries):
            path = f"languages[{index}]"
            item = self.mapping(
                entry,
                path,
                {
                    "code",
                    "digit",
                    "name",
                    "staff_name",
                    "twilio_language",
                    "voice",
                    "speech_words",
                    "words",
                    "prompts",
                    "sms",
                },
                {"code", "digit", "name", "twilio_language", "prompts", "sms"},
            )
            if not item:
                continue
            code = self.unique_id(item, path, codes, "language")
            digit = self.digit(item, path, digits)
            speech = self.words(item.get("speech_words"), f"{path}.speech_words")
            for word in speech:
                normal = normalise_words(word)
                if normal in words:
                    self.error(f"{path}.speech_words", f"{_shown(word)} is already used by {words[normal]}")
                words[normal] = path
            prompts = self.prompts(item.get("prompts"), path)
            voice = self.text(item, "voice", path)
            twilio_language = self.text(item, "twilio_language", path)
            trouble = check_voice(voice, twilio_language)
            if trouble is not None:
                severity = trouble.severity if self.strict else "warning"
                self.problems.append(Problem(f"{path}.voice", trouble.message, severity))
            understood = self.menu_words(item.get("words"), f"{path}.words")
            digit_words = self.digit_words(item.get("words"), f"{path}.words.digits")
            result.append(
                Language(
                    code=code,
                    digit=digit,
                    name=self.text(item, "name", path),
                    twilio_language=twilio_language,
                    voice=voice,
                    speech_words=speech,
                    prompts=prompts,
                    staff_name=self.text(item, "staff_name", path) or self.text(item, "name", path),
                    sms=self.prompts(item.get("sms"), path, SMS_PROMPT_PLACEHOLDERS, "sms"),
                    digit_words=digit_words,
                    filler_words=understood["fillers"],
                    negation_words=understood["negations"],
                    not_negation_words=understood["not_negations"],
                    hedge_words=understood["hedges"],
                    clause_breaks=understood["clause_breaks"],
                    yes_words=understood["yes_words"],
                    no_words=understood["no_words"],
                )
            )
        return result

    def menu_words(self, raw: Any, path: str) -> dict[str, tuple[str, ...]]:
        """``words``' lists, normalised for matching; a list left out gets the default."""
        item = self.mapping(raw, path, {"digits", *SPEECH_WORD_LISTS}, set()) if raw is not None else {}
        lists: dict[str, tuple[str, ...]] = {}
        for name in SPEECH_WORD_LISTS:
            words = self.words(item[name], f"{path}.{name}") if name in item else DEFAULT_SPEECH_WORDS[name]
            lists[name] = tuple(dict.fromkeys(normal for normal in map(normalise_words, words) if normal))
        return lists

    def digit_words(self, raw: Any, path: str) -> dict[str, int]:
        """``words.digits``: spoken number → keypad digit ("two: 2", "dos: 2")."""
        digits = raw.get("digits") if isinstance(raw, dict) else None
        if digits is None:
            return dict(DEFAULT_DIGIT_WORDS)
        if not isinstance(digits, dict):
            self.error(path, f"must be a mapping of word → digit, like {{two: 2}}, not {_kind(digits)}")
            return dict(DEFAULT_DIGIT_WORDS)
        result: dict[str, int] = {}
        for word, digit in digits.items():
            normal = normalise_words(str(word))
            if not normal or len(normal.split()) != 1:
                self.error(f"{path}.{word}", "must be a single spoken word")
            elif isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
                self.error(f"{path}.{word}", f"must be a keypad digit 0-9, not {_shown(digit)}")
            else:
                result[normal] = digit
        return result

    def prompts(
        self,
        raw: Any,
        path: str,
        spec: dict[str, frozenset[str]] = PROMPT_PLACEHOLDERS,
        section: str = "prompts",
    ) -> dict[str, str]:
        where_all = f"{path}.{section}" if path else section
        if not isinstance(raw, dict):
            self.error(where_all, f"must be a mapping, not {_kind(raw)}")
            return {}
        prompts: dict[str, str] = {}
        later = LATER_PROMPTS if spec is PROMPT_PLACEHOLDERS else {}
        if spec is STAFF_PROMPT_PLACEHOLDERS:
            later = LATER_STAFF_PROMPTS
        optional = OPTIONAL_SMS_PROMPTS if spec is SMS_PROMPT_PLACEHOLDERS else {}
        for key in spec:
            if key not in raw and key in optional:
                self.warn(f"{where_all}.{key}", optional[key])
            elif key not in raw and key not in later:
                self.error(path or section, f"prompt {_shown(key)} missing")
        for key, value in raw.items():
            where = f"{where_all}.{key}"
            if key not in spec:
                self.error(where, "unknown prompt (check the spelling)")
                continue
            if not isinstance(value, str) or not value.strip():
                self.error(where, "must be non-empty text")
                continue
            try:
                fields = [(name, spec_, conv) for _, name, spec_, conv in string.Formatter().parse(value)]
            except ValueError as error:
                self.error(where, f"broken {{placeholder}}: {error}")
                continue
            used = {name for name, _, _ in fields if name is not None}
            formatted = sorted({name for name, spec_, conv in fields if name is not None and (spec_ or conv)})
            for name in formatted:
                # ``{position:º}`` reads as a placeholder but fails on a live call: refused here;
                # a version published before this check is read with the placeholders bare.
                message = f"write {{{name}}} alone: a placeholder takes no ':' or '!' after its name"
                (self.error if self.strict else self.warn)(where, message)
            if formatted and self.strict:
                continue
            if formatted:
                value = _bare_placeholders(value)
            if spec is not SMS_PROMPT_PLACEHOLDERS and len(value) > MAX_SPOKEN_PROMPT:
                message = (f"is {len(value):,} characters long: at most {MAX_SPOKEN_PROMPT:,}, or Twilio may "
                           "not say it (3,000 with Polly voices, with the placeholders filled in)")  # fmt: skip
                (self.error if self.strict else self.warn)(where, message)
            for missing in sorted(spec[key] - used):
                self.error(where, f"must contain {{{missing}}}")
            for unknown in sorted(used - spec[key]):
                self.error(where, f"unknown placeholder {{{unknown}}}")
            prompts[key] = value.strip()
        for key, stand_in in later.items():
            if key not in raw and stand_in(prompts):
                prompts[key] = stand_in(prompts)
        return prompts

    def needs(self, raw: Any, codes: set[str], *, single_language: bool) -> list[Need]:
        result: list[Need] = []
        keys: dict[str, str] = {}
        digits: dict[int, str] = {}
        words: dict[tuple[str, str], str] = {}
        entries = self.items(raw, "needs")
        if raw is not None and not entries:
            self.error("needs", "at least one need is needed")
        for index, entry in enumerate(entries):
            path = f"needs[{index}]"
            item = self.mapping(
                entry,
                path,
                {
                    "key",
                    "digit",
                    "target",
                    "fallback",
                    "skill",
                    "strategy",
                    "priority",
                    "labels",
                    "speech_words",
                },
                {"key", "digit", "target", "labels"},
            )
            if not item:
                continue
            key = self.unique_id(item, path, keys, "need")
            digit = self.digit(item, path, digits)
            target = self.text(item, "target", path)
            if target and target not in TARGETS:
                self.error(f"{path}.target", f"{_shown(target)} is not one of {', '.join(TARGETS)}")
            fallback = item.get("fallback")
            if fallback is not None and fallback not in TARGETS:
                self.error(f"{path}.fallback", f"{_shown(fallback)} is not one of {', '.join(TARGETS)}")
            labels = self.per_language(item.get("labels"), f"{path}.labels", codes, self.label)
            speech = self.per_language(
                item.get("speech_words") or {},
                f"{path}.speech_words",
                codes,
                self.words,
                require_all=False,
            )
            for code, code_words in speech.items():
                for word in code_words:
                    normal = (code, normalise_words(word))
                    if normal in words:
                        self.error(f"{path}.speech_words.{code}", f"{_shown(word)} is already used by {words[normal]}")
                    words[normal] = path
            skill = item.get("skill", key)
            strategy = item.get("strategy")
            if strategy is not None and strategy not in STRATEGIES:
                self.error(f"{path}.strategy", f"{_shown(strategy)} is not one of {', '.join(STRATEGIES)}")
                strategy = None
            result.append(
                Need(
                    key=key,
                    digit=digit,
                    target=target,
                    fallback=fallback,
                    skill=skill if isinstance(skill, str) else key,
                    strategy=strategy,
                    priority=self.integer(item, "priority", path, 0, 9, 0),
                    labels=labels,
                    speech_words=speech,
                )
            )
        return result

    def label(self, raw: Any, path: str) -> str:
        if not isinstance(raw, str) or not raw.strip():
            self.error(path, "must be non-empty text")
            return ""
        return raw.strip()

    def per_language(
        self,
        raw: Any,
        path: str,
        codes: set[str],
        read: Callable[[Any, str], T],
        *,
        require_all: bool = True,
    ) -> dict[str, T]:
        if not isinstance(raw, dict):
            self.error(path, f"must be a mapping of language code to value, not {_kind(raw)}")
            return {}
        result: dict[str, T] = {}
        for code, value in raw.items():
            if code not in codes:
                self.error(f"{path}.{code}", "not one of the line's languages")
                continue
            result[code] = read(value, f"{path}.{code}")
        if require_all:
            for code in sorted(codes - raw.keys()):
                self.error(path, f"missing for language {_shown(code)}")
        return result

    def responders(self, top: dict[str, Any], codes: set[str], needs: set[str], region: str) -> list[Responder]:
        result: list[Responder] = []
        ids: dict[str, str] = {}
        phones: dict[str, str] = {}
        for section, kind in (("counselors", "counselor"), ("co_responder_units", "co_responder")):
            for index, entry in enumerate(self.items(top.get(section), section)):
                path = f"{section}[{index}]"
                item = self.mapping(
                    entry,
                    path,
                    {"id", "name", "phone", "languages", "skills", "shifts", "overrides"},
                    {"id", "name", "phone", "languages"},
                )
                if not item:
                    continue
                responder_id = self.unique_id(item, path, ids, "responder")
                languages = self.words(item.get("languages"), f"{path}.languages")
                for offset, code in enumerate(languages):
                    if code not in codes:
                        self.error(f"{path}.languages[{offset}]", f"{_shown(code)} is not one of the line's languages")
                skills = self.words(item.get("skills"), f"{path}.skills")
                for offset, skill in enumerate(skills):
                    if skill not in needs:
                        self.error(f"{path}.skills[{offset}]", f"{_shown(skill)} is not a need key")
                phone = self.phone(item, "phone", path, region)
                if phone and phone in phones:
                    self.warn(
                        f"{path}.phone",
                        f"the same phone as {phones[phone]}: its texts are taken as from whichever of the two is on"
                        " call (the first listed when both or neither are); give each their own phone if you can",
                    )
                phones.setdefault(phone, f"{path} ({responder_id})")
                result.append(
                    Responder(
                        id=responder_id,
                        kind=kind,
                        name=self.text(item, "name", path),
                        phone=phone,
                        languages=languages,
                        skills=frozenset(skills),
                        shifts=tuple(self.shifts(item.get("shifts"), f"{path}.shifts")),
                        overrides=tuple(self.overrides(item.get("overrides"), f"{path}.overrides")),
                    )
                )
        return result

    def shifts(self, raw: Any, path: str) -> list[Shift]:
        result = []
        for index, entry in enumerate(self.items(raw, path)):
            where = f"{path}[{index}]"
            item = self.mapping(entry, where, {"days", "start", "end"}, {"days", "start", "end"})
            if not item:
                continue
            days = self.weekdays(item["days"], f"{where}.days") if "days" in item else set()  # else: "missing"
            start = self.time_of_day(item.get("start"), f"{where}.start")
            end = self.time_of_day(item.get("end"), f"{where}.end")
            if item.get("start") == "24:00":
                self.error(f"{where}.start", "a shift starts at 00:00 at the latest; '24:00' is only an end")
                continue
            whole_day = start == time(0) and item.get("end") == "24:00"
            if start is not None and end is not None and start == end and not whole_day:
                self.error(where, "start and end are the same time (for the whole day write 00:00 to 24:00)")
                continue
            if days and start is not None and end is not None:
                # ``end`` None is midnight at the end of the day: 00:00 to 24:00 is the whole day.
                result.append(Shift(frozenset(days), start, None if end == time(0) else end))
        return result

    def weekdays(self, raw: Any, path: str) -> set[int]:
        if raw is None or raw == []:
            # Left out, the shift would be dropped without a word: its hours never covered.
            # A version published before this check keeps running as it did (shift dropped).
            (self.error if self.strict else self.warn)(
                path, "at least one day (mon … sun, monday … sunday, weekdays, weekends or daily)"
            )
            return set()
        if isinstance(raw, str):
            raw = [raw]
        days: set[int] = set()
        for index, day in enumerate(self.items(raw, path)):
            # Whole names only: a first-three-letters reading took 'monkey' as Monday.
            name = day.strip().lower() if isinstance(day, str) else None
            if name in DAY_GROUPS:
                days |= DAY_GROUPS[name]
            elif name in DAY_WORDS:
                days.add(DAY_WORDS[name])
            elif not self.strict and name is not None and name[:3] in WEEKDAYS:
                # Published when the first three letters were enough: read as it was then.
                self.warn(f"{path}[{index}]", f"{_shown(day)} is read as {name[:3]}; write mon … sun or the whole name")
                days.add(WEEKDAYS[name[:3]])
            else:
                self.error(
                    f"{path}[{index}]",
                    f"{_shown(day)} is not a day (mon … sun, monday … sunday, weekdays, weekends, daily)",
                )
        return days

    def time_of_day(self, raw: Any, path: str) -> time | None:
        match = TIME_OF_DAY.match(raw) if isinstance(raw, str) else None
        if not match or (match.group(1) == "24" and match.group(2) != "00"):
            self.error(path, f"{_shown(raw)} is not a time of day like '08:00' or '24:00'")
            return None
        hour = int(match.group(1))
        return time(0) if hour == 24 else time(hour, int(match.group(2)))

    def overrides(self, raw: Any, path: str) -> list[Override]:
        result = []
        for index, entry in enumerate(self.items(raw, path)):
            where = f"{path}[{index}]"
            item = self.mapping(entry, where, {"start", "end", "on_call"}, {"start", "end", "on_call"})
            if not item:
                continue
            start = self.local_datetime(item.get("start"), f"{where}.start")
            end = self.local_datetime(item.get("end"), f"{where}.end")
            on_call = item.get("on_call")
            if not isinstance(on_call, bool):
                self.error(f"{where}.on_call", "must be true or false")
            elif start and end:
                if end <= start:
                    self.error(where, "end must be after start")
                else:
                    result.append(Override(start, end, on_call))
        return result

    def local_datetime(self, raw: Any, path: str) -> datetime | None:
        try:
            value = datetime.fromisoformat(str(raw))
        except ValueError:
            self.error(path, f"{_shown(raw)} is not a local date and time like '2026-12-24T18:00'")
            return None
        if value.tzinfo is not None:
            self.error(path, "give local time without an offset; the line's time zone applies")
            return None
        return value

    def menu(self, raw: Any, codes: set[str], needs: set[str]) -> MenuSettings:
        item = self.mapping(
            raw,
            "menu",
            {"timeout_seconds", "retries", "default_language", "default_need", "ask_need", "max_seconds_to_ring"},
            {"default_need"},
        )
        default_language = item.get("default_language")
        if default_language is None and codes:
            default_language = sorted(codes)[0]
        # A list or mapping here cannot be looked up in a set (unhashable): say what it must be.
        if not isinstance(default_language, str):
            self.error("menu.default_language", f"must be a language code like 'en', not {_kind(default_language)}")
        elif default_language not in codes:
            self.error("menu.default_language", f"{_shown(default_language)} is not one of the line's languages")
        default_need = item.get("default_need")
        if "default_need" in item and not isinstance(default_need, str):
            self.error("menu.default_need", f"must be a need key like 'something_else', not {_kind(default_need)}")
        elif "default_need" in item and default_need not in needs:
            self.error("menu.default_need", f"{_shown(default_need)} is not a need key")
        return MenuSettings(
            timeout_seconds=self.duration(item, "timeout_seconds", "menu", "s", 2, 30, 6),
            retries=self.integer(item, "retries", "menu", 0, 5, 2),
            default_language=str(default_language),
            default_need=str(default_need),
            ask_need=self.boolean(item, "ask_need", "menu", True),
            max_seconds_to_ring=self.duration(item, "max_seconds_to_ring", "menu", "s", 5, 120, 20),
        )

    def transfer(self, raw: Any) -> TransferSettings:
        item = self.mapping(
            raw,
            "transfer",
            {"ring_timeout_seconds", "backup_attempts", "language_fallback", "accept_timeout_seconds",
             "strategy", "parallel_max", "max_hold_seconds", "pause_after_missed", "hold_music_url"},
            set(),
        )  # fmt: skip
        fallback = self.text(item, "language_fallback", "transfer", "any_language")
        if fallback not in ("any_language", "backup"):
            self.error("transfer.language_fallback", "must be 'any_language' or 'backup'")
        strategy = self.text(item, "strategy", "transfer", "sequential")
        if strategy not in STRATEGIES:
            self.error("transfer.strategy", f"{_shown(strategy)} is not one of {', '.join(STRATEGIES)}")
        music = item.get("hold_music_url")
        if music is not None and not (isinstance(music, str) and music.startswith("https://")):
            self.error("transfer.hold_music_url", "must be an https:// URL of an MP3 or WAV file")
            music = None
        return TransferSettings(
            ring_timeout_seconds=self.duration(item, "ring_timeout_seconds", "transfer", "s", 5, 120, 20),
            backup_attempts=self.integer(item, "backup_attempts", "transfer", 1, 5, 3),
            language_fallback=fallback,
            accept_timeout_seconds=self.duration(item, "accept_timeout_seconds", "transfer", "s", 3, 30, 8),
            strategy=strategy if strategy in STRATEGIES else "sequential",
            parallel_max=self.integer(item, "parallel_max", "transfer", 1, 10, 3),
            max_hold_seconds=self.duration(item, "max_hold_seconds", "transfer", "s", 30, 1800, 240),
            pause_after_missed=self.integer(item, "pause_after_missed", "transfer", 1, 20, 3),
            hold_music_url=music,
        )

    def sms_settings(self, raw: Any) -> SmsSettings:
        item = self.mapping(
            raw,
            "sms",
            {"offer_timeout_seconds", "max_conversations_per_counselor", "max_wait_seconds",
             "idle_close_minutes", "language_confidence", "advanced_opt_out"},
            set(),
        )  # fmt: skip
        confidence = item.get("language_confidence", 0.75)
        if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 < confidence < 1:
            self.error("sms.language_confidence", "must be a number between 0 and 1, like 0.75")
            confidence = 0.75
        return SmsSettings(
            offer_timeout_seconds=self.duration(item, "offer_timeout_seconds", "sms", "s", 30, 1800, 120),
            max_conversations_per_counselor=self.integer(item, "max_conversations_per_counselor", "sms", 1, 10, 3),
            max_wait_seconds=self.duration(item, "max_wait_seconds", "sms", "s", 60, 86400, 900),
            idle_close_minutes=self.whole_minutes(item, "idle_close_minutes", "sms", 5, 1440, 60),
            language_confidence=float(confidence),
            advanced_opt_out=self.boolean(item, "advanced_opt_out", "sms", False),
        )

    def followups(self, raw: Any, needs: set[str]) -> FollowupSettings:
        item = self.mapping(
            raw,
            "followups",
            {"missed_contact_after_seconds", "checkins", "checkin_after_hours", "second_attempt_after_hours",
             "escalate_after_hours", "talk_by", "survey", "survey_after_minutes", "quiet_hours"},
            set(),
        )  # fmt: skip
        hours_raw = item.get("checkin_after_hours", {"default": 24})
        hours: dict[str, float] = {}
        if not isinstance(hours_raw, dict):
            self.error("followups.checkin_after_hours", f"must be a mapping of need → hours, not {_kind(hours_raw)}")
            hours_raw = {}
        for key in hours_raw:
            if key != "default" and key not in needs:
                self.error(f"followups.checkin_after_hours.{key}", f"{_shown(key)} is not a need key (or 'default')")
                continue
            hours[str(key)] = self.hours(hours_raw, key, "followups.checkin_after_hours", 15 * 60, 14 * DAY, 24 * HOUR)
        hours.setdefault("default", 24.0)
        talk_by = self.text(item, "talk_by", "followups", "text")
        if talk_by not in ("text", "call"):
            self.error("followups.talk_by", f"{_shown(talk_by)} is not 'text' or 'call'")
            talk_by = "text"
        return FollowupSettings(
            missed_contact_after_seconds=self.duration(
                item, "missed_contact_after_seconds", "followups", "s", 0, 3600, 0
            ),
            checkins=self.boolean(item, "checkins", "followups", False),
            checkin_after_hours=hours,
            second_attempt_after_hours=self.hours(
                item, "second_attempt_after_hours", "followups", 30 * 60, 72 * HOUR, 4 * HOUR
            ),
            escalate_after_hours=self.hours(item, "escalate_after_hours", "followups", 30 * 60, 72 * HOUR, 4 * HOUR),
            talk_by=talk_by,
            survey=self.boolean(item, "survey", "followups", False),
            survey_after_minutes=self.whole_minutes(item, "survey_after_minutes", "followups", 1, 10080, 60),
            quiet_hours=self.quiet_hours(item.get("quiet_hours"), "followups.quiet_hours"),
        )

    def quiet_hours(self, raw: Any, path: str) -> tuple[time, time] | None:
        """``{start: "21:00", end: "08:00"}`` in the line's time zone, or nothing (no quiet hours)."""
        if raw is None:
            return None
        item = self.mapping(raw, path, {"start", "end"}, {"start", "end"})
        if not item:
            return None
        start = self.time_of_day(item.get("start"), f"{path}.start")
        end = self.time_of_day(item.get("end"), f"{path}.end")
        if start is None or end is None:
            return None
        if start == end:
            self.error(path, "start and end are the same time (leave quiet_hours out for none)")
            return None
        return (start, end)

    def callbacks(self, raw: Any) -> CallbackSettings:
        item = self.mapping(
            raw,
            "callbacks",
            {"enabled", "digit", "offer_after_seconds", "retry_after_minutes", "ring_timeout_seconds",
             "give_up_after_minutes"},
            set(),
        )  # fmt: skip
        digit = str(item.get("digit", "9"))
        if len(digit) != 1 or digit not in "0123456789*#":
            self.error("callbacks.digit", f"must be one keypad key (0-9, * or #), not {_shown(item.get('digit'))}")
            digit = "9"
        retries: list[int] = []
        for index, minutes in enumerate(self.items(item.get("retry_after_minutes", [5, 15]), "callbacks")):
            where = f"callbacks.retry_after_minutes[{index}]"
            retries.append(self.whole_minutes({where: minutes}, where, "", 1, 1440, 5))
        if len(retries) > 5:
            self.error("callbacks.retry_after_minutes", "at most 5 retries")
        return CallbackSettings(
            enabled=self.boolean(item, "enabled", "callbacks", False),
            digit=digit,
            offer_after_seconds=self.duration(item, "offer_after_seconds", "callbacks", "s", 0, 1800, 60),
            retry_after_minutes=tuple(retries[:5]),
            ring_timeout_seconds=self.duration(item, "ring_timeout_seconds", "callbacks", "s", 10, 60, 25),
            give_up_after_minutes=self.whole_minutes(item, "give_up_after_minutes", "callbacks", 5, 1440, 120),
        )

    def queue(self, raw: Any, transfer: TransferSettings) -> QueueSettings:
        item = self.mapping(raw, "queue", {"reoffer_after_seconds", "channels", "announce_position"}, set())
        channels = self.text(item, "channels", "queue", "separate")
        if channels not in QUEUE_CHANNELS:
            self.error("queue.channels", f"{_shown(channels)} is not one of {', '.join(QUEUE_CHANNELS)}")
            channels = "separate"
        reoffer = self.duration(item, "reoffer_after_seconds", "queue", "s", 0, 3600, 60)
        if reoffer >= transfer.max_hold_seconds:
            self.warn(
                "queue.reoffer_after_seconds",
                f"{reoffer} s is not shorter than transfer.max_hold_seconds ({transfer.max_hold_seconds} s): "
                "a caller everyone missed is never offered to them again before the backup line",
            )
        return QueueSettings(
            reoffer_after_seconds=reoffer,
            channels=channels,
            announce_position=self.boolean(item, "announce_position", "queue", True),
        )

    def supervisors(self, raw: Any, region: str) -> list[Supervisor]:
        result: list[Supervisor] = []
        ids: dict[str, str] = {}
        for index, entry in enumerate(self.items(raw, "supervisors")):
            path = f"supervisors[{index}]"
            item = self.mapping(entry, path, {"id", "name", "phone"}, {"id", "name", "phone"})
            if not item:
                continue
            result.append(
                Supervisor(
                    id=self.unique_id(item, path, ids, "supervisor"),
                    name=self.text(item, "name", path),
                    phone=self.phone(item, "phone", path, region),
                )
            )
        return result

    def services(self, raw: Any, codes: set[str], needs: set[str], region: str) -> list[Service]:
        """``services:``: the referral directory of community services."""
        result: list[Service] = []
        ids: dict[str, str] = {}
        for index, entry in enumerate(self.items(raw, "services")):
            path = f"services[{index}]"
            item = self.mapping(
                entry, path, {"id", "name", "phone", "languages", "needs", "description"}, {"id", "name", "phone"}
            )
            if not item:
                continue
            # A service may speak languages the line does not offer; only the form is checked.
            languages = self.words(item.get("languages"), f"{path}.languages")
            for offset, code in enumerate(languages):
                if not LANGUAGE_CODE.match(code):
                    self.error(
                        f"{path}.languages[{offset}]", f"{_shown(code)} is not a language code like 'en' or 'es'"
                    )
            helps = self.words(item.get("needs"), f"{path}.needs")
            for offset, key in enumerate(helps):
                if key not in needs:
                    self.warn(f"{path}.needs[{offset}]", f"{_shown(key)} is not a need key: never matched by it")
            description = self.text(item, "description", path) if item.get("description") is not None else ""
            if len(description) > 160:
                self.error(f"{path}.description", f"{len(description)} characters: at most 160 (one text)")
            result.append(
                Service(
                    id=self.unique_id(item, path, ids, "service"),
                    name=self.text(item, "name", path),
                    phone=self.phone(item, "phone", path, region, dialled=False),
                    languages=languages or tuple(sorted(codes)),
                    needs=helps,
                    description=description,
                )
            )
        return result

    def boolean(self, raw: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.error(_join(path, key), f"must be true or false, not {_kind(value)}")
            return default
        return value

    def sms_cost_warnings(self, languages: list[Language]) -> None:
        """Texts cost segments: warn where a prompt forces UCS-2 or runs past one segment."""
        for index, language in enumerate(languages):
            for key, text in language.sms.items():
                where = f"languages[{index}].sms.{key}"
                odd = sorted({ch for ch in text if not is_gsm7(ch)})
                if odd:
                    self.warn(
                        where,
                        f"{_shown(''.join(odd))} is not in GSM-7, so this text is sent as UCS-2 "
                        "(70 characters a segment instead of 160)",
                    )
                elif segment_count(text) > 1:
                    self.warn(where, f"{len(text)} characters: costs {segment_count(text)} segments")

    def coverage_warnings(self, languages: list[Language], needs: list[Need], responders: list[Responder]) -> None:
        for index, language in enumerate(languages):
            if language.code and not any(language.code in r.languages for r in responders):
                self.warn(f"languages[{index}]", f"nobody on the rota speaks {language.name or language.code}")
        for index, need in enumerate(needs):
            if need.target == "counselors" and not any(
                r.kind == "counselor" and need.skill in r.skills for r in responders
            ):
                self.warn(f"needs[{index}]", f"no counselor has the skill {_shown(need.skill)}")
            if need.target == "co_responders" and not any(r.kind == "co_responder" for r in responders):
                self.warn(f"needs[{index}]", "there are no co_responder_units")


def parse_duration(value: object, unit: str) -> int | None:
    """Seconds in ``90s``, ``15m``, ``2h``, ``3d`` or ``1h30m``; a plain whole number counts in
    ``unit`` ("s", "m", "h" or "d"). None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value * UNIT_SECONDS[unit] if value >= 0 else -1
    if not isinstance(value, str):
        return None
    text = value.strip().replace(" ", "")
    if any(len(run) > MAX_DURATION_DIGITS for run in re.findall(r"\d+", text)):
        return None  # out of every bound; and int() refuses more than 4300 digits
    if text.isascii() and text.isdigit():  # "²".isdigit() is true, and int("²") fails
        return int(text) * UNIT_SECONDS[unit]
    match = DURATION.match(text)
    if not text or not match:
        return None
    return sum(int(amount) * UNIT_SECONDS[name] for name, amount in match.groupdict().items() if amount)


def format_duration(seconds: int) -> str:
    """``5400`` → ``1h30m``: the way a config writes a duration."""
    if seconds <= 0:
        return "0s" if seconds == 0 else f"{seconds}s"
    parts = []
    for name in ("d", "h", "m", "s"):
        amount, seconds = divmod(seconds, UNIT_SECONDS[name])
        if amount:
            parts.append(f"{amount}{name}")
    return "".join(parts)


_NOT_WORD = re.compile(r"[^\w\s]")


def normalise_words(text: str) -> str:
    """Lower-case, accent-free, single-spaced text for matching speech to configured words."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(_NOT_WORD.sub(" ", letters).split())


@lru_cache(maxsize=8192)
def normalised_configured(word: str) -> str:
    """``normalise_words`` of a word or phrase from the routing config, remembered: every text
    and every spoken answer is matched against all of them (a tenth of an inbound text's time
    went to normalising the same few hundred phrases again). Only for the config's own words:
    what a person said or wrote is never kept in a cache."""
    return normalise_words(word)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _bare_placeholders(text: str) -> str:
    """``text`` with every placeholder's format and conversion dropped (``{position:º}`` →
    ``{position}``), its literal braces kept."""
    parts = []
    for literal, name, _spec, _conversion in string.Formatter().parse(text):
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is not None:
            parts.append(f"{{{name}}}")
    return "".join(parts)


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother, _SHORT_REPR.maxlong = 2, 60, 60, 40
_SHORT_REPR.maxlist = _SHORT_REPR.maxdict = 4


def _shown(value: object, limit: int = 80) -> str:
    """``value``'s repr as an error message shows it: at most ``limit`` characters. A message
    quoting a whole pasted value (or a long list) would bury the field it is about."""
    shown = _SHORT_REPR.repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {
        dict: "a mapping",
        list: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)
