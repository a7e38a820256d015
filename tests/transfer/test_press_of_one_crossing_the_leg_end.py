"""A counselor presses 1 and hangs up at once, and the two webhooks cross: the leg's final status
callback reads the offer as ``answered``, then the press of 1 is handled (``accepted``, the
caller on their way into the room), then the callback closes the offer it read. It must not
leave the caller in a room their counselor has already left: the offer is ended from
``accepted`` and the caller moved on, as when an accepted counselor leaves
(``flow.offer_leg_ended``).

Driven in that order, not with sleeps: the callback's read, the press of 1 over HTTP (signed, as
Twilio sends it), then the rest of the callback's handling with what it read."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urljoin

import pytest
from flask import Flask
from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Offer, Transfer
from routing.store import active_routing
from tests.rota import BEN, leg_to
from transfer import flow
from twilio_fake.phone import Keys, Phone
from twilio_fake.rest_api import CallRecord, FakeTwilio
from twilio_fake.signing import CallIdentity, gather_digits_params

pytestmark = pytest.mark.usefixtures("fake", "wednesday_evening")


def press_one_request(fake: FakeTwilio, leg: CallRecord) -> tuple[str, dict[str, str]]:
    """Answer a responder's leg (they hear the whisper); the request their pressing 1 makes."""
    fake.advance_call(leg.sid, "ringing")
    whisper = ET.fromstring(fake.advance_call(leg.sid, "in-progress") or "")  # noqa: S314 - our own TwiML
    gather = whisper.find("Gather")
    assert gather is not None
    identity = CallIdentity(fake.account_sid, leg.from_, leg.to, call_sid=leg.sid, direction="outbound-api")
    return urljoin(leg.url or "", gather.get("action", "")), gather_digits_params(identity, "1")


def test_a_press_of_one_handled_after_the_leg_end_was_read_moves_the_caller_on_not_into_an_empty_room(
    app: Flask, phone: Phone, fake: FakeTwilio
) -> None:
    caller = phone.call([Keys("1"), Keys("2")], max_hold_turns=0)
    ben = leg_to(fake, BEN)
    url, press = press_one_request(fake, ben)

    with app.app_context():
        # Ben's leg-ended status callback reads his offer: answered, no decision yet.
        offer = db.session.scalars(select(Offer).where(Offer.call_sid == ben.sid)).one()
        transfer = db.session.get(Transfer, offer.transfer_id)
        assert transfer is not None and offer.state == "answered"
        offer_id = offer.id

        phone.post(url, press)  # his press of 1, handled meanwhile: accepted, the caller redirected in

        routing = active_routing()
        assert routing is not None
        moved = flow.offer_leg_ended(offer, transfer, routing.document, "completed")

    assert moved, "the caller was left to join a room their counselor had left"
    with app.app_context():
        ended = db.session.get(Offer, offer_id)
        assert ended is not None
        assert (ended.state, ended.outcome) == ("ended", "completed")
    # The caller is sent on to the staff-left turn (told, and searched for again).
    redirects = fake.get_call(caller.identity.call_sid).redirects
    assert redirects and "/voice/transfer/staff-left" in (redirects[-1].url or "")
