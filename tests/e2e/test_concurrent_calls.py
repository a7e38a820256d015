"""Twenty callers at once through the real processes (see conftest): four counselors on call,
each phone answering and accepting whatever rings it; each caller talks a couple of seconds
once joined, then hangs up. Every call must end with a human (in a counselor's conference) or
the backup line, within a bounded time: none left silent on hold, none hung up on."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from crisisline.db import db
from crisisline.models import Transfer
from tests.conftest import TEST_BACKUP_NUMBER
from tests.e2e.conftest import COUNSELOR_PHONES, CounselorPhone, Line, on_call
from tests.e2e.test_stories import TERMINAL, _engaged, _eventually
from twilio_fake.phone import Keys, Phone, PhoneCall, RemoteTwilio

CALLERS = 20
COUNSELORS = ("ana-ruiz", "ben-carter", "chloe-nguyen", "diego-morales")
MAX_HOLD_SECONDS = 30  # the routing's smallest hold limit: then the backup line
RING_TIMEOUT_SECONDS = 8
TALK_SECONDS = 2.0
HOLD_TURN_SECONDS = 1.0
OUTCOME_WITHIN_SECONDS = MAX_HOLD_SECONDS + 20  # menus, the hold limit, and the backup line's turn
# The routing's backup line, and the fail-safe's (a webhook past its deadline, the database down).
BACKUP_LINES = {"+18002738255", TEST_BACKUP_NUMBER}


@dataclass
class Caller:
    """One caller's thread: what became of their call, and when."""

    index: int
    call: PhoneCall | None = None
    outcome: str = "no outcome"  # "human", "backup", or what happened instead
    seconds: float | None = None  # from dialling to the human or the backup line
    room: str | None = None
    backup_line: str = ""
    cut_off: bool = False  # the conference ended before the caller hung up
    error: str = ""

    @property
    def number(self) -> str:
        return f"+1312555{3000 + self.index:04d}"

    def story(self) -> str:
        if self.call is None:
            return f"caller {self.index}: {self.outcome} {self.error}"
        steps = [step.url.split("/", 3)[-1] for step in self.call.steps[-5:]]
        return (
            f"caller {self.index} {self.call.identity.call_sid}: {self.outcome} after {self.seconds} s, "
            f"ended_by={self.call.ended_by} dials={[d.numbers for d in self.call.dials]} {self.error}\n"
            f"  last steps {steps}\n  heard {[heard.text[:50] for heard in self.call.heard[-4:]]}"
        )


def _call_and_stay(line: Line, caller: Caller, go: threading.Event) -> None:
    """Call (English, thoughts of suicide), hold with a hold turn every second until the line
    moves the call; once with a counselor, talk a couple of seconds and hang up."""
    phone = line.phone(fresh_connections=True)
    go.wait()
    dialled = time.monotonic()
    try:
        call = phone.call([Keys("1"), Keys("2")], identity=phone.identity(caller.number), max_hold_turns=0,
                          dial_outcomes=["completed"])  # fmt: skip
        caller.call = call
        _hold_until_moved(phone, call, seconds=OUTCOME_WITHIN_SECONDS + 10)
        caller.seconds = round(time.monotonic() - dialled, 1)
        if call.conference is not None:
            caller.outcome, caller.room = "human", call.conference
            talk_until = time.monotonic() + TALK_SECONDS
            while time.monotonic() < talk_until and call.conference is not None:
                time.sleep(0.2)
                phone.resume(call, max_hold_turns=0)  # a redirect or a dropped room is followed
            caller.cut_off = call.conference is None
            phone.hang_up(call)
        elif call.dials and call.dials[0].numbers[:1] and call.dials[0].numbers[0] in BACKUP_LINES:
            # The menus' backup dial reports back (an ``action``); the fail-safe's needs no request.
            by_failsafe = "action" not in call.dials[0].attributes
            caller.outcome, caller.backup_line = "backup", "fail-safe backup line" if by_failsafe else "backup line"
        else:
            caller.outcome = "neither a human nor the backup line"
    except Exception as error:  # reported by the story
        caller.error = f"{type(error).__name__}: {error}"
    finally:
        line.put_away(phone)


def _hold_until_moved(phone: Phone, call: PhoneCall, *, seconds: float) -> None:
    """Hold in real time, a hold turn every second, until the line moves the call (into a
    conference, or to the backup line). Like ``Phone.wait_on_hold``, but looking for the line's
    REST redirect four times a second rather than ten: twenty phones at once on two cores."""
    assert isinstance(phone.fake, RemoteTwilio)
    deadline, next_turn = time.monotonic() + seconds, time.monotonic() + HOLD_TURN_SECONDS
    while call.ended_by == "on-hold" and time.monotonic() < deadline:
        time.sleep(0.25)
        moved = len(phone.fake.get_call(call.identity.call_sid).redirects) > call.redirects_seen
        if moved or time.monotonic() >= next_turn:
            phone.resume(call, max_hold_turns=0 if moved else 1, dial_outcomes=["completed"])
            next_turn = time.monotonic() + HOLD_TURN_SECONDS
            if call.conference is not None or call.dials:
                return


def test_twenty_concurrent_callers_each_reach_a_human_or_the_backup_line(fresh_line: Line) -> None:
    line = fresh_line
    line.publish(on_call(*COUNSELORS, max_hold_seconds=MAX_HOLD_SECONDS, ring_timeout_seconds=RING_TIMEOUT_SECONDS))
    counselors = [
        CounselorPhone(line, COUNSELOR_PHONES[name], calls=CALLERS, talk=OUTCOME_WITHIN_SECONDS).start()
        for name in COUNSELORS
    ]
    callers = [Caller(index) for index in range(CALLERS)]
    go = threading.Event()
    threads = [
        threading.Thread(target=_call_and_stay, args=(line, caller, go), daemon=True, name=f"caller-{caller.index}")
        for caller in callers
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    go.set()  # all twenty dial at once
    for thread in threads:
        thread.join(timeout=max(1.0, started + OUTCOME_WITHIN_SECONDS + 30 - time.monotonic()))
    all_done = time.monotonic() - started

    humans = [caller for caller in callers if caller.outcome == "human"]
    backup = [caller for caller in callers if caller.outcome == "backup"]
    to_human = sorted(caller.seconds for caller in humans if caller.seconds is not None)
    to_backup = sorted(caller.seconds for caller in backup if caller.seconds is not None)
    print(
        f"\n{CALLERS} concurrent callers, {len(COUNSELORS)} counselors, hold limit {MAX_HOLD_SECONDS} s: "
        f"{len(humans)} reached a human, {len(backup)} the backup line "
        f"({sum(caller.backup_line == 'fail-safe backup line' for caller in backup)} of them by the fail-safe); "
        f"time to human p50 {statistics.median(to_human) if to_human else '-'} s, "
        f"max {max(to_human) if to_human else '-'} s; to the backup line max {max(to_backup) if to_backup else '-'} s; "
        f"all callers done in {all_done:.1f} s; "
        f"calls per counselor {[len(counselor.answered) for counselor in counselors]}"
    )
    stories = "\n".join(
        caller.story() for caller in callers if caller.outcome not in ("human", "backup") or caller.error
    )
    assert [thread.name for thread in threads if thread.is_alive()] == [], stories
    assert [caller.index for caller in callers if caller.error] == [], stories
    assert len(humans) + len(backup) == CALLERS, stories  # none silent, none hung up on
    assert humans, "four counselors on call answered nobody"
    assert [caller.index for caller in callers if (caller.seconds or 0) > OUTCOME_WITHIN_SECONDS] == [], stories
    assert [caller.index for caller in humans if caller.cut_off] == []  # each talked until they hung up
    rooms = {room for counselor in counselors for room in counselor.rooms.values()}
    assert [caller.index for caller in humans if caller.room not in rooms] == []  # a counselor was in each room
    assert len({caller.room for caller in humans}) == len(humans)  # one room per caller

    _eventually(lambda: {leg.status for leg in line.twilio.calls()} <= TERMINAL, seconds=20)
    _eventually(lambda: all(record.finished for c in counselors for record in c.answered), seconds=10)
    for counselor in counselors:
        counselor.put_down(10)
    assert [error for counselor in counselors for error in counselor.errors] == []
    hung_up_by_counselor = [
        r.identity.call_sid for c in counselors for r in c.answered if r.ended_by == "caller-hung-up"
    ]
    assert hung_up_by_counselor == []  # the line ended each counselor's leg when their caller left
    expected = {caller.call.identity.call_sid: "ended" if caller.outcome == "human" else "to_backup"
                for caller in humans + backup
                if caller.call is not None and caller.backup_line != "fail-safe backup line"}  # fmt: skip
    _eventually(lambda: _last_transfer_states(line, expected) == expected)
    _eventually(lambda: set(_engaged(line).values()) <= {None})  # every counselor free again


def _last_transfer_states(line: Line, callers: dict[str, str]) -> dict[str, str]:
    """The state of each caller's last search for a human, by the caller's call sid."""
    transfers = line.query(lambda: db.session.scalars(select(Transfer).order_by(Transfer.id)).all())
    return {t.caller_call_sid: t.state for t in transfers if t.caller_call_sid in callers}
