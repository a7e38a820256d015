"""Publishing a routing version, with or without pressing Preview first, or rolling back to an
old one, warns of every warning the new version has that the version live before it did not
(a coverage gap it opens, above all), in plain words; warnings the line already had are not
repeated. Found by review: an administrator who pressed Publish on a draft that left nobody to
take "thoughts of suicide" at any hour was told only "Published routing version N"."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape

from console.routing_pages import drafts
from routing.validation import validate_text
from tests.console.conftest import Account, csrf_token, sign_in
from tests.console.test_routing_pages import HOLD, NEW_HOLD, live, post, publish_as_someone_else

NEW_WARNINGS = re.compile(r"Version (\d+) has (\d+) warning\(s\) that version (\d+) did not have")


def without_suicide_skills(text: str) -> str:
    draft = text.replace("skills: [suicide, ", "skills: [")
    assert draft != text
    return draft


def warnings_shown(page: str) -> list[str]:
    return [html.unescape(w) for w in re.findall(r'<p class="notice warning" role="status">(.*?)</p>', page, re.S)]


def publish(client: FlaskClient, text: str, base: int) -> str:
    token = csrf_token(client, "/console/routing")
    response = client.post(
        "/console/routing/publish", data={"text": text, "base": str(base), "note": "tidy skills", "csrf_token": token},
        follow_redirects=True,
    )  # fmt: skip
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_publishing_without_preview_warns_of_the_coverage_gaps_it_opens(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    sign_in(client, admin)

    page = publish(client, without_suicide_skills(text), number)

    assert f"Published routing version {number + 1}." in page
    shown = warnings_shown(page)
    found = NEW_WARNINGS.search(shown[0])
    assert found and found.groups()[0] == str(number + 1) and found.groups()[2] == str(number)
    gaps = [w for w in shown[1:] if w.startswith("coverage gap")]
    assert gaps and all("nobody on call" in w or "nobody on call speaks it" in w for w in gaps)
    assert len(shown) - 1 == int(found.groups()[1])
    assert not any("flask routing" in w for w in shown)  # the console's words, not a terminal's


def test_publishing_a_change_that_opens_no_new_gap_repeats_none_of_the_old_warnings(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    number, text = live(app)
    gappy = publish_as_someone_else(app, without_suicide_skills(text), number)
    sign_in(client, admin)

    page = publish(client, without_suicide_skills(text).replace(HOLD, NEW_HOLD, 1), gappy)

    assert f"Published routing version {gappy + 1}." in page
    assert warnings_shown(page) == []


def test_rolling_back_to_a_version_with_gaps_warns_of_them(app: Flask, client: FlaskClient, admin: Account) -> None:
    first, text = live(app)
    gappy = publish_as_someone_else(app, without_suicide_skills(text), first)
    mended = publish_as_someone_else(app, text, gappy)
    sign_in(client, admin)

    response = client.post(
        f"/console/routing/history/{gappy}/rollback",
        data={"note": "back to it", "live": str(mended), "csrf_token": csrf_token(client, "/console/routing/history")},
        follow_redirects=True,
    )

    shown = warnings_shown(response.get_data(as_text=True))
    assert shown and NEW_WARNINGS.search(shown[0])
    assert any(w.startswith("coverage gap") for w in shown[1:])


def test_preview_and_publish_warn_of_a_day_three_days_ahead_that_overrides_leave_with_nobody(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    """Found by review: every responder off call for a whole day (a one-off override each) gave
    the same warnings as the rota before, and every caller that day would go to the backup line."""
    number, text = live(app)
    document, _ = validate_text(text)
    assert document is not None
    day = (datetime.now(document.timezone) + timedelta(days=3)).date()
    draft = text
    for responder in document.responders:
        leave = {"start": f"{day}T00:00", "end": f"{day + timedelta(days=1)}T00:00", "on_call": False}
        draft = drafts.add_override(draft, responder.id, leave)
    gap = f"coverage gap {day:%a} {day:%Y-%m-%d} 00:00–"
    sign_in(client, admin)

    status, preview = post(client, "/console/routing/preview", text=draft, base=str(number))

    assert status == 200 and "ready to publish with a note" in preview
    assert escape(gap) in preview and "English (en) / danger_now" in preview

    page = publish(client, draft, number)

    shown = warnings_shown(page)
    assert shown and NEW_WARNINGS.search(shown[0])
    told = [w for w in shown[1:] if w.startswith(gap)]
    assert any("English (en) / danger_now" in w and "nobody on call: callers go to the backup line" in w for w in told)
    assert not any("flask routing" in w for w in shown)  # the console's words, not a terminal's
