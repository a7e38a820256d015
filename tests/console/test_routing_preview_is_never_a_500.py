"""A routing draft the validator refuses is shown in the console's preview with its errors,
never answered with a server error: a list where one value belongs, a number too big to
read, a time zone that is a folder of zones."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.console.conftest import Account, sign_in
from tests.console.test_routing_pages import live, post


def preview(app: Flask, client: FlaskClient, admin: Account, old: str, new: str) -> tuple[int, str]:
    number, text = live(app)
    draft = text.replace(old, new, 1)
    assert draft != text, f"{old!r} is not in the live routing"
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash must show as the 500 a browser would get
    sign_in(client, admin)
    return post(client, "/console/routing/preview", text=draft, base=str(number))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("  default_language: en", "  default_language: [en]", "menu.default_language"),
        ("  default_need: something_else", "  default_need: [something_else]", "menu.default_need"),
    ],
)
def test_a_list_where_one_value_belongs_is_shown_as_an_error_in_the_preview(
    app: Flask, client: FlaskClient, admin: Account, old: str, new: str, field: str
) -> None:
    status, page = preview(app, client, admin, old, new)

    assert status < 500
    assert field in page


def test_a_region_given_as_the_time_zone_is_shown_as_an_error_in_the_preview(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    status, page = preview(app, client, admin, "  timezone: America/Chicago", "  timezone: America")

    assert status < 500
    assert "line.timezone" in page


def test_a_number_too_long_to_read_is_shown_as_an_error_in_the_preview(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    status, page = preview(app, client, admin, "  retries: 2 ", "  retries: " + "9" * 5000 + " ")

    assert status < 500
    assert "menu.retries" in page and "5000 digits long" in page
