"""The REST requests the line sends about a caller, as Twilio receives them (recorded on their
way to the fake Twilio, which answers them as usual).

A caller moved to new TwiML over REST (into the room, to the staff-left turn) keeps the line's
voice fallback: should the new TwiML fail, Twilio asks ``/voice/fallback`` and the caller reaches
the backup line rather than Twilio's "application error". And a counselor paused for missed
offers is texted after the next person is rung, not before: the text is a REST request the
caller's search must not wait on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import ResponderState
from crisisline.settings import Settings
from crisisline.telephony import RebasedHttpClient
from tests.rota import BEN, DIEGO, leg_to
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio

pytestmark = pytest.mark.usefixtures("fake", "wednesday_evening")
Sent = tuple[str, str, dict[str, Any]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    """Every REST request the app sends Twilio, in order: (method, path, form)."""
    requests: list[Sent] = []
    lock = threading.Lock()
    original = RebasedHttpClient.request

    def recording(self: RebasedHttpClient, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        with lock:
            requests.append((method, url.split("/Accounts/", 1)[-1], dict(kwargs.get("data") or {})))
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(RebasedHttpClient, "request", recording)
    return requests


def test_the_callers_redirect_into_the_room_carries_the_lines_voice_fallback(
    phone: Phone, fake: FakeTwilio, settings: Settings, sent: list[Sent]
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    phone.answer(leg_to(fake, BEN).sid, [Keys("1")])

    redirects = [form for method, path, form in sent if path.endswith(f"/Calls/{caller.identity.call_sid}.json")]
    assert redirects and "/voice/transfer/join" in redirects[0]["Url"]
    assert redirects[0]["FallbackUrl"] == f"{settings.public_base_url}/voice/fallback"
    assert redirects[0]["FallbackMethod"] == "POST"


def test_a_counselor_paused_for_missed_offers_is_texted_after_the_next_counselor_is_rung(
    app: Flask, phone: Phone, fake: FakeTwilio, publish_routing: Callable[..., int], sent: list[Sent]
) -> None:
    publish_routing(lambda document: document["transfer"].update(pause_after_missed=1))
    phone.call([Keys("1"), Keys("2")], max_hold_turns=0)

    fake.advance_call(leg_to(fake, BEN).sid, "no-answer")  # Ben misses it: paused, Diego rung

    def position(wanted: Callable[[Sent], bool]) -> int:
        return next(index for index, request in enumerate(sent) if wanted(request))

    rang_diego = position(lambda r: r[1].endswith("/Calls.json") and r[0] == "POST" and r[2].get("To") == DIEGO)
    texted_ben = position(lambda r: r[1].endswith("/Messages.json") and r[2].get("To") == BEN)
    assert rang_diego < texted_ben, "the pause notice was sent before the caller's next counselor was rung"
    with app.app_context():
        ben = db.session.scalars(select(ResponderState).where(ResponderState.responder_id == "ben-carter")).one()
        assert (ben.paused, ben.paused_reason) == (True, "missed_offers")
