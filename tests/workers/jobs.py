"""Jobs for the worker tests (importable by a worker process), and the Procfile's worker command."""

from __future__ import annotations

import time

from sqlalchemy import text

from crisisline.db import db
from tests.conftest import procfile_worker

PROCFILE_WORKER = procfile_worker()


def leave_a_transaction_open() -> str:
    """Writes without committing, marks its session, then fails."""
    db.session.info["left-behind"] = True
    db.session.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS job_scratch (x INTEGER)"))
    db.session.execute(text("INSERT INTO job_scratch (x) VALUES (1)"))
    raise RuntimeError("job failed halfway")


def session_is_fresh() -> bool:
    """True when this job's session carries nothing from an earlier job."""
    return "left-behind" not in db.session.info and not db.session().in_transaction()


def sleep_past_timeout(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def exit_the_interpreter() -> None:
    raise SystemExit(3)


def succeed(value: int) -> int:
    return value * 2


# A number that appears in no job's arguments (jobs carry ids): only the exception quotes it.
NUMBER_IN_AN_ERROR = "+13125550187"


def fail_quoting_a_number() -> None:
    """Fails as Twilio's client does on error 21211, whose message quotes the number."""
    from twilio.base.exceptions import TwilioRestException

    raise TwilioRestException(
        400, "https://api.twilio.com/2010-04-01/Accounts/AC0/Messages.json",
        f"The 'To' number {NUMBER_IN_AN_ERROR} is not a valid phone number (or (312) 555-0187).", 21211, "POST",
    )  # fmt: skip


# A texter's words, with a word found nowhere else, and a number in national format.
BODY_IN_AN_ERROR = "please help, the Lanternfish pills are on the table"
NATIONAL_NUMBER_IN_AN_ERROR = "(312) 555-0142"


def _store_the_text(body: str) -> None:
    raise ValueError(f"invalid input value for column body: {body!r} from {NATIONAL_NUMBER_IN_AN_ERROR}")


def fail_quoting_a_body() -> None:
    """Fails with a chain (a context, then a cause) each of whose messages quotes the text or a
    number, as a database error echoing its parameters would."""
    try:
        try:
            _store_the_text(BODY_IN_AN_ERROR)
        except ValueError:
            raise LookupError(f"no conversation for {NUMBER_IN_AN_ERROR}: {BODY_IN_AN_ERROR}")  # noqa: B904
    except LookupError as missing:
        raise RuntimeError(f"inbound text not handled: {BODY_IN_AN_ERROR}") from missing
