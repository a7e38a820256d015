"""The metrics pages in a real Chromium (Debian's), driven by Playwright, against the app served
as the Procfile serves it (gunicorn): two people call through the real voice webhooks (Ana
answers the first; the second hangs up while waiting), then a supervisor signs in and reads
the day's numbers, the charts, a breakdown by hour, a definition and the staffing view.
Screenshots go to tests/console/screenshots/ (ignored by git)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any

from flask import Flask

from console.models import SUPERVISOR
from crisisline.settings import Settings
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from tests.console.conftest import MakeUser
from tests.console.test_in_a_browser import (  # noqa: F401 - the browser and gunicorn fixtures
    browser,
    procfile_web,
    shot,
    sync_api,
)
from tests.rota import ANA, CHICAGO, around_the_clock, leg_to, legs
from twilio_fake.phone import Keys, Phone, RequestsTransport
from twilio_fake.rest_api import FakeTwilio

ANSWERED_CALLER, WAITING_CALLER = "+13125550211", "+13125550212"


def _wait_for_a_leg_to(fake: FakeTwilio, number: str, timeout: float = 20.0) -> str:
    """The sid of the line's leg to ``number`` (gunicorn rings off the request path)."""
    deadline = time.monotonic() + timeout
    while not any(leg.to == number for leg in legs(fake)):
        assert time.monotonic() < deadline, f"no leg to {number} within {timeout} s"
        time.sleep(0.1)
    return leg_to(fake, number).sid


def _metric(page: Any, label: str, column: int = 0) -> Any:
    """The cell of the metric named ``label`` in the table's ``column`` (0: all contacts)."""
    row = page.locator("table.metrics tbody tr").filter(has=page.get_by_role("link", name=label, exact=True))
    return row.locator("td").nth(column)


def test_a_supervisor_reads_the_days_metrics_charts_and_staffing_in_chromium(
    app: Flask, browser: Any, procfile_web: str, fake: FakeTwilio, make_user: MakeUser,  # noqa: F811
    publish_routing: Any, settings: Settings,
) -> None:  # fmt: skip
    expect = sync_api.expect
    database = settings.database_url.split(":")[0].split("+")[0]
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz",)))
    supervisor = make_user(SUPERVISOR, "sue", display_name="Sue Park")

    # Two callers choose English, then "mental health", through the real voice webhooks. Ana
    # answers the first; the second waits (Ana is busy) and hangs up.
    phone = Phone(RequestsTransport(), procfile_web, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
    first = phone.call([Keys("1"), Keys("3")], identity=phone.identity(ANSWERED_CALLER), max_hold_turns=1)
    assert first.ended_by == "on-hold"
    phone.answer(_wait_for_a_leg_to(fake, ANA), [Keys("1")])
    phone.resume(first, max_hold_turns=0)
    assert first.conference is not None
    second = phone.call([Keys("1"), Keys("3")], identity=phone.identity(WAITING_CALLER), max_hold_turns=1)
    assert second.ended_by == "on-hold"
    phone.hang_up(second)
    phone.hang_up(first)

    today = datetime.now(CHICAGO).date()  # the line's time zone; the period is a day either side
    period = f"from={today - timedelta(days=1)}&to={today + timedelta(days=2)}"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{procfile_web}/console/metrics?{period}&channel=voice")
        expect(page).to_have_url(
            re.compile(r"/console/sign-in\?next=%2Fconsole%2Fmetrics|/console/sign-in\?next=/console/metrics")
        )
        page.get_by_label("Username").fill(supervisor.username)
        page.get_by_label("Password").fill(supervisor.password)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/console/metrics"))  # back where they were going
        page.goto(f"{procfile_web}/console/metrics?{period}&channel=voice")

        # The numbers: two offered, one answered, one abandoned (within 30 s).
        expect(page.get_by_role("heading", name="Metrics", exact=True)).to_be_visible()
        expect(_metric(page, "Contacts offered")).to_have_text("2")
        expect(_metric(page, "Answered")).to_have_text("1")
        expect(_metric(page, "Answered by a counselor")).to_have_text("1")
        expect(_metric(page, "Answer rate")).to_have_text("50.0%")
        expect(_metric(page, "Abandoned")).to_have_text("1")
        expect(_metric(page, "Abandoned within 30 s")).to_have_text("1")
        expect(_metric(page, "Rolled over to the backup line")).to_have_text("0")
        assert float(_metric(page, "Speed to answer, mean (s)").inner_text()) >= 0

        # The charts: drawn on the server, named for a screen reader, one bar per day.
        contacts_chart = page.get_by_role("img", name=re.compile(r"^Voice contacts and answer rate per day"))
        expect(contacts_chart).to_be_visible()
        expect(contacts_chart.locator("rect.bar")).to_have_count(3)
        expect(contacts_chart.locator("desc")).to_contain_text("2 contacts offered over 3 days, 1 answered (50%)")
        expect(contacts_chart.locator("circle.rate-point")).to_have_count(1)  # the one day with calls
        speed_chart = page.get_by_role("img", name=re.compile(r"^Speed to answer, voice"))
        expect(speed_chart).to_be_visible()
        expect(speed_chart.locator("desc")).to_contain_text("1 answered contacts")
        box = contacts_chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 200
        content = page.content()
        assert "5550211" not in content and "5550212" not in content  # no caller's number anywhere
        shot(page, database, "20-metrics-voice-day")

        # Broken down by hour: one column per hour with contacts, beside "all".
        page.get_by_label("Broken down by").select_option("hour")
        page.get_by_role("button", name="Show").click()
        expect(page).to_have_url(re.compile(r"by=hour"))
        headers = page.locator("table.metrics thead th")
        expect(headers.nth(1)).to_have_text("all")
        hour_columns = headers.count() - 2
        assert hour_columns in (1, 2)  # both calls in one local hour, or either side of one
        offered_by_hour = [int(_metric(page, "Contacts offered", 1 + n).inner_text()) for n in range(hour_columns)]
        assert sum(offered_by_hour) == 2
        shot(page, database, "21-metrics-voice-by-hour")

        # Each number links to its definition, written for a coordinator.
        page.get_by_role("link", name="Answer rate", exact=True).click()
        expect(page).to_have_url(re.compile(r"/console/metrics/definitions#answer_rate$"))
        expect(page.locator("#answer_rate")).to_be_visible()
        shot(page, database, "22-metric-definitions")

        # Staffing: the last 4 weeks' demand against the rota, 7 x 24 cells. Two contacts in 4
        # weeks is half a contact a week; Ana is on call around the clock, so there is no gap.
        page.goto(f"{procfile_web}/console/metrics")
        page.get_by_role("link", name="Staffing", exact=True).click()
        expect(page).to_have_url(f"{procfile_web}/console/metrics/staffing")
        heatmap = page.get_by_role("img", name=re.compile(r"^Demand against responders on shift, all languages"))
        expect(heatmap).to_be_visible()
        cells = heatmap.locator("rect.cell")
        expect(cells).to_have_count(7 * 24)
        demand = cells.evaluate_all("cells => cells.map(cell => parseFloat(cell.dataset.demand))")
        assert abs(sum(demand) - 0.5) < 1e-6
        on_shift = cells.evaluate_all("cells => cells.map(cell => parseFloat(cell.dataset.onShift))")
        assert min(on_shift) >= 1
        expect(heatmap.locator("rect.gap")).to_have_count(0)
        shot(page, database, "23-staffing")

        # Spanish: nobody called in Spanish.
        page.get_by_label("Language", exact=True).select_option("es")
        page.get_by_role("button", name="Show").click()
        spanish = page.get_by_role("img", name=re.compile(r"^Demand against responders on shift, Spanish"))
        expect(spanish).to_be_visible()
        demand = spanish.locator("rect.cell").evaluate_all("cells => cells.map(c => parseFloat(c.dataset.demand))")
        assert sum(demand) == 0
        shot(page, database, "24-staffing-spanish")
    finally:
        context.close()
