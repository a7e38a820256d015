"""The counselor's desk on her phone, in a real Chromium (as in test_in_a_browser.py) against the
app served over HTTP: its refresh every few seconds leaves the keyboard focus where it was (on
a Take button), says what changed to screen readers (a text offered, a call ringing, a pause)
once, not on every refresh, and, when she is paused from elsewhere (missed calls), reloads to
say so and why, with the reply she had half typed and left put back in its box (one she is
still typing holds the reload off). Found by review: the list was redrawn from new nodes on
every refresh, nothing was announced, and any reply left in a box held off the reload (and the
live call's panel it draws) for good."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from console.models import COUNSELOR
from crisisline.db import db
from tests.conftest import TextingPhone
from tests.console.conftest import Account, MakeUser
from tests.console.test_board_and_desk import MENTAL_HEALTH, caller, only_ana_on_call
from tests.console.test_in_a_browser import BOARD_REFRESH_WAIT_MS, browser, sign_in, sync_api
from tests.console.test_inbox_and_wrap_up import offered_tag
from tests.rota import ANA
from transfer import flow
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
    context.clock.install()  # time runs as usual; a wait for the typing window jumps it instead
    try:
        page = context.new_page()
        sign_in(page, live_server, ana)
        sync_api.expect(page).to_have_url(live_server + "/console/me")
        page.wait_for_load_state()
        yield page
    finally:
        context.close()


def refreshes(page: Any, count: int) -> None:
    """Let the desk refresh ``count`` times (its clock jumped to each, not waited for), and
    draw what it got."""
    for _ in range(count):
        with page.expect_response(ME_JSON, timeout=REFRESH_WAIT_MS):
            page.clock.fast_forward(5_000)
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


def ana_holds_a_text(desk: Any, texting: TextingPhone) -> Any:
    """A texter Ana has taken, her desk reloaded to show it: its reply box."""
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    texting.send(ANA, f"YES {offered_tag(texting)}")
    desk.reload()
    return desk.locator("#inbox textarea")


def paused_after_missed_calls(app: Flask) -> None:
    """What the line does after her third missed call in a row (from outside her desk)."""
    with app.app_context():
        assert flow.pause_for_missed("ana-ruiz")
        db.session.commit()


def test_paused_after_missed_calls_the_desk_reloads_says_why_and_puts_back_the_reply_left_half_typed(
    app: Flask, desk: Any, texting: TextingPhone
) -> None:
    expect = sync_api.expect
    box = ana_holds_a_text(desk, texting)
    box.fill("Breathe with me: in for four,")
    box.blur()  # she leaves it there, half typed, and looks at her phone
    desk.clock.fast_forward(10_500)  # no longer being typed (desk.js's TYPING_MS)
    expect(desk.get_by_role("button", name="Pause me")).to_be_visible()
    desk.evaluate("window.notReloaded = true")

    paused_after_missed_calls(app)

    expect(desk.get_by_role("button", name="Take contacts again")).to_be_visible(timeout=REFRESH_WAIT_MS)
    assert desk.evaluate("window.notReloaded === undefined")  # the page reloaded
    expect(desk.locator("#paused-why")).to_have_text("Paused after 3 missed calls in a row.")
    expect(desk.get_by_role("status").filter(has_text="You are paused.")).to_have_count(1)
    expect(desk.locator("#inbox textarea")).to_have_value("Breathe with me: in for four,")


def test_a_reply_box_in_use_holds_the_reload_off(app: Flask, desk: Any, texting: TextingPhone) -> None:
    expect = sync_api.expect
    box = ana_holds_a_text(desk, texting)
    box.fill("Breathe with me")  # and the box keeps the focus
    desk.evaluate("window.notReloaded = true")

    paused_after_missed_calls(app)

    expect(desk.locator("#my-status")).to_have_text("paused", timeout=REFRESH_WAIT_MS)
    refreshes(desk, 1)
    assert desk.evaluate("window.notReloaded === true")
    expect(box).to_be_focused()
    expect(box).to_have_value("Breathe with me")


def test_without_the_tabs_storage_a_reply_left_in_its_box_still_holds_the_reload_off(
    app: Flask, browser: Any, live_server: str, ana: Account, texting: TextingPhone
) -> None:
    """Storage turned off (a browser setting): drafts.js cannot put a reply back after a reload,
    so words left in a box hold it off as before (review: they were lost to the reload)."""
    expect = sync_api.expect
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.add_init_script(
        "Object.defineProperty(window, 'sessionStorage', {get() { throw new DOMException('off', 'SecurityError'); }});"
    )
    context.clock.install()
    try:
        desk = context.new_page()
        sign_in(desk, live_server, ana)
        box = ana_holds_a_text(desk, texting)
        box.fill("Breathe with me: in for four,")
        box.blur()
        desk.clock.fast_forward(10_500)  # no longer being typed (desk.js's TYPING_MS)
        desk.evaluate("window.notReloaded = true")

        paused_after_missed_calls(app)

        expect(desk.locator("#my-status")).to_have_text("paused", timeout=REFRESH_WAIT_MS)
        refreshes(desk, 1)
        assert desk.evaluate("window.notReloaded === true")
        expect(box).to_have_value("Breathe with me: in for four,")
    finally:
        context.close()
