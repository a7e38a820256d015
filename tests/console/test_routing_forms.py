"""The routing forms (issue 11): languages, needs, prompts, menus and timing, overrides.

Each form makes a draft of the routing text that goes through the editor's own preview (the
one validator, the diff against the live version, every warning) and publish (a note, the
stale check, the audit log). A change the validator refuses comes back on the form, at its
field, with the live routing unchanged."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape

from console.routing_pages import changes, drafts
from console.routing_pages.forms import prompt_field
from routing import publishing
from routing.document import PROMPT_PLACEHOLDERS, SMS_PROMPT_PLACEHOLDERS
from routing.validation import validate_text
from tests.console.conftest import Account, audit_actions, sign_in
from tests.console.test_routing_pages import editor_fields, live, post

SUICIDE: dict[str, str | list[str]] = {
           "key": "suicide", "digit": "2", "priority": "8", "target": "counselors", "fallback": "",
           "label_en": "thoughts of suicide", "label_es": "pensamientos de suicidio",
           "counselors": ["ana-ruiz", "ben-carter", "chloe-nguyen", "diego-morales", "erin-walsh"]}  # fmt: skip
SPANISH = {"code": "es", "name": "Español", "staff_name": "Spanish", "twilio_language": "es-US",
           "voice": "Polly.Lupe", "digit": "2", "speech_words": "español, spanish, castellano"}  # fmt: skip
MENU = {"ask_need": "on", "retries": "2", "default_language": "en", "default_need": "something_else",
        "max_seconds_to_ring": "20s"}  # fmt: skip


def diff_lines(page: str) -> list[str]:
    """The added and removed lines of the preview's diff, as shown."""
    found = re.search(r'<pre class="diff" id="preview-diff".*?</pre>', page, re.S)
    assert found is not None, "no diff on the page"
    return re.findall(r'<span class="(?:add|del)">(.*?)</span>', found.group(0))


def prompts_of(app: Flask, code: str) -> dict[str, str]:
    """The prompts form's fields for language ``code``, as the live routing has them."""
    with app.app_context():
        active = publishing.preview(live(app)[1]).document
        assert active is not None
        language = active.language(code)
    fields = {prompt_field(f"prompts.{key}"): language.prompts[key] for key in PROMPT_PLACEHOLDERS}
    return fields | {prompt_field(f"sms.{key}"): language.sms[key] for key in SMS_PROMPT_PLACEHOLDERS}


def publish_draft(client: FlaskClient, draft: str, note: str) -> int:
    text, base = editor_fields(draft)
    status, _ = post(client, "/console/routing/publish", text=text, base=base, note=note)
    return status


def test_a_need_label_edited_in_its_form_changes_one_line_and_goes_live_only_when_published(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    page = client.get("/console/routing/needs?key=suicide").get_data(as_text=True)
    assert 'value="thoughts of suicide"' in page and f'name="base" value="{number}"' in page

    status, draft = post(client, "/console/routing/needs/edit", **{**SUICIDE, "label_en": "suicidal thoughts"},
                         base=str(number))  # fmt: skip
    assert status == 200 and "Draft: changing the need" in draft
    assert "ready to publish with a note" in draft
    assert diff_lines(draft) == [
        escape("-    labels: {en: thoughts of suicide, es: pensamientos de suicidio}"),
        escape('+    labels: {en: "suicidal thoughts", es: pensamientos de suicidio}'),
    ]
    assert live(app) == (number, text)  # a draft, not a change

    assert publish_draft(client, draft, "clearer suicide label") == 302
    new_number, new_text = live(app)
    assert new_number == number + 1 and 'en: "suicidal thoughts"' in new_text
    history = client.get("/console/routing/history").get_data(as_text=True)
    assert "clearer suicide label" in history
    assert ("ada-admin", "routing_published", f"routing:{new_number}") in audit_actions(app)


def test_a_need_form_sets_priority_and_who_takes_it_and_a_taken_key_is_refused_on_the_form(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    status, draft = post(client, "/console/routing/needs/edit",
                         **{**SUICIDE, "priority": "9", "counselors": ["ana-ruiz", "diego-morales"]})  # fmt: skip
    assert status == 200
    changed = diff_lines(draft)
    assert escape("+    priority: 9") in changed
    assert escape("+    skills: [mental_health, substance_use, something_else]") in changed  # Ben's, without suicide

    status, taken = post(client, "/console/routing/needs/add", key="suicide", digit="7", priority="2",
                         target="counselors", fallback="", label_en="again", label_es="otra vez")  # fmt: skip
    assert status == 400 and "The line has a need with this key already." in taken
    status, clash = post(client, "/console/routing/needs/add", key="grief", digit="1", priority="2",
                         target="counselors", fallback="", label_en="grief", label_es="duelo")  # fmt: skip
    assert status == 400
    assert re.search(r'id="new-digit-errors" role="alert">1 is already used by needs\[0\]', clash)
    assert "the live routing is unchanged" in clash
    grief = {"key": "grief", "digit": "7", "priority": "2", "target": "counselors", "fallback": ""}
    status, added = post(client, "/console/routing/needs/add", **grief, label_en="grief", label_es="duelo",
                         counselors="ben-carter")  # fmt: skip
    assert status == 200 and escape('+  - key: "grief"') in diff_lines(added)

    status, default = post(client, "/console/routing/needs/remove", key="something_else")
    assert status == 400 and "it is the default need" in default
    assert live(app) == (number, text)


def test_a_responder_id_the_validator_refuses_is_refused_on_the_people_form_at_its_field(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    """The form checks an id with the validator's own rule: one starting with a digit is
    refused at its field (not let through to fail in the YAML editor), one with ``_`` taken."""
    number, text = live(app)
    sign_in(client, admin)
    person = {"kind": "counselor", "name": "North desk", "phone": "+1 312 555 0109", "languages": ["en"],
              "skills": ["suicide"]}  # fmt: skip

    status, refused = post(client, "/console/routing/people/responder", **person, responder_id="7-north")
    assert status == 400
    assert re.search(r'id="responder_id-errors" role="alert">Start with a lowercase letter \(a to z\)', refused)
    assert "is not valid" not in refused  # the validator's message, as the editor would show it
    assert live(app) == (number, text)

    status, draft = post(client, "/console/routing/people/responder", **person, responder_id="north_7")
    assert status == 200 and "Draft: adding North desk (counselor)" in draft
    assert escape('+  - id: "north_7"') in diff_lines(draft)
    assert "this draft would be refused" not in draft


def test_an_unknown_voice_is_refused_on_the_language_form_with_the_live_config_unchanged(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    assert "Polly.Lupe" in client.get("/console/routing/languages?code=es").get_data(as_text=True)

    status, page = post(client, "/console/routing/languages/edit", **{**SPANISH, "voice": "Polly.Joanna"})
    assert status == 400
    assert re.search(r'id="voice-errors" role="alert">Polly.Joanna speaks en-US, not es-US', page)
    assert 'aria-invalid="true"' in page and 'value="Polly.Joanna"' in page  # the input shown back
    assert "Nothing was published; the live routing is unchanged." in page
    assert live(app) == (number, text)

    status, draft = post(client, "/console/routing/languages/edit", **{**SPANISH, "voice": "Polly.Miguel"})
    assert status == 200
    assert diff_lines(draft) == [escape("-    voice: Polly.Lupe"), escape('+    voice: "Polly.Miguel"')]


def test_a_new_language_starts_from_another_ones_texts_and_the_default_cannot_be_removed(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    french = {"code": "fr", "name": "Français", "staff_name": "French", "twilio_language": "fr-FR",
              "voice": "Polly.Lea", "digit": "3", "copy_from": "en"}  # fmt: skip
    status, draft = post(client, "/console/routing/languages/add", **french)
    assert status == 200 and "translate them on the Prompts and Needs pages" in draft
    assert "ready to publish" in draft and "nobody on the rota speaks Français" in draft  # a warning
    added = diff_lines(draft)
    danger = "labels: {en: someone in danger right now, es: alguien en peligro ahora, fr: "
    assert escape(f'+    {danger}"someone in danger right now"}}') in added
    assert escape('+      greeting: "Riverside County Crisis Line."') in added

    status, taken = post(client, "/console/routing/languages/add", **{**french, "code": "es"})
    assert status == 400 and "The line has this language already." in taken
    status, default = post(client, "/console/routing/languages/remove", code="en")
    assert status == 400 and "it is the default language" in default
    status, removed = post(client, "/console/routing/languages/remove", code="es")
    assert status == 200 and escape("-  - code: es") in diff_lines(removed)
    assert escape("+    languages: [en]") in diff_lines(removed)
    assert live(app) == (number, text)


def test_prompts_show_their_spoken_seconds_and_a_missing_placeholder_is_refused_at_its_field(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    page = client.get("/console/routing/prompts?language=es").get_data(as_text=True)
    assert re.search(r'id="time-to-ring">.*<strong>[0-9.]+ s</strong> of prompts', page)
    assert "About 2.0 s spoken" in page  # "Línea de Crisis del Condado de Riverside." is 5 words
    fields = prompts_of(app, "es")

    option = prompt_field("prompts.language_option")
    status, refused = post(client, "/console/routing/prompts", language="es", **{**fields, option: "Para español."})
    assert status == 400
    assert re.search(rf'id="{option}-errors" role="alert">must contain {{digit}}', refused)
    assert live(app) == (number, text)

    hold = prompt_field("prompts.hold")
    status, draft = post(client, "/console/routing/prompts", language="es",
                         **{**fields, hold: "Por favor,\r\n no cuelgue."})  # fmt: skip
    assert status == 200 and "Draft: Spanish prompts: hold." in draft
    assert diff_lines(draft)[-1] == escape('+      hold: "Por favor, no cuelgue."')


def test_the_menu_form_turns_the_need_menu_off_and_an_unreadable_duration_stays_on_the_form(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    page = client.get("/console/routing/menus").get_data(as_text=True)
    assert 'id="timings"' in page and "Barge-in is always on" in page and 'id="settings-form"' in page

    status, refused = post(client, "/console/routing/menus", **{**MENU, "max_seconds_to_ring": "5 parsecs"})
    assert status == 400 and 'id="max_seconds_to_ring-errors"' in refused
    assert live(app) == (number, text)

    status, same = post(client, "/console/routing/menus", **{**MENU, "max_seconds_to_ring": "20"})
    assert status == 200 and "Draft: changing nothing" in same
    status, draft = post(client, "/console/routing/menus", **{**MENU, "ask_need": "off", "retries": "3"})
    assert status == 200 and "Draft: changing menu.ask_need, menu.retries" in draft
    assert [line.split("#")[0].rstrip() for line in diff_lines(draft)] == [
        "-  retries: 2", "+  retries: 3", "-  ask_need: true", "+  ask_need: false",
    ]  # fmt: skip
    assert publish_draft(client, draft, "no need menu") == 302
    assert "ask_need: false" in live(app)[1]


def test_overrides_are_listed_added_with_a_warning_when_past_and_removed(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    page = client.get("/console/routing/overrides").get_data(as_text=True)
    assert 'id="override-ana-ruiz-0"' in page and "off call (leave)" in page

    status, bad = post(client, "/console/routing/overrides/add", responder_id="ben-carter", on_call="on",
                       day="2031-02-30", start="08:00", end="08:00")  # fmt: skip
    assert status == 400 and "A date like 2026-12-24." in bad and "The end must differ from the start." in bad

    past = (date.today() - timedelta(days=400)).isoformat()
    status, old = post(client, "/console/routing/overrides/add", responder_id="ben-carter", on_call="off",
                       day=past, start="22:00", end="06:00")  # fmt: skip
    assert status == 200 and "in the past (is the year right?)" in old  # the review's warning
    status, draft = post(client, "/console/routing/overrides/add", responder_id="ben-carter", on_call="on",
                         day="2031-01-02", start="22:00", end="06:00")  # fmt: skip
    assert status == 200
    assert diff_lines(draft) == [
        escape("+    overrides:"),
        escape('+      - {start: "2031-01-02T22:00", end: "2031-01-03T06:00", on_call: true}'),
    ]
    assert live(app) == (number, text)
    assert publish_draft(client, draft, "Ben covers the night") == 302
    assert 'id="override-ben-carter-0"' in client.get("/console/routing/overrides").get_data(as_text=True)

    status, removed = post(client, "/console/routing/overrides/remove", responder_id="ana-ruiz", index="0")
    assert status == 200 and escape("-    overrides:") in diff_lines(removed)


def test_a_form_read_before_someone_else_published_goes_through_the_stale_merge(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    with app.app_context():
        theirs = publishing.publish(text.replace("retries: 2", "retries: 3"), base=number, note="x", author="bob")
    status, draft = post(client, "/console/routing/languages/edit", **{**SPANISH, "voice": "Polly.Miguel"},
                         base=str(number))  # fmt: skip
    assert status == 200 and 'id="stale"' in draft and 'id="merge-result"' in draft
    merged, base = editor_fields(draft)
    assert base == str(theirs.version) and "retries: 3" in merged and 'voice: "Polly.Miguel"' in merged
    assert live(app) == (theirs.version, text.replace("retries: 2", "retries: 3"))


@pytest.mark.parametrize(
    "path",
    ["/console/routing/languages?code=es", "/console/routing/needs?key=danger_now", "/console/routing/prompts",
     "/console/routing/menus", "/console/routing/overrides"],
)  # fmt: skip
def test_every_form_page_labels_its_fields_and_serves_its_own_assets(
    client: FlaskClient, admin: Account, path: str
) -> None:
    sign_in(client, admin)
    response = client.get(path)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert url.startswith(("/console/", "#")), url
    labelled = re.findall(r'<label for="([^"]+)"', page)
    fields = re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', page)
    assert fields and set(fields) <= set(labelled), set(fields) - set(labelled)
    assert len(fields) == len(set(fields)), "an id used twice"
    assert page.count('name="csrf_token"') >= page.count('method="post"')


# --- the text edits themselves -------------------------------------------------------------


def test_removing_from_a_one_line_list_keeps_its_commas_right() -> None:
    text = "a: [x, y, z]  # kept\nb: {p: 1, q: 2}\n"
    root = drafts.compose(text)
    assert drafts.apply(text, [drafts.remove_span(text, root, ("a", 0))]) == "a: [y, z]  # kept\nb: {p: 1, q: 2}\n"
    assert drafts.apply(text, [drafts.remove_span(text, root, ("a", 1))]) == "a: [x, z]  # kept\nb: {p: 1, q: 2}\n"
    assert drafts.apply(text, [drafts.remove_span(text, root, ("a", 2))]) == "a: [x, y]  # kept\nb: {p: 1, q: 2}\n"
    both = [drafts.remove_span(text, root, ("b", "q")), drafts.set_span(text, root, ("b", "r"), "s")]
    assert drafts.apply(text, both) == 'a: [x, y, z]  # kept\nb: {p: 1, r: "s"}\n'


def test_setting_a_value_keeps_comments_and_adds_missing_keys_at_the_end_of_their_block() -> None:
    text = "menu:\n  retries: 2   # why\n  note: |\n    long\n    text\nother: 1\n"
    root = drafts.compose(text)
    edits = [
        drafts.set_span(text, root, ("menu", "retries"), 3),
        drafts.set_span(text, root, ("menu", "note"), "short"),
        drafts.set_span(text, root, ("menu", "ask_need"), False),
    ]
    assert drafts.apply(text, edits) == 'menu:\n  retries: 3   # why\n  note: "short"\n  ask_need: false\nother: 1\n'


def test_an_override_ending_before_it_starts_ends_the_next_day() -> None:
    assert changes.override_entry(date(2030, 12, 31), "22:00", "06:00", True) == {
        "start": "2030-12-31T22:00", "end": "2031-01-01T06:00", "on_call": True,
    }  # fmt: skip
    assert changes.override_entry(date(2030, 1, 1), "00:00", "24:00", False)["end"] == "2030-01-02T00:00"


def test_every_form_change_of_the_example_is_still_a_valid_routing() -> None:
    from crisisline.settings import DEFAULT_ROUTING_FILE

    text = DEFAULT_ROUTING_FILE.read_text()
    document, _ = validate_text(text)
    assert document is not None
    edited = [
        changes.remove_language(text, document, "es"),
        changes.remove_need(text, document, "mental_health"),
        changes.edit_need(text, document, "danger_now", changes.NeedChange(drop_fallback=True)),
        changes.remove_override(text, "erin-walsh", 0),
    ]
    for new in edited:
        assert new != text
        assert validate_text(new)[0] is not None, [p.describe() for p in validate_text(new)[1]]
