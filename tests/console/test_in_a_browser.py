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
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from console.models import ADMIN, COUNSELOR, SUPERVISOR
from crisisline.settings import Settings
from tests.conftest import LINE_NUMBER, ROOT, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TextingPhone, deployment_environment
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
    command = [sys.executable, "-m", "gunicorn", "crisisline:create_app()", "--config", "gunicorn.conf.py"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
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
