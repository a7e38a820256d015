"""The counselor's desk on her phone, in a real Chromium (as in test_in_a_browser.py) against the
app served over HTTP: its refresh every few seconds leaves the keyboard focus where it was (on
a Take button), and says what changed to screen readers (a text offered, a call ringing) once,
not on every refresh. Found by review: the list was redrawn from new nodes on every refresh,
and nothing was announced."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from console.models import COUNSELOR
from tests.conftest import TextingPhone
from tests.console.conftest import Account, MakeUser
from tests.console.test_board_and_desk import MENTAL_HEALTH, caller, only_ana_on_call
from tests.console.test_in_a_browser import BOARD_REFRESH_WAIT_MS, browser, sign_in, sync_api
from tests.console.test_inbox_and_wrap_up import offered_tag
from twilio_fake.phone import Phone

__all__ = ["browser"]  # a fixture, used by name

TEXTER = "+13125550177"
CALLER = "+13125550201"
REFRESH_WAIT_MS = BOARD_REFRESH_WAIT_MS  # the desk polls every 5 s; a loaded machine gets some slack
ME_JSON = re.compile(r"/console/me\.json$")


@pytest.fixture
def ana(publish_routing: Callable[..., int], make_user: MakeUser) -> Account:
    only_ana_on_call(publish_routing)
    return make_user(COUNSELOR, "ana", display_name="Ana Ruiz")


@pytest.fixture
def desk(browser: Any, live_server: str, ana: Account) -> Iterator[Any]:
    """Ana's desk open on her phone."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        sign_in(page, live_server, ana)
        sync_api.expect(page).to_have_url(live_server + "/console/me")
        page.wait_for_load_state()
        yield page
    finally:
        context.close()


def refreshes(page: Any, count: int) -> None:
    """Let the desk refresh ``count`` times, and draw what it got."""
    for _ in range(count):
        with page.expect_response(ME_JSON, timeout=REFRESH_WAIT_MS):
            pass
    page.wait_for_timeout(500)


def test_a_text_offered_is_announced_once_and_the_focused_take_button_keeps_the_focus(
    desk: Any, texting: TextingPhone, phone: Phone
) -> None:
    expect = sync_api.expect
    said = desk.get_by_role("status").filter(has_text="offered")
    expect(said).to_have_count(0)

    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    take = desk.get_by_role("button", name=f"Take text #{tag}")
    expect(take).to_be_visible(timeout=REFRESH_WAIT_MS)
    expect(said).to_have_text(f"Text #{tag} offered to you.")
    assert "5550177" not in desk.content()

    take.focus()
    desk.evaluate("window.notReloaded = true")
    desk.evaluate("document.getElementById('desk-said').textContent = ''")
    refreshes(desk, 2)  # the time it waited ticks on: the list is redrawn where it changed
    expect(take).to_be_focused()
    expect(desk.locator("#desk-said")).to_have_text("")  # nothing new: nothing said again
    assert desk.evaluate("window.notReloaded === true")

    # Her phone rings for a caller too, listed above the text: the list is drawn anew, the
    # focus put back on the same button.
    caller(phone, CALLER, MENTAL_HEALTH)
    expect(desk.locator("#my-contacts")).to_contain_text("voice: ringing", timeout=REFRESH_WAIT_MS)
    expect(take).to_be_focused()
    expect(desk.locator("#desk-said")).to_have_text("A call is ringing on your phone.")
    assert "5550201" not in desk.content()

    desk.keyboard.press("Enter")  # she takes it with the keyboard
    expect(desk.locator("#inbox")).to_contain_text("panic attacks")
