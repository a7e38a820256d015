"""Co-responder units take calls only. A texter who chose a need routed to the units (someone in
danger right now) whose route has no counselor fallback was offered to nobody, ever: told to
call 988, then left in the queue until the idle close while counselors sat free (found by a
review of the routing). They are now offered to the counselors on call, as its fallback would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Conversation
from routing.engine import decide_route
from routing.store import active_routing
from tests.conftest import TextingPhone
from tests.rota import BEN, DIEGO, around_the_clock

TEXTER = "+13125550177"


def danger_goes_to_units(fallback: str | None) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        around_the_clock(document)
        (danger,) = [need for need in document["needs"] if need["key"] == "danger_now"]
        if fallback is None:
            danger.pop("fallback", None)
        else:
            danger["fallback"] = fallback

    return change


@pytest.mark.usefixtures("wednesday_evening")
@pytest.mark.parametrize("fallback", [None, "backup"])
def test_a_texter_in_danger_is_offered_to_a_counselor_when_the_need_goes_to_units_only(
    app: Flask, texting: TextingPhone, publish_routing: Callable[..., int], fallback: str | None
) -> None:
    publish_routing(danger_goes_to_units(fallback))
    texting.send(TEXTER, "I need to talk to someone")

    replies = texting.send(TEXTER, "1")  # someone in danger right now

    with app.app_context():
        conversation = db.session.scalars(select(Conversation)).one()
    assert (conversation.need, conversation.state) == ("danger_now", "offered")
    assert replies[0].startswith("Thank you. A counselor will text you back shortly")
    offers = texting.inbox(BEN) + texting.inbox(DIEGO)
    assert [offer for offer in offers if offer.startswith(f"New text #{conversation.id}:")]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_in_danger_still_goes_to_the_unit_first(app: Flask, publish_routing: Callable[..., int]) -> None:
    publish_routing(danger_goes_to_units(None))
    with app.app_context():
        active = active_routing()
        assert active is not None
        document = active.document
        need = document.need("danger_now")
        assert need is not None
        moment = datetime.now(UTC)

        by_voice = decide_route(document, "en", need, moment)
        by_text = decide_route(document, "en", need, moment, channel="text")

    assert by_voice.target == "co_responders" and all(r.kind == "co_responder" for r in by_voice.responders)
    assert by_text.responders  # a unit may be first for a text too; the queue leaves units out for texts
    units = {r.id for r in document.responders if r.kind != "counselor"}
    with app.app_context():
        counselors_only = decide_route(document, "en", need, moment, unavailable=units, channel="text")
        nobody_by_voice = decide_route(document, "en", need, moment, unavailable=units)
    assert counselors_only.target == "counselors" and counselors_only.responders
    assert nobody_by_voice.target == "backup"  # a caller's route is the routing's as written
