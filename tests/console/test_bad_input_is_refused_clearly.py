"""Input the console cannot use (a NUL, a line break, a number too big for an id, a digit that
is not ASCII, a date at the ends of the calendar) gets a clear refusal: a form error, 400 or
404, never a server error. SQLite and PostgreSQL (which refuses a NUL in text and an id over
2**31-1 with an error of its own)."""

from __future__ import annotations

import html
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from console.inputs import DAY_RANGE, MAX_ID, calendar_day, has_control_characters, row_id
from tests.console.conftest import Account, audit_actions, csrf_token, sign_in
from tests.console.test_routing_forms import MENU
from tests.console.test_routing_pages import live, post

LINE_SETTINGS = {"mode": "normal", "strategy": "sequential", "ring_timeout": "20s", "max_hold": "4m",
                 "menu_timeout": "6s"}  # fmt: skip


def test_the_shared_checks_take_ascii_ids_and_dates_inside_the_calendar_only() -> None:
    assert row_id("42") == 42 and row_id(str(MAX_ID)) == MAX_ID
    assert [row_id(text) for text in ("²", "٣", "0", "-1", "1_0", str(MAX_ID + 1), "9" * 5000, "", None)] == [None] * 9
    assert calendar_day("2026-11-01").isoformat() == "2026-11-01"
    for text in ("0001-01-01", "9999-12-31", "2026-02-30", "tomorrow"):
        with pytest.raises(ValueError, match="use a date"):
            calendar_day(text)
    assert [has_control_characters(text) for text in ("ana\x00", "a\r\nb", "a\tb", "a\u2028b", "ana-ruiz")] == [
        True, True, True, True, False,
    ]  # fmt: skip


def test_a_username_with_a_nul_is_an_ordinary_wrong_sign_in(
    app: Flask, client: FlaskClient, counselor: Account
) -> None:
    response = client.post(
        "/console/sign-in",
        data={"username": "ana\x00", "password": "whatever it is 123", "csrf_token": csrf_token(client)},
    )
    assert response.status_code == 200
    assert "That username and password do not match an active account." in response.get_data(as_text=True)
    assert audit_actions(app)[-1] == ("unknown account", "sign_in_failed", None)


def test_an_audit_filter_with_a_nul_is_refused_with_400(client: FlaskClient, supervisor: Account) -> None:
    sign_in(client, supervisor)
    response = client.get("/console/audit", query_string={"action": "sign_in\x00"})
    assert response.status_code == 400
    assert "An action is a name like sign_in_failed" in response.get_data(as_text=True)
    assert client.get("/console/audit", query_string={"action": "sign_in"}).status_code == 200


@pytest.mark.parametrize("target", ["/console/\r\nX-Evil: 1", "/console/\x00", "/console/\u2028x", "/console/a\tb"])
def test_a_next_page_with_control_characters_is_ignored_after_sign_in(
    client: FlaskClient, counselor: Account, target: str
) -> None:
    data = {"username": counselor.username, "password": counselor.password, "next": target}
    response = client.post("/console/sign-in", data={**data, "csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/me"  # the counselor's home, not the target


def test_a_plain_next_page_is_still_followed_after_sign_in(client: FlaskClient, counselor: Account) -> None:
    data = {"username": counselor.username, "password": counselor.password, "next": "/console/me?tab=texts"}
    response = client.post("/console/sign-in", data={**data, "csrf_token": csrf_token(client)})
    assert response.status_code == 302 and response.headers["Location"] == "/console/me?tab=texts"


OUT_OF_CALENDAR = [{"to": "0001-01-05"}, {"from": "0001-01-01", "to": "0001-01-02"}, {"to": "0001-01-01"},
                   {"from": "9999-12-30", "to": "9999-12-31"}]  # fmt: skip


@pytest.mark.parametrize("query", OUT_OF_CALENDAR)
def test_metrics_dates_at_the_ends_of_the_calendar_show_the_default_period_with_a_message(
    client: FlaskClient, supervisor: Account, query: dict[str, str]
) -> None:
    sign_in(client, supervisor)
    page = client.get("/console/metrics", query_string=query)
    assert page.status_code == 200
    assert f"use a date {DAY_RANGE}" in page.get_data(as_text=True)

    csv = client.get("/console/metrics.csv", query_string=query)
    assert csv.status_code == 400 and f"use a date {DAY_RANGE}" in csv.get_data(as_text=True)


@pytest.mark.parametrize("week", ["9999-12-31", "0001-01-01"])
def test_a_coverage_week_at_the_ends_of_the_calendar_is_refused_with_a_message(
    client: FlaskClient, supervisor: Account, week: str
) -> None:
    sign_in(client, supervisor)
    response = client.get("/console/routing/coverage", query_string={"week": week})
    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    assert f"'{week}' is not a date {DAY_RANGE}." in page
    assert 'class="notice error"' in page


@pytest.mark.parametrize("base", ["²", "99999999999"])
def test_a_routing_form_with_an_unusable_base_version_is_a_form_error(
    app: Flask, client: FlaskClient, admin: Account, base: str
) -> None:
    before = live(app)
    sign_in(client, admin)
    status, page = post(client, "/console/routing/needs/remove", base=base, key="something_else")
    assert status == 400 and "This form was not drawn from a published version" in page
    assert live(app) == before


def test_a_version_number_too_big_for_an_id_is_not_found(app: Flask, client: FlaskClient, admin: Account) -> None:
    number, _ = live(app)
    sign_in(client, admin)
    assert client.get(f"/console/routing/history/{MAX_ID + 1}").status_code == 404
    assert client.get(f"/console/routing/history/{MAX_ID}").status_code == 404
    assert client.get(f"/console/routing/history/{number}").status_code == 200
    post_token = csrf_token(client, "/console/routing/history")
    refused = client.post(f"/console/routing/history/{MAX_ID + 1}/rollback", data={"csrf_token": post_token})
    assert refused.status_code == 404

    editor = client.get("/console/routing", query_string={"from_version": str(MAX_ID + 1)})
    assert editor.status_code == 200
    assert "the text of version" not in editor.get_data(as_text=True)  # the live text, as for an unknown version


def test_a_superscript_digit_in_a_line_setting_is_refused_at_its_field(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    before = live(app)
    sign_in(client, admin)
    status, page = post(client, "/console/routing/people/settings", **{**LINE_SETTINGS, "ring_timeout": "²"})
    assert status == 400
    assert re.search(r'id="ring_timeout-errors" role="alert">[^<]*²', html.unescape(page))
    assert live(app) == before


def test_a_superscript_digit_in_the_menu_limit_is_refused_at_its_field(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    before = live(app)
    sign_in(client, admin)
    status, page = post(client, "/console/routing/menus", **{**MENU, "max_seconds_to_ring": "²"})
    assert status == 400 and 'id="max_seconds_to_ring-errors"' in page
    assert live(app) == before


@pytest.mark.parametrize("end", ["24:00", "06:00"])
def test_an_override_on_the_last_day_of_the_calendar_is_refused_at_its_date(
    app: Flask, client: FlaskClient, admin: Account, end: str
) -> None:
    before = live(app)
    sign_in(client, admin)
    status, page = post(client, "/console/routing/overrides/add", responder_id="ben-carter", on_call="on",
                        day="9999-12-31", start="22:00", end=end)  # fmt: skip
    assert status == 400 and f"A date {DAY_RANGE}." in page
    assert live(app) == before


def test_an_account_id_too_big_for_an_id_is_not_found(client: FlaskClient, admin: Account) -> None:
    sign_in(client, admin)
    token = csrf_token(client, "/console/users")
    assert client.post(f"/console/users/{MAX_ID + 1}/deactivate", data={"csrf_token": token}).status_code == 404
    assert client.post(f"/console/users/{MAX_ID}/deactivate", data={"csrf_token": token}).status_code == 404


def editor_form(client: FlaskClient) -> tuple[str, str, str]:
    """The routing editor's token, base version and text, as the page draws them."""
    page = client.get("/console/routing").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    base = re.search(r'name="base" type="hidden" value="([^"]*)"', page)
    text = re.search(r'<textarea[^>]*name="text"[^>]*>\n?([^<]*)</textarea>', page)
    assert token and base and text
    return token.group(1), base.group(1), html.unescape(text.group(1))


@pytest.mark.parametrize("pasted", ["\x0b", "\x00", "\x0c"], ids=["vertical-tab", "nul", "page-break"])
def test_a_special_character_pasted_into_the_routing_text_is_a_problem_at_its_line_not_a_server_error(
    client: FlaskClient, admin: Account, pasted: str
) -> None:
    """Found by review: YAML's reader refused it before the parser's own error handling, so
    Preview and Publish gave a server error and the draft was lost (Word's Shift+Enter is a
    vertical tab)."""
    sign_in(client, admin)
    token, base, text = editor_form(client)
    draft = text.replace("Hello, this is the", f"Hello,{pasted}this is the", 1)
    assert draft != text
    line = draft[: draft.index(pasted)].count("\n") + 1

    response = client.post("/console/routing/preview", data={"csrf_token": token, "base": base, "text": draft})

    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code < 500
    assert "a special character" in page and f"line {line}" in page
    assert "Hello,this is the" in page.replace(pasted, "")  # the draft is still in the editor


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/console/routing/preview", {"base": " "}),
        ("/console/routing/history/1/rollback", {"live": " "}),
        ("/console/routing/overrides/add", {"responder_id": "ana-ruiz", "day": "2026-12-24", "start": "08:00\n",
                                            "end": "16:00", "on_call": "on"}),
    ],
    ids=["a-blank-base-version", "a-blank-live-version", "a-time-with-a-line-break"],
)  # fmt: skip
def test_hand_made_odd_values_in_routing_forms_are_refused_not_a_server_error(
    app: Flask, client: FlaskClient, admin: Account, path: str, fields: dict[str, str]
) -> None:
    before = live(app)
    sign_in(client, admin)
    token, base, text = editor_form(client)
    data = {"csrf_token": token, "base": base, "text": text} | fields

    assert client.post(path, data=data).status_code < 500
    if path.endswith("/add"):
        assert live(app) == before


def test_a_staffing_period_of_thousands_of_digits_shows_the_default_period(
    client: FlaskClient, supervisor: Account
) -> None:
    sign_in(client, supervisor)
    response = client.get("/console/metrics/staffing", query_string={"weeks": "9" * 5000})
    assert response.status_code == 200
    assert "over the last 4 weeks" in response.get_data(as_text=True)
