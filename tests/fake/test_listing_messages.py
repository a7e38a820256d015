"""Listing texts in the fake Twilio as Twilio documents it: ``To``/``From``, ``DateSent`` (a GMT
date: ``DateSent<`` on or before it, ``DateSent>`` on or after it), newest first, a page at a
time through ``next_page_uri``. Over real HTTP, through twilio-python and the line's ``TwilioRest``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
from twilio.rest import Client

from crisisline.telephony import TwilioRest, make_rest_client
from twilio_fake.rest_api import MessageRecord
from twilio_fake.server import FakeTwilioServer
from twilio_fake.signing import new_sid

TEXTER, OTHER, LINE = "+14155550100", "+14155550101", "+14155550199"
DAY = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)


def a_text(server: FakeTwilioServer, to: str, from_: str, sent: datetime | None) -> str:
    status = "delivered" if sent else "failed"
    message = MessageRecord(sid=new_sid("SM"), account_sid=server.account_sid, to=to, from_=from_, body="words",
                            status=status, date_created=sent or DAY, date_sent=sent)  # fmt: skip
    server.fake.messages[message.sid] = message
    return message.sid


@pytest.fixture
def rest(server: FakeTwilioServer) -> TwilioRest:
    return TwilioRest(make_rest_client(server.account_sid, server.auth_token, server.base_url))


def test_date_sent_before_lists_the_texts_sent_on_or_before_that_gmt_date_newest_first(
    server: FakeTwilioServer, client: Client
) -> None:
    day_before = a_text(server, TEXTER, LINE, DAY - timedelta(days=1))
    that_day = a_text(server, TEXTER, LINE, DAY.replace(hour=23, minute=59))
    day_after = a_text(server, TEXTER, LINE, DAY + timedelta(days=1))
    never_sent = a_text(server, TEXTER, LINE, None)
    a_text(server, OTHER, LINE, DAY - timedelta(days=1))

    by_day = [m.sid for m in client.messages.list(to=TEXTER, from_=LINE, date_sent_before=DAY)]
    from_day = [m.sid for m in client.messages.list(to=TEXTER, from_=LINE, date_sent_after=DAY)]
    on_day = [m.sid for m in client.messages.list(to=TEXTER, date_sent=DAY)]
    every = [m.sid for m in client.messages.list(to=TEXTER)]

    assert by_day == [that_day, day_before]  # twilio-python sends a timestamp: its date counts
    assert from_day == [day_after, that_day]
    assert on_day == [that_day]
    assert every == [never_sent, day_after, that_day, day_before]  # no date filter: unsent ones too


def test_a_date_twilio_cannot_read_is_refused(server: FakeTwilioServer) -> None:
    response = requests.get(
        f"{server.base_url}/2010-04-01/Accounts/{server.account_sid}/Messages.json",
        params={"DateSent<": "yesterday"}, auth=(server.account_sid, server.auth_token), timeout=5,
    )  # fmt: skip

    assert (response.status_code, response.json()["code"]) == (400, 20001)


def test_the_lines_client_reads_every_page_and_every_text_between_two_numbers_sent_or_never_sent(
    server: FakeTwilioServer, rest: TwilioRest
) -> None:
    sent = [a_text(server, TEXTER, LINE, DAY - timedelta(hours=hours)) for hours in reversed(range(4))]
    never_sent = a_text(server, TEXTER, LINE, None)  # failed: no date_sent, which a DateSent filter drops
    later = a_text(server, TEXTER, LINE, DAY + timedelta(days=2))
    a_text(server, OTHER, LINE, DAY)

    pages = list(rest.messages.pages(to=TEXTER, from_=LINE, page_size=2))

    assert [len(page) for page in pages] == [2, 2, 2]
    listed = [text.sid for page in pages for text in page]
    assert listed == [later, never_sent, *sent[::-1]]  # newest first
    assert {(text.to, text.from_) for page in pages for text in page} == {(TEXTER, LINE)}
    by_sid = {text.sid: text for page in pages for text in page}
    assert by_sid[sent[-1]].date_sent == DAY and by_sid[sent[-1]].date_created is not None
    assert by_sid[never_sent].date_sent is None and by_sid[never_sent].date_created == DAY


def test_the_lines_client_follows_no_next_page_outside_the_list(rest: TwilioRest) -> None:
    with pytest.raises(ValueError, match="not a page of the list"):
        rest.next_page("/2010-04-01/Accounts/AC0/Calls.json?Page=1", "Messages.json")


def test_an_inbound_text_is_dated_as_sent_when_twilio_received_it(server: FakeTwilioServer) -> None:
    message = server.fake.record_inbound_message(new_sid("SM"), TEXTER, LINE, "hello")

    assert message.date_sent is not None and message.date_sent == message.date_created


def test_the_lines_client_given_a_moment_lists_every_text_sent_before_it_and_none_never_sent(
    server: FakeTwilioServer, rest: TwilioRest
) -> None:
    sent = [a_text(server, TEXTER, LINE, DAY - timedelta(hours=hours)) for hours in reversed(range(3))]
    never_sent = a_text(server, TEXTER, LINE, None)
    later = a_text(server, TEXTER, LINE, DAY + timedelta(days=2))

    pages = list(rest.messages.pages(to=TEXTER, from_=LINE, sent_before=DAY, page_size=2))

    listed = [text.sid for page in pages for text in page]
    assert listed == sent[::-1]  # newest first; the day after's would be listed too, not two days after
    assert later not in listed and never_sent not in listed  # Twilio's DateSent< leaves out a text never sent
