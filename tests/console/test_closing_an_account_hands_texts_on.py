"""Closing the account of a counselor who is texting with someone: each text conversation they
hold goes back to the queue, as after their PASS, and the next counselor is offered it, so no
texter is dropped; the texter's words no longer reach their phone, and nothing they text from
it reaches a texter. The administrator is told beforehand how many conversations are handed on."""

from __future__ import annotations

import html

import pytest
from flask import Flask
from flask.testing import FlaskClient

from console.models import COUNSELOR
from tests.conftest import TextingPhone
from tests.console.conftest import Account, MakeUser, csrf_token, sign_in
from tests.console.test_closing_an_account import NOT_RUNG, close, counselor_of, offered_tag
from tests.rota import BEN, DIEGO

TEXTER = "+13125550177"


def bens_conversation(texting: TextingPhone) -> str:
    """A texter (thoughts of suicide, Wednesday evening: Ben first) whom Ben takes."""
    texting.send(TEXTER, "I want to kill myself")
    tag = offered_tag(texting, BEN)
    texting.send(BEN, f"YES {tag}")
    return tag


def close_in_the_console(app: Flask, client: FlaskClient, admin: Account, ben: Account) -> str:
    sign_in(client, admin)
    token = csrf_token(client, f"/console/users/{ben.id}/close")
    closed = client.post(f"/console/users/{ben.id}/deactivate", data={"csrf_token": token, "ringing": "stop"})
    app.extensions["crisisline.background"].wait_idle(timeout=30)  # the offers the hand-back started
    assert closed.status_code == 302
    return html.unescape(client.get(closed.headers["Location"]).get_data(as_text=True))


@pytest.mark.usefixtures("wednesday_evening")
def test_the_close_page_says_how_many_text_conversations_will_be_handed_on(
    app: Flask, client: FlaskClient, texting: TextingPhone, admin: Account, make_user: MakeUser
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    bens_conversation(texting)
    sign_in(client, admin)

    before = html.unescape(client.get(f"/console/users/{ben.id}/close").get_data(as_text=True))

    assert (
        "ben-carter holds 1 text conversation: each goes back to the queue, as after a pass, and is offered to the "
        "next counselor free. No texter is dropped."
    ) in before
    assert "ben-carter holds 1 text conversation: they stay with that phone." in before  # if the phone is kept
    assert TEXTER not in before and "kill myself" not in before


@pytest.mark.usefixtures("wednesday_evening")
def test_closing_a_counselors_account_hands_their_text_conversations_to_the_next_counselor(
    app: Flask, client: FlaskClient, texting: TextingPhone, admin: Account, make_user: MakeUser
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    tag = bens_conversation(texting)

    after = close_in_the_console(app, client, admin, ben)

    assert "1 text conversation went back to the queue for the next counselor." in after
    assert counselor_of(app, tag) is None
    assert offered_tag(texting, DIEGO) == tag
    texting.send(DIEGO, f"YES {tag}")
    assert counselor_of(app, tag) == "diego-morales"
    assert any("I want to kill myself" in text for text in texting.inbox(DIEGO))  # every word, to the next one


@pytest.mark.usefixtures("wednesday_evening")
def test_after_the_closing_the_texters_words_no_longer_reach_the_closed_accounts_phone(
    app: Flask, client: FlaskClient, texting: TextingPhone, admin: Account, make_user: MakeUser
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    tag = bens_conversation(texting)
    close_in_the_console(app, client, admin, ben)

    texting.send(TEXTER, "are you still there?")

    assert not any("are you still there?" in text for text in texting.inbox(BEN))
    texting.send(DIEGO, f"YES {tag}")
    assert any("are you still there?" in text for text in texting.inbox(DIEGO))


@pytest.mark.parametrize("reply", ["#{tag} I am here with you", "I am here with you"])
@pytest.mark.usefixtures("wednesday_evening")
def test_a_closed_accounts_reply_from_their_phone_never_reaches_the_texter(
    app: Flask, texting: TextingPhone, make_user: MakeUser, reply: str
) -> None:
    """Even before the closing's hand-back has run (closed and committed, nothing handed on
    yet): their words are refused, and the conversation goes back to the queue then."""
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    tag = bens_conversation(texting)
    close(app, ben.id)  # the closing alone, as committed before its hand-back
    before = len(texting.inbox(TEXTER))

    told = texting.send(BEN, reply.format(tag=tag))

    assert not any("I am here with you" in text for text in texting.inbox(TEXTER)[before:])
    assert any(text.startswith(NOT_RUNG) for text in told), told
    assert counselor_of(app, tag) is None
    assert offered_tag(texting, DIEGO) == tag


@pytest.mark.usefixtures("wednesday_evening")
def test_a_closed_account_cannot_end_a_conversation_it_still_holds_from_its_phone(
    app: Flask, texting: TextingPhone, make_user: MakeUser
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    tag = bens_conversation(texting)
    close(app, ben.id)  # the closing alone, as committed before its hand-back
    before = len(texting.inbox(TEXTER))

    told = texting.send(BEN, f"END {tag}")

    assert texting.inbox(TEXTER)[before:] == []  # not told the conversation ended
    assert any(text.startswith(NOT_RUNG) for text in told), told
    assert offered_tag(texting, DIEGO) == tag


@pytest.mark.usefixtures("wednesday_evening")
def test_an_account_closed_with_its_phone_kept_ringing_keeps_its_text_conversations(
    app: Flask, client: FlaskClient, texting: TextingPhone, admin: Account, make_user: MakeUser
) -> None:
    """A shared unit phone that stays in service: its conversations go on with it."""
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    tag = bens_conversation(texting)
    sign_in(client, admin)
    token = csrf_token(client, f"/console/users/{ben.id}/close")

    client.post(f"/console/users/{ben.id}/deactivate", data={"csrf_token": token, "ringing": "keep"})
    texting.send(TEXTER, "are you still there?")

    assert counselor_of(app, tag) == "ben-carter"
    assert any("are you still there?" in text for text in texting.inbox(BEN))


@pytest.mark.usefixtures("wednesday_evening")
def test_the_cli_hands_the_closed_accounts_text_conversations_on_and_says_so(
    app: Flask, texting: TextingPhone, make_user: MakeUser
) -> None:
    make_user(COUNSELOR, "ben", responder_id="ben-carter")
    tag = bens_conversation(texting)

    closed = app.test_cli_runner().invoke(args=["users", "deactivate", "ben"])

    assert closed.exit_code == 0, closed.output
    assert "1 text conversation went back to the queue for the next counselor." in closed.output
    assert counselor_of(app, tag) is None
    assert offered_tag(texting, DIEGO) == tag
