"""The fake served with ``--keep-alive`` (as the benches run it): one process's state, and the
line's REST client reusing one connection as it does against api.twilio.com."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
from twilio.base.exceptions import TwilioRestException

from crisisline.redis_server import free_port
from crisisline.telephony import make_rest_client

ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "keep-alive-token"


@pytest.fixture
def keep_alive_url() -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "twilio_fake.server", "--port", str(port), "--account-sid", ACCOUNT_SID,
            "--auth-token", AUTH_TOKEN, "--keep-alive"]  # fmt: skip
    process = subprocess.Popen(  # noqa: S603
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(f"{url}/_fake/state", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_rest_client_reuses_one_connection_and_every_request_sees_the_same_fake(
    keep_alive_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_rest_client(ACCOUNT_SID, AUTH_TOKEN, keep_alive_url)
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        sids = [client.messages.create(to="+14155550100", from_="+14155550199", body=f"hi {n}").sid for n in range(3)]

    new_connection = ("Starting new HTTP", "Resetting dropped")  # urllib3's words for one
    opened = [record for record in caplog.records if record.getMessage().startswith(new_connection)]
    assert len(opened) == 1  # werkzeug's server closes each: three
    sent = requests.get(f"{keep_alive_url}/_fake/state", timeout=5).json()["messages"]
    assert [message["sid"] for message in sent] == sids


def test_a_request_with_a_wrong_signature_is_still_refused(keep_alive_url: str) -> None:
    client = make_rest_client(ACCOUNT_SID, "not-the-token", keep_alive_url)

    with pytest.raises(TwilioRestException) as refused:
        client.messages.create(to="+14155550100", from_="+14155550199", body="hi")

    assert refused.value.status == 401
