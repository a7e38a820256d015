"""The routing forms in a real Chromium (Debian's), driven by Playwright, against the app served
as the Procfile serves it (gunicorn, over real HTTP), as in test_in_a_browser.py: an admin
edits a need's label (what the need menu says for it) in the needs form, previews the diff,
publishes with a note and sees it in history; an invalid edit (a voice that does not speak
the language) is refused on the form with the live config unchanged. Screenshots go to
tests/console/screenshots/<database>/ (ignored by git)."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

from console.models import ADMIN
from crisisline.settings import Settings
from routing import publishing, store
from tests.console.conftest import MakeUser

# The same browser, server and helpers as the console's other browser test (it skips the
# module when Debian's chromium or Playwright is missing, and so does this import).
from tests.console.test_in_a_browser import browser, procfile_web, shot, sign_in, sync_api

__all__ = ["browser", "procfile_web"]  # fixtures, used by name


def test_an_admin_edits_a_need_and_a_voice_through_the_forms_in_the_browser(
    app: Flask, browser: Any, procfile_web: str, make_user: MakeUser, settings: Settings
) -> None:
    expect = sync_api.expect
    database = settings.database_url.split(":")[0].split("+")[0]
    admin = make_user(ADMIN, "ada", display_name="Ada Admin")

    def live_text() -> tuple[int, str]:
        with app.app_context():
            version = publishing.live_version()
            assert version is not None
            return version.id, store.source_of(version)

    first, original = live_text()
    # A phone-sized screen: the forms must work there, with the keyboard.
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        sign_in(page, procfile_web, admin)
        page.get_by_role("link", name="Routing", exact=True).click()
        page.get_by_role("link", name="Needs", exact=True).click()
        page.get_by_role("link", name=re.compile("^Edit drug or alcohol use")).click()
        label = page.locator("#need-form").get_by_label("Label in English (what the menu says)")
        expect(label).to_have_value("drug or alcohol use")
        shot(page, database, "31-routing-form-need")

        # The need's label edited in the form: a draft in the editor, with the diff.
        label.fill("drugs or alcohol")
        page.get_by_role("button", name="Preview the change to this need").click()
        expect(page.locator("#draft-of")).to_contain_text("changing the need 'drug or alcohol use'")
        expect(page.locator("#verdict")).to_contain_text("ready to publish")
        expect(page.locator("#preview-diff")).to_contain_text('+    labels: {en: "drugs or alcohol"')
        expect(page.locator("#preview-diff")).to_contain_text("-    labels: {en: drug or alcohol use")
        expect(page.locator("#warnings")).to_contain_text("coverage gap")
        shot(page, database, "32-routing-form-need-preview")
        assert live_text() == (first, original)  # only a draft so far

        # Publish needs a note; then it is live and in history.
        page.get_by_role("button", name="Publish").click()
        expect(page.locator("#refusal")).to_contain_text("a note saying why is required")
        assert live_text() == (first, original)
        page.get_by_label(re.compile("^Note")).fill("Shorter label for drugs and alcohol")
        page.get_by_role("button", name="Publish").click()
        expect(page).to_have_url(procfile_web + "/console/routing/history")
        second, edited = live_text()
        assert second == first + 1
        assert 'labels: {en: "drugs or alcohol", es: drogas o alcohol}' in edited
        assert edited.replace('en: "drugs or alcohol"', "en: drug or alcohol use") == original  # nothing else
        expect(page.locator(f"#version-{second}")).to_contain_text("Shorter label for drugs and alcohol")
        expect(page.locator(f"#version-{second}")).to_contain_text("(live)")
        shot(page, database, "33-routing-form-history")

        # An invalid edit: an English voice for Spanish. Refused on the form, at the field.
        page.get_by_role("link", name="Languages", exact=True).click()
        page.get_by_role("link", name="Edit Spanish").click()
        voice = page.locator("#language-form").get_by_label(re.compile("^Voice"))
        expect(voice).to_have_value("Polly.Lupe")
        voice.fill("Polly.Joanna")
        voice.press("Enter")  # submits with the keyboard
        expect(page.locator("#refusal")).to_contain_text("the live routing is unchanged")
        expect(page.locator("#voice-errors")).to_contain_text("Polly.Joanna speaks en-US, not es-US")
        expect(voice).to_have_attribute("aria-invalid", "true")
        expect(voice).to_have_value("Polly.Joanna")  # what they typed, shown back
        shot(page, database, "34-routing-form-invalid-voice")
        assert live_text() == (second, edited)

        # The prompts page shows each prompt's spoken seconds.
        page.get_by_role("navigation", name="Routing").get_by_role("link", name="Prompts").click()
        expect(page.locator("#time-to-ring")).to_contain_text("s of prompts")
        shot(page, database, "35-routing-form-prompts")
    finally:
        context.close()
