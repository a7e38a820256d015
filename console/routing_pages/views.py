"""The routing pages: editor (preview, publish), history (diff, roll back), simulator,
coverage week, and the people and shift forms that produce drafts for the editor."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response
from wtforms import SelectChoice  # type: ignore[import-untyped]

from console.access import allow, signed_in
from console.accounts.users import not_rung
from console.audit.log import record
from console.inputs import DAY_RANGE, calendar_day, row_id
from console.models import ADMIN, SUPERVISOR
from console.routing_pages import drafts
from console.routing_pages.forms import DAY_NAMES, EditorForm, ResponderForm, RollbackForm, SettingsForm, ShiftForm
from console.routing_pages.merge import three_way
from crisisline.db import db
from crisisline.phone import InvalidPhoneNumber, extension_of, to_e164
from line_queue.responders import closed_responder_ids
from routing import coverage, publishing, store
from routing.document import RoutingDocument
from routing.simulator import UnknownChoice, who_would_be_rung
from routing.validation import Problem, format_duration

bp = Blueprint("routing", __name__, url_prefix="/routing")

DAY_KEYS = tuple(DAY_NAMES)  # mon … sun, as the routing config spells days
STATUS_WORDS = {
    coverage.COVERED: "covered",
    coverage.OTHER_LANGUAGE: "another language",
    coverage.NOBODY: "nobody (backup line)",
}


@dataclass(frozen=True)
class Stale:
    """A draft edited from an older version than the live one, and what to do about it."""

    base: int | None
    live: publishing.VersionInfo
    theirs: str  # diff base → live: what was published since the draft's base
    ours: str  # diff base → draft
    merged: bool  # both changes were merged into the editor's text


def _live_info() -> publishing.VersionInfo | None:
    newest = publishing.history(limit=1)
    return newest[0] if newest else None


def _live_text() -> str:
    live = publishing.live_version()
    return store.source_of(live) if live is not None else ""


def _draft_text(form: EditorForm) -> str:
    # Browsers send a textarea's lines with CRLF: the draft keeps the file's own endings.
    return (form.text.data or "").replace("\r\n", "\n")


def _editor(
    form: EditorForm,
    *,
    preview: publishing.Preview | None = None,
    stale: Stale | None = None,
    refusal: str | None = None,
    draft_of: str | None = None,
) -> str:
    text = _draft_text(form) if preview is not None else ""
    marked: dict[int, str] = {}
    for problem in preview.warnings if preview else []:
        if problem.line is not None:
            marked[problem.line] = "warning"
    for problem in preview.problems if preview else []:
        if problem.line is not None:
            marked[problem.line] = "error"
    # The draft's responders when it reads, else the live ones: who is listed but not rung.
    listed = preview.document if preview is not None and preview.document is not None else None
    if listed is None:
        live = store.active_routing()
        listed = live.document if live is not None else None
    return render_template(
        "console/routing_editor.html",
        form=form, live=_live_info(), preview=preview, stale=stale, refusal=refusal, draft_of=draft_of,
        source_lines=text.splitlines() if marked else [], marked=marked, not_rung=not_rung(listed),
    )  # fmt: skip


@bp.get("")
@allow(ADMIN)
def editor() -> str:
    """The live version and its YAML in the editor (or an old version's text, as a draft)."""
    live = publishing.live_version()
    form = EditorForm(formdata=None)
    form.base.data = str(live.id) if live is not None else ""
    from_version = row_id(request.args.get("from_version"))
    old = publishing.version(from_version) if from_version is not None else None
    form.text.data = store.source_of(old) if old is not None else _live_text()
    draft_of = f"the text of version {old.id}" if old is not None else None
    return _editor(form, draft_of=draft_of)


@bp.post("/preview")
@allow(ADMIN)
def preview() -> tuple[str, int]:
    """Validate the draft and show its errors at their lines, its warnings, and its diff
    against the live version. Writes nothing."""
    form = EditorForm()
    if not form.validate_on_submit():
        return _editor(form, refusal="The draft could not be read: " + _form_errors(form)), 400
    base = form.base_version()
    form.base.data, form.rebase.data = (str(base) if base is not None else ""), ""
    result = publishing.preview(_draft_text(form), base, left_out=left_out())
    if not result.stale:
        return _editor(form, preview=result), 200
    stale = _stale(form, result)
    if stale is not None and stale.merged:  # the editor now holds the merge: preview that
        result = publishing.preview(_draft_text(form), form.base_version(), left_out=left_out())
    return _editor(form, preview=result, stale=stale), 200


@bp.post("/publish")
@allow(ADMIN)
def publish() -> Response | tuple[str, int]:
    """Publish the draft with a note; refused (nothing written) when invalid, without a note,
    or edited from an older version than the live one."""
    form = EditorForm()
    if not form.validate_on_submit():
        return _editor(form, refusal="The draft could not be read: " + _form_errors(form)), 400
    text, base, user = _draft_text(form), form.base_version(), signed_in()
    try:
        result = publishing.publish(
            text, base=base, note=form.note.data or "", author=user.username, left_out=left_out()
        )
    except publishing.PublishRefused as refused:
        db.session.rollback()
        shown = refused.preview or publishing.preview(text, base, left_out=left_out())
        if refused.reason == "no_note":
            form.note.errors = [*form.note.errors, f"Not published: {refused}."]
            return _editor(form, preview=shown, refusal=f"Not published: {refused}."), 422
        if refused.reason == "stale":
            stale = _stale(form, shown)
            if stale is not None and stale.merged:  # the editor now holds the merge: preview that
                shown = publishing.preview(_draft_text(form), form.base_version(), left_out=left_out())
            return _editor(form, preview=shown, stale=stale, refusal="Not published: the live version is newer."), 409
        if refused.reason == "invalid":
            errors = len(shown.problems)
            return _editor(form, preview=shown, refusal=f"Not published: {errors} error(s) in the draft."), 422
        return _editor(form, preview=shown, refusal=f"Not published: {refused}."), 422
    if not result.created:
        flash(f"Nothing to publish: this is the live version {result.version}.", "info")
        return redirect(url_for("console.routing.editor"))
    # The version row itself keeps author and note; the audit log keeps it with everything else.
    record("routing_published", actor=user, target=f"routing:{result.version}", version=result.version,
           base=base, note=form.note.data.strip() if form.note.data else "")  # fmt: skip
    db.session.commit()
    flash(f"Published routing version {result.version}.", "info")
    _warn_of_what_is_new(result)
    return redirect(url_for("console.routing.history"))


def _form_errors(form: EditorForm) -> str:
    return "; ".join(f"{getattr(form, name).label.text}: {' '.join(errors)}" for name, errors in form.errors.items())


def _stale(form: EditorForm, result: publishing.Preview) -> Stale | None:
    """Both changes side by side, and the two merged into the editor when they do not overlap
    (then based on the live version: the administrator previews and publishes again)."""
    live = _live_info()
    if live is None:
        return None
    base = result.base
    old = publishing.version(base) if base is not None else None
    base_text = store.source_of(old) if old is not None else ""
    live_text, draft = _live_text(), _draft_text(form)
    base_name = f"version {base}" if base is not None else "nothing"
    merged = three_way(base_text, draft, live_text) if old is not None else None
    if merged is not None:
        form.text.data, form.base.data = merged, str(live.number)
    return Stale(
        base=base,
        live=live,
        theirs=publishing.unified_diff(base_text, live_text, base_name, f"live (version {live.number})"),
        ours=publishing.unified_diff(base_text, draft, base_name, "your draft"),
        merged=merged is not None,
    )


@bp.get("/history")
@allow(ADMIN)
def history() -> str:
    return render_template("console/routing_history.html", versions=publishing.history(), form=_rollback_form())


@bp.get("/history/<id:number>")
@allow(ADMIN)
def version(number: int) -> str:
    """What version ``number`` changed, against the one before it."""
    try:
        diff = publishing.version_diff(number)
    except publishing.PublishRefused:
        abort(404)
    info = next((row for row in publishing.history() if row.number == number), None)
    return render_template("console/routing_version.html", info=info, diff=diff, form=_rollback_form())


def _rollback_form() -> RollbackForm:
    form = RollbackForm()
    live = publishing.live_version()
    form.live.data = str(live.id) if live is not None else ""
    return form


@bp.post("/history/<id:number>/rollback")
@allow(ADMIN)
def rollback(number: int) -> Response:
    """Publish an old version's text again as a new version, with a note; audited."""
    form = RollbackForm()
    if not form.validate_on_submit():
        flash("Not rolled back: " + _form_errors(form), "error")
        return redirect(url_for("console.routing.history"))
    user = signed_in()
    try:
        seen_live = row_id(form.live.data)
        result = publishing.rollback(
            number, author=user.username, note=form.note.data, seen_live=seen_live, left_out=left_out()
        )
    except publishing.PublishRefused as refused:
        db.session.rollback()
        if refused.reason == "unknown_version":
            abort(404)
        problems = "; ".join(p.describe() for p in refused.preview.problems) if refused.preview else ""
        flash(f"Not rolled back: {refused}. {problems}".strip(), "error")
        return redirect(url_for("console.routing.history"))
    if not result.created:
        flash(f"Nothing to roll back: the text of version {number} is live already.", "info")
        return redirect(url_for("console.routing.history"))
    record("routing_rolled_back", actor=user, target=f"routing:{result.version}", version=result.version,
           rolled_back_to=number, note=(form.note.data or "").strip())  # fmt: skip
    db.session.commit()
    flash(f"Published routing version {result.version}: the text of version {number}.", "info")
    _warn_of_what_is_new(result)
    return redirect(url_for("console.routing.history"))


# A warning's pointer to a terminal command, which the console's own pages replace.
_COMMAND_HINT = re.compile(r"\s*\(see `flask routing [^`]+`\)")


def plain_warning(warning: Problem) -> str:
    """A warning in the words an administrator reads after publishing: no terminal command,
    and the routing entry it is about when it names one (a coverage gap names the whole rota)."""
    message = _COMMAND_HINT.sub("", warning.message)
    return f"{warning.path}: {message}" if warning.path and warning.path != "counselors" else message


def _warn_of_what_is_new(result: publishing.Published) -> None:
    """After publishing (with or without a preview first) or rolling back: every warning of the
    new version that the version live before it did not have (a coverage gap it opens, above
    all), flashed as a warning. The old version's are still there and not repeated."""
    before = result.preview.live_version
    old = publishing.version(before) if before is not None else None
    had = (
        {
            str(w)
            for w in publishing.preview(
                store.source_of(old), before, now=result.preview.checked_at, left_out=left_out()
            ).warnings
        }
        if old is not None
        else set()
    )
    new = [warning for warning in result.preview.warnings if str(warning) not in had]
    if not new:
        return
    since = f"version {before}" if before is not None else "the line before it"
    flash(
        f"Version {result.version} has {len(new)} warning(s) that {since} did not have. Check them now "
        "(the Coverage page shows the whole week):",
        "warning",
    )
    for warning in new:
        flash(plain_warning(warning), "warning")


# --- simulator and coverage (supervisors too) -----------------------------------------------------


def _document_or_none() -> RoutingDocument | None:
    active = store.active_routing()
    return active.document if active is not None else None


def next_moment(document: RoutingDocument, day: str, clock: time, today: date) -> datetime:
    """The next ``day`` (``mon`` … ``sun``) at ``clock`` on the line's wall-clock, from ``today``
    (the line's date) on: the coming week, so this week's overrides count."""
    ahead = (DAY_KEYS.index(day) - today.weekday()) % 7
    return datetime.combine(today + timedelta(days=ahead), clock, tzinfo=document.timezone)


@bp.get("/simulator")
@allow(ADMIN, SUPERVISOR)
def simulator() -> str:
    """Who would be rung for a caller choosing a language and a need at a day and time."""
    document = _document_or_none()
    if document is None:
        return render_template("console/routing_simulator.html", document=None, result=None, problem=None, chosen={})
    now = datetime.now(document.timezone)
    chosen = {
        "language": request.args.get("language") or document.menu.default_language,
        "need": request.args.get("need") or document.menu.default_need,
        "day": request.args.get("day") or DAY_KEYS[now.weekday()],
        "time": request.args.get("time") or now.strftime("%H:%M"),
    }
    result, problem = None, None
    if request.args:
        try:
            clock = time.fromisoformat(chosen["time"])
            if chosen["day"] not in DAY_KEYS:
                raise ValueError(chosen["day"])
        except ValueError:
            problem = "Choose a day and a time like 03:00."
        else:
            moment = next_moment(document, chosen["day"], clock.replace(tzinfo=None), now.date())
            try:
                result = who_would_be_rung(document, chosen["language"], chosen["need"], moment, left_out=left_out())
            except UnknownChoice as error:
                problem = str(error)
    return render_template(
        "console/routing_simulator.html", document=document, result=result, problem=problem, chosen=chosen,
        days=list(DAY_NAMES.items()),
    )  # fmt: skip


@bp.get("/coverage")
@allow(ADMIN, SUPERVISOR)
def coverage_week() -> str | tuple[str, int]:
    """The week per language and need: who is covered, when, and every gap."""
    document = _document_or_none()
    week_text = request.args.get("week") or ""
    week, problem = None, None
    if week_text:
        try:
            week = calendar_day(week_text)
        except ValueError:
            problem = f"{week_text!r} is not a date {DAY_RANGE}."
    rows: list[dict[str, Any]] = []
    if document is not None:
        for row in coverage.week_coverage(document, week, left_out=left_out()):
            language, need = document.language(row.language), document.need(row.need)
            rows.append({
                "coverage": row,
                "language": language.staff_name if language else row.language,
                "need": need.labels.get("en", need.key) if need else row.need,
                "grid": list(zip(coverage.DAY_NAMES, coverage.hourly_grid(row), strict=True)),
            })  # fmt: skip
    page = render_template(
        "console/routing_coverage.html", document=document, rows=rows, week=week, week_text=week_text,
        problem=problem, status_words=STATUS_WORDS, names=_responder_names(document),
    )  # fmt: skip
    return (page, 400) if problem else page


def left_out() -> frozenset[str]:
    """Responders the line does not ring whatever the routing says (their console account was
    closed): the simulator, the coverage and the routing's warnings leave them out."""
    return frozenset(closed_responder_ids())


def _responder_names(document: RoutingDocument | None) -> dict[str, str]:
    return {responder.id: responder.name for responder in document.responders} if document else {}


# --- people and shifts: forms that make a draft for the editor -----------------------------------


def _people_forms(document: RoutingDocument, responder: ResponderForm, shift: ShiftForm) -> None:
    responder.languages.choices = [SelectChoice(language.code, language.staff_name) for language in document.languages]
    responder.skills.choices = [SelectChoice(need.key, need.labels.get("en", need.key)) for need in document.needs]
    shift.responder_id.choices = [
        SelectChoice(r.id, f"{r.name} ({'unit' if r.kind == 'co_responder' else 'counselor'})")
        for r in document.responders
    ]


def _people_page(responder: ResponderForm, shift: ShiftForm, document: RoutingDocument | None) -> str:
    return render_template("console/routing_people.html", responder=responder, shift=shift, document=document)


# Form field → where it is in the routing text.
SETTINGS = {
    "mode": ("line", "mode"),
    "strategy": ("transfer", "strategy"),
    "ring_timeout": ("transfer", "ring_timeout_seconds"),
    "max_hold": ("transfer", "max_hold_seconds"),
    "menu_timeout": ("menu", "timeout_seconds"),
}


def _current_settings(document: RoutingDocument, form: SettingsForm) -> None:
    form.mode.data = document.mode
    form.strategy.data = document.transfer.strategy
    form.ring_timeout.data = format_duration(document.transfer.ring_timeout_seconds)
    form.max_hold.data = format_duration(document.transfer.max_hold_seconds)
    form.menu_timeout.data = format_duration(document.menu.timeout_seconds)


@bp.get("/people")
@allow(ADMIN)
def people() -> str:
    document = _document_or_none()
    responder, shift = ResponderForm(formdata=None), ShiftForm(formdata=None)
    if document is not None:
        _people_forms(document, responder, shift)
    return _people_page(responder, shift, document)


def _draft_page(text: str, what: str) -> str:
    """A form's draft in the editor, previewed against the live version (nothing published)."""
    live = publishing.live_version()
    form = EditorForm(formdata=None)
    form.text.data, form.base.data = text, str(live.id) if live is not None else ""
    result = publishing.preview(text, live.id if live is not None else None, left_out=left_out())
    return _editor(form, preview=result, draft_of=what)


@bp.post("/people/responder")
@allow(ADMIN)
def add_responder() -> tuple[str, int]:
    """A new counselor or co-responder unit, as a draft to preview and publish."""
    document = _document_or_none()
    if document is None:
        abort(404)
    responder, shift = ResponderForm(), ShiftForm(formdata=None)
    _people_forms(document, responder, shift)
    phone = None
    if responder.validate_on_submit():
        try:
            phone = to_e164(responder.phone.data or "", document.region)
        except InvalidPhoneNumber:
            responder.phone.errors = [
                *responder.phone.errors,
                f"{responder.phone.data!r} is not a valid phone number; write it with the country code, "
                "like +1 312 555 0109.",
            ]
        if phone is not None and extension_of(responder.phone.data or "", document.region):
            phone = None  # the switchboard would ring, not the person
            responder.phone.errors = [
                *responder.phone.errors,
                f"{responder.phone.data!r} has an extension, which the line cannot dial: give a direct number.",
            ]
        if document.responder(responder.responder_id.data or "") is not None:
            taken = "There is already a responder with this id."
            responder.responder_id.errors = [*responder.responder_id.errors, taken]
    if phone is None or responder.errors:
        return _people_page(responder, shift, document), 400
    kind = responder.kind.data or "counselor"
    entry: dict[str, object] = {
        "id": responder.responder_id.data,
        "name": (responder.name.data or "").strip(),
        "phone": phone,
        "languages": list(responder.languages.data or []),
    }
    if kind == "counselor":
        entry["skills"] = list(responder.skills.data or [])
    try:
        text = drafts.add_responder(_live_text(), kind, entry)
    except drafts.DraftError as error:
        responder.responder_id.errors = [*responder.responder_id.errors, str(error)]
        return _people_page(responder, shift, document), 400
    return _draft_page(text, f"adding {entry['name']} ({kind.replace('_', '-')})"), 200


@bp.post("/people/shift")
@allow(ADMIN)
def add_shift() -> tuple[str, int]:
    """A new weekly shift for a responder, as a draft to preview and publish."""
    document = _document_or_none()
    if document is None:
        abort(404)
    responder, shift = ResponderForm(formdata=None), ShiftForm()
    _people_forms(document, responder, shift)
    if not shift.validate_on_submit():
        return _people_page(responder, shift, document), 400
    if shift.start.data == shift.end.data:
        shift.end.errors = [*shift.end.errors, "The end must differ from the start (00:00 to 24:00 is a whole day)."]
        return _people_page(responder, shift, document), 400
    chosen = document.responder(shift.responder_id.data or "")
    assert chosen is not None  # the select's choices are the live responders
    entry: dict[str, object] = {"days": list(shift.days.data or []), "start": shift.start.data, "end": shift.end.data}
    try:
        text = drafts.add_shift(_live_text(), chosen.id, entry)
    except drafts.DraftError as error:
        shift.responder_id.errors = [*shift.responder_id.errors, str(error)]
        return _people_page(responder, shift, document), 400
    days = ", ".join(shift.days.data or [])
    return _draft_page(text, f"a shift for {chosen.name}: {days} {shift.start.data}–{shift.end.data}"), 200


# The forms for languages, needs, prompts, menus and overrides: the same blueprint, registered
# by importing them once this module is complete.
from console.routing_pages import form_views  # noqa: E402, F401  (registers its routes)
