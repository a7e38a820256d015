"""Closing a console account and the phone of its responder: the line stops ringing a person
whose account was closed, the administrator is told plainly what happens to their calls and
what is left to do in the routing, and the warning stays where they look until it is dealt with."""

from __future__ import annotations

import html
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.accounts import users
from console.audit.log import CLI
from console.models import ADMIN, COUNSELOR, SUPERVISOR, AuditEntry, User
from crisisline.db import db
from crisisline.models import Conversation, Offer, ResponderState
from line_queue import responders
from routing import publishing, store
from tests.conftest import TextingPhone
from tests.console.conftest import PASSWORD, Account, MakeUser, sign_in
from tests.rota import BEN, DIEGO, leg_to, legs
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.signing import CallIdentity, gather_digits_params

SUICIDE = [Keys("1"), Keys("2")]  # English, thoughts of suicide: Ben, then Diego, on Wednesday evening
BEN_ENTRY = "counselors[1] (Ben Carter)"
TEXTER = "+13125550177"
NOT_RUNG = "Crisis line: the line no longer rings or texts this phone: the console account linked to it was closed."


def close(app: Flask, user_id: int, *, keep_ringing: bool = False) -> users.Closing:
    with app.app_context():
        closing = users.deactivate(db.session.get_one(User, user_id), actor=CLI, keep_ringing=keep_ringing)
        db.session.commit()
        return closing


def page(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return html.unescape(response.get_data(as_text=True))


def last_audit_detail(app: Flask, action: str) -> dict[str, Any]:
    with app.app_context():
        entry = db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id.desc())
        ).first()
        assert entry is not None
        return dict(entry.detail)


@pytest.mark.usefixtures("wednesday_evening")
def test_a_caller_is_not_offered_the_responder_of_a_closed_account(
    app: Flask, phone: Phone, fake: FakeTwilio, make_user: MakeUser
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")  # first for thoughts of suicide now
    close(app, ben.id)

    phone.call(SUICIDE, max_hold_turns=0)

    assert [leg.to for leg in legs(fake)] == [DIEGO]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_texter_is_not_offered_to_the_responder_of_a_closed_account(
    app: Flask, texting: TextingPhone, make_user: MakeUser
) -> None:
    close(app, make_user(COUNSELOR, "ben", responder_id="ben-carter").id)

    texting.send("+13125550177", "I want to kill myself")

    assert texting.inbox(BEN) == []
    assert texting.inbox(DIEGO)[0].startswith("New text #")


@pytest.mark.usefixtures("wednesday_evening")
def test_the_responder_texting_on_does_not_undo_the_closing(
    app: Flask, texting: TextingPhone, phone: Phone, fake: FakeTwilio, make_user: MakeUser
) -> None:
    close(app, make_user(COUNSELOR, "ben", responder_id="ben-carter").id)

    texting.send(BEN, "ON")
    phone.call(SUICIDE, max_hold_turns=0)

    assert [leg.to for leg in legs(fake)] == [DIEGO]
    with app.app_context():
        state = db.session.get_one(ResponderState, "ben-carter")
        assert (state.paused, state.paused_reason) == (True, responders.ACCOUNT_CLOSED)


def offered_tag(texting: TextingPhone, number: str) -> str:
    offers = [text for text in texting.inbox(number) if text.startswith("New text #")]
    assert offers, texting.inbox(number)
    found = re.search(r"#(\d+)", offers[-1])
    assert found is not None
    return found.group(1)


def counselor_of(app: Flask, tag: str) -> str | None:
    with app.app_context():
        return db.session.get_one(Conversation, int(tag)).counselor_id


@pytest.mark.usefixtures("wednesday_evening")
def test_the_responder_of_a_closed_account_cannot_take_a_texter_by_texting_yes(
    app: Flask, texting: TextingPhone, make_user: MakeUser
) -> None:
    close(app, make_user(COUNSELOR, "ben", responder_id="ben-carter").id)
    texting.send(TEXTER, "I want to kill myself")
    tag = offered_tag(texting, DIEGO)

    replies = texting.send(BEN, f"YES {tag}")  # the phone of the person whose account was closed

    assert counselor_of(app, tag) is None
    assert any(reply.startswith(NOT_RUNG) for reply in replies), replies
    texting.send(DIEGO, f"YES {tag}")
    assert counselor_of(app, tag) == "diego-morales"


@pytest.mark.usefixtures("wednesday_evening")
def test_a_text_offer_open_to_the_responder_when_the_account_is_closed_goes_to_someone_else(
    app: Flask, texting: TextingPhone, make_user: MakeUser, clock_tick: Callable[[], Any]
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    texting.send(TEXTER, "I want to kill myself")
    tag = offered_tag(texting, BEN)

    close(app, ben.id)
    texting.send(BEN, f"YES {tag}")
    clock_tick()

    assert counselor_of(app, tag) is None
    assert offered_tag(texting, DIEGO) == tag


@pytest.mark.parametrize("command", ["ON", "OFF", "STATUS"])
@pytest.mark.usefixtures("wednesday_evening")
def test_the_responder_of_a_closed_account_is_told_the_line_no_longer_rings_them_whatever_they_text(
    app: Flask, texting: TextingPhone, make_user: MakeUser, command: str
) -> None:
    close(app, make_user(COUNSELOR, "ben", responder_id="ben-carter").id)

    replies = texting.send(BEN, command)

    assert [reply for reply in replies if reply.startswith("Crisis line:")] == [
        f"{NOT_RUNG} If that is a mistake, ask an administrator."
    ]


@pytest.mark.usefixtures("wednesday_evening")
def test_a_responder_still_linked_to_an_active_account_is_still_rung(
    app: Flask, phone: Phone, fake: FakeTwilio, make_user: MakeUser
) -> None:
    """Two accounts on one responder (a unit's phone, a person with two roles): closing one
    leaves the phone in service, and says why."""
    first = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    make_user(SUPERVISOR, "ben-sup", responder_id="ben-carter")

    closing = close(app, first.id)

    phone.call(SUICIDE, max_hold_turns=0)
    assert [leg.to for leg in legs(fake)] == [BEN]
    assert closing.ringing == users.STILL_LINKED
    assert closing.summary() == [
        f"The line keeps ringing ben-carter ({BEN_ENTRY}): it is still linked to the active account(s) ben-sup."
    ]


@pytest.mark.usefixtures("wednesday_evening")
def test_an_administrator_may_choose_to_keep_ringing_the_phone_and_it_is_audited(
    app: Flask, phone: Phone, fake: FakeTwilio, make_user: MakeUser
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")

    closing = close(app, ben.id, keep_ringing=True)

    phone.call(SUICIDE, max_hold_turns=0)
    assert [leg.to for leg in legs(fake)] == [BEN]
    assert closing.summary()[0].startswith(f"The line still rings ben-carter ({BEN_ENTRY}). Remove the entry")
    detail = last_audit_detail(app, "user_deactivated")
    assert (detail["responder_id"], detail["ringing"], detail["routing_entries"]) == (
        "ben-carter", users.KEPT, [BEN_ENTRY],
    )  # fmt: skip


def test_closing_the_only_morning_counselor_names_the_stretches_left_to_the_backup_line(
    app: Flask, make_user: MakeUser
) -> None:
    ana = make_user(COUNSELOR, "ana")  # Ana Ruiz: weekdays 08:00-16:00, the only counselor then

    closing = close(app, ana.id)

    assert closing.ringing == users.STOPPED
    said = closing.summary()
    assert said[0] == (
        "The line no longer rings ana-ruiz (counselors[0] (Ana Ruiz)): calls and texts go to whoever else is on call. "
        "The entry is still in the routing: remove it (or link an active account to ring it again)."
    )
    assert said[1].startswith("Without ana-ruiz, the weekly rota has stretches with nobody on call")
    assert (
        "en / suicide: Mon 08:00–16:00, Tue 08:00–16:00, Wed 08:00–12:00, Thu 08:00–12:00, Fri 08:00–16:00: "
        "nobody on call (the backup line)"
    ) in closing.gap_lines()
    assert all("+1" not in line for line in [*said, *closing.gap_lines()])  # never a phone number
    assert last_audit_detail(app, "user_deactivated")["gaps_opened"] == closing.gap_lines()


def test_an_account_linked_to_no_responder_changes_nobodys_phone(app: Flask, make_user: MakeUser) -> None:
    closing = close(app, make_user(SUPERVISOR, "sue").id)

    assert closing.ringing == users.NO_RESPONDER
    assert closing.summary() == ["sue is linked to no responder: the line rings nobody differently."]
    with app.app_context():
        assert responders.closed_responder_ids() == set()


@pytest.mark.usefixtures("wednesday_evening")
def test_a_new_account_linked_to_the_responder_has_them_rung_again(
    app: Flask, phone: Phone, fake: FakeTwilio, make_user: MakeUser
) -> None:
    close(app, make_user(COUNSELOR, "ben", responder_id="ben-carter").id)

    make_user(COUNSELOR, "ben-again", responder_id="ben-carter")

    phone.call(SUICIDE, max_hold_turns=0)
    assert [leg.to for leg in legs(fake)] == [BEN]
    assert last_audit_detail(app, "user_created")["rung_again"] is True


def test_the_cli_says_what_happens_to_the_calls_and_can_keep_the_phone_ringing(app: Flask, make_user: MakeUser) -> None:
    make_user(COUNSELOR, "ben", responder_id="ben-carter")
    make_user(COUNSELOR, "ana")
    runner = app.test_cli_runner()

    stopped = runner.invoke(args=["users", "deactivate", "ben"])
    kept = runner.invoke(args=["users", "deactivate", "ana", "--keep-ringing"])

    assert stopped.exit_code == 0, stopped.output
    assert f"The line no longer rings ben-carter ({BEN_ENTRY})" in stopped.output
    assert "  en / suicide: Mon 16:00–22:00, Tue 16:00–22:00" in stopped.output
    assert "routing editor" in stopped.output
    assert "+1" not in stopped.output
    assert kept.exit_code == 0, kept.output
    assert "The line still rings ana-ruiz (counselors[0] (Ana Ruiz)). Remove the entry" in kept.output
    with app.app_context():
        assert responders.closed_responder_ids() == {"ben-carter"}


@pytest.mark.usefixtures("wednesday_evening")
def test_the_simulator_does_not_list_the_responder_of_a_closed_account_as_rung(
    app: Flask, client: FlaskClient, admin: Account, make_user: MakeUser
) -> None:
    close(app, make_user(COUNSELOR, "ben", responder_id="ben-carter").id)
    sign_in(client, admin)

    shown = page(client, "/console/routing/simulator?language=en&need=suicide&day=wed&time=19:00")

    rung = re.search(r'<ol id="rung">(.*?)</ol>', shown, re.S)
    assert rung is not None, shown
    assert "Ben Carter" not in rung.group(1)  # listed only as not rung, and why
    assert "Diego Morales" in rung.group(1)


def test_the_coverage_and_the_routing_warnings_leave_out_the_responder_of_a_closed_account(
    app: Flask, client: FlaskClient, admin: Account, make_user: MakeUser
) -> None:
    sign_in(client, admin)
    before = page(client, "/console/routing/coverage").count("Mon 16:00–22:00")
    close(app, make_user(COUNSELOR, "ben", responder_id="ben-carter").id)

    after = page(client, "/console/routing/coverage").count("Mon 16:00–22:00")
    with app.app_context():
        live = publishing.live_version()
        assert live is not None
        text = store.source_of(live)
        counted_out = [str(w) for w in publishing.preview(text, left_out=responders.closed_responder_ids()).warnings]
        counted_in = [str(w) for w in publishing.preview(text).warnings]

    assert after > before  # en / suicide among the stretches left to the backup line
    gap = "coverage gap Mon, Tue, Fri 16:00–22:00, English (en) / suicide"
    assert any(gap in warning for warning in counted_out), counted_out
    assert not any(gap in warning for warning in counted_in), counted_in


def test_the_cli_who_and_coverage_leave_out_the_responder_of_a_closed_account(app: Flask, make_user: MakeUser) -> None:
    close(app, make_user(COUNSELOR, "ben", responder_id="ben-carter").id)
    runner = app.test_cli_runner()

    who = runner.invoke(args=["routing", "who", "--language", "en", "--need", "suicide", "--at", "2026-12-02 19:00"])
    week = runner.invoke(args=["routing", "coverage"])

    assert who.exit_code == 0, who.output
    rung = [line for line in who.output.splitlines() if re.match(r"  \d+\. ", line)]
    assert rung and not any("Ben Carter" in line for line in rung) and "Diego Morales" in rung[0]
    assert week.exit_code == 0, week.output
    assert "gap Mon 16:00–22:00: nobody: the backup line" in week.output


def test_a_rollback_warns_of_the_gaps_the_responder_of_a_closed_account_leaves(app: Flask, make_user: MakeUser) -> None:
    close(app, make_user(COUNSELOR, "ben", responder_id="ben-carter").id)
    with app.app_context():
        first = publishing.live_version()
        assert first is not None
        first_id = first.id
        publishing.publish(store.source_of(first) + "\n# a later edit\n", base=first_id, note="an edit", author="tests")
        db.session.commit()

    rolled = app.test_cli_runner().invoke(args=["routing", "rollback", str(first_id), "--note", "undo the edit"])

    assert rolled.exit_code == 0, rolled.output
    assert "coverage gap Mon, Tue, Fri 16:00–22:00, English (en) / suicide" in rolled.output


def test_the_cli_refuses_to_close_an_account_closed_already(app: Flask, make_user: MakeUser) -> None:
    make_user(COUNSELOR, "ben", responder_id="ben-carter")
    runner = app.test_cli_runner()
    runner.invoke(args=["users", "deactivate", "ben", "--keep-ringing"])

    again = runner.invoke(args=["users", "deactivate", "ben"])

    assert again.exit_code != 0
    assert "ben is closed already: nothing was changed." in again.output
    with app.app_context():
        assert responders.closed_responder_ids() == set()
        entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "user_deactivated")).all()
        assert len(entries) == 1


# An administrator links an active account to Ben's responder id, the other way the line
# learns he is to be rung: a new account, or an account given his responder id.
LINK_TO_BEN: dict[str, Callable[[int], object]] = {
    "a new account": lambda _sue_id: users.create_user(
        "ben-again", PASSWORD, role=COUNSELOR, actor=CLI, responder_id="ben-carter"
    ),
    "set-role --responder": lambda sue_id: users.set_role(
        db.session.get_one(User, sue_id), ADMIN, actor=CLI, responder_id="ben-carter"
    ),
}


def _stop_ringing_closed(ben_id: int) -> str:
    try:
        users.stop_ringing_closed(db.session.get_one(User, ben_id), actor=CLI)
    except users.AccountError:
        return users.STILL_LINKED
    return users.STOPPED


# An administrator stops ringing Ben's phone: closing his account, or, for an account closed
# while the phone was kept ringing, the *stop ringing* step.
STOP_BEN: dict[str, Callable[[int], str]] = {
    "deactivate": lambda ben_id: users.deactivate(db.session.get_one(User, ben_id), actor=CLI).ringing,
    "stop ringing a closed account": _stop_ringing_closed,
}


@pytest.mark.parametrize("link", sorted(LINK_TO_BEN))
@pytest.mark.parametrize("stop", sorted(STOP_BEN))
def test_stopping_a_responder_while_another_account_is_linked_to_it_at_once_leaves_it_rung(
    app: Flask, make_user: MakeUser, link: str, stop: str
) -> None:
    """One administrator links an active account to Ben's responder while another stops
    ringing it (each in their own transaction and connection): the two are serialised, so
    the second sees the first's change, and the line never ends up not ringing a responder
    an active account is linked to."""
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    sue = make_user(SUPERVISOR, "sue")
    make_user(ADMIN, "ada-admin")
    if stop == "stop ringing a closed account":
        close(app, ben.id, keep_ringing=True)
    linked = threading.Event()
    outcome: dict[str, str] = {}

    def linking() -> None:  # links, and is slow to commit
        with app.app_context():
            LINK_TO_BEN[link](sue.id)
            linked.set()
            time.sleep(0.5)  # meanwhile the other administrator stops ringing Ben
            db.session.commit()

    def stopping() -> None:
        linked.wait(timeout=10)
        with app.app_context():
            outcome["ringing"] = STOP_BEN[stop](ben.id)
            db.session.commit()

    threads = [threading.Thread(target=linking), threading.Thread(target=stopping)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert outcome == {"ringing": users.STILL_LINKED}
    with app.app_context():
        assert responders.closed_responder_ids() == set()


def picked_up(fake: FakeTwilio, number: str) -> tuple[str, dict[str, str]]:
    """The responder at ``number`` answers their leg and hears the whisper; the request their
    pressing 1 makes, to post when the test says."""
    leg = leg_to(fake, number)
    fake.advance_call(leg.sid, "ringing")
    whisper = ET.fromstring(fake.advance_call(leg.sid, "in-progress") or "")  # noqa: S314 - our own TwiML
    gather = whisper.find("Gather")
    assert gather is not None
    identity = CallIdentity(fake.account_sid, leg.from_, leg.to, call_sid=leg.sid, direction="outbound-api")
    return urljoin(leg.url or "", gather.get("action", "")), gather_digits_params(identity, "1")


@pytest.mark.usefixtures("wednesday_evening")
def test_a_call_ringing_the_responder_when_the_account_is_closed_cannot_be_accepted_and_goes_on_to_the_next(
    app: Flask, phone: Phone, fake: FakeTwilio, make_user: MakeUser
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    caller = phone.call(SUICIDE, max_hold_turns=0)
    press_one = picked_up(fake, BEN)  # Ben hears the whisper...
    close(app, ben.id)  # ...when his account is closed

    told = phone.post(*press_one).body

    assert "<Conference" not in told
    assert "the console account linked to it was closed" in told
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]  # the search went on, as for a pass
    diego = phone.answer(leg_to(fake, DIEGO).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference is not None and caller.conference == diego.conference
    with app.app_context():
        offer = db.session.scalars(select(Offer).where(Offer.responder_id == "ben-carter")).one()
        assert (offer.state, offer.outcome) == ("ended", responders.ACCOUNT_CLOSED)
        assert db.session.get_one(ResponderState, "ben-carter").engaged_offer_id is None


@pytest.mark.usefixtures("wednesday_evening")
def test_a_responder_whose_account_was_closed_while_their_phone_rang_is_not_briefed_on_the_caller(
    app: Flask, phone: Phone, fake: FakeTwilio, make_user: MakeUser
) -> None:
    ben = make_user(COUNSELOR, "ben", responder_id="ben-carter")
    caller = phone.call(SUICIDE, max_hold_turns=0)
    ringing = leg_to(fake, BEN)
    close(app, ben.id)  # while his phone rings

    fake.advance_call(ringing.sid, "ringing")
    heard = fake.advance_call(ringing.sid, "in-progress") or ""  # he picks up

    assert "the console account linked to it was closed" in heard
    assert "<Gather" not in heard and "suicide" not in heard.lower()  # no whisper, nothing of the caller
    assert [leg.to for leg in legs(fake)] == [BEN, DIEGO]  # the search went on at once
    diego = phone.answer(leg_to(fake, DIEGO).sid, [Keys("1")])
    phone.resume(caller, max_hold_turns=0)
    assert caller.conference is not None and caller.conference == diego.conference
    with app.app_context():
        offer = db.session.scalars(select(Offer).where(Offer.responder_id == "ben-carter")).one()
        assert (offer.state, offer.outcome) == ("ended", responders.ACCOUNT_CLOSED)
