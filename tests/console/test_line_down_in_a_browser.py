"""The line-down banner in a real Chromium (as in test_in_a_browser.py): a supervisor with the
board open sees it appear when the line is published down and go when it is brought back,
without reloading (the board's refresh carries it); a counselor's desk does the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from console.models import SUPERVISOR
from tests.console.conftest import Account, MakeUser
from tests.console.test_in_a_browser import BOARD_REFRESH_WAIT_MS, browser, sign_in, sync_api

__all__ = ["browser"]  # a fixture, used by name


def down(document: dict[str, Any]) -> None:
    document["line"]["mode"] = "system_down"


def test_the_open_board_shows_the_line_going_down_and_coming_back_without_a_reload(
    live_server: str, browser: Any, make_user: MakeUser, publish_routing: Callable[..., int]
) -> None:
    expect = sync_api.expect
    page = browser.new_page()
    sign_in(page, live_server, make_user(SUPERVISOR, "sue-supervisor"))
    page.goto(live_server + "/console/board")
    banner = page.locator("#line-down")
    expect(banner).to_be_hidden()
    page.evaluate("window.notReloaded = true")

    publish_routing(down)
    expect(banner).to_be_visible(timeout=BOARD_REFRESH_WAIT_MS)
    expect(banner).to_contain_text("The line is down")
    expect(page.get_by_role("alert")).to_contain_text("backup line +1 800-273-8255")

    publish_routing()
    expect(banner).to_be_hidden(timeout=BOARD_REFRESH_WAIT_MS)
    assert page.evaluate("window.notReloaded === true")
    page.close()


def test_a_counselors_desk_shows_the_line_going_down(
    live_server: str, browser: Any, counselor: Account, publish_routing: Callable[..., int]
) -> None:
    expect = sync_api.expect
    page = browser.new_page(viewport={"width": 390, "height": 844})
    sign_in(page, live_server, counselor)
    page.goto(live_server + "/console/me")
    expect(page.locator("#line-down")).to_be_hidden()

    publish_routing(down)

    expect(page.locator("#line-down")).to_contain_text("sent to the backup line", timeout=BOARD_REFRESH_WAIT_MS)
    page.close()
