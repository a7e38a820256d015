"""The console in a real Chromium (Debian's), driven by Playwright, against the app served as
the Procfile serves it (gunicorn, over real HTTP): a supervisor signs in and watches the live
board pick up a caller who dialled in through the real voice webhooks; a counselor, on a
phone-sized screen, sees the call ringing for them and pauses; the board follows; the
supervisor unmasks the waiting caller with a reason; the counselor takes a text, replies from
the inbox, ends it and files its wrap-up; the audit log shows it all. Screenshots
of each page go to tests/console/screenshots/ (ignored by git)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from console.models import ADMIN, COUNSELOR, SUPERVISOR
from crisisline.settings import Settings
from tests.conftest import (
    LINE_NUMBER,
    ROOT,
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    TextingPhone,
    deployment_environment,
    procfile_argv,
)
from tests.console.conftest import Account, MakeUser
from tests.rota import ANA, around_the_clock, legs
from twilio_fake.phone import Keys, Phone, RequestsTransport
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.server import FakeTwilioServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "no Chromium at /usr/bin/chromium: `apt-get install chromium` (.ci/run installs it)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
# Headless, and quiet: this machine's network is closed, so no background fetches.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
TEXTER = "+13125550177"
BOARD_REFRESH_WAIT_MS = 20_000  # the board polls every 5 s; a loaded CI machine gets some slack


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def procfile_web(
    app: Flask, settings: Settings, fake_twilio_server: FakeTwilioServer, app_port: int, tmp_path: Path
) -> Iterator[str]:
    """The Procfile's ``web`` process (gunicorn with gunicorn.conf.py) on this test's database,
    Redis and fake Twilio; yields its base URL once it answers."""
    base_url = f"http://127.0.0.1:{app_port}"
    env = {
        **os.environ,
        **deployment_environment(
            settings.database_url, settings.redis_url,
            TWILIO_API_BASE_URL=fake_twilio_server.base_url, PUBLIC_BASE_URL=base_url,
        ),
        "BIND_HOST": "127.0.0.1", "PORT": str(app_port), "WEB_CONCURRENCY": "1", "WEB_THREADS": "4",
    }  # fmt: skip
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(procfile_argv("web"), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            try:
                if requests.get(base_url + "/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still loading the app
                pass
            assert time.monotonic() < deadline, "gunicorn did not start within 60 s"
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def shot(page: Any, database: str, name: str) -> None:
    folder = SCREENSHOTS / database
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@contextmanager
def board_open_for_a_supervisor(browser: Any, base_url: str, make_user: MakeUser) -> Iterator[Any]:
    """Sue, a supervisor, signed in with the live board open on a desktop-sized screen."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        sign_in(page, base_url, make_user(SUPERVISOR, "sue-supervisor"))
        page.goto(base_url + "/console/board")
        yield page
    finally:
        context.close()


def sign_in(page: Any, base_url: str, account: Account) -> None:
    page.goto(base_url + "/console/sign-in")
    page.get_by_label("Username").fill(account.username)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in").click()


def test_a_supervisor_watches_a_caller_arrive_and_a_counselor_pauses_from_their_phone(
    app: Flask, browser: Any, procfile_web: str, fake: FakeTwilio, make_user: MakeUser,
    publish_routing: Callable[..., int], settings: Settings,
) -> None:  # fmt: skip
    expect = sync_api.expect
    database = settings.database_url.split(":")[0].split("+")[0]
    publish_routing(lambda document: around_the_clock(document, on_call=("ana-ruiz",)))
    supervisor = make_user(SUPERVISOR, "sue", display_name="Sue Park")
    counselor = make_user(COUNSELOR, "ana", display_name="Ana Ruiz")
    admin = make_user(ADMIN, "ada", display_name="Ada Admin")

    desk_context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    board_context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        # The supervisor signs in; nobody waits yet.
        board = board_context.new_page()
        board.goto(procfile_web + "/console/board")
        expect(board).to_have_url(procfile_web + "/console/sign-in?next=/console/board")
        shot(board, database, "01-sign-in")
        board.get_by_label("Username").fill(supervisor.username)
        board.get_by_label("Password").fill("not the password")
        board.get_by_role("button", name="Sign in").click()
        expect(board.locator("#refusal")).to_contain_text("do not match an active account")
        board.get_by_label("Username").fill(supervisor.username)
        board.get_by_label("Password").fill(supervisor.password)
        board.get_by_role("button", name="Sign in").click()
        expect(board).to_have_url(procfile_web + "/console/board")
        expect(board.locator("#queue-rows")).to_contain_text("Nobody is waiting.")

        # A person calls the line through the real voice webhooks and chooses "mental health":
        # Ana's phone rings, and the open board picks the caller up by itself.
        phone = Phone(RequestsTransport(), procfile_web, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
        call = phone.call([Keys("1"), Keys("3")], identity=phone.identity("+13125550201"), max_hold_turns=1)
        assert call.ended_by == "on-hold"
        assert [leg.to for leg in legs(fake)] == [ANA]
        queue = board.locator("#queue-rows")
        expect(queue).to_contain_text("Mental health", timeout=BOARD_REFRESH_WAIT_MS)
        expect(queue).to_contain_text("English")
        expect(board.locator("#waiting-count")).to_have_text("1")
        ana_row = board.locator("#responder-rows tr[data-responder='ana-ruiz']")
        expect(ana_row).to_contain_text("ringing")
        assert "5550201" not in board.content()
        shot(board, database, "02-live-board-caller-waiting")

        # Ana, on her phone: the call ringing for her, then the availability switch.
        desk = desk_context.new_page()
        desk.goto(procfile_web + "/console/me")  # signs in with the keyboard alone
        desk.get_by_label("Username").focus()
        desk.keyboard.type(counselor.username)
        desk.keyboard.press("Tab")
        desk.keyboard.type(counselor.password)
        desk.keyboard.press("Enter")
        expect(desk).to_have_url(procfile_web + "/console/me")
        expect(desk.locator("#my-contacts")).to_contain_text("voice: ringing")
        expect(desk.locator("#my-contacts")).to_contain_text("English · Mental health")
        shot(desk, database, "03-counselor-ringing")
        desk.get_by_role("button", name="Pause me").click()
        expect(desk.get_by_role("status").first).to_contain_text("You are paused")
        expect(desk.get_by_role("button", name="Take contacts again")).to_be_visible()
        shot(desk, database, "04-counselor-paused")

        # The board follows without a reload.
        expect(ana_row).to_contain_text("(self)", timeout=BOARD_REFRESH_WAIT_MS)
        shot(board, database, "05-live-board-counselor-paused")

        desk.get_by_role("button", name="Take contacts again").click()
        expect(desk.get_by_role("button", name="Pause me")).to_be_visible()

        # The supervisor unmasks the waiting caller, with a reason.
        board.get_by_role("link", name=re.compile("^Emergency unmask")).click()
        board.get_by_role("button", name=re.compile(r"^Unmask the call")).first.click()  # no reason: refused
        expect(board.get_by_role("alert").first).to_contain_text("Give a reason")
        board.get_by_label(re.compile("^Reason")).first.fill("Caller said they took pills, then went silent")
        board.get_by_role("button", name=re.compile(r"^Unmask the call")).first.click()
        expect(board.locator("#unmasked-number")).to_have_text("+13125550201")
        shot(board, database, "08-emergency-unmask")

        # The caller hangs up: Ana is free, and a person texts the line.
        phone.hang_up(call)
        expect(desk.locator("#my-contacts")).to_contain_text("Nothing right now.", timeout=BOARD_REFRESH_WAIT_MS)
        # Ana takes the text from her page and replies from the inbox.
        texting = TextingPhone(procfile_web, fake)
        texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
        take = desk.get_by_role("button", name=re.compile(r"^Take text #"))
        expect(take).to_be_visible(timeout=BOARD_REFRESH_WAIT_MS)
        take.click()
        inbox = desk.locator("#inbox")
        expect(inbox).to_contain_text("panic attacks")
        desk.get_by_label(re.compile(r"^Reply to #")).fill("I'm here with you. Are you somewhere safe?")
        desk.get_by_role("button", name="Send reply").click()
        expect(desk.get_by_role("status").first).to_contain_text("Sent to #")
        expect(inbox).to_contain_text("Are you somewhere safe?")
        assert "I'm here with you. Are you somewhere safe?" in texting.inbox(TEXTER)
        assert "5550177" not in desk.content()
        shot(desk, database, "09-counselor-inbox-reply")

        # She ends it, and wraps it up: the person agreed to a check-in.
        desk.get_by_role("button", name=re.compile(r"^End conversation #")).click()
        expect(desk.get_by_role("status").first).to_contain_text("is closed")
        desk.get_by_role("link", name=re.compile(r"^Wrap up the text #")).click()
        desk.get_by_label("De-escalated").check()
        desk.get_by_label(re.compile("agreed to a check-in")).check()
        desk.get_by_label(re.compile("^Short note")).fill("Breathing exercise helped; sister with her tonight")
        shot(desk, database, "10-counselor-wrap-up")
        desk.get_by_role("button", name="Save wrap-up").click()
        expect(desk.get_by_role("status").first).to_contain_text("A check-in is scheduled.")

        # The audit log shows who signed in, failed to, switched availability, unmasked (with
        # the reason) and wrapped up (without the note).
        board.get_by_role("link", name="Audit log").click()
        log = board.locator("table")
        expect(log).to_contain_text("availability_changed")
        expect(log).to_contain_text("unmask")
        expect(log).to_contain_text("took pills")
        expect(log).to_contain_text("wrap_up")
        assert "sister" not in board.content()
        expect(log).to_contain_text("sign_in_failed")
        shot(board, database, "06-audit-log")

        # Signing out; an administrator adds a counselor account from the Accounts page.
        board.get_by_role("button", name="Sign out").click()
        expect(board.get_by_role("status").first).to_contain_text("You are signed out.")
        sign_in(board, procfile_web, admin)
        board.get_by_role("link", name="Accounts").click()
        board.get_by_label("Username").fill("ben")
        board.get_by_label("Name shown in the console").fill("Ben Carter")
        board.get_by_label("Role").select_option("counselor")
        board.get_by_label("Responder id").fill("ben-carter")
        board.get_by_label("Password").fill("a long enough passphrase")
        board.get_by_role("button", name="Add account").click()
        expect(board.get_by_role("status").first).to_contain_text("Account ben created.")
        expect(board.locator("table")).to_contain_text("ben-carter")
        shot(board, database, "07-accounts")
    finally:
        desk_context.close()
        board_context.close()


def test_an_admin_changes_the_routing_safely_in_the_browser(
    app: Flask, browser: Any, procfile_web: str, make_user: MakeUser, settings: Settings
) -> None:
    """Edit a need's prompt, preview the diff, publish with a note, see it in history; an
    invalid change and a stale one refused with the live config unchanged; roll back; add a
    counselor (an invalid phone first), then a shift, and see the simulator pick them and the
    coverage gap close."""
    from routing import publishing, store

    expect = sync_api.expect
    database = settings.database_url.split(":")[0].split("+")[0]
    admin = make_user(ADMIN, "ada", display_name="Ada Admin")

    def live_text() -> tuple[int, str]:
        with app.app_context():
            version = publishing.live_version()
            assert version is not None
            return version.id, store.source_of(version)

    first, original = live_text()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        sign_in(page, procfile_web, admin)
        page.get_by_role("link", name="Routing", exact=True).click()
        expect(page.locator("#live-version")).to_contain_text(f"Version {first}")
        editor = page.get_by_label("Routing YAML")
        assert editor.input_value() == original

        # A need's label (what the menu says for it), edited in the YAML, previewed, published.
        label = "labels: {en: drug or alcohol use, es: drogas o alcohol}"
        editor.fill(original.replace(label, "labels: {en: drugs or alcohol, es: drogas o alcohol}"))
        page.get_by_role("button", name="Preview").click()
        expect(page.locator("#verdict")).to_contain_text("ready to publish")
        expect(page.locator("#preview-diff")).to_contain_text("+    labels: {en: drugs or alcohol")
        expect(page.locator("#warnings")).to_contain_text("coverage gap")
        shot(page, database, "11-routing-preview")
        page.get_by_role("button", name="Publish").click()  # no note: refused
        expect(page.locator("#refusal")).to_contain_text("a note saying why is required")
        assert live_text() == (first, original)
        page.get_by_label(re.compile("^Note")).fill("Shorter label for drugs and alcohol")
        page.get_by_role("button", name="Publish").click()
        expect(page).to_have_url(procfile_web + "/console/routing/history")
        second, edited = live_text()
        assert second == first + 1 and "drugs or alcohol" in edited
        expect(page.locator(f"#version-{second}")).to_contain_text("Shorter label for drugs and alcohol")
        expect(page.locator(f"#version-{second}")).to_contain_text("(live)")
        shot(page, database, "12-routing-history")

        # An invalid change: refused, shown at its line, nothing published.
        page.get_by_role("link", name="Editor").click()
        page.get_by_label("Routing YAML").fill(
            edited.replace("  timezone: America/Chicago", "  timezone: Mars/Olympus")
        )
        page.get_by_label(re.compile("^Note")).fill("a typo")
        page.get_by_role("button", name="Publish").click()
        expect(page.locator("#refusal")).to_contain_text("Not published: 1 error(s)")
        error_link = page.locator("#errors a.line-link").first
        expect(error_link).to_contain_text("line ")
        error_link.click()
        line = error_link.get_attribute("data-line")
        expect(page.locator(f"#line-{line}")).to_have_class(re.compile(r"\berror\b"))
        expect(page.get_by_label("Routing YAML")).to_be_focused()  # the cursor on that line too
        shot(page, database, "13-routing-invalid-refused")
        assert live_text() == (second, edited)

        # A stale draft: someone publishes meanwhile, on the same line: refused, merged by hand.
        page.get_by_role("link", name="Editor").click()
        page.get_by_label("Routing YAML").fill(edited.replace("retries: 2", "retries: 4"))
        with app.app_context():
            theirs = publishing.publish(
                edited.replace("retries: 2", "retries: 3"), base=second, note="three retries", author="bob"
            ).version
        page.get_by_label(re.compile("^Note")).fill("four retries")
        page.get_by_role("button", name="Publish").click()
        expect(page.locator("#stale")).to_contain_text(f"The live version is {theirs}")
        expect(page.locator("#merge-result")).to_contain_text("Merge by hand")
        expect(page.locator("#theirs-diff")).to_contain_text("+  retries: 3")
        shot(page, database, "14-routing-stale-refused")
        assert live_text()[0] == theirs

        # Roll back to the first version: a new version with the old text.
        page.get_by_role("link", name="History").click()
        page.get_by_label(f"Why roll back to version {first} (optional)").fill("back to the original")
        page.get_by_role("button", name=f"Roll back to version {first}").click()
        expect(page.get_by_role("status").first).to_contain_text(f"the text of version {first}")
        rolled, text_now = live_text()
        assert rolled == theirs + 1 and text_now == original

        # A new counselor: an invalid phone first, then a valid one; the draft is published.
        page.get_by_role("link", name="People and shifts").click()
        page.get_by_label(re.compile("^Id")).fill("fay-lopez")
        page.get_by_label("Name", exact=True).fill("Fay Lopez")
        page.get_by_label(re.compile("^Phone number")).fill("555-12")
        page.locator("#responder-form").get_by_label("English").check()
        page.locator("#responder-form").get_by_label("drug or alcohol use").check()
        page.get_by_role("button", name="Preview the new responder").click()
        expect(page.locator("#phone-errors")).to_contain_text("is not a valid phone number")
        shot(page, database, "15-routing-person-invalid-phone")
        page.get_by_label(re.compile("^Phone number")).fill("+1 312 555 0109")
        page.get_by_role("button", name="Preview the new responder").click()
        expect(page.locator("#draft-of")).to_contain_text("adding Fay Lopez")
        expect(page.locator("#preview-diff")).to_contain_text('+    phone: "+13125550109"')
        page.get_by_label(re.compile("^Note")).fill("Fay joins")
        page.get_by_role("button", name="Publish").click()
        expect(page).to_have_url(procfile_web + "/console/routing/history")

        # Saturday 03:00, drug or alcohol use: nobody, until Fay's night shift is published.
        page.get_by_role("link", name="Simulator").first.click()
        page.get_by_label("Language").select_option("en")
        page.get_by_label("Need").select_option("substance_use")
        page.get_by_label("Day").select_option("sat")
        page.get_by_label("Time").fill("03:00")
        page.get_by_role("button", name="Simulate").click()
        expect(page.locator("#rung")).to_contain_text("Nobody is rung")
        page.get_by_role("link", name="People and shifts").click()
        page.get_by_label("Who").select_option("fay-lopez")
        for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"):
            page.locator("#shift-form").get_by_label(day).check()
        page.get_by_label(re.compile("^Start")).fill("00:00")
        page.get_by_label(re.compile("^End")).fill("08:00")
        page.get_by_role("button", name="Preview the new shift").click()
        expect(page.locator("#draft-of")).to_contain_text("a shift for Fay Lopez")
        page.get_by_label(re.compile("^Note")).fill("Fay's nights")
        page.get_by_role("button", name="Publish").click()
        expect(page).to_have_url(procfile_web + "/console/routing/history")
        page.goto(procfile_web + "/console/routing/simulator?language=en&need=substance_use&day=sat&time=03:00")
        expect(page.locator("#rung")).to_contain_text("Fay Lopez")
        shot(page, database, "16-routing-simulator")
        page.get_by_role("link", name="Coverage").first.click()
        expect(page.locator("#coverage-summary")).to_be_visible()
        assert page.locator("#cov-en-substance_use").count() == 0  # the English gap closed
        shot(page, database, "17-routing-coverage")
    finally:
        context.close()


def test_a_supervisor_sees_a_text_the_line_could_not_handle_appear_and_marks_it_taken_over(
    app: Flask, browser: Any, live_server: str, texting: TextingPhone, monkeypatch: pytest.MonkeyPatch,
    make_user: MakeUser, clock_tick: Callable[[], Any], settings: Settings,
) -> None:  # fmt: skip
    from datetime import timedelta

    from sqlalchemy import select

    from crisisline.db import db
    from crisisline.models import Message
    from sms import conversations as convo
    from tests.sms.stuck import HandlingFails

    expect = sync_api.expect
    database = settings.database_url.split(":")[0].split("+")[0]
    with board_open_for_a_supervisor(browser, live_server, make_user) as page:
        stuck = page.locator("#stuck-texts")
        expect(stuck).to_be_hidden()

        HandlingFails(monkeypatch)
        texting.send(TEXTER, "I want to kill myself")
        with app.app_context():  # the text arrived past the escalation time, retried all along
            for message in db.session.scalars(select(Message)):
                message.created_at -= convo.ESCALATE_AFTER * 2
            db.session.commit()
        assert clock_tick()["texts"]["escalated"] == 1

        rows = page.locator("#stuck-rows tr")
        expect(rows).to_have_count(1, timeout=BOARD_REFRESH_WAIT_MS)  # drawn by the board's own refresh
        expect(stuck).to_be_visible()
        expect(rows.first).to_contain_text("texter")
        expect(rows.first).to_contain_text("yes (1)")  # Sam, the one supervisor, was texted
        expect(page.get_by_role("alert")).to_contain_text("the backup line")
        assert "kill" not in page.content() and "5550177" not in page.content()
        shot(page, database, "board-stuck-text")

        rows.first.get_by_role("button", name="A person has this").click()

        expect(page.get_by_role("status").first).to_contain_text("taken over by a person")
        expect(page.locator("#stuck-texts")).to_be_hidden()
        with app.app_context():
            assert db.session.scalars(convo.stuck_texts(convo.now() + timedelta(seconds=1))).all() == []


def test_a_supervisors_open_board_shows_someone_who_wrote_after_stop_and_points_to_the_emergency_page(
    browser: Any, live_server: str, texting: TextingPhone, make_user: MakeUser, clock_tick: Callable[[], Any],
    settings: Settings,
) -> None:  # fmt: skip
    expect = sync_api.expect
    database = settings.database_url.split(":")[0].split("+")[0]
    with board_open_for_a_supervisor(browser, live_server, make_user) as page:
        section = page.locator("#after-stop-texts")
        expect(section).to_be_hidden()

        texting.send(TEXTER, "STOP")
        texting.send(TEXTER, "I want to kill myself")
        clock_tick()  # the supervisors are texted

        rows = page.locator("#after-stop-rows tr")
        expect(rows).to_have_count(1, timeout=BOARD_REFRESH_WAIT_MS)  # drawn by the board's own refresh
        expect(section).to_be_visible()
        expect(rows.first).to_contain_text("yes (1)", timeout=BOARD_REFRESH_WAIT_MS)  # drawn "not yet" first
        expect(section.get_by_role("link", name="emergency unmask")).to_be_visible()
        assert "kill" not in page.content() and "5550177" not in page.content()
        shot(page, database, "board-after-stop")

        texting.send(TEXTER, "START")
        expect(section).to_be_hidden(timeout=BOARD_REFRESH_WAIT_MS)


def test_a_supervisors_open_board_shows_a_check_in_that_needs_a_person_and_marks_it_followed_up(
    app: Flask, browser: Any, live_server: str, make_user: MakeUser, settings: Settings
) -> None:
    from datetime import UTC, datetime, timedelta

    from crisisline.db import db
    from crisisline.models import CheckIn

    expect = sync_api.expect
    database = settings.database_url.split(":")[0].split("+")[0]
    with board_open_for_a_supervisor(browser, live_server, make_user) as page:
        section = page.locator("#flagged-checkins")
        expect(section).to_be_hidden()
        now = datetime.now(UTC)
        with app.app_context():  # two check-in texts went unanswered (tests/followups show how)
            checkin = CheckIn(
                dedupe_key="text:999", origin="text", language="en", need="suicide", state="flagged",
                asked_at=now - timedelta(hours=21), sent_at=now - timedelta(hours=8), flagged_at=now,
                flag_reason="no_reply",
            )  # fmt: skip
            db.session.add(checkin)
            db.session.commit()
            case = f"C{checkin.id}"

        rows = page.locator("#flagged-rows tr")
        expect(rows).to_have_count(1, timeout=BOARD_REFRESH_WAIT_MS)  # drawn by the board's own refresh
        expect(section).to_be_visible()
        expect(rows.first).to_contain_text(case)
        expect(rows.first).to_contain_text("no reply to two check-in texts")
        shot(page, database, "board-flagged-checkin")

        rows.first.get_by_role("button", name="Followed up").click()

        expect(page.get_by_role("status").first).to_contain_text(f"Check-in {case} is marked as followed up")
        expect(page.locator("#flagged-checkins")).to_be_hidden()


def test_a_supervisors_open_board_shows_a_text_that_did_not_reach_its_texter(
    app: Flask, browser: Any, live_server: str, client: FlaskClient, texting: TextingPhone, fake: FakeTwilio,
    make_user: MakeUser, publish_routing: Callable[..., int], settings: Settings,
) -> None:  # fmt: skip
    from tests.console.test_delivery_in_the_thread import take_a_text
    from tests.console.test_inbox_and_wrap_up import post

    expect = sync_api.expect
    database = settings.database_url.split(":")[0].split("+")[0]
    with board_open_for_a_supervisor(browser, live_server, make_user) as page:
        section = page.locator("#undelivered-texts")
        expect(section).to_be_hidden()

        thread = take_a_text(client, texting, publish_routing, make_user)  # Ana, from her own browser session
        assert (
            post(client, f"{thread}/reply", body="Are you somewhere safe?", key="reply-key-200000000000").status_code
            == 302
        )
        (sent,) = [m for m in fake.messages.values() if m.to == TEXTER and m.body == "Are you somewhere safe?"]
        fake.deliver_message(sent.sid, "undelivered", 30003)

        rows = page.locator("#undelivered-rows tr")
        expect(rows).to_have_count(1, timeout=BOARD_REFRESH_WAIT_MS)  # drawn by the board's own refresh
        expect(section).to_be_visible()
        expect(rows.first).to_contain_text("#" + thread.rsplit("/", 1)[1])
        expect(rows.first).to_contain_text("Ana Ruiz")
        expect(rows.first).to_contain_text("Not delivered: their phone is off or out of signal.")
        assert "somewhere safe" not in page.content() and "5550177" not in page.content()
        shot(page, database, "board-undelivered-text")


def test_a_supervisors_open_board_shows_a_follow_up_the_line_could_not_finish(
    app: Flask, browser: Any, live_server: str, make_user: MakeUser, settings: Settings
) -> None:
    from datetime import UTC, datetime

    from console.board.live import UNFINISHED_KINDS
    from crisisline.db import db
    from crisisline.models import ScheduledContact

    expect = sync_api.expect
    database = settings.database_url.split(":")[0].split("+")[0]
    with board_open_for_a_supervisor(browser, live_server, make_user) as page:
        section = page.locator("#unfinished-contacts")
        expect(section).to_be_hidden()
        now = datetime.now(UTC)
        with app.app_context():  # its runs kept failing (tests/callbacks show how)
            contact = ScheduledContact(
                kind="missed_contact", dedupe_key="missed:999", due_at=now, state="needs_human",
                outcome="worker_died_mid_send", finished_at=now,
            )  # fmt: skip
            db.session.add(contact)
            db.session.commit()
            contact_id = contact.id

        rows = page.locator("#unfinished-rows tr")
        expect(rows).to_have_count(1, timeout=BOARD_REFRESH_WAIT_MS)  # drawn by the board's own refresh
        expect(section).to_be_visible()
        expect(rows.first).to_contain_text(str(contact_id))
        expect(rows.first).to_contain_text(UNFINISHED_KINDS["missed_contact"])
        shot(page, database, "board-unfinished-follow-up")

        rows.first.get_by_role("button", name="A person has this").click()  # the form the script drew

        expect(page.get_by_text(f"Follow-up {contact_id} is marked as taken over by a person.")).to_be_visible()
        expect(section).to_be_hidden()
        with app.app_context():
            assert db.session.get(ScheduledContact, contact_id).state == "taken_over"  # type: ignore[union-attr]
