"""A counselor sees what became of each text sent to the texter: delivered, not delivered (and
why, in plain words), or possibly never sent (Twilio could not be reached, so the line did not
send it again blindly). Their page reloads when that changes. Supervisors see the last hour's
texts that did not arrive on the live board. Signed webhooks over HTTP, the fake Twilio's own
delivery callbacks, and a real timeout against a slow fake API."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from console.board.live import UNDELIVERED_LISTED_FOR, undelivered_rows
from console.models import COUNSELOR, SUPERVISOR
from crisisline.db import db
from crisisline.models import NOT_DELIVERED_ROWS, utcnow
from crisisline.settings import Settings
from routing import store
from sms.conversations import stuck_texts
from sms.delivery import NOT_ARRIVED, UNSURE_AFTER
from tests.conftest import TextingPhone
from tests.console.conftest import MakeUser, sign_in
from tests.console.test_board_and_desk import board, only_ana_on_call, without_digits_of
from tests.console.test_inbox_and_wrap_up import me, offered_tag, post
from transfer import dispatch
from twilio_fake.rest_api import FakeTwilio, MessageRecord

TEXTER = "+13125550177"


def sent_to_texter(fake: FakeTwilio, body: str) -> MessageRecord:
    (message,) = [m for m in fake.messages.values() if m.to == TEXTER and m.body == body]
    return message


def delivery_after(page: str, body: str) -> str:
    """The delivery note shown with the text ``body`` in the thread ("" if none)."""
    item = page.split(f'<span class="body">{body}</span>', 1)[1].split("</li>", 1)[0]
    found = re.search(r'<span class="delivery [a-z]+"[^>]*>([^<]*)</span>', item)
    return found.group(1) if found else ""


def next_text_times_out(app: Flask, fake: FakeTwilio) -> None:
    """The line's next text: Twilio answers after the line's REST timeout (a real timeout)."""
    with app.app_context():
        dispatch.rest_client().client.http_client.timeout = 0.5  # type: ignore[union-attr]
    fake.inject_fault("POST", r"/Messages\.json$", status=200, delay=1.0, times=1)  # answered too late


def take_a_text(client: FlaskClient, texting: TextingPhone, publish_routing: Callable[..., int],
                make_user: MakeUser) -> str:  # fmt: skip
    only_ana_on_call(publish_routing)
    sign_in(client, make_user(COUNSELOR, "ana"))
    texting.send(TEXTER, "I keep having panic attacks and I can't breathe")
    tag = offered_tag(texting)
    assert post(client, f"/console/me/texts/{tag}/take", key="take-key-0000000000001").status_code == 302
    return f"/console/me/texts/{tag}"


def test_a_counselor_sees_which_texts_reached_the_texter_and_why_one_did_not(
    client: FlaskClient, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser,
) -> None:  # fmt: skip
    thread = take_a_text(client, texting, publish_routing, make_user)
    assert (
        post(client, f"{thread}/reply", body="Are you somewhere safe?", key="reply-key-000000000001").status_code == 302
    )
    assert post(client, f"{thread}/reply", body="I am still here.", key="reply-key-000000000002").status_code == 302
    page = client.get(thread).get_data(as_text=True)
    assert delivery_after(page, "Are you somewhere safe?") == ""  # on its way: nothing to say yet
    signature = me(client)["inbox"]

    fake.deliver_message(sent_to_texter(fake, "Are you somewhere safe?").sid)
    fake.deliver_message(sent_to_texter(fake, "I am still here.").sid, "undelivered", 30003)

    page = client.get(thread).get_data(as_text=True)
    assert delivery_after(page, "Are you somewhere safe?") == "Delivered"
    assert delivery_after(page, "I am still here.") == "Not delivered: their phone is off or out of signal."
    assert 'class="delivery failed" role="note"' in page
    assert me(client)["inbox"] != signature  # the open page reloads to show it


def test_a_reply_twilio_never_took_is_flagged_as_maybe_unsent_after_two_minutes(
    app: Flask, client: FlaskClient, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser, wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    thread = take_a_text(client, texting, publish_routing, make_user)
    next_text_times_out(app, fake)

    assert post(client, f"{thread}/reply", body="Can you tell me where you are?",
                key="reply-key-000000000003").status_code == 302  # fmt: skip
    assert delivery_after(client.get(thread).get_data(as_text=True), "Can you tell me where you are?") == ""
    signature = me(client)["inbox"]

    wednesday_evening.shift(UNSURE_AFTER + timedelta(seconds=1))

    page = client.get(thread).get_data(as_text=True)
    assert delivery_after(page, "Can you tell me where you are?") == (
        "May not have been sent: the line does not know whether Twilio took it. Check with the texter."
    )
    assert me(client)["inbox"] != signature


def test_the_board_lists_texts_that_did_not_reach_a_texter_in_the_last_hour_but_not_a_stop(
    app: Flask, client: FlaskClient, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser, wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    thread = take_a_text(client, texting, publish_routing, make_user)
    tag = "#" + thread.rsplit("/", 1)[1]
    for number, body in enumerate(("Are you somewhere safe?", "I am still here.", "Text me when you can.")):
        assert post(client, f"{thread}/reply", body=body, key=f"reply-key-10000000000{number}").status_code == 302
    fake.deliver_message(sent_to_texter(fake, "Are you somewhere safe?").sid)
    fake.deliver_message(sent_to_texter(fake, "I am still here.").sid, "undelivered", 30003)
    fake.deliver_message(sent_to_texter(fake, "Text me when you can.").sid, "failed", 21610)  # they chose STOP
    supervisor = app.test_client()
    sue = make_user(SUPERVISOR, "sue-supervisor")
    sign_in(supervisor, sue)

    data = board(supervisor)
    page = supervisor.get("/console/board").get_data(as_text=True)

    assert data["counts"]["undelivered"] == 1
    (row,) = data["undelivered"]
    assert (row["tag"], row["counselor"], row["what"]) == (
        tag, "Ana Ruiz", "Not delivered: their phone is off or out of signal."
    )  # fmt: skip
    assert "Texts that did not reach a texter" in page and "their phone is off" in page
    for shown in (str(data), page):
        assert "still here" not in shown and without_digits_of([TEXTER], shown)

    wednesday_evening.shift(UNDELIVERED_LISTED_FOR + timedelta(minutes=1))
    sign_in(supervisor, sue)  # the console's idle sign-out came first
    assert board(supervisor)["undelivered"] == []


def test_the_board_names_nobody_for_a_closed_conversation_and_lists_a_reply_that_may_not_have_gone_out(
    app: Flask, client: FlaskClient, texting: TextingPhone, fake: FakeTwilio, publish_routing: Callable[..., int],
    make_user: MakeUser, wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    thread = take_a_text(client, texting, publish_routing, make_user)
    next_text_times_out(app, fake)
    post(client, f"{thread}/reply", body="Can you tell me where you are?", key="reply-key-300000000000")
    post(client, f"{thread}/reply", body="Please stay with me.", key="reply-key-300000000001")
    fake.deliver_message(sent_to_texter(fake, "Please stay with me.").sid, "undelivered", 30006)
    assert post(client, f"{thread}/end", key="end-key-30000000000000").status_code == 302  # Ana no longer holds it
    wednesday_evening.shift(UNSURE_AFTER + timedelta(seconds=1))
    supervisor = app.test_client()
    sign_in(supervisor, make_user(SUPERVISOR, "sue-supervisor"))

    rows = board(supervisor)["undelivered"]

    assert [(row["counselor"], row["what"]) for row in rows] == [
        (None, "Not delivered: the number cannot receive texts (a landline?)."),
        (None, "May not have been sent: the line does not know whether Twilio took it. Check with the texter."),
    ]  # newest first; no error code on the second, and still listed


def test_the_index_of_texts_not_delivered_covers_every_status_the_board_reads() -> None:
    indexed = set(re.findall(r"'([a-z_]+)'", NOT_DELIVERED_ROWS)) - {"out"}
    assert indexed == {"claimed", *NOT_ARRIVED}


def test_on_sqlite_the_board_reads_texts_through_their_partial_indexes_not_the_whole_table(
    app: Flask, settings: Settings
) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite's rule: a partial index only for a query that states its condition word for word")
    with app.app_context():
        document = store.active_routing()
        assert document is not None
        moment = utcnow()
        undelivered = plan_of(lambda: undelivered_rows(document.document, moment))
        stuck = plan_of(lambda: db.session.scalars(stuck_texts(moment)).all())

    assert any("USING INDEX ix_messages_not_delivered" in step for step in undelivered), undelivered
    assert any("USING INDEX ix_messages_unhandled" in step for step in stuck), stuck


def plan_of(run: Callable[[], object]) -> list[str]:
    """SQLite's plan for the statement on ``messages`` that ``run`` sends, as it was sent."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    statement, parameters = next((sql, bound) for sql, bound in sent if "FROM messages" in sql)
    rows = db.session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    return [str(row[-1]) for row in rows]
