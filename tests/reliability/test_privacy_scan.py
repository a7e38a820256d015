"""Privacy: after a scripted day of calls and texts through the real webhooks, nothing a person
is (their number) or said (a text, a spoken answer, a check-in reply) is stored or logged in
plain text: a scan of every table and column, every Redis key and value (RQ's job payloads and
failed-job registry included, decompressed), and every log record of the web process and of a
real worker process. Prints what it scanned; a leak is named by place, never by its value."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import redis
import time_machine
from flask import Flask
from rq.registry import FailedJobRegistry
from sqlalchemy import func, inspect, select, text

from crisisline.app import rq
from crisisline.cli import sealed_columns
from crisisline.db import db
from crisisline.models import Conversation, ScheduledContact
from crisisline.settings import Settings, new_data_encryption_key
from tests.conftest import ROOT, TextingPhone, deployment_environment
from tests.rota import BEN, legs
from twilio_fake.phone import Keys, Phone, PhoneCall, Words
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.server import FakeTwilioServer
from workers.contacts import CONTACT_QUEUES

# The people of the day (none is a staff number or the line's own).
PEOPLE = {
    "connected caller": "+13125550123",
    "caller who hung up": "+13125550124",
    "callback caller": "+13125550125",
    "texter": "+13125550126",
    "texter who said STOP": "+13125550127",
    "caller whose text failed": "+13125550128",
}
# What they said, each with a word found nowhere else, so a match is certainly a leak.
SAID = {
    "first text": ("I want to kill myself, nobody knows about the Marigold letters", "marigold"),
    "texter's reply": ("are you there? the Quillfeather thing again", "quillfeather"),
    "counselor's text": ("I'm here. Tell me about Thistlewick, if you like.", "thistlewick"),
    "STOP texter's text": ("hello is this the line? Brambleton said to text", "brambleton"),
    "spoken need": ("quiero morir por lo de Zarzamora", "zarzamora"),
    "check-in reply": ("not great, couldn't sleep after Wolfsbane night", "wolfsbane"),
}
HOUR = timedelta(hours=1)


def number_shapes(e164: str) -> dict[str, str]:
    """The ways a US number is written: E.164, digits only, and the national formats."""
    area, exchange, line = e164[2:5], e164[5:8], e164[8:]
    return {
        "E.164": e164,
        "digits": f"{area}{exchange}{line}",
        "(312) 555-0123": f"({area}) {exchange}-{line}",
        "312-555-0123": f"{area}-{exchange}-{line}",
        "312.555.0123": f"{area}.{exchange}.{line}",
        "312 555 0123": f"{area} {exchange} {line}",
    }


NEEDLES: dict[str, str] = {
    **{f"{who} ({shape})": value for who, number in PEOPLE.items() for shape, value in number_shapes(number).items()},
    **{f"{what} (whole)": said for what, (said, _word) in SAID.items()},
    **{f"{what} (its rare word)": word for what, (_said, word) in SAID.items()},
}


@dataclass
class Scan:
    """Places scanned and leaks found (a leak is its place and the needle's *name*)."""

    figures: dict[str, int] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)

    def look(self, place: str, content: str) -> None:
        lowered = content.lower()
        for name, needle in NEEDLES.items():
            if needle.lower() in lowered:
                self.leaks.append(f"{place}: {name}")

    def count(self, figure: str, by: int = 1) -> None:
        self.figures[figure] = self.figures.get(figure, 0) + by


def as_texts(value: object) -> Iterator[str]:
    """A stored value as text, and again decompressed when it is zlib data (RQ's job payloads
    are) or base64 of zlib data (RQ's results: a failed job's traceback), so compression
    cannot hide anything."""
    if not isinstance(value, bytes):
        yield str(value)
        return
    yield value.decode("utf-8", "replace")
    try:
        unwrapped = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        unwrapped = b""
    for candidate in (value, unwrapped):
        try:
            yield zlib.decompress(candidate).decode("utf-8", "replace")
        except zlib.error:
            continue


def scan_database(app: Flask, scan: Scan) -> None:
    with app.app_context():
        tables = inspect(db.engine).get_table_names()
        for table in tables:
            scan.count("tables")
            result = db.session.execute(text(f'SELECT * FROM "{table}"'))  # names from the schema
            columns = list(result.keys())
            for row in result:
                scan.count("rows")
                for column, value in zip(columns, row, strict=True):
                    scan.count("cells")
                    for content in as_texts(value):
                        scan.look(f"table {table}, column {column}", content)


def stored_values(connection: redis.Redis, key: bytes) -> tuple[str, list[object]]:
    """A Redis key's kind and every value it holds (members, fields and values, entries)."""
    kind = connection.type(key).decode()
    values: list[object] = []
    if kind == "string":
        values = [connection.get(key)]
    elif kind == "hash":
        values = [part for pair in connection.hgetall(key).items() for part in pair]
    elif kind == "list":
        values = list(connection.lrange(key, 0, -1))
    elif kind == "set":
        values = list(connection.smembers(key))
    elif kind == "zset":
        values = [member for member, _score in connection.zrange(key, 0, -1, withscores=True)]
    elif kind == "stream":
        values = [part for _id, entry in connection.xrange(key) for pair in entry.items() for part in pair]
    return kind, values


def scan_redis(connection: redis.Redis, scan: Scan) -> None:
    for key in connection.scan_iter(count=500):
        scan.count("Redis keys")
        name = key.decode("utf-8", "replace")
        scan.look(f"Redis key name {name}", name)
        kind, values = stored_values(connection, key)
        for value in values:
            scan.count("Redis values")
            for content in as_texts(value):
                scan.look(f"Redis key {name} ({kind})", content)


FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s")


def scan_logs(records: list[logging.LogRecord], scan: Scan) -> None:
    for record in records:
        scan.count("log records")
        line = FORMAT.format(record)  # the message, and any traceback and stack, as a handler writes them
        scan.count("log lines", line.count("\n") + 1)
        scan.look(f"log of logger {record.name} ({record.levelname})", line)
        if "[redacted-number]" in line:  # the filter caught a number the code tried to log
            scan.count(f"numbers masked by the log filter ({record.name})")


def run_worker_logging_everything(settings: Settings, fake_twilio_server: FakeTwilioServer, **extra: str) -> str:
    """The worker as a real process at LOG_LEVEL=DEBUG, in burst mode; returns all it printed."""
    env = {
        **os.environ,
        **deployment_environment(
            settings.database_url, settings.redis_url, LOG_LEVEL="DEBUG",
            TWILIO_API_BASE_URL=fake_twilio_server.base_url, PUBLIC_BASE_URL=settings.public_base_url or "",
            **extra,
        ),
    }  # fmt: skip
    command = [sys.executable, "-m", "flask", "--app", "crisisline", "rq", "worker", "--burst", *CONTACT_QUEUES]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, timeout=120, check=True)  # noqa: S603
    return done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")


def run_due_in_process(app: Flask) -> list[str]:
    """Run the contacts due by the travelled clock here, as the RQ job does (logs captured)."""
    from workers.contacts import now, run_scheduled_contact

    with app.app_context():
        due = db.session.scalars(
            select(ScheduledContact.id).where(ScheduledContact.state == "pending", ScheduledContact.due_at <= now())
        ).all()
        return [run_scheduled_contact(contact_id) for contact_id in due]


def tag_of_newest_conversation(app: Flask) -> int:
    with app.app_context():
        tag = db.session.scalars(select(Conversation.id).order_by(Conversation.id.desc())).first()
    assert tag is not None
    return tag


def a_day_of_texts(app: Flask, texting: TextingPhone) -> None:
    """A texter talks with a counselor who takes the text, ends it, and they agree to a check-in;
    another texter says hello, then STOP."""
    texter = PEOPLE["texter"]
    first, _ = SAID["first text"]
    counselors_text, _ = SAID["counselor's text"]
    texting.send(texter, first)
    tag = tag_of_newest_conversation(app)
    taken = texting.send(BEN, f"YES {tag}")
    assert taken[0] == f"#{tag}: {first}"  # the counselor reads it; nobody else does
    texting.send(texter, SAID["texter's reply"][0])
    texting.send(BEN, f"#{tag} {counselors_text}")
    assert texting.inbox(texter)[-1] == counselors_text
    texting.send(BEN, f"END {tag}")
    texting.send(texter, "yes")  # may we check on you later?

    stopped = PEOPLE["texter who said STOP"]
    texting.send(stopped, SAID["STOP texter's text"][0])
    texting.send(stopped, "STOP")


def a_day_of_calls(phone: Phone, fake: FakeTwilio, clock: time_machine.Coordinates) -> None:
    """A caller a counselor accepts, who agrees to a check-in when the counselor leaves; a
    Spanish caller who says their need, waits, and hangs up; a caller who asks for a callback."""
    connected = phone.call(
        [Keys("1"), Keys("2")], identity=phone.identity(PEOPLE["connected caller"]), max_hold_turns=0
    )
    counselor = phone.answer(legs(fake)[-1].sid, [Keys("1")])  # presses 1 to accept
    phone.resume(connected, max_hold_turns=0)
    assert connected.conference is not None and connected.conference == counselor.conference
    phone.hang_up(counselor)
    phone.resume(connected, [Keys("1")], max_hold_turns=0)  # yes to a check-in
    assert "We will text you" in connected.heard_text()

    spoken = phone.call(
        [Keys("2"), Words(SAID["spoken need"][0])],
        identity=phone.identity(PEOPLE["caller who hung up"]),
        max_hold_turns=0,
    )
    hold_for(phone, spoken, clock, seconds=70)
    phone.hang_up(spoken)

    waiting = phone.call([Keys("1"), Keys("2")], identity=phone.identity(PEOPLE["callback caller"]), max_hold_turns=0)
    hold_for(phone, waiting, clock, seconds=70)
    phone.resume(waiting, [Keys("9")], max_hold_turns=1)  # call me back instead
    assert "We will call you back" in waiting.heard_text()


def hold_for(phone: Phone, call: PhoneCall, clock: time_machine.Coordinates, *, seconds: int) -> None:
    for _ in range(seconds // 35):
        clock.shift(timedelta(seconds=35))
        phone.resume(call, max_hold_turns=1)


@pytest.mark.usefixtures("clean_redis")
def test_a_day_of_calls_and_texts_leaves_no_number_or_words_in_plain_text(
    app: Flask, settings: Settings, phone: Phone, texting: TextingPhone, fake: FakeTwilio,
    fake_twilio_server: FakeTwilioServer, clean_redis: redis.Redis, caplog: pytest.LogCaptureFixture,
    wednesday_evening: time_machine.Coordinates,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)  # every logger the line and its libraries have, at DEBUG
    a_day_of_texts(app, texting)
    a_day_of_calls(phone, fake, wednesday_evening)
    worker_output = run_worker_logging_everything(settings, fake_twilio_server)  # the missed-call text, the callback
    run_due_in_process(app)
    wednesday_evening.shift(12 * HOUR + timedelta(minutes=1))
    assert "sent" in run_due_in_process(app)  # the check-ins
    reply = texting.send(PEOPLE["texter"], SAID["check-in reply"][0])
    assert reply == ["Thank you for telling us. A counselor will text you back."]
    texting.send(PEOPLE["texter who said STOP"], SAID["STOP texter's text"][0])  # not answered, but stored
    # A worker deployed with the wrong key (a rotation gone wrong) fails the next job: its
    # traceback lands in RQ's failed-job registry, which is scanned too.
    unlucky = phone.call(
        [Keys("1"), Keys("2")], identity=phone.identity(PEOPLE["caller whose text failed"]), max_hold_turns=0
    )
    hold_for(phone, unlucky, wednesday_evening, seconds=70)
    phone.hang_up(unlucky)
    worker_output += run_worker_logging_everything(
        settings, fake_twilio_server, DATA_ENCRYPTION_KEY=new_data_encryption_key()
    )

    scan = Scan()
    with app.app_context():  # counted without RQ's clean-up, which (on the travelled clock) would expire them
        failed_jobs = sum(clean_redis.zcard(FailedJobRegistry(queue=rq.get_queue(name)).key) for name in CONTACT_QUEUES)
    scan.count("failed jobs (scheduled contacts)", failed_jobs)
    scan_redis(clean_redis, scan)
    scan_database(app, scan)
    scan_logs(caplog.get_records("setup") + caplog.records, scan)
    scan.count("worker process log lines", worker_output.count("\n"))
    scan.look("worker process output", worker_output)

    print("\nscanned: " + ", ".join(f"{number} {figure}" for figure, number in scan.figures.items()))
    shapes = len(number_shapes(PEOPLE["texter"]))
    print(f"looked for {len(PEOPLE)} people's numbers in {shapes} shapes each, and {len(SAID)} things they said")
    assert failed_jobs == 1 and "DecryptionError" in worker_output
    assert scan.figures["rows"] > 40 and scan.figures["Redis keys"] > 0 and scan.figures["log records"] > 50
    with app.app_context():  # the day wrote every kind of personal value (sealed)...
        for sealed in sealed_columns():
            if sealed.table.name.startswith("console_") or sealed.table.name == "twilio_records":
                # Staff write these in the console (wrap-up notes, unmask reasons): tests/console;
                # the purge notes a texter's number for a minute: tests/workers/test_twilio_records.
                continue
            assert db.session.scalar(select(func.count()).where(sealed.column.is_not(None))), sealed.name
    twilio_side = Scan()  # ...and the scan knows them when it sees them: Twilio's own copy holds them
    for message in fake.messages.values():
        twilio_side.look("Twilio", f"{message.to} {message.body}")
    assert {leak.split(": ", 1)[1].split(" (")[0] for leak in twilio_side.leaks} >= {"texter", "first text"}
    assert not scan.leaks, "plain personal data found:\n  " + "\n  ".join(sorted(set(scan.leaks)))
