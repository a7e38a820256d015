"""The routing pages with real published routing: the YAML editor (preview with errors at
their lines, warnings and the diff; publish with a note; an invalid or stale draft refused
with the live config unchanged; a stale one merged when the changes do not overlap), history
and roll back (audited), the simulator and the coverage week, and the people and shift forms
that make drafts for the same preview and publish."""

from __future__ import annotations

import html
import re
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape

from console.models import ADMIN
from console.routing_pages.merge import three_way
from routing import coverage, publishing, store
from tests.console.conftest import Account, MakeUser, audit_actions, csrf_token, sign_in

HOLD = "hold: Please stay on the line while we find someone to talk with you."
NEW_HOLD = "hold: Please stay on the line. Someone will be with you soon."
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def live(app: Flask) -> tuple[int, str]:
    """The live version's number and text."""
    with app.app_context():
        version = publishing.live_version()
        assert version is not None
        return version.id, store.source_of(version)


def editor_fields(page: str) -> tuple[str, str]:
    """The editor's text and base version, as a browser would submit them."""
    text = re.search(r'<textarea[^>]*id="text"[^>]*>(?:\r?\n)?(.*?)</textarea>', page, re.S)
    base = re.search(r'<input id="base" name="base" type="hidden" value="([^"]*)"', page)
    assert text and base, "no editor on the page"
    return html.unescape(text.group(1)), base.group(1)


def post(client: FlaskClient, path: str, **data: str | list[str]) -> tuple[int, str]:
    response = client.post(path, data={**data, "csrf_token": csrf_token(client, "/console/routing")})
    return response.status_code, response.get_data(as_text=True)


def publish_as_someone_else(app: Flask, text: str, base: int) -> int:
    with app.app_context():
        return publishing.publish(text, base=base, note="their change", author="bob").version


def test_the_editor_shows_the_live_version_and_an_invalid_edit_is_refused_at_its_line(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    page = client.get("/console/routing").get_data(as_text=True)
    shown, base = editor_fields(page)
    assert (shown, base) == (text, str(number))
    assert f"Version <strong>{number}</strong>, published by tests" in page

    # A second ``mode:`` in ``line:``: an error at that line, with a link to it, highlighted.
    broken = text.replace("  mode: normal", "  mode: normal\n  mode: system_down", 1)
    line = next(n for n, row in enumerate(broken.splitlines(), 1) if row.startswith("  mode: system_down"))
    status, preview = post(client, "/console/routing/preview", text=broken, base=base)
    assert status == 200
    assert "this draft would be refused" in preview
    assert f'<a href="#line-{line}" class="line-link" data-line="{line}">line {line}, column 3</a>' in preview
    assert "&#39;mode&#39; appears twice in the same mapping" in preview
    assert f'<li id="line-{line}" class="error">' in preview

    no_token = client.post("/console/routing/publish", data={"text": broken, "base": base, "note": "try it"})
    assert no_token.status_code == 400  # CSRF
    status, refused = post(client, "/console/routing/publish", text=broken, base=base, note="try it")
    assert status == 422
    assert "Not published: 1 error(s)" in refused and "The live routing is unchanged." in refused
    assert live(app) == (number, text)
    assert not [entry for entry in audit_actions(app) if entry[1] == "routing_published"]


def test_preview_shows_the_diff_and_every_warning_then_publish_needs_a_note_and_shows_in_history(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    _, base = editor_fields(client.get("/console/routing").get_data(as_text=True))
    # As a browser sends a textarea: CRLF line endings. Only the edited line may differ.
    edited = text.replace(HOLD, NEW_HOLD, 1).replace("\n", "\r\n")

    status, preview = post(client, "/console/routing/preview", text=edited, base=base)
    assert status == 200
    assert "ready to publish with a note" in preview
    diff = re.search(r'<pre class="diff" id="preview-diff".*?</pre>', preview, re.S)
    assert diff is not None
    changed = re.findall(r'<span class="(add|del)">', diff.group(0))
    assert changed == ["del", "add"]
    assert escape("+      " + NEW_HOLD) in diff.group(0)
    with app.app_context():
        warnings = publishing.preview(text.replace(HOLD, NEW_HOLD, 1), number).warnings
    assert warnings  # the example has coverage gaps
    for warning in warnings:
        assert escape(str(warning)) in preview

    status, no_note = post(client, "/console/routing/publish", text=edited, base=base, note="  ")
    assert status == 422 and "a note saying why is required" in no_note
    assert live(app) == (number, text)

    published = client.post(
        "/console/routing/publish",
        data={"text": edited, "base": base, "note": "shorter hold prompt", "csrf_token": csrf_token(client)},
    )
    assert published.status_code == 302 and published.headers["Location"].endswith("/console/routing/history")
    new_number, new_text = live(app)
    assert new_number > number and new_text == text.replace(HOLD, NEW_HOLD, 1)

    history = client.get("/console/routing/history").get_data(as_text=True)
    row = re.search(rf'<tr id="version-{new_number}">.*?</tr>', history, re.S)
    assert row is not None
    assert "(live)" in row.group(0) and "ada-admin" in row.group(0) and "shorter hold prompt" in row.group(0)
    assert f"Published routing version {new_number}." in history
    changes = client.get(f"/console/routing/history/{new_number}").get_data(as_text=True)
    assert escape("+      " + NEW_HOLD) in changes
    assert ("ada-admin", "routing_published", f"routing:{new_number}") in audit_actions(app)


def test_the_same_draft_published_twice_at_once_is_published_and_audited_once(
    app: Flask, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A double-clicked Publish, or two administrators with the same edit, both previewed
    against the same live version: one version, one ``routing_published`` entry (its
    publisher's), and the other is told there was nothing to publish."""
    number, text = live(app)
    edited = text.replace(HOLD, NEW_HOLD, 1)
    clients = {}
    for name in ("ada-admin", "bob-admin"):
        clients[name] = app.test_client()
        sign_in(clients[name], make_user(ADMIN, name))
    tokens = {name: csrf_token(client, "/console/routing") for name, client in clients.items()}
    previewed = threading.Barrier(2, timeout=30)  # both publish only once both previewed
    passed = threading.Event()  # then previews go on as usual (the winner's page of warnings)
    preview = publishing.preview

    def previewed_by_both(*args: Any, **kwargs: Any) -> publishing.Preview:
        draft = preview(*args, **kwargs)
        if not passed.is_set():
            previewed.wait()
            passed.set()
        return draft

    monkeypatch.setattr(publishing, "preview", previewed_by_both)
    landed: dict[str, str] = {}

    def publish(name: str) -> None:
        form = {"text": edited, "base": str(number), "note": f"{name}'s note", "csrf_token": tokens[name]}
        response = clients[name].post("/console/routing/publish", data=form)
        assert response.status_code == 302
        landed[name] = response.headers["Location"]

    threads = [threading.Thread(target=publish, args=(name,)) for name in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    published = [entry for entry in audit_actions(app) if entry[1] == "routing_published"]
    assert len(published) == 1, published
    winner = published[0][0]
    loser = next(name for name in clients if name != winner)
    assert published == [(winner, "routing_published", f"routing:{number + 1}")]
    assert landed[winner].endswith("/console/routing/history") and landed[loser].endswith("/console/routing")
    assert live(app) == (number + 1, edited)
    with app.app_context():
        assert [(row.number, row.author, row.note) for row in publishing.history()][:2] == [
            (number + 1, winner, f"{winner}'s note"),
            (number, "tests", ""),
        ]
    told = clients[loser].get("/console/routing").get_data(as_text=True)
    assert f"Nothing to publish: this is the live version {number + 1}." in told
    assert "Published routing version" not in told


def test_a_stale_draft_is_refused_and_merged_when_the_changes_touch_different_lines(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    _, base = editor_fields(client.get("/console/routing").get_data(as_text=True))
    theirs = publish_as_someone_else(app, text.replace("retries: 2", "retries: 3", 1), number)
    mine = text.replace(HOLD, NEW_HOLD, 1)

    status, refused = post(client, "/console/routing/publish", text=mine, base=base, note="my change")
    assert status == 409
    assert "Someone published since your draft was started" in refused
    assert f"The live version is <strong>{theirs}</strong>" in refused
    assert f"your draft was edited from version <strong>{number}</strong>" in refused
    assert live(app)[0] == theirs  # nothing published
    merged, merged_base = editor_fields(refused)
    assert merged_base == str(theirs)
    assert "retries: 3" in merged and NEW_HOLD in merged

    status, _ = post(client, "/console/routing/publish", text=merged, base=merged_base, note="my change, merged")
    assert status == 302
    assert live(app)[1] == text.replace("retries: 2", "retries: 3", 1).replace(HOLD, NEW_HOLD, 1)


def test_a_stale_draft_that_overlaps_is_merged_by_hand_and_only_then_published(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    theirs = publish_as_someone_else(app, text.replace("retries: 2", "retries: 3", 1), number)
    mine = text.replace("retries: 2", "retries: 4", 1)

    status, refused = post(client, "/console/routing/publish", text=mine, base=str(number), note="four")
    assert status == 409 and "Merge by hand" in refused
    assert editor_fields(refused) == (mine, str(number))  # the draft is kept, with its old base
    assert f'name="rebase" value="{theirs}"' in refused
    assert live(app)[0] == theirs

    # The administrator confirms the draft includes their change: it is now based on it.
    status, rebased = post(client, "/console/routing/preview", text=mine, base=str(number), rebase=str(theirs))
    assert status == 200 and "Someone published" not in rebased
    assert editor_fields(rebased) == (mine, str(theirs))
    status, _ = post(client, "/console/routing/publish", text=mine, base=str(theirs), note="four, after all")
    assert status == 302 and "retries: 4" in live(app)[1]


def test_roll_back_republishes_an_old_version_as_a_new_one_and_is_audited(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    first, text = live(app)
    second = publish_as_someone_else(app, text.replace(HOLD, NEW_HOLD, 1), first)
    sign_in(client, admin)
    history = client.get("/console/routing/history").get_data(as_text=True)
    assert f"Roll back to version {first}" in history and f"Roll back to version {second}" not in history

    response = client.post(
        f"/console/routing/history/{first}/rollback",
        data={"note": "the old prompt was clearer", "csrf_token": csrf_token(client, "/console/routing/history")},
    )
    assert response.status_code == 302
    third, live_text = live(app)
    assert third == second + 1 and live_text == text
    page = client.get("/console/routing/history").get_data(as_text=True)
    assert f"rollback to version {first}: the old prompt was clearer" in page
    assert ("ada-admin", "routing_rolled_back", f"routing:{third}") in audit_actions(app)

    again = client.post(
        f"/console/routing/history/{first}/rollback", data={"csrf_token": csrf_token(client)}, follow_redirects=True
    )
    assert "is live already" in again.get_data(as_text=True)
    assert live(app)[0] == third
    missing = client.post("/console/routing/history/999999/rollback", data={"csrf_token": csrf_token(client)})
    assert missing.status_code == 404


def test_a_roll_back_chosen_before_someone_else_published_is_refused_and_their_change_stays(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    """Before, the rollback took whatever was live when it was posted as its base: a version
    published after the page was drawn (a cover shift for tonight) was undone unseen."""
    first, text = live(app)
    second = publish_as_someone_else(app, text.replace(HOLD, NEW_HOLD, 1), first)
    sign_in(client, admin)
    page = client.get(f"/console/routing/history/{first}").get_data(as_text=True)
    seen = re.search(r'name="live" value="(\d+)"', page)
    assert seen is not None and int(seen.group(1)) == second
    theirs = publish_as_someone_else(app, live(app)[1].replace("retries: 2", "retries: 3", 1), second)

    refused = client.post(
        f"/console/routing/history/{first}/rollback",
        data={"live": seen.group(1), "csrf_token": csrf_token(client, "/console/routing/history")},
        follow_redirects=True,
    ).get_data(as_text=True)

    assert f"version {theirs} was published after you opened this page" in html.unescape(refused)
    assert live(app)[0] == theirs and "retries: 3" in live(app)[1]
    assert "routing_rolled_back" not in [action for _, action, _ in audit_actions(app)]


def test_the_simulator_picks_who_the_engine_would_ring(
    client: FlaskClient, supervisor: Account, wednesday_morning: object
) -> None:
    """The days are the coming week's: travelled to 2 December 2026, clear of the holiday overrides."""
    sign_in(client, supervisor)

    # Wednesday 17:00, thoughts of suicide: Ben (on 16:00-24:00), then Diego (Wed 12:00-20:00).
    page = client.get("/console/routing/simulator?language=en&need=suicide&day=wed&time=17:00").get_data(as_text=True)
    rung = re.search(r'<ol id="rung">(.*?)</ol>', page, re.S)
    assert rung is not None
    names = re.findall(r"<strong>([^<]+)</strong>", rung.group(1))
    assert names == ["Ben Carter", "Diego Morales"]
    assert re.search(r"<strong>\d+\.\d s</strong> of prompts before the first ring", page)
    assert "Riverside County Crisis Line." in page  # what the caller hears first

    # Saturday 03:00, Spanish: only Chloe (English) is on: the caller is told so.
    spanish = client.get("/console/routing/simulator?language=2&need=2&day=sat&time=03:00").get_data(as_text=True)
    assert "Chloe Nguyen" in spanish and "Nobody on call speaks Spanish" in spanish
    # Saturday 03:00, drug or alcohol use in English: nobody, the backup line.
    nobody = client.get("/console/routing/simulator?language=en&need=substance_use&day=sat&time=03:00")
    assert "Nobody is rung (nobody on call)" in nobody.get_data(as_text=True)
    bad = client.get("/console/routing/simulator?language=fr&need=suicide&day=sat&time=03:00")
    assert bad.status_code == 200 and "is not one of the line&#39;s languages" in bad.get_data(as_text=True)


def test_the_coverage_week_shows_every_gap_in_an_accessible_table(
    app: Flask, client: FlaskClient, supervisor: Account
) -> None:
    sign_in(client, supervisor)
    page = client.get("/console/routing/coverage").get_data(as_text=True)
    with app.app_context():
        active = store.active_routing()
        assert active is not None
        rows = coverage.week_coverage(active.document)
    for row in rows:
        for gap in row.gaps:
            assert f"<strong>{gap.label}</strong>" in page, (row.language, row.need, gap.label)
    assert page.count('<table class="week">') == sum(1 for row in rows if row.gaps)
    assert '<th scope="row">Sat</th>' in page and '<th scope="col" abbr="03:00">03</th>' in page
    assert '<span class="visually-hidden">nobody (backup line)</span>' in page
    assert "<script" not in page.split("<main", 1)[1]  # no JavaScript needed
    assert client.get("/console/routing/coverage?week=2026-12-24").status_code == 200


def test_people_and_shift_forms_make_drafts_that_go_live_only_when_published(
    app: Flask, client: FlaskClient, admin: Account, wednesday_morning: object
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    assert "Add a counselor" in client.get("/console/routing/people").get_data(as_text=True)
    person = {"kind": "counselor", "responder_id": "fay-lopez", "name": "Fay Lopez", "languages": ["en"],
              "skills": ["substance_use", "suicide"]}  # fmt: skip

    status, invalid = post(client, "/console/routing/people/responder", **person, phone="555-12")
    assert status == 400
    assert "is not a valid phone number; write it with the country code" in invalid
    assert 'aria-invalid="true"' in invalid
    status, extension = post(client, "/console/routing/people/responder", **person, phone="+1 312 555 0109 ext. 42")
    assert status == 400 and "has an extension, which the line cannot dial" in extension  # not the switchboard
    status, taken = post(client, "/console/routing/people/responder", **{**person, "responder_id": "ana-ruiz"},
                         phone="+1 312 555 0109")  # fmt: skip
    assert status == 400 and "already a responder with this id" in taken

    status, draft = post(client, "/console/routing/people/responder", **person, phone="(312) 555-0109")
    assert status == 200 and "Draft: adding Fay Lopez (counselor)" in draft
    assert escape('+    phone: "+13125550109"') in draft
    assert live(app) == (number, text)  # a draft, not a change
    draft_text, base = editor_fields(draft)
    status, _ = post(client, "/console/routing/publish", text=draft_text, base=base, note="Fay joins")
    assert status == 302

    nobody = "/console/routing/simulator?language=en&need=substance_use&day=sat&time=03:00"
    assert "Nobody is rung" in client.get(nobody).get_data(as_text=True)
    status, shift_draft = post(client, "/console/routing/people/shift", responder_id="fay-lopez", days=EVERY_DAY,
                               start="00:00", end="08:00")  # fmt: skip
    assert status == 200 and "a shift for Fay Lopez" in shift_draft
    status, bad_shift = post(client, "/console/routing/people/shift", responder_id="fay-lopez", days=[],
                             start="8am", end="25:00")  # fmt: skip
    assert status == 400 and "Choose at least one day." in bad_shift and "A time like 08:00." in bad_shift
    shift_text, shift_base = editor_fields(shift_draft)
    status, _ = post(client, "/console/routing/publish", text=shift_text, base=shift_base, note="Fay's nights")
    assert status == 302

    rung = client.get(nobody).get_data(as_text=True)
    assert re.search(r'<ol id="rung">\s*<li>Round 1: <strong>Fay Lopez</strong>', rung)
    week = client.get("/console/routing/coverage").get_data(as_text=True)
    assert "Mon 00:00–08:00" not in week.split('id="cov-en-substance_use"', 1)[-1].split("</section>", 1)[0]
    with app.app_context():
        active = store.active_routing()
        assert active is not None
        english = next(
            r for r in coverage.week_coverage(active.document) if (r.language, r.need) == ("en", "substance_use")
        )
    assert not english.gaps  # the gap closed


def test_the_line_settings_form_changes_only_what_was_changed_and_the_validator_checks_it(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)
    settings = {"mode": "normal", "strategy": "sequential", "ring_timeout": "20s", "max_hold": "4m",
                "menu_timeout": "6s"}  # fmt: skip

    status, nonsense = post(client, "/console/routing/people/settings", **{**settings, "max_hold": "5 parsecs"})
    assert status == 400 and re.search(r'id="max_hold-errors" role="alert">[^<]*parsecs', html.unescape(nonsense))
    assert live(app) == (number, text)

    status, draft = post(client, "/console/routing/people/settings", **{**settings, "mode": "system_down"})
    assert status == 200 and "Draft: changing line.mode." in draft
    diff = re.search(r'<pre class="diff" id="preview-diff".*?</pre>', draft, re.S)
    assert diff is not None and re.findall(r'<span class="(add|del)">', diff.group(0)) == ["del", "add"]
    assert escape('+  mode: "system_down"') in diff.group(0)
    assert live(app) == (number, text)
    draft_text, base = editor_fields(draft)
    status, _ = post(client, "/console/routing/publish", text=draft_text, base=base, note="centre closed tonight")
    assert status == 302
    page = client.get("/console/routing/simulator?language=en&need=suicide&day=wed&time=17:00")
    assert "Nobody is rung (system down)" in page.get_data(as_text=True)


def test_the_line_settings_form_never_reverts_a_change_published_after_it_was_drawn(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    """Before, every field that differed from the live version was written: switching the
    strategy put back the ring timeout someone had just changed, with no stale warning."""
    number, text = live(app)
    sign_in(client, admin)
    page = client.get("/console/routing/menus").get_data(as_text=True)
    drawn = re.search(r'<form[^>]*id="settings-form".*?name="base" value="(\d+)"', page, re.S)
    assert drawn is not None and int(drawn.group(1)) == number
    their_text = text.replace("ring_timeout_seconds: 20", "ring_timeout_seconds: 35", 1)
    theirs = publish_as_someone_else(app, their_text, number)

    status, draft = post(
        client, "/console/routing/people/settings", base=drawn.group(1), mode="normal", strategy="parallel",
        ring_timeout="20s", max_hold="4m", menu_timeout="6s",
    )  # fmt: skip

    assert status == 200
    draft_text, base = editor_fields(draft)
    assert base == str(theirs)  # merged onto what is live now
    assert "ring_timeout_seconds: 35" in draft_text and 'strategy: "parallel"' in draft_text


def test_every_routing_page_labels_its_fields_and_serves_its_own_assets(client: FlaskClient, admin: Account) -> None:
    sign_in(client, admin)
    paths = [
        "/console/routing",
        "/console/routing/history",
        "/console/routing/history/1",
        "/console/routing/people",
        "/console/routing/simulator?language=en&need=suicide&day=wed&time=17:00",
        "/console/routing/coverage",
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code in (200, 404), path
        page = response.get_data(as_text=True)
        for url in re.findall(r'(?:src|href)="([^"]+)"', page):
            assert url.startswith(("/console/", "#")), url
        labelled = set(re.findall(r'<label for="([^"]+)"', page))
        fields = set(re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', page))
        assert fields <= labelled, (path, fields - labelled)


def test_the_merge_applies_both_changes_or_none() -> None:
    base = "a\nb\nc\nd\ne\n"
    assert three_way(base, "a\nB\nc\nd\ne\n", "a\nb\nc\nd\nE\n") == "a\nB\nc\nd\nE\n"
    assert three_way(base, "a\nB\nc\nd\ne\n", "a\nb\nC\nd\ne\n") is None  # neighbouring lines: by hand
    assert three_way(base, "a\nB\nc\nd\ne\n", "a\nB\nc\nd\ne\n") == "a\nB\nc\nd\ne\n"
