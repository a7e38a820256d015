"""A reply being typed to a texter survives the console's own comings and goings, in a real
Chromium (as in test_in_a_browser.py) against the app served over HTTP: the idle sign-out the
desk's refresh leads to, a reply sent after the session ended (idle, or its cookie gone), and
the full thread's page, which shows the texter's new texts as they come without touching the
reply box. The words are kept in the tab (sessionStorage), never by the server, and dropped
once sent."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from console.models import COUNSELOR
from tests.conftest import TextingPhone
from tests.console.conftest import Account, MakeUser
from tests.console.test_board_and_desk import only_ana_on_call
from tests.console.test_in_a_browser import BOARD_REFRESH_WAIT_MS, browser, sign_in, sync_api
from tests.console.test_inbox_and_wrap_up import offered_tag
from tests.rota import ANA

__all__ = ["browser"]  # a fixture, used by name

TEXTER = "+13125550177"
TYPED = "Breathe with me: in for four,\nhold for four."
REFRESH_WAIT_MS = BOARD_REFRESH_WAIT_MS  # the pages poll every 5 s; a loaded machine gets some slack


@pytest.fixture
def anas_text(texting: TextingPhone, publish_routing: Callable[..., int], make_user: MakeUser) -> tuple[Account, str]:
    """Ana's account, and the tag of a text conversation she took from her phone."""
    only_ana_on_call(publish_routing)
    ana = make_user(COUNSELOR, "ana", display_name="Ana Ruiz")
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    return ana, tag


@pytest.fixture
def on_her_phone(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def idle_timeout(app: Flask) -> Iterator[Callable[[int], None]]:
    """Set the console's idle timeout (minutes) for the app the browser talks to; 0 ends a
    session at its next request."""
    before = app.config["CONSOLE_IDLE_MINUTES"]
    yield lambda minutes: app.config.update(CONSOLE_IDLE_MINUTES=minutes)
    app.config["CONSOLE_IDLE_MINUTES"] = before


def click(page: Any, locator: Any) -> None:
    """Click, and let the page it leads to load: its scripts have run (its text can show before
    they do), and leaving it next aborts none of its requests (the test server would leak the file)."""
    locator.click()
    page.wait_for_load_state()


def sign_in_here(page: Any, account: Account) -> None:
    """On the sign-in page the console sent her to."""
    page.wait_for_load_state()
    page.get_by_label("Username").fill(account.username)
    page.get_by_label("Password").fill(account.password)
    click(page, page.get_by_role("button", name="Sign in"))


def signed_in(page: Any, base_url: str, account: Account) -> None:
    sign_in(page, base_url, account)
    page.wait_for_load_state()


def kept_drafts(page: Any) -> list[str]:
    page.wait_for_load_state()
    return list(page.evaluate("Object.keys(window.sessionStorage).filter((key) => key.startsWith('console-reply:'))"))


def sent_to_the_texter(texting: TextingPhone) -> list[str]:
    return [text for text in texting.inbox(TEXTER) if "Breathe" in text]


def test_a_reply_being_typed_on_the_desk_is_back_in_its_box_after_the_idle_sign_out(
    live_server: str, on_her_phone: Any, texting: TextingPhone, anas_text: tuple[Account, str],
    idle_timeout: Callable[[int], None],
) -> None:  # fmt: skip
    expect = sync_api.expect
    ana, tag = anas_text
    page = on_her_phone.new_page()
    signed_in(page, live_server, ana)
    expect(page).to_have_url(live_server + "/console/me")
    box = page.locator(f"#reply-{tag}")
    box.fill(TYPED)

    # A new text from the texter changes the inbox: the desk does not reload over the words.
    page.evaluate("window.notReloaded = true")
    texting.send(TEXTER, "are you still there?")
    with page.expect_response(re.compile(r"/console/me\.json$"), timeout=REFRESH_WAIT_MS):
        pass
    page.wait_for_timeout(500)  # what the page does with it
    assert page.evaluate("window.notReloaded === true")
    expect(box).to_have_value(TYPED)

    # Her session ends: the desk's own refresh sends her to sign in, and back to the desk.
    idle_timeout(0)
    expect(page).to_have_url(re.compile(r"/console/sign-in"), timeout=REFRESH_WAIT_MS)
    idle_timeout(30)
    sign_in_here(page, ana)
    expect(page).to_have_url(live_server + "/console/me")
    expect(box).to_have_value(TYPED)
    assert sent_to_the_texter(texting) == []

    # Sent, the copy kept in the tab goes: a reload shows an empty box.
    click(page, page.get_by_role("button", name="Send reply"))
    expect(page.get_by_role("status").first).to_contain_text(f"Sent to #{tag}")
    assert sent_to_the_texter(texting) == [TYPED]
    assert kept_drafts(page) == []
    page.reload()
    expect(page.locator(f"#reply-{tag}")).to_have_value("")

    # Signing out drops whatever the tab kept.
    page.locator(f"#reply-{tag}").fill("Something half written")
    assert kept_drafts(page) != []
    click(page, page.get_by_role("button", name="Sign out"))
    expect(page.get_by_role("status").first).to_contain_text("You are signed out.")
    assert kept_drafts(page) == []


@pytest.mark.parametrize("ended_by", ["idle timeout", "cookie gone"])
def test_a_reply_sent_after_the_session_ended_is_back_in_its_box_after_signing_in(
    live_server: str, on_her_phone: Any, texting: TextingPhone, anas_text: tuple[Account, str],
    idle_timeout: Callable[[int], None], ended_by: str,
) -> None:  # fmt: skip
    """From the thread's page: its own refresh is held off here, so the reply is what meets the
    ended session (the sign-in page, or, without the cookie, the form refused)."""
    expect = sync_api.expect
    ana, tag = anas_text
    page = on_her_phone.new_page()
    page.route(re.compile(r"/console/me/texts/\d+\.json$"), lambda route: route.abort())
    signed_in(page, live_server, ana)
    page.goto(live_server + f"/console/me/texts/{tag}")
    page.get_by_label(f"Reply to #{tag}").fill(TYPED)

    if ended_by == "idle timeout":
        idle_timeout(0)
        click(page, page.get_by_role("button", name="Send reply"))
        expect(page).to_have_url(re.compile(r"/console/sign-in$"))
        expect(page.get_by_role("status").first).to_contain_text("signed out after a time without activity")
        idle_timeout(30)
    else:
        on_her_phone.clear_cookies()
        click(page, page.get_by_role("button", name="Send reply"))
        expect(page.get_by_role("heading", name="This form could not be accepted")).to_be_visible()
        page.goto(live_server + "/console/me")
        expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    assert sent_to_the_texter(texting) == []
    assert "Breathe" not in page.content()  # the server did not hand the words back: the tab kept them

    sign_in_here(page, ana)
    expect(page).to_have_url(live_server + "/console/me")
    expect(page.locator(f"#reply-{tag}")).to_have_value(TYPED)
    click(page, page.get_by_role("button", name="Send reply"))
    expect(page.get_by_role("status").first).to_contain_text(f"Sent to #{tag}")
    assert sent_to_the_texter(texting) == [TYPED]
    assert kept_drafts(page) == []


def test_the_full_thread_shows_new_texts_without_touching_the_reply_being_typed(
    live_server: str, on_her_phone: Any, texting: TextingPhone, anas_text: tuple[Account, str]
) -> None:
    expect = sync_api.expect
    ana, tag = anas_text
    page = on_her_phone.new_page()
    signed_in(page, live_server, ana)
    page.goto(live_server + f"/console/me/texts/{tag}")
    box = page.get_by_label(f"Reply to #{tag}")
    box.fill("I hear you. Are you somewhere")
    page.evaluate("window.notReloaded = true")
    messages = page.locator("ol.messages")

    texting.send(TEXTER, "are you still there? it's getting worse")

    expect(messages).to_contain_text("it's getting worse", timeout=REFRESH_WAIT_MS)
    expect(messages.locator("li.from-texter").last).to_contain_text("Texter")
    assert page.evaluate("window.notReloaded === true")
    expect(box).to_have_value("I hear you. Are you somewhere")
    expect(box).to_be_focused()
    assert "5550177" not in page.content()

    # The texter leaves: the page says so, and the words typed stay to copy.
    texting.send(TEXTER, "STOP")
    expect(page.locator("#thread-gone")).to_contain_text(f"#{tag} is closed", timeout=REFRESH_WAIT_MS)
    expect(box).to_have_value("I hear you. Are you somewhere")
