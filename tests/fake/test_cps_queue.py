"""Twilio's calls-per-second queue in the stand-in: REST-created calls are placed at the
account's CPS, the rest wait with an estimated ``queue_time``, and nothing about a queued call
progresses before its slot. Off by default, so every other test's calls are placed at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.fake.conftest import WebhookReceiver
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.server import FakeTwilioServer, main

HOTLINE = "+14155550199"
COUNSELORS = ("+16175551212", "+16175551213", "+16175551214", "+16175551215")
LEG_EVENTS = ["initiated", "ringing", "answered", "completed"]
TWIML = "<Response><Say>Press 1</Say></Response>"


@pytest.fixture
def cps_server() -> Iterator[FakeTwilioServer]:
    """Four calls per second, legs dialling themselves as on Twilio."""
    with FakeTwilioServer(calls_per_second=4, ring_timeouts=True, dial_delay=0.01) as running:
        yield running


def _place(client: Client, receiver: WebhookReceiver, to: str, path: str = "/status") -> tuple[str, int]:
    call = client.calls.create(
        to=to, from_=HOTLINE, twiml=TWIML, status_callback=receiver.url(path),
        status_callback_event=LEG_EVENTS, timeout=30,
    )  # fmt: skip
    return str(call.sid), int(call.queue_time or "0")


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_calls_beyond_the_rate_wait_in_the_queue_with_an_estimated_queue_time(
    cps_server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    client = cps_server.client()

    placed = [_place(client, receiver, to, path=f"/status/{index}") for index, to in enumerate(COUNSELORS)]

    queue_times = [queue_time for _, queue_time in placed]
    assert queue_times[0] == 0  # an empty queue places the first call at once
    assert all(0 < queue_time <= 250 * index for index, queue_time in enumerate(queue_times[1:], 1)), queue_times
    assert client.calls(placed[3][0]).fetch().queue_time == str(queue_times[3])


def test_the_queue_places_one_call_per_slot_at_the_rate() -> None:
    fake = FakeTwilio(calls_per_second=4)

    calls = [fake.create_call(to, HOTLINE, twiml=TWIML) for to in COUNSELORS]

    slots = [call.dial_at - calls[0].dial_at for call in calls]
    assert slots == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert all(abs(c.queue_time_ms - 250 * i) <= 20 for i, c in enumerate(calls))  # created within ms


def test_a_queued_call_starts_ringing_only_when_its_slot_comes(receiver: WebhookReceiver) -> None:
    with FakeTwilioServer(calls_per_second=1, ring_timeouts=True, dial_delay=0.01) as slow:
        _rings_only_at_its_slot(slow.client(), receiver)


def _rings_only_at_its_slot(client: Client, receiver: WebhookReceiver) -> None:
    created = time.monotonic()
    _place(client, receiver, COUNSELORS[0], path="/first")
    _, queue_time = _place(client, receiver, COUNSELORS[1], path="/second")

    _wait_for(lambda: bool(receiver.at("/first")))
    assert receiver.at("/second") == []  # the first call rings; the second is still queued
    _wait_for(lambda: [r.form["CallStatus"] for r in receiver.at("/second")] == ["initiated", "ringing"])

    assert time.monotonic() - created >= queue_time / 1000
    assert queue_time >= 500  # its slot was a second after the first call's


def test_driving_a_queued_call_waits_for_its_slot(receiver: WebhookReceiver) -> None:
    fake = FakeTwilio(calls_per_second=5)
    fake.create_call(COUNSELORS[0], HOTLINE, twiml=TWIML)
    second = fake.create_call(COUNSELORS[1], HOTLINE, twiml=TWIML, status_callback=receiver.url("/status"),
                              status_callback_events=LEG_EVENTS)  # fmt: skip
    started = time.monotonic()

    assert fake.advance_call(second.sid, "in-progress") == TWIML

    assert time.monotonic() - started >= 0.15  # its slot was 200 ms after the first call's
    assert [r.form["CallStatus"] for r in receiver.at("/status")] == ["initiated", "ringing", "in-progress"]


def test_a_queued_call_can_be_canceled_before_its_slot_without_a_callback(
    cps_server: FakeTwilioServer, receiver: WebhookReceiver
) -> None:
    client = cps_server.client()
    _place(client, receiver, COUNSELORS[0], path="/first")
    sid, queue_time = _place(client, receiver, COUNSELORS[1], path="/second")
    assert queue_time > 0

    client.calls(sid).update(status="canceled")
    time.sleep(queue_time / 1000 + 0.1)

    assert client.calls(sid).fetch().status == "canceled"
    assert receiver.at("/second") == []  # a queued call that is canceled sends nothing


def test_without_a_rate_every_call_is_placed_at_once(server: FakeTwilioServer, client: Client) -> None:
    calls = [client.calls.create(to=to, from_=HOTLINE, twiml=TWIML) for to in COUNSELORS]

    assert [call.queue_time for call in calls] == ["0"] * len(COUNSELORS)
    assert server.fake.calls_per_second is None


def test_conference_participants_queue_like_calls(receiver: WebhookReceiver) -> None:
    fake = FakeTwilio(calls_per_second=1)
    fake.create_call(COUNSELORS[0], HOTLINE, twiml=TWIML)

    participant = fake.add_participant("room-1", HOTLINE, COUNSELORS[1])

    assert 900 <= participant.queue_time_ms <= 1000


def test_the_rate_can_be_changed_at_run_time_through_the_control_endpoint(
    server: FakeTwilioServer, client: Client
) -> None:
    reply = requests.post(f"{server.base_url}/_fake/cps", data={"calls_per_second": "2"}, timeout=5)
    assert reply.json() == {"calls_per_second": 2.0}
    first = client.calls.create(to=COUNSELORS[0], from_=HOTLINE, twiml=TWIML)
    second = client.calls.create(to=COUNSELORS[1], from_=HOTLINE, twiml=TWIML)

    requests.post(f"{server.base_url}/_fake/cps", data={"calls_per_second": ""}, timeout=5)
    third = client.calls.create(to=COUNSELORS[2], from_=HOTLINE, twiml=TWIML)

    assert first.queue_time == "0"
    assert 0 < int(second.queue_time or "0") <= 500
    assert third.queue_time == "0"
    state = requests.get(f"{server.base_url}/_fake/calls", timeout=5).json()["calls"]
    assert state[1]["dialled_at"] - state[1]["created_at"] == pytest.approx(int(second.queue_time or "0") / 1000)


def test_a_queue_holding_more_than_a_day_refuses_new_calls(server: FakeTwilioServer, client: Client) -> None:
    server.fake.set_calls_per_second(1 / 43_200)  # one call per 12 hours: the third would wait 24 h+
    client.calls.create(to=COUNSELORS[0], from_=HOTLINE, twiml=TWIML)
    client.calls.create(to=COUNSELORS[1], from_=HOTLINE, twiml=TWIML)
    client.calls.create(to=COUNSELORS[2], from_=HOTLINE, twiml=TWIML)

    with pytest.raises(TwilioRestException) as refused:
        client.calls.create(to=COUNSELORS[3], from_=HOTLINE, twiml=TWIML)

    assert refused.value.code == 22005


def test_reset_empties_the_queue_but_keeps_the_rate() -> None:
    fake = FakeTwilio(calls_per_second=1)
    fake.create_call(COUNSELORS[0], HOTLINE, twiml=TWIML)

    fake.reset()
    after = fake.create_call(COUNSELORS[1], HOTLINE, twiml=TWIML)

    assert after.queue_time_ms == 0
    assert fake.calls_per_second == 1


def test_the_server_reads_its_rate_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    def fake_server(host: str, port: int, fake: FakeTwilio, web_phone: object = None) -> object:
        seen["cps"] = fake.calls_per_second
        raise Stop

    monkeypatch.setenv("FAKE_TWILIO_CPS", "1")
    monkeypatch.setattr("twilio_fake.server._make_server", fake_server)
    with pytest.raises(Stop):
        main(["--port", "0"])

    assert seen["cps"] == 1.0


def test_canceled_calls_at_the_end_of_the_queue_give_their_slots_back() -> None:
    fake = FakeTwilio(calls_per_second=1)
    calls = [fake.create_call(to, HOTLINE, twiml=TWIML) for to in COUNSELORS[:3]]  # slots 0, 1, 2 s

    fake.update_call(calls[2].sid, status="canceled")
    after_one = fake.create_call(COUNSELORS[3], HOTLINE, twiml=TWIML)
    assert 1900 <= after_one.queue_time_ms <= 2000  # the canceled call's slot, not the one after it

    for call in (calls[1], after_one):
        fake.update_call(call.sid, status="canceled")
    after_all = fake.create_call(COUNSELORS[1], HOTLINE, twiml=TWIML)
    assert after_all.queue_time_ms <= 1000  # only the call already placed is ahead of it


def test_a_slow_api_can_be_injected_and_cleared_through_the_control_endpoint(
    server: FakeTwilioServer, client: Client
) -> None:
    reply = requests.post(f"{server.base_url}/_fake/faults", timeout=5,
                          data={"method": "POST", "path_regex": r"/Calls\.json$", "status": "200", "delay": "0.3",
                                "times": ""})  # fmt: skip
    assert reply.json() == {"method": "POST", "path_regex": r"/Calls\.json$", "status": 200, "delay": 0.3,
                            "times": None}  # fmt: skip

    began = time.monotonic()
    client.calls.create(to=COUNSELORS[0], from_=HOTLINE, twiml=TWIML)
    client.calls.create(to=COUNSELORS[1], from_=HOTLINE, twiml=TWIML)
    slow = time.monotonic() - began
    requests.post(f"{server.base_url}/_fake/faults/clear", timeout=5)
    began = time.monotonic()
    client.calls.create(to=COUNSELORS[2], from_=HOTLINE, twiml=TWIML)
    fast = time.monotonic() - began

    assert slow >= 0.6  # both slowed: forever, not once
    assert fast < 0.3
    assert len(server.fake.calls) == 3  # slow, not failed


@pytest.mark.parametrize(
    ("field", "value"),
    [("delay", "-1"), ("delay", "soon"), ("path_regex", "("), ("times", "x"), ("times", "0"), ("status", "99")],
)
def test_an_invalid_fault_is_refused_and_adds_nothing(server: FakeTwilioServer, field: str, value: str) -> None:
    data = {"method": "POST", "path_regex": "Calls", "status": "200", "delay": "1", field: value}

    reply = requests.post(f"{server.base_url}/_fake/faults", data=data, timeout=5)

    assert reply.status_code == 400
    assert server.fake.faults == []
