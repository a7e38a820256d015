"""The metrics pages: a supervisor sees the numbers of calls made through the real webhooks,
each linked to its definition, with plots; the CSV withholds small counts; staffing shows
demand against the rota."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET

import pytest
from flask import Flask
from flask.testing import FlaskClient

from console.metrics_pages.definitions import defined_names
from console.metrics_pages.views import MAX_CSV_DAYS, MAX_PAGE_DAYS
from metrics.compute import METRICS
from tests.console.conftest import Account, sign_in
from tests.rota import BEN, leg_to
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

WEDNESDAY = {"from": "2026-12-02", "to": "2026-12-03"}


@pytest.fixture
def an_answered_call(phone: Phone, fake: FakeTwilio, wednesday_evening: object) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    phone.answer(leg_to(fake, BEN).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference is not None


@pytest.mark.usefixtures("an_answered_call")
def test_a_supervisor_sees_the_days_numbers_each_linked_to_its_definition(
    client: FlaskClient, supervisor: Account
) -> None:
    sign_in(client, supervisor)

    page = client.get("/console/metrics", query_string={**WEDNESDAY, "channel": "voice"})

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    offered = html.split('href="/console/metrics/definitions#offered">Contacts offered</a></th>', 1)[1]
    assert offered.lstrip().startswith("<td>1</td>")
    answer_rate = html.split('#answer_rate">Answer rate</a></th>', 1)[1]
    assert answer_rate.lstrip().startswith("<td>100.0%</td>")
    assert html.count("<svg") == 2 and "<script" not in html.split("<main", 1)[1].split("</main>", 1)[0]


def test_every_metric_shown_has_a_written_definition(client: FlaskClient, supervisor: Account) -> None:
    sign_in(client, supervisor)

    page = client.get("/console/metrics/definitions").get_data(as_text=True)

    assert {metric.name for metric in METRICS} <= defined_names()
    assert all(f'id="{metric.name}"' in page for metric in METRICS)


@pytest.mark.usefixtures("an_answered_call")
def test_the_csv_withholds_counts_under_five(client: FlaskClient, supervisor: Account) -> None:
    sign_in(client, supervisor)

    response = client.get("/console/metrics.csv", query_string={**WEDNESDAY, "channel": "voice"})

    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Cache-Control"] == "no-store"
    (row,) = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert row["offered"] == "" and row["answered"] == ""  # 1 contact: withheld
    assert row["answer_rate"] == ""  # computed over withheld counts: withheld too


def test_a_bad_period_is_explained_and_the_default_shown(client: FlaskClient, supervisor: Account) -> None:
    sign_in(client, supervisor)

    page = client.get("/console/metrics", query_string={"from": "yesterday", "channel": "fax"})

    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "from: use a date like 2026-11-01" in html and "channel: one of voice, sms" in html
    backwards = {"from": "2026-12-05", "to": "2026-12-01"}
    assert client.get("/console/metrics.csv", query_string=backwards).status_code == 400


def test_a_period_longer_than_a_year_is_refused_on_the_page_and_a_few_years_in_the_csv(
    client: FlaskClient, supervisor: Account
) -> None:
    """A thousand years once took the page 5.5 s of work; now it is refused before any."""
    sign_in(client, supervisor)

    page = client.get("/console/metrics", query_string={"from": "1900-01-01", "to": "2900-01-01"})
    shown = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f"the period can be at most {MAX_PAGE_DAYS} days long" in shown
    assert 'name="from" type="date" value="2899-12-04"' in shown  # the default: 28 days up to its end
    year = client.get("/console/metrics", query_string={"from": "2025-01-01", "to": "2026-01-02"})
    assert year.status_code == 200 and "the period can be at most" not in year.get_data(as_text=True)

    refused = client.get("/console/metrics.csv", query_string={"from": "1900-01-01", "to": "2900-01-01"})
    assert refused.status_code == 400
    assert f"the period can be at most {MAX_CSV_DAYS} days long" in refused.get_data(as_text=True)
    years = client.get("/console/metrics.csv", query_string={"from": "2023-01-01", "to": "2026-01-01"})
    assert years.status_code == 200 and years.mimetype == "text/csv"


@pytest.mark.usefixtures("an_answered_call")
def test_staffing_shows_demand_against_the_rota_as_an_accessible_chart(
    app: Flask, client: FlaskClient, supervisor: Account
) -> None:
    sign_in(client, supervisor)

    page = client.get("/console/metrics/staffing", query_string={"weeks": "2", "language": "en"})

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    svg = html[html.index("<svg") : html.index("</svg>") + len("</svg>")]
    chart = ET.fromstring(svg)  # noqa: S314 - our own SVG
    assert chart.find("{http://www.w3.org/2000/svg}title") is not None or chart.find("title") is not None
    assert "English" in svg
