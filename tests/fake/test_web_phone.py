"""The browser phone's JSON endpoints (``twilio_fake.web_phone``), through the stand-in's Flask
app with the test client; the "line" is a webhook receiver on a real port answering TwiML, so
every request the phones make is checked as the app would check it (signature included)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.fake.conftest import WebhookReceiver
from twilio_fake.rest_api import FakeTwilio, create_fake_twilio_app
from twilio_fake.web_phone import StaffMember, WebPhone, add_web_phone, pause_after, speaking_seconds, staff_in

LINE = "+13125550100"
BEN = "+13125550102"
STAFF = [StaffMember("Ben Carter", BEN, "counselor", ("en",))]
MENU = (
    '<?xml version="1.0" encoding="UTF-8"?><Response>'
    '<Gather input="dtmf speech" numDigits="1" timeout="30" action="/menu">'
    '<Say language="es-US" voice="Polly.Lupe">Para español, oprima 2.</Say></Gather>'
    "<Say>Goodbye.</Say></Response>"
)
WHISPER = (
    '<Response><Gather input="dtmf" numDigits="1" timeout="30" action="/decide">'
    "<Say>Crisis line: English-speaking caller. Press 1 to accept, 2 to pass.</Say></Gather></Response>"
)
ROOM = (
    '<Response><Say>Connecting you now.</Say><Dial action="/after" hangupOnStar="true">'
    '<Conference participantLabel="answer-1">room-1</Conference></Dial></Response>'
)
CALLER_ROOM = (
    '<Response><Dial action="/caller-after"><Conference endConferenceOnExit="true" participantLabel="caller">'
    "room-1</Conference></Dial></Response>"
)
BYE = "<Response><Say>Thank you.</Say><Hangup/></Response>"
TWIML = "text/xml; charset=utf-8"  # as the line sends it


@dataclass
class Rig:
    fake: FakeTwilio
    web: WebPhone
    client: FlaskClient
    line: WebhookReceiver

    def add(self, role: str, number: str | None = None) -> str:
        reply = self.client.post("/phone/api/phones", json={"role": role, "number": number})
        assert reply.status_code == 201, reply.get_json()
        phone_id: str = reply.get_json()["id"]
        return phone_id

    def act(self, phone_id: str, action: str, **body: str) -> Any:
        return self.client.post(f"/phone/api/phones/{phone_id}/{action}", json=body)

    def state(self, phone_id: str) -> dict[str, Any]:
        reply = self.client.get(f"/phone/api/phones/{phone_id}")
        assert reply.status_code == 200
        state: dict[str, Any] = reply.get_json()
        return state

    def wait(self, phone_id: str, check: Callable[[dict[str, Any]], object], seconds: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            state = self.state(phone_id)
            if check(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"not reached in {seconds} s: {state['state']} {state['transcript'][-5:]}")
            time.sleep(0.05)


@pytest.fixture
def rig(receiver: WebhookReceiver) -> Iterator[Rig]:
    fake = FakeTwilio(dial_delay=0.01)
    web = WebPhone(fake, receiver.url(""), LINE, directory=lambda: STAFF)
    app = create_fake_twilio_app(fake)
    add_web_phone(app, web)
    yield Rig(fake, web, app.test_client(), receiver)
    for session in list(web.phones.values()):
        session.close()
    deadline = time.monotonic() + 10
    while web.phones and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not web.phones, "a phone's thread did not stop"


def said(state: dict[str, Any]) -> list[str]:
    return [item["text"] for item in state["transcript"] if item["kind"] == "say"]


def test_the_page_its_assets_and_the_directory_are_served_without_credentials(rig: Rig) -> None:
    page = rig.client.get("/phone/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Sandbox phones" in html and LINE in html
    assert "http" not in html.replace(rig.line.url(""), "")  # every asset is local: no CDN
    for asset in ("web_phone.js", "web_phone.css"):
        with rig.client.get(f"/phone/static/{asset}") as served:  # closes the file it streams
            assert served.status_code == 200
    assert rig.client.get("/phone").status_code in (301, 308)  # to /phone/, not a 401
    directory = rig.client.get("/phone/api/directory").get_json()
    assert directory["staff"] == [{"name": "Ben Carter", "number": BEN, "kind": "counselor", "languages": ["en"]}]
    assert directory["line_number"] == LINE
    # The REST API itself still needs the account's credentials.
    assert rig.client.get(f"/2010-04-01/Accounts/{rig.fake.account_sid}/Calls.json").status_code == 401


def test_a_caller_hears_each_prompt_with_its_language_and_presses_a_key(rig: Rig) -> None:
    rig.line.reply("/voice/incoming", MENU, content_type=TWIML)
    rig.line.reply("/menu", BYE)
    caller = rig.add("caller")
    assert rig.state(caller)["number"] == "+13125550201"

    assert rig.act(caller, "call").status_code == 200
    state = rig.wait(caller, lambda s: s["state"] == "listening")

    assert state["listening"]["input"] == ["dtmf", "speech"] and state["listening"]["num_digits"] == 1
    prompt = next(item for item in state["transcript"] if item["kind"] == "say")
    assert (prompt["text"], prompt["language"]) == ("Para español, oprima 2.", "es-US")
    assert rig.act(caller, "keys", keys="2").status_code == 200
    state = rig.wait(caller, lambda s: s["state"] == "idle")
    assert said(state) == ["Para español, oprima 2.", "Thank you."]
    (menu,) = rig.line.at("/menu")
    assert menu.form["Digits"] == "2" and menu.form["From"] == "+13125550201" and menu.form["To"] == LINE
    assert menu.signature_valid(rig.fake.auth_token)
    assert rig.fake.get_call(menu.form["CallSid"]).status == "completed"  # Twilio's record of it ended
    assert state["transcript"][-1] == {"kind": "end", "text": "call ended"}


def test_spoken_words_go_as_speech_result_and_keys_nobody_hears_are_lost(rig: Rig) -> None:
    rig.line.reply("/voice/incoming", MENU)
    rig.line.reply("/menu", BYE)
    caller = rig.add("caller")
    refused = rig.act(caller, "keys", keys="5")
    assert refused.status_code == 409 and "Nobody is listening" in refused.get_json()["message"]

    rig.act(caller, "call")
    rig.wait(caller, lambda s: s["state"] == "listening")
    assert rig.act(caller, "words", words="quiero   morir").status_code == 200
    rig.wait(caller, lambda s: s["state"] == "idle")

    (menu,) = rig.line.at("/menu")
    assert menu.form["SpeechResult"] == "quiero morir" and "Digits" not in menu.form
    assert menu.signature_valid(rig.fake.auth_token)


def test_a_menu_nobody_answers_times_out_and_falls_through(rig: Rig) -> None:
    quick = MENU.replace('timeout="30"', 'timeout="0"').replace("Para español, oprima 2.", "Hi")
    rig.line.reply("/voice/incoming", quick)
    caller = rig.add("caller")
    rig.act(caller, "call")
    state = rig.wait(caller, lambda s: s["transcript"] and s["transcript"][-1]["kind"] == "end")
    assert said(state) == ["Hi", "Goodbye."]
    assert rig.line.at("/menu") == []


def test_a_counselor_rings_hears_the_whisper_accepts_and_talks_with_the_caller(rig: Rig) -> None:
    rig.line.reply("/voice/incoming", CALLER_ROOM)
    rig.line.reply("/whisper", WHISPER)
    rig.line.reply("/decide", ROOM)
    rig.line.reply("/after", BYE)
    rig.line.reply("/caller-after", "<Response/>")
    caller, ben = rig.add("caller"), rig.add("staff", BEN)
    assert rig.state(ben)["name"] == "Ben Carter"
    rig.act(caller, "call")
    rig.wait(caller, lambda s: s["state"] == "connected")

    leg = rig.fake.create_call(BEN, LINE, url=rig.line.url("/whisper"), timeout=30)
    rig.fake.advance_call(leg.sid, "ringing")
    rig.wait(ben, lambda s: s["state"] == "ringing")
    assert rig.act(ben, "answer").status_code == 200
    state = rig.wait(ben, lambda s: s["state"] == "listening")
    assert "Press 1 to accept" in said(state)[0]
    rig.act(ben, "keys", keys="1")

    state = rig.wait(ben, lambda s: s["state"] == "connected")
    assert state["with"] == ["the caller"]
    assert rig.wait(caller, lambda s: s["with"])["with"] == ["Ben Carter (+13125550102)"]
    board = rig.client.get(f"/phone/api/state?phone={caller}&phone={ben}").get_json()["board"]
    assert [sorted(room["people"]) for room in board["rooms"]] == [
        ["Ben Carter (+13125550102)", "Caller (+13125550201)"]
    ]
    (decide,) = rig.line.at("/decide")
    assert decide.form["Digits"] == "1" and decide.form["CallSid"] == leg.sid

    # Talk is typed, and read by everyone in the room.
    assert rig.act(ben, "words", words="Hi, I'm Ben. I'm here with you.").status_code == 200
    rig.wait(caller, lambda s: {"kind": "talk", "text": "Hi, I'm Ben. I'm here with you.", "who": "Ben Carter"}
             in s["transcript"])  # fmt: skip

    # * takes the counselor out of the room (hangupOnStar); the <Dial> action runs next.
    assert rig.act(ben, "keys", keys="*").status_code == 200
    state = rig.wait(ben, lambda s: s["state"] == "idle")
    (after,) = rig.line.at("/after")
    assert after.signature_valid(rig.fake.auth_token)
    assert said(state)[-1] == "Thank you."
    rig.wait(caller, lambda s: s["with"] == [])  # alone in the room now

    assert rig.act(caller, "hangup").status_code == 200
    rig.wait(caller, lambda s: s["state"] == "idle")
    assert rig.fake.get_call(rig.line.at("/voice/incoming")[0].form["CallSid"]).status == "completed"


def test_a_declined_ring_is_busy_and_an_unanswered_one_is_missed(rig: Rig) -> None:
    ben = rig.add("staff", BEN)
    declined = rig.fake.create_call(BEN, LINE, url=rig.line.url("/whisper"))
    rig.wait(ben, lambda s: s["state"] == "ringing")
    assert rig.act(ben, "decline").status_code == 200
    rig.wait(ben, lambda s: s["state"] == "idle")
    assert rig.fake.get_call(declined.sid).status == "busy"

    missed = rig.fake.create_call(BEN, LINE, url=rig.line.url("/whisper"))
    rig.wait(ben, lambda s: s["state"] == "ringing")
    rig.fake.advance_call(missed.sid, "no-answer")  # the ring timeout
    state = rig.wait(ben, lambda s: s["state"] == "idle")
    assert "missed call (no-answer)" in [item["text"] for item in state["transcript"]]
    assert rig.act(ben, "answer").status_code == 409


def test_texts_go_to_the_line_signed_and_its_replies_and_texts_come_back(rig: Rig) -> None:
    reply = "<Response><Message>Thank you. A counselor will text you back.</Message></Response>"
    rig.line.reply("/sms/incoming", reply)
    texter = rig.add("texter")

    assert rig.act(texter, "text", body="I need to talk to someone").status_code == 200

    (inbound,) = rig.line.at("/sms/incoming")
    assert inbound.form["Body"] == "I need to talk to someone" and inbound.form["From"] == "+13125550301"
    assert inbound.form["To"] == LINE and inbound.signature_valid(rig.fake.auth_token)
    rig.fake.create_message("+13125550301", "#4 Hi, I'm here.", from_=LINE)
    rig.fake.create_message(BEN, "someone else's text", from_=LINE)
    texts = rig.state(texter)["texts"]
    assert [(text["mine"], text["body"]) for text in texts] == [
        (True, "I need to talk to someone"),
        (False, "Thank you. A counselor will text you back."),
        (False, "#4 Hi, I'm here."),
    ]
    rig.act(texter, "text", body="STOP")
    assert "+13125550301" in rig.fake.opted_out  # Twilio's own opt-out handling came first


def test_phones_are_refused_for_bad_numbers_and_put_away_on_request(rig: Rig) -> None:
    assert rig.client.post("/phone/api/phones", json={"role": "staff", "number": "12"}).status_code == 400
    assert rig.client.post("/phone/api/phones", json={"role": "staff", "number": LINE}).status_code == 400
    assert rig.client.post("/phone/api/phones", json={"role": "boss"}).status_code == 400
    first, second = rig.add("caller"), rig.add("caller")
    assert rig.state(second)["number"] == "+13125550202"  # each phone its own number
    assert rig.client.delete(f"/phone/api/phones/{first}").status_code == 204
    deadline = time.monotonic() + 5
    while first in rig.web.phones and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rig.client.get(f"/phone/api/phones/{first}").status_code == 404
    gone = rig.client.get(f"/phone/api/state?phone={first}").get_json()["phones"]
    assert gone == [{"id": first, "state": "gone"}]


def test_timing_and_the_staff_of_a_routing_document() -> None:
    element = ET.fromstring(MENU)  # noqa: S314 - our own test TwiML
    assert speaking_seconds(element[0]) == pytest.approx(0.3 + 4 / 2.5)
    assert pause_after(element) == 1.0
    document = {
        "line": {"region": "US"},
        "counselors": [{"id": "ana", "name": "Ana Ruiz", "phone": "(312) 555-0101", "languages": ["en", "es"]}],
        "co_responder_units": [{"id": "north", "name": "North Unit", "phone": "+1 312 555 0150"}],
        "supervisors": [{"id": "sam", "name": "Sam", "phone": "not a number"}],
    }
    assert staff_in(document) == [
        StaffMember("Ana Ruiz", "+13125550101", "counselor", ("en", "es")),
        StaffMember("North Unit", "+13125550150", "unit", ()),
    ]
