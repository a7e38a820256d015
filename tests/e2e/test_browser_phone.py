"""The browser phone (``<stand-in>/phone/``) in Debian's Chromium, driven by Playwright, against
the real processes of the line (see conftest): a caller's pane calls the line and goes through
its menus by keypad, a counselor's pane rings, shows the whisper, accepts with 1, and both show
who they are connected with; then a texter's pane and the counselor's pane hold a whole text
conversation. Screenshots go to tests/e2e/screenshots/ (ignored by git)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import COUNSELOR_PHONES, Line, on_call

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "no Chromium at /usr/bin/chromium: `apt-get install chromium` (browsers are not downloaded)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
WAIT_MS = 20_000  # the page polls every second; the line's worker rings within a few


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_a_call_and_a_text_conversation_from_the_browser_phone(fresh_line: Line, browser: Any) -> None:
    expect = sync_api.expect
    line = fresh_line
    line.publish(on_call("diego-morales"))
    diego_number = COUNSELOR_PHONES["diego-morales"]
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    try:
        page = context.new_page()
        page.goto(f"{line.twilio_url}/phone/?add=caller&add=staff:{diego_number}")  # a raw + is read as +
        caller = page.locator("article.phone[data-role='caller']")
        diego = page.locator("article.phone[data-role='staff']")
        expect(diego.locator(".name")).to_have_text("Diego Morales")  # named from the published routing
        expect(page.locator("#staff-pick")).to_contain_text("Diego Morales (counselor, es/en)")

        # The caller calls: the language menu, each option in its own language.
        caller.get_by_role("button", name="Call the line").click()
        expect(caller.locator(".transcript")).to_contain_text("Para español, oprima 2", timeout=WAIT_MS)
        expect(caller).to_have_attribute("data-state", "listening")
        expect(caller.locator(".transcript li.say[data-language='[es-US]']").first).to_be_visible()
        shot(page, "01-caller-language-menu")
        caller.locator(".keypad button[data-key='2']").click()
        expect(caller.locator(".transcript")).to_contain_text("pensamientos de suicidio", timeout=WAIT_MS)
        expect(caller).to_have_attribute("data-state", "listening")
        caller.locator(".keypad button[data-key='2']").click()

        # Diego's phone rings while the caller holds; he answers, hears the whisper, presses 1.
        expect(diego).to_have_attribute("data-state", "ringing", timeout=WAIT_MS)
        expect(caller.locator(".status")).to_have_text("holding…")
        shot(page, "02-counselor-ringing-caller-holding")
        diego.get_by_role("button", name="Answer").click()
        expect(diego.locator(".transcript")).to_contain_text("Spanish-speaking caller", timeout=WAIT_MS)
        expect(diego).to_have_attribute("data-state", "listening")
        shot(page, "03-whisper")
        diego.get_by_role("button", name="1 · accept").click()

        expect(diego.locator(".status")).to_have_text("connected with the caller", timeout=WAIT_MS)
        expect(caller.locator(".status")).to_have_text(
            re.compile(r"connected with Diego Morales \(\+13125550104\)"), timeout=WAIT_MS
        )
        expect(page.locator("#rooms")).to_contain_text("Diego Morales")
        diego.get_by_label("Spoken words").fill("Hola, soy Diego. Estoy aquí contigo.")
        diego.get_by_role("button", name="Say").click()
        expect(caller.locator(".transcript")).to_contain_text("Diego Morales: Hola, soy Diego.", timeout=WAIT_MS)
        shot(page, "04-connected")

        # * takes Diego to the counselor menu (the caller stays in the room); 2 goes back.
        diego.locator(".keypad button[data-key='*']").click()
        expect(diego.locator(".transcript")).to_contain_text("Press 2 to go back to the caller", timeout=WAIT_MS)
        expect(diego).to_have_attribute("data-state", "listening")
        expect(caller.locator(".status")).to_have_text("connected (alone in the room)")
        diego.locator(".keypad button[data-key='2']").click()
        expect(diego.locator(".status")).to_have_text("connected with the caller", timeout=WAIT_MS)
        expect(caller.locator(".status")).to_have_text(re.compile("connected with Diego Morales"), timeout=WAIT_MS)
        caller.get_by_role("button", name="Hang up").click()
        expect(caller).to_have_attribute("data-state", "idle", timeout=WAIT_MS)
        expect(diego).to_have_attribute("data-state", "idle", timeout=WAIT_MS)  # the line ended his leg too

        # A texter's pane texts the line; Diego takes it and they write back and forth.
        page.get_by_role("button", name="+ Texter").click()
        texter = page.locator("article.phone[data-role='texter']")
        texter.get_by_label("Text message").fill("quiero morir, no sé qué hacer")
        texter.get_by_role("button", name="Send").click()
        expect(texter.locator(".texts")).to_contain_text("consejero", timeout=WAIT_MS)
        offer = diego.locator(".tags button", has_text=re.compile(r"^YES \d+$"))
        expect(offer).to_be_visible(timeout=WAIT_MS)
        tag = offer.inner_text().split()[1]
        offer.click()
        diego.get_by_role("button", name="Send").click()
        expect(diego.locator(".texts")).to_contain_text(f"You have #{tag}", timeout=WAIT_MS)
        diego.locator(".tags button", has_text=f"#{tag}").first.click()
        diego.get_by_label("Text message").press_sequentially("Hola, soy Diego. Estoy aquí contigo.")
        diego.get_by_role("button", name="Send").click()
        expect(texter.locator(".texts")).to_contain_text("Estoy aquí contigo", timeout=WAIT_MS)
        texter.get_by_label("Text message").fill("gracias, necesitaba hablar")
        texter.get_by_role("button", name="Send").click()
        expect(diego.locator(".texts")).to_contain_text(f"#{tag}: gracias, necesitaba hablar", timeout=WAIT_MS)
        shot(page, "05-text-conversation")
        assert diego_number not in texter.locator(".texts").inner_text()  # never the counselor's number
    finally:
        context.close()
