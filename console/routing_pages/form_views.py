"""The routing forms of issue 11: languages, needs, prompts, menus and timing, overrides.

Each form edits one part of the version it was read from (its ``base``) and hands the new
text to the editor's own preview: the one validator, the diff against the live version, every
warning, the stale check and merge, and publishing with a note (audited there). A change the
validator refuses is shown back on the form, at its fields, with the live routing unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from flask import abort, render_template, request
from wtforms import Field, SelectChoice  # type: ignore[import-untyped]

from console.access import allow
from console.inputs import DAY_RANGE, MAX_ID, calendar_day, row_id, whole_number
from console.models import ADMIN
from console.routing_pages import changes, drafts, views
from console.routing_pages.forms import (
    EditorForm,
    LanguageForm,
    MenuForm,
    NeedForm,
    NewLanguageForm,
    OverrideForm,
    PromptsForm,
    RemoveLanguageForm,
    RemoveNeedForm,
    RemoveOverrideForm,
    SettingsForm,
    need_form,
    prompt_field,
    prompts_form,
)
from routing import publishing, store, timing
from routing.document import PROMPT_PLACEHOLDERS, SMS_PROMPT_PLACEHOLDERS, Language, Need, RoutingDocument
from routing.validation import Problem, format_duration, parse_duration, validate_text
from routing.voices import POLLY_VOICES

bp = views.bp
Page = tuple[str, int]


@dataclass(frozen=True)
class Base:
    """The published version a form edits: its number, text and document."""

    number: int
    text: str
    document: RoutingDocument


NO_BASE = "This form was not drawn from a published version: open its page again."


def _base(number: str | None = None) -> Base:
    """Version ``number`` (a form's hidden ``base``), or the live one; 404 before any, 400 for
    a ``base`` that no version's number can be."""
    chosen = row_id(number)
    if number and chosen is None:
        abort(400, NO_BASE)
    row = publishing.version(chosen) if chosen is not None else None
    row = row or publishing.live_version()
    if row is None:
        abort(404)
    text = store.source_of(row)
    document, _ = validate_text(text, strict=False)  # published: newer checks only warn
    if document is None:
        abort(404)
    return Base(row.id, text, document)


def _attach(problems: list[Problem], fields: dict[str, Field]) -> list[Problem]:
    """Put each problem on the form field its path is about; the ones attached."""
    attached = []
    for problem in problems:
        for path, field in fields.items():
            if problem.path == path or problem.path.startswith((path + ".", path + "[")):
                field.errors = [*field.errors, problem.message]
                attached.append(problem)
                break
    return attached


def _draft(base: Base, change: Callable[[str], str], what: str, fields: dict[str, Field]) -> Page | list[str]:
    """The editor with the form's draft previewed (as any YAML draft), or what is wrong with
    the change for the form to show: refused by the drafts, or by the validator at a field."""
    try:
        text = change(base.text)
    except drafts.DraftError as error:
        return [str(error)]
    result = publishing.preview(text, base.number, left_out=views.left_out())
    if result.problems:
        attached = _attach(result.problems, fields)
        if attached:
            return [problem.describe() for problem in result.problems if problem not in attached]
    form = EditorForm(formdata=None)
    form.text.data, form.base.data = text, str(base.number)
    stale = views._stale(form, result) if result.stale else None
    if stale is not None and stale.merged:  # the editor now holds the merge: preview that
        result = publishing.preview(views._draft_text(form), form.base_version(), left_out=views.left_out())
    return views._editor(form, preview=result, stale=stale, draft_of=what), 200


REFUSED = "Not a valid change: see the fields marked below."


def _clean(value: str | None) -> str:
    """One line of text from a form field (browsers send CRLF and stray spaces)."""
    return " ".join((value or "").split())


def _number_or_text(value: str) -> int | str:
    """A form's duration as the config writes it: a plain number of seconds, or the text (which
    the validator reads, or refuses at its field: ``²`` is not a number)."""
    number = whole_number(value, MAX_ID)
    return value if number is None else number


def _words(value: str | None) -> list[str]:
    return [word.strip() for word in (value or "").split(",") if word.strip()]


# --- languages -----------------------------------------------------------------------------


def _voices() -> list[tuple[str, str]]:
    return sorted((f"Polly.{name}", locale) for locale, names in POLLY_VOICES.items() for name in names)


def _language_values(form: LanguageForm, language: Language) -> None:
    form.code.data, form.name.data, form.staff_name.data = language.code, language.name, language.staff_name
    form.twilio_language.data, form.voice.data = language.twilio_language, language.voice
    form.digit.data, form.speech_words.data = str(language.digit), ", ".join(language.speech_words)


def _language_choices(base: Base, add: NewLanguageForm, remove: RemoveLanguageForm) -> None:
    choices = [SelectChoice(language.code, language.staff_name) for language in base.document.languages]
    add.copy_from.choices = remove.code.choices = choices


def _languages_page(base: Base, code: str | None, *, edit: LanguageForm | None = None,
                    add: NewLanguageForm | None = None, remove: RemoveLanguageForm | None = None,
                    refusal: str | None = None, problems: list[str] | None = None) -> str:  # fmt: skip
    document = base.document
    chosen = document.language(code)
    if edit is None:
        edit = LanguageForm(formdata=None)
        _language_values(edit, chosen)
    add = add or NewLanguageForm(formdata=None)
    remove = remove or RemoveLanguageForm(formdata=None)
    _language_choices(base, add, remove)
    for form in (edit, add, remove):
        form.base.data = str(base.number)
    return render_template(
        "console/routing_form_languages.html", document=document, chosen=chosen, edit=edit, add=add,
        remove=remove, voices=_voices(), refusal=refusal, problems=problems,
    )  # fmt: skip


@bp.get("/languages")
@allow(ADMIN)
def languages() -> str:
    """The languages of the live routing; one of them in a form."""
    return _languages_page(_base(), request.args.get("code"))


@bp.post("/languages/edit")
@allow(ADMIN)
def edit_language() -> Page:
    form = LanguageForm()
    base = _base(form.base.data)
    language = next((lang for lang in base.document.languages if lang.code == form.code.data), None)
    if language is None:
        abort(404)
    if not form.validate_on_submit():
        return _languages_page(base, language.code, edit=form), 400
    wanted: dict[str, object] = {
        "name": _clean(form.name.data), "staff_name": _clean(form.staff_name.data) or _clean(form.name.data),
        "twilio_language": _clean(form.twilio_language.data), "voice": _clean(form.voice.data),
        "digit": int(form.digit.data), "speech_words": _words(form.speech_words.data),
    }  # fmt: skip
    current: dict[str, object] = {
        "name": language.name, "staff_name": language.staff_name, "twilio_language": language.twilio_language,
        "voice": language.voice, "digit": language.digit, "speech_words": list(language.speech_words),
    }  # fmt: skip
    changed = {key: value for key, value in wanted.items() if value != current[key]}
    index = base.document.languages.index(language)
    fields = {f"languages[{index}].{name}": getattr(form, name) for name in wanted}
    outcome = _draft(base, lambda text: changes.edit_language(text, language.code, changed),
                     f"changing {language.staff_name}: {', '.join(changed) or 'nothing'}", fields)  # fmt: skip
    if isinstance(outcome, list):
        return _languages_page(base, language.code, edit=form, refusal=REFUSED, problems=outcome), 400
    return outcome


@bp.post("/languages/add")
@allow(ADMIN)
def add_language() -> Page:
    form, base = NewLanguageForm(), _base(request.form.get("base"))
    remove = RemoveLanguageForm(formdata=None)
    _language_choices(base, form, remove)
    code = form.code.data or ""
    valid = form.validate_on_submit()
    if any(lang.code == code for lang in base.document.languages):
        form.code.errors = [*form.code.errors, "The line has this language already."]
        valid = False
    if not valid:
        return _languages_page(base, None, add=form, remove=remove), 400
    name = _clean(form.name.data)
    entry: dict[str, object] = {
        "code": code, "digit": int(form.digit.data), "name": name, "staff_name": _clean(form.staff_name.data) or name,
        "twilio_language": _clean(form.twilio_language.data), "voice": _clean(form.voice.data),
        "speech_words": _words(form.speech_words.data),
    }  # fmt: skip
    index = len(base.document.languages)
    fields = {f"languages[{index}].{key}": getattr(form, key) for key in entry}
    source = base.document.language(form.copy_from.data).staff_name
    what = (f"adding {entry['staff_name']}; its prompts, texts and need labels are copied from {source}: "
            "translate them on the Prompts and Needs pages before callers hear them")  # fmt: skip
    outcome = _draft(base, lambda text: changes.add_language(text, base.document, entry, form.copy_from.data), what,
                     fields)  # fmt: skip
    if isinstance(outcome, list):
        return _languages_page(base, None, add=form, remove=remove, refusal=REFUSED, problems=outcome), 400
    return outcome


@bp.post("/languages/remove")
@allow(ADMIN)
def remove_language() -> Page:
    form, base = RemoveLanguageForm(), _base(request.form.get("base"))
    add = NewLanguageForm(formdata=None)
    _language_choices(base, add, form)
    if not form.validate_on_submit():
        return _languages_page(base, None, add=add, remove=form), 400
    code = form.code.data
    outcome = _draft(base, lambda text: changes.remove_language(text, base.document, code),
                     f"removing {base.document.language(code).staff_name}", {})  # fmt: skip
    if isinstance(outcome, list):
        form.code.errors = [*form.code.errors, *outcome]
        return _languages_page(base, None, add=add, remove=form, refusal="Not removed."), 400
    return outcome


# --- needs ---------------------------------------------------------------------------------


def _need_form(base: Base, new: bool = False, formdata: bool = True) -> NeedForm:
    codes = [(language.code, language.staff_name) for language in base.document.languages]
    form = need_form(codes, new, **({} if formdata else {"formdata": None}))
    form.counselors.choices = [SelectChoice(r.id, r.name) for r in base.document.responders if r.kind == "counselor"]
    return form


def label_field(form: NeedForm, code: str) -> Field:
    return getattr(form, f"label_{code.replace('-', '_')}")


def _need_values(form: NeedForm, document: RoutingDocument, need: Need) -> None:
    form.key.data, form.digit.data, form.priority.data = need.key, str(need.digit), str(need.priority)
    form.target.data, form.fallback.data = need.target, need.fallback or ""
    form.counselors.data = [r.id for r in document.responders if r.kind == "counselor" and need.skill in r.skills]
    for language in document.languages:
        label_field(form, language.code).data = need.labels.get(language.code, "")


def _needs_page(
    base: Base, key: str | None, *, edit: NeedForm | None = None, add: NeedForm | None = None,
    remove: RemoveNeedForm | None = None, refusal: str | None = None, problems: list[str] | None = None,
) -> str:  # fmt: skip
    document = base.document
    chosen = document.need(key) or document.needs[0]
    if edit is None:
        edit = _need_form(base, formdata=False)
        _need_values(edit, document, chosen)
    add = add or _need_form(base, new=True, formdata=False)
    remove = remove or RemoveNeedForm(formdata=None)
    remove.key.choices = [SelectChoice(need.key, need.labels.get("en", need.key)) for need in document.needs]
    for form in (edit, add, remove):
        form.base.data = str(base.number)
    counselors = {r.id: r.name for r in document.responders}
    return render_template(
        "console/routing_form_needs.html", document=document, chosen=chosen, edit=edit, add=add, remove=remove,
        label_field=label_field, counselors=counselors, refusal=refusal, problems=problems,
    )  # fmt: skip


@bp.get("/needs")
@allow(ADMIN)
def needs() -> str:
    """The needs of the live routing, in priority order; one of them in a form."""
    return _needs_page(_base(), request.args.get("key"))


def _need_entry(form: NeedForm, document: RoutingDocument) -> tuple[dict[str, object], dict[str, str]]:
    fields: dict[str, object] = {"digit": int(form.digit.data), "priority": int(form.priority.data),
                                 "target": form.target.data}  # fmt: skip
    labels = {language.code: _clean(label_field(form, language.code).data) for language in document.languages}
    return fields, labels


@bp.post("/needs/edit")
@allow(ADMIN)
def edit_need() -> Page:
    base = _base(request.form.get("base"))
    form = _need_form(base)
    need = base.document.need(form.key.data)
    if need is None:
        abort(404)
    if not form.validate_on_submit():
        return _needs_page(base, need.key, edit=form), 400
    wanted, labels = _need_entry(form, base.document)
    current = {"digit": need.digit, "priority": need.priority, "target": need.target}
    fallback = form.fallback.data or None
    if fallback != need.fallback and fallback is not None:
        wanted["fallback"] = fallback
    change = changes.NeedChange(
        fields={key: value for key, value in wanted.items() if current.get(key) != value},
        labels={code: label for code, label in labels.items() if need.labels.get(code) != label},
        counselors=frozenset(form.counselors.data or []),
        drop_fallback=fallback is None and need.fallback is not None,
    )
    index = base.document.needs.index(need)
    fields = {f"needs[{index}].{name}": getattr(form, name) for name in ("digit", "priority", "target", "fallback")}
    fields |= {f"needs[{index}].labels.{code}": label_field(form, code) for code in labels}
    what = f"changing the need {need.labels.get('en', need.key)!r}"
    outcome = _draft(base, lambda text: changes.edit_need(text, base.document, need.key, change), what, fields)
    if isinstance(outcome, list):
        return _needs_page(base, need.key, edit=form, refusal=REFUSED, problems=outcome), 400
    return outcome


@bp.post("/needs/add")
@allow(ADMIN)
def add_need() -> Page:
    base = _base(request.form.get("base"))
    form = _need_form(base, new=True)
    valid = form.validate_on_submit()
    if base.document.need(form.key.data) is not None:
        form.key.errors = [*form.key.errors, "The line has a need with this key already."]
        valid = False
    if not valid:
        return _needs_page(base, None, add=form), 400
    wanted, labels = _need_entry(form, base.document)
    entry: dict[str, object] = {"key": form.key.data, **wanted}
    if form.fallback.data:
        entry["fallback"] = form.fallback.data
    entry["labels"] = labels
    index = len(base.document.needs)
    fields = {f"needs[{index}].{name}": getattr(form, name) for name in ("key", "digit", "priority", "target")}
    fields |= {f"needs[{index}].labels.{code}": label_field(form, code) for code in labels}
    counselors = frozenset(form.counselors.data or [])
    outcome = _draft(base, lambda text: changes.add_need(text, entry, counselors),
                     f"adding the need {labels.get('en') or form.key.data!r}", fields)  # fmt: skip
    if isinstance(outcome, list):
        return _needs_page(base, None, add=form, refusal=REFUSED, problems=outcome), 400
    return outcome


@bp.post("/needs/remove")
@allow(ADMIN)
def remove_need() -> Page:
    base = _base(request.form.get("base"))
    form = RemoveNeedForm()
    form.key.choices = [SelectChoice(need.key, need.key) for need in base.document.needs]
    if not form.validate_on_submit():
        return _needs_page(base, None, remove=form), 400
    key = form.key.data
    outcome = _draft(base, lambda text: changes.remove_need(text, base.document, key), f"removing the need {key}", {})
    if isinstance(outcome, list):
        form.key.errors = [*form.key.errors, *outcome]
        return _needs_page(base, None, remove=form, refusal="Not removed."), 400
    return outcome


# --- prompts -------------------------------------------------------------------------------

PROMPT_KEYS = [f"prompts.{key}" for key in PROMPT_PLACEHOLDERS] + [f"sms.{key}" for key in SMS_PROMPT_PLACEHOLDERS]


def _prompts_page(
    base: Base,
    code: str | None,
    form: PromptsForm | None = None,
    refusal: str | None = None,
    problems: list[str] | None = None,
) -> str:
    language = base.document.language(code)
    if form is None:
        form = prompts_form(PROMPT_KEYS, formdata=None)
        form.language.data = language.code
        for key in PROMPT_KEYS:
            part, name = key.split(".")
            getattr(form, prompt_field(key)).data = (language.prompts if part == "prompts" else language.sms).get(name)
    form.base.data = str(base.number)
    seconds = {key: timing.spoken_seconds(getattr(form, prompt_field(key)).data or "") for key in PROMPT_KEYS}
    paths = [path for path in timing.path_timings(base.document) if path.language == language.code]
    placeholders = {f"prompts.{key}": names for key, names in PROMPT_PLACEHOLDERS.items()}
    placeholders |= {f"sms.{key}": names for key, names in SMS_PROMPT_PLACEHOLDERS.items()}
    return render_template(
        "console/routing_form_prompts.html", document=base.document, language=language, form=form,
        keys=PROMPT_KEYS, field_name=prompt_field, seconds=seconds, placeholders=placeholders,
        slowest=max(paths, key=lambda path: path.following_seconds) if paths else None,
        refusal=refusal, problems=problems,
    )  # fmt: skip


@bp.get("/prompts")
@allow(ADMIN)
def prompts() -> str:
    """Every prompt and text of one language, with the seconds each takes to say."""
    return _prompts_page(_base(), request.args.get("language"))


@bp.post("/prompts")
@allow(ADMIN)
def edit_prompts() -> Page:
    base = _base(request.form.get("base"))
    form = prompts_form(PROMPT_KEYS)
    language = next((lang for lang in base.document.languages if lang.code == form.language.data), None)
    if language is None:
        abort(404)
    if not form.validate_on_submit():
        return _prompts_page(base, language.code, form), 400
    changed: dict[tuple[str, str], str] = {}
    for key in PROMPT_KEYS:
        part, name = key.split(".")
        value = _clean(getattr(form, prompt_field(key)).data)
        if value != (language.prompts if part == "prompts" else language.sms).get(name):
            changed[(part, name)] = value
    index = base.document.languages.index(language)
    fields = {f"languages[{index}].{key}": getattr(form, prompt_field(key)) for key in PROMPT_KEYS}
    what = f"{language.staff_name} prompts: {', '.join(name for _, name in changed) or 'nothing'}"
    outcome = _draft(base, lambda text: changes.edit_prompts(text, language.code, changed), what, fields)
    if isinstance(outcome, list):
        return _prompts_page(base, language.code, form, refusal=REFUSED, problems=outcome), 400
    return outcome


# --- menus, timeouts, strategy and mode ----------------------------------------------------


def _menu_choices(document: RoutingDocument, form: MenuForm) -> None:
    form.default_language.choices = [SelectChoice(lang.code, lang.staff_name) for lang in document.languages]
    form.default_need.choices = [SelectChoice(n.key, n.labels.get("en", n.key)) for n in document.needs]


def menus_page(base: Base, *, menu: MenuForm | None = None, settings: SettingsForm | None = None,
               refusal: str | None = None, problems: list[str] | None = None) -> str:  # fmt: skip
    """The menu settings and the line settings (mode, strategy, timeouts), with the seconds
    of menus before the first ring for each path."""
    document = base.document
    if menu is None:
        menu = MenuForm(formdata=None)
        menu.ask_need.data = "on" if document.menu.ask_need else "off"
        menu.retries.data = str(document.menu.retries)
        menu.default_language.data, menu.default_need.data = document.menu.default_language, document.menu.default_need
        menu.max_seconds_to_ring.data = format_duration(document.menu.max_seconds_to_ring)
    _menu_choices(document, menu)
    menu.base.data = str(base.number)
    if settings is None:
        settings = SettingsForm(formdata=None)
        views._current_settings(document, settings)
    settings.base.data = str(base.number)
    return render_template(
        "console/routing_form_menus.html", document=document, menu=menu, settings=settings,
        paths=timing.path_timings(document), refusal=refusal, problems=problems,
    )  # fmt: skip


@bp.get("/menus")
@allow(ADMIN)
def menus() -> str:
    return menus_page(_base())


@bp.post("/menus")
@allow(ADMIN)
def edit_menus() -> Page:
    base = _base(request.form.get("base"))
    form = MenuForm()
    _menu_choices(base.document, form)
    if not form.validate_on_submit():
        return menus_page(base, menu=form), 400
    current = base.document.menu
    limit = _clean(form.max_seconds_to_ring.data)
    wanted: dict[str, object] = {
        "ask_need": form.ask_need.data == "on", "retries": int(form.retries.data),
        "default_language": form.default_language.data, "default_need": form.default_need.data,
        "max_seconds_to_ring": _number_or_text(limit),
    }  # fmt: skip
    now = {"ask_need": current.ask_need, "retries": current.retries, "default_language": current.default_language,
           "default_need": current.default_need, "max_seconds_to_ring": current.max_seconds_to_ring}  # fmt: skip
    if parse_duration(limit, "s") == current.max_seconds_to_ring:
        wanted["max_seconds_to_ring"] = current.max_seconds_to_ring  # the same, written another way
    changed: dict[tuple[drafts.Key, ...], object] = {
        ("menu", key): value for key, value in wanted.items() if value != now[key]
    }
    fields = {f"menu.{key}": getattr(form, key) for key in wanted}
    what = "changing " + (", ".join(f"menu.{keys[-1]}" for keys in changed) or "nothing")
    outcome = _draft(base, lambda text: changes.set_values(text, changed), what, fields)
    if isinstance(outcome, list):
        return menus_page(base, menu=form, refusal=REFUSED, problems=outcome), 400
    return outcome


@bp.post("/people/settings")
@allow(ADMIN)
def line_settings() -> Page:
    """Mode, ringing strategy and timeouts, as a draft to preview and publish (durations are
    checked by the shared validator there, at their line). Only what the admin changed from
    the version the form was drawn from is written, through the stale check and merge, so a
    change published meanwhile is never quietly reverted."""
    base = _base(request.form.get("base"))
    settings = SettingsForm()
    if not settings.validate_on_submit():
        return menus_page(base, settings=settings), 400
    current = SettingsForm(formdata=None)
    views._current_settings(base.document, current)
    changed: dict[tuple[drafts.Key, ...], object] = {}
    for name, keys in views.SETTINGS.items():
        value = (getattr(settings, name).data or "").strip()
        if value != getattr(current, name).data:
            changed[keys] = _number_or_text(value)
    fields = {".".join(keys): getattr(settings, name) for name, keys in views.SETTINGS.items()}
    what = "changing " + (", ".join(".".join(map(str, keys)) for keys in changed) or "nothing")
    outcome = _draft(base, lambda text: changes.set_values(text, changed), what, fields)
    if isinstance(outcome, list):
        return menus_page(base, settings=settings, refusal=REFUSED, problems=outcome), 400
    return outcome


# --- overrides -----------------------------------------------------------------------------


def _responder_path(document: RoutingDocument, responder_id: str) -> str:
    """Where the validator says a responder is: ``counselors[2]``, ``co_responder_units[0]``."""
    kinds = [r for r in document.responders if r.kind == document.responder(responder_id).kind]  # type: ignore[union-attr]
    section = "counselors" if kinds[0].kind == "counselor" else "co_responder_units"
    return f"{section}[{[r.id for r in kinds].index(responder_id)}]"


@dataclass(frozen=True)
class OverrideRow:
    responder_id: str
    name: str
    index: int
    start: datetime
    end: datetime
    on_call: bool
    past: bool


def _override_rows(document: RoutingDocument, now: datetime) -> list[OverrideRow]:
    local_now = now.astimezone(document.timezone).replace(tzinfo=None)
    rows = [
        OverrideRow(r.id, r.name, index, o.start, o.end, o.on_call, o.end <= local_now)
        for r in document.responders
        for index, o in enumerate(r.overrides)
    ]
    return sorted(rows, key=lambda row: row.start)


def _overrides_page(
    base: Base, form: OverrideForm | None = None, refusal: str | None = None, problems: list[str] | None = None
) -> str:
    form = form or OverrideForm(formdata=None)
    form.responder_id.choices = [SelectChoice(r.id, r.name) for r in base.document.responders]
    form.base.data = str(base.number)
    rows = _override_rows(base.document, datetime.now(UTC))
    return render_template(
        "console/routing_form_overrides.html", document=base.document, form=form, rows=rows,
        remove=RemoveOverrideForm(formdata=None), base_number=base.number, refusal=refusal, problems=problems,
    )  # fmt: skip


@bp.get("/overrides")
@allow(ADMIN)
def overrides() -> str:
    """Every dated override (cover or leave), past ones marked; a form for a new one."""
    return _overrides_page(_base())


@bp.post("/overrides/add")
@allow(ADMIN)
def add_override() -> Page:
    base = _base(request.form.get("base"))
    form = OverrideForm()
    form.responder_id.choices = [SelectChoice(r.id, r.name) for r in base.document.responders]
    day = None
    if form.validate_on_submit():
        try:
            date.fromisoformat(form.day.data)
        except ValueError:
            form.day.errors = [*form.day.errors, "A date like 2026-12-24."]
        else:
            try:
                day = calendar_day(form.day.data)  # a day after it must exist too: the end may be then
            except ValueError:
                form.day.errors = [*form.day.errors, f"A date {DAY_RANGE}."]
        if form.start.data == form.end.data:
            form.end.errors = [*form.end.errors, "The end must differ from the start."]
    if day is None or form.errors:
        return _overrides_page(base, form), 400
    responder = base.document.responder(form.responder_id.data)
    assert responder is not None  # the select's choices are the responders
    entry = changes.override_entry(day, form.start.data, form.end.data, form.on_call.data == "on")
    path = f"{_responder_path(base.document, responder.id)}.overrides[{len(responder.overrides)}]"
    what = (f"{responder.name} {'on call' if entry['on_call'] else 'off call'} "
            f"from {entry['start']} to {entry['end']}".replace("T", " "))  # fmt: skip
    outcome = _draft(base, lambda text: drafts.add_override(text, responder.id, entry), what, {path: form.day})
    if isinstance(outcome, list):
        return _overrides_page(base, form, refusal=REFUSED, problems=outcome), 400
    return outcome


@bp.post("/overrides/remove")
@allow(ADMIN)
def remove_override() -> Page:
    base = _base(request.form.get("base"))
    form = RemoveOverrideForm()
    responder = base.document.responder(form.responder_id.data or "")
    if not form.validate_on_submit() or responder is None:
        return _overrides_page(base, refusal="Not removed: choose an override from the list."), 400
    index = int(form.index.data)
    outcome = _draft(base, lambda text: changes.remove_override(text, responder.id, index),
                     f"removing an override of {responder.name}", {})  # fmt: skip
    if isinstance(outcome, list):
        return _overrides_page(base, refusal="Not removed.", problems=outcome), 400
    return outcome
