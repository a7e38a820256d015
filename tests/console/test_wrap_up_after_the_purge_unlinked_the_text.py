"""A text's wrap-up recording the texter's consent to a check-in whose question went out at END
schedules it even after the hourly purge unlinked the conversation from the texter (a texts
window of a few days, shorter than the wrap-up's week). Found by review: the wrap-up read the
texter through the conversation, found the purge's empty row and said "no number"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.models import COUNSELOR, WrapUp
from crisisline.db import db
from crisisline.models import CheckIn, Conversation, Texter
from crisisline.settings import Settings
from tests.conftest import TextingPhone, settings_for
from tests.console.conftest import MakeUser, sign_in
from tests.console.test_board_and_desk import only_ana_on_call
from tests.console.test_inbox_and_wrap_up import TEXTER, offered_tag, post
from tests.rota import ANA
from workers.upkeep import UNLINKED_CONVERSATION_PREFIX, purge_personal_data


def test_consent_in_a_texts_wrap_up_after_the_purge_unlinked_the_conversation_schedules_the_check_in(
    app: Flask, client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
    make_user: MakeUser, settings: Settings, make_app: Callable[[Settings], Flask],
) -> None:  # fmt: skip
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    texting.send(ANA, f"END {tag}")  # the texter is asked about a check-in
    short = make_app(settings_for(settings.database_url, settings.redis_url, RETENTION_DAYS_TEXTS="2"))
    with short.app_context():
        purge_personal_data((datetime.now(UTC) + timedelta(days=3)).isoformat())
        conversation = db.session.get(Conversation, int(tag))
        assert conversation is not None
        texter = db.session.get(Texter, conversation.texter_id)
        assert texter is not None and texter.number_hash.startswith(UNLINKED_CONVERSATION_PREFIX)

    saved = post(client, f"/console/me/wrap-up/text/{tag}", outcome="de_escalated", consent="y")

    assert saved.status_code == 302
    assert "A check-in is scheduled." in client.get("/console/me").get_data(as_text=True)
    with app.app_context():
        assert db.session.scalars(select(WrapUp)).one().followup == "scheduled"
        checkin = db.session.scalars(select(CheckIn).where(CheckIn.dedupe_key == f"text:{tag}")).one()
        assert checkin.state == "consented"
