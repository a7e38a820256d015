"""Text areas take what fit their box, and a counselor's typed words are never lost: a line
break counts once (browsers count one toward ``maxlength`` but send CR LF), and a reply the
line refuses comes back on a page (in the box, or read-only to copy), never in a flash, the
session or the URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.models import COUNSELOR, NOTE_CONTEXT, UNMASK_REASON_CONTEXT, AuditEntry, WrapUp
from crisisline.db import db
from crisisline.models import Conversation, Transfer
from routing.store import active_routing
from sms import staff
from tests.conftest import TextingPhone
from tests.console.conftest import Account, MakeUser, csrf_token, sign_in
from tests.console.test_board_and_desk import MENTAL_HEALTH, caller, only_ana_on_call
from tests.console.test_inbox_and_wrap_up import offered_tag
from tests.console.test_only_the_holder_ends_or_replies import passed_to_ben_first
from tests.rota import ANA
from twilio_fake.phone import Phone

TEXTER = "+13125550177"
CALLER = "+13125550201"


def typed(characters: int, line_breaks: int) -> str:
    """What a person typed: ``characters`` as the browser counts them (each line break one),
    sent as the browser sends it, each line break as CR LF."""
    lines = line_breaks + 1
    words = characters - line_breaks
    return "\r\n".join("w" * (words // lines + (1 if index < words % lines else 0)) for index in range(lines))


def as_counted(text: str) -> str:
    return text.replace("\r\n", "\n")


def post(client: FlaskClient, path: str, **data: str) -> Any:
    return client.post(path, data={**data, "csrf_token": csrf_token(client, "/console/me")})


@pytest.fixture
def anas_conversation(
    client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int], make_user: MakeUser
) -> str:
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    texting.send(ANA, f"YES {tag}")
    return tag


def session_values(client: FlaskClient) -> str:
    with client.session_transaction() as session:
        return repr(dict(session))


# --- a line break counts once ---------------------------------------------------------------------


def test_a_reply_that_fit_the_box_with_line_breaks_in_it_is_sent_whole(
    client: FlaskClient, texting: TextingPhone, anas_conversation: str
) -> None:
    reply = typed(1590, line_breaks=15)  # 1,605 characters as sent
    assert len(reply) == 1605
    before = len(texting.inbox(TEXTER))

    sent = post(client, f"/console/me/texts/{anas_conversation}/reply", body=reply, key="reply-key-000000000001")

    assert sent.status_code == 302
    assert texting.inbox(TEXTER)[before:] == [as_counted(reply)]


def test_a_wrap_up_note_that_fit_the_box_with_line_breaks_in_it_is_saved_whole(
    app: Flask, client: FlaskClient, texting: TextingPhone, anas_conversation: str
) -> None:
    texting.send(ANA, f"END {anas_conversation}")
    note = typed(2000, line_breaks=10)

    saved = post(client, f"/console/me/wrap-up/text/{anas_conversation}", outcome="de_escalated", note=note)

    assert saved.status_code == 302
    with app.app_context():
        (wrap_up,) = db.session.scalars(select(WrapUp))
        assert app.extensions["crisisline.vault"].open(wrap_up.sealed_note, context=NOTE_CONTEXT) == as_counted(note)


def test_an_unmask_reason_that_fit_the_box_with_line_breaks_in_it_is_accepted(
    app: Flask, client: FlaskClient, phone: Phone, publish_routing: Callable[..., int], supervisor: Account
) -> None:
    only_ana_on_call(publish_routing)
    caller(phone, CALLER, MENTAL_HEALTH)
    sign_in(client, supervisor)
    with app.app_context():
        transfer_id = db.session.scalars(select(Transfer)).one().id
    reason = typed(500, line_breaks=5)

    response = client.post(
        f"/console/board/unmask/voice/{transfer_id}",
        data={"reason": reason, "csrf_token": csrf_token(client, "/console/board/unmask")},
    )

    assert response.status_code == 200 and CALLER in response.get_data(as_text=True)
    with app.app_context():
        entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "unmask")).one()
        opened = app.extensions["crisisline.vault"].open(entry.sealed_detail, context=UNMASK_REASON_CONTEXT)
        assert opened == as_counted(reason)


# --- a refused reply keeps its words --------------------------------------------------------------


def test_a_reply_too_long_comes_back_in_the_reply_box_and_nothing_is_sent(
    client: FlaskClient, texting: TextingPhone, anas_conversation: str
) -> None:
    reply = "Are you somewhere safe? " * 67  # 1,608 characters: over the 1,600 a reply may have
    before = len(texting.inbox(TEXTER))

    refused = post(client, f"/console/me/texts/{anas_conversation}/reply", body=reply, key="reply-key-000000000002")

    page = refused.get_data(as_text=True)
    assert refused.status_code == 400
    assert f'maxlength="1600" required>\n{reply}</textarea>' in page
    assert "Not sent: a reply is at most 1600 characters." in page
    assert texting.inbox(TEXTER)[before:] == []
    assert "somewhere safe" not in session_values(client)  # not in a flash, nor anywhere in the cookie
    assert "somewhere safe" not in (refused.headers.get("Location") or "")


def test_a_reply_beginning_with_a_line_break_comes_back_with_it(client: FlaskClient, anas_conversation: str) -> None:
    """The HTML parser drops one line break just after ``<textarea>``: the page writes one of
    its own there, so the counselor's own first line break stays."""
    reply = "\n" + "x" * 1601

    refused = post(client, f"/console/me/texts/{anas_conversation}/reply", body=reply, key="reply-key-000000000003")

    assert f"required>\n{reply}</textarea>" in refused.get_data(as_text=True)


# --- a reply, END or PASS to a conversation no longer theirs --------------------------------------


def not_sent_page(response: Any) -> str:
    page: str = response.get_data(as_text=True)
    assert response.status_code == 409, (response.status_code, page)
    return page


def test_a_reply_to_a_conversation_handed_back_to_the_queue_says_so_and_shows_the_words_to_copy(
    client: FlaskClient, texting: TextingPhone, anas_conversation: str
) -> None:
    texting.send(ANA, f"PASS {anas_conversation}")  # another tab, or the sweep, handed it back
    before = len(texting.inbox(TEXTER))

    refused = post(
        client, f"/console/me/texts/{anas_conversation}/reply", body="Breathe with me: in for four.",
        key="reply-key-000000000004",
    )  # fmt: skip

    page = not_sent_page(refused)
    assert f"Your reply to #{anas_conversation} was not sent" in page
    assert f"#{anas_conversation} was handed back to the queue" in page
    assert '<textarea id="unsent" rows="6" readonly>\nBreathe with me: in for four.</textarea>' in page
    assert texting.inbox(TEXTER)[before:] == []
    assert "Breathe" not in session_values(client)


def test_a_reply_after_the_texter_texted_stop_says_the_conversation_is_closed(
    client: FlaskClient, texting: TextingPhone, anas_conversation: str
) -> None:
    texting.send(TEXTER, "STOP")

    refused = post(
        client, f"/console/me/texts/{anas_conversation}/reply", body="Are you still there?",
        key="reply-key-000000000005",
    )  # fmt: skip

    page = not_sent_page(refused)
    assert f"#{anas_conversation} is closed: the texter texted STOP, so the line cannot text them any more." in page
    assert "Are you still there?</textarea>" in page


def test_a_reply_passed_on_just_as_it_is_sent_says_why_and_keeps_the_words(
    app: Flask, client: FlaskClient, texting: TextingPhone, anas_conversation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read as hers, then passed on and taken by Ben before the relay's own check."""
    relay = staff._relay

    def passed_on_meanwhile(conversation: Conversation, *args: Any) -> staff.Reply:
        active = active_routing()  # in the reply's own request
        assert active is not None
        passed_to_ben_first(conversation, active.document)
        return relay(conversation, *args)

    monkeypatch.setattr(staff, "_relay", passed_on_meanwhile)

    refused = post(
        client, f"/console/me/texts/{anas_conversation}/reply", body="Ana's words", key="reply-key-000000000006"
    )

    page = not_sent_page(refused)
    assert f"#{anas_conversation} is with another counselor now." in page
    assert "Ana&#39;s words</textarea>" in page


@pytest.mark.parametrize(("command", "headline"), [("end", "was not ended"), ("pass", "was not passed back")])
def test_end_or_pass_for_a_conversation_no_longer_theirs_says_what_was_not_done_and_why(
    client: FlaskClient, texting: TextingPhone, anas_conversation: str, command: str, headline: str
) -> None:
    texting.send(TEXTER, "STOP")

    refused = post(client, f"/console/me/texts/{anas_conversation}/{command}", key="command-key-0000000001")

    page = not_sent_page(refused)
    assert f"#{anas_conversation} {headline}" in page and f"#{anas_conversation} is closed" in page
