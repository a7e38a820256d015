"""The last line of defence: TwiML that dials the backup line using nothing but settings.

Used by ``/voice/fallback`` (Twilio's Fallback URL) and whenever a voice webhook fails for
any reason: database down, Redis down, or a bug. It must not touch the database or Redis.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import ParamSpec
from urllib.parse import parse_qsl, urlencode, urlsplit

from flask import Response, current_app, has_request_context, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from twilio.twiml.voice_response import VoiceResponse

from crisisline.background import start_soon
from crisisline.phone import caller_number
from crisisline.settings import Settings
from crisisline.urls import url_prefix

log = logging.getLogger(__name__)
P = ParamSpec("P")
# Called with the CallSid after the fail-safe answered, best effort (e.g. to stop ringing
# responders for a caller now on the backup line). Registered by the features that need it.
AFTER_FAILSAFE: list[Callable[[str], None]] = []

FAILSAFE_MESSAGE = "Please stay on the line. We are connecting you with someone who can help."
# Heard after the first dial ends, answered or not (see ``backup_twiml``): true either way.
FAILSAFE_RETRY_MESSAGE = "If you still need someone to talk to, please stay on the line. We are connecting you again."
LAST_RESORT_MESSAGE = (
    "If you still need someone to talk to, please call or text 9 8 8 now. If you are in immediate danger, call 9 1 1."
)
BACKUP_DIAL_TIMEOUT_SECONDS = 30
# A caller already safely in the hold loop whose turn fails on the database (down, hung, pool
# exhausted) hears one more hold turn, twice at most, then the backup line: the backup line
# would take them out of the queue for what may be a few seconds' blip.
LATE_HOLD_TURNS = 2
LATE_HOLD_PAUSE_SECONDS = 3
# Said on each late turn: a caller who heard music and updates a moment before must not sit in
# dead air (a late turn's wait for us, its pause, and the next wait were 16 s of silence).
LATE_HOLD_MESSAGE = "Please stay on the line. We are still connecting you."


class DeadlineExceeded(Exception):
    """A voice webhook did not finish within its deadline (``crisisline.deadline``).

    The fallback that answers it sets ``dialled_backup`` when its answer sends the caller to
    the backup line: the deadline then runs the after-fail-safe hooks off the request thread.
    """

    def __init__(self) -> None:
        super().__init__("voice deadline passed")
        self.dialled_backup = False


def twiml_response(twiml: VoiceResponse) -> Response:
    return Response(twiml.to_xml(), status=200, mimetype="text/xml")


def backup_twiml(backup_number: str, caller_id: str | None = None) -> VoiceResponse:
    """Say one calm sentence, then dial the backup line; if that fails, try once more.

    No ``action`` on the ``<Dial>`` so it needs no further request to us (this answers when
    our own app may be failing): when the first dial ends Twilio simply runs the next verbs.
    It also runs them after a conversation with the backup line that ended while the caller
    stayed on, which TwiML alone cannot tell apart; so what follows is worded to be true
    either way ("If you still need someone to talk to…"), and a caller who needs it again
    is connected again.
    """
    twiml = VoiceResponse()
    twiml.say(FAILSAFE_MESSAGE)
    twiml.dial(backup_number, timeout=BACKUP_DIAL_TIMEOUT_SECONDS, caller_id=caller_id)
    twiml.say(FAILSAFE_RETRY_MESSAGE)
    twiml.dial(backup_number, timeout=BACKUP_DIAL_TIMEOUT_SECONDS, caller_id=caller_id)
    twiml.say(LAST_RESORT_MESSAGE)
    return twiml


class KnownBackupNumber:
    """The backup number of the routing this process last read (``line.backup_number``).

    The routing is the one place the backup number is edited; every read of it refreshes this,
    so a fail-safe with the database down dials the number the console last published.
    ``BACKUP_NUMBER`` is only what a process dials before it has ever read the routing (it
    started while the database was down).
    """

    def __init__(self) -> None:
        self.number: str | None = None


def remember_backup_number(number: str) -> None:
    """Called with each routing read (``routing.store.active_routing``): cheap, no I/O."""
    known: KnownBackupNumber | None = current_app.extensions.get("crisisline.known_backup")
    if known is not None and known.number != number:
        known.number = number


def failsafe_backup_number() -> str:
    """The routing's backup number as last read here, else ``BACKUP_NUMBER``; never the line's
    own number (see :func:`backup_number_to_dial`). No I/O."""
    known: KnownBackupNumber | None = current_app.extensions.get("crisisline.known_backup")
    if known is not None and known.number:
        return backup_number_to_dial(known.number)
    settings: Settings = current_app.extensions["crisisline.settings"]
    return settings.backup_number


def backup_number_to_dial(number: str) -> str:
    """``number`` (the routing's backup number), or ``BACKUP_NUMBER`` when it is the line's own:
    ``LINE_PHONE_NUMBER``, or this call's own number (an inbound call's ``To``, the ``From`` of
    a leg the line placed). Dialling it would send the caller round into the line again, every
    time (a routing published before such a number was refused). No I/O: fail-safes use it."""
    settings: Settings = current_app.extensions["crisisline.settings"]
    own = {settings.line_phone_number}
    if has_request_context():
        outbound = request.form.get("Direction") == "outbound-api"
        own.add(request.form.get("From") if outbound else request.form.get("To"))
    if number not in own:
        return number
    log.warning("the routing's backup number is the line's own number; dialling BACKUP_NUMBER instead")
    return settings.backup_number


def caller_id_for_backup() -> str | None:
    """The ``callerId`` a ``<Dial>`` to the backup line sets: None (the caller's own number goes
    through, which the backup line may need) unless it is withheld or not a number. Twilio
    then passes the invalid ID on, which "may cause some destination providers to reject the
    call" (its error 13214), so the line's own number, the call's ``To``, is sent instead.

    On a leg the line placed (``Direction`` ``outbound-api``: a person it called back), ``From``
    is the line's own number and ``To`` the person's. The person's number is sent, so the backup
    line can call them back if cut off, as it can an inbound caller: Twilio allows the leg's
    called number as ``callerId`` ("the calling number, called number, or a validated outgoing
    number", error 13214). No I/O: the fail-safe answers with it too."""
    if not has_request_context():
        return None
    if request.form.get("Direction") == "outbound-api":
        return caller_number(request.form.get("To"))  # None (never: we dialled it): the line's number shows
    if caller_number(request.form.get("From")) is not None:
        return None
    settings: Settings = current_app.extensions["crisisline.settings"]
    return caller_number(request.form.get("To")) or settings.line_phone_number


def failsafe_response() -> Response:
    return twiml_response(backup_twiml(failsafe_backup_number(), caller_id_for_backup()))


def answering_failures_with(
    fallback: Callable[[BaseException], Response], what: str
) -> Callable[[Callable[P, Response]], Callable[P, Response]]:
    """A decorator: any failure inside the view (a bug, a dead database, a missing row, a
    malformed request) is logged by class name and answered with ``fallback(error)``.

    Signature checks run outside it (``@twilio_signed`` goes above), so a forged request still
    gets its 403; everything that reaches the view gets an answer Twilio can act on.
    """

    def decorate(view: Callable[P, Response]) -> Callable[P, Response]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
            try:
                return view(*args, **kwargs)
            except Exception as error:  # HTTPException too: a 404 would leave Twilio with nothing
                # Class name and route only: exception text can carry personal data.
                log.error("%s: %s at %s", what, type(error).__name__, request.path)
                _rollback_quietly()
                return fallback(error)

        # What ``crisisline.deadline`` answers when this view runs past its deadline.
        wrapper.on_deadline = fallback  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _dial_backup(error: BaseException) -> Response:
    response = failsafe_response()
    if isinstance(error, DeadlineExceeded):
        # The late handler is still running in this process: it must not search for this
        # caller afterwards. The deadline runs the hooks off the request thread.
        note_answered_by_failsafe(request.form.get("CallSid", ""))
        error.dialled_backup = True
    elif isinstance(error, DBAPIError):
        # The database failed this request; it may take the next one (a dropped connection, a
        # failover). The hooks run off this thread, where they cannot hold the answer: left
        # undone, a counselor freed later could pull the caller off the backup line.
        _hooks_off_this_thread(request.form.get("CallSid", ""))
    else:
        run_after_failsafe_hooks(request.form.get("CallSid", ""))
    return response


def _hooks_off_this_thread(call_sid: str) -> None:
    note_answered_by_failsafe(call_sid)
    if call_sid:
        start_soon(f"after-failsafe:{call_sid}", functools.partial(run_after_failsafe_hooks, call_sid))


def fallback_url_answer() -> Response:
    """Twilio's Fallback URL (``/voice/fallback``): one of our webhooks failed as Twilio saw it
    (a 502 from the proxy while a worker restarts, an answer that never came) and Twilio asks
    here at once. The backup line, from settings only; then, off this thread, the search for the
    caller stops as after our own fail-safe: a counselor accepting later must not pull them off
    the backup line, and phones ringing for them stop. The answer never waits on the database."""
    error_code = request.form.get("ErrorCode", "")
    failed_path = urlsplit(request.form.get("ErrorUrl", "")).path
    # The code and our own path only: the failed URL's query names rows, never a person, but
    # the path is what an operator needs.
    log.warning(
        "Twilio used the fallback URL: error %s at %s",
        error_code if error_code.isdecimal() else "unknown",
        failed_path if failed_path.isascii() and failed_path.isprintable() else "an unreadable URL",
    )
    response = failsafe_response()
    _hooks_off_this_thread(request.form.get("CallSid", ""))
    return response


# A view's ``deadline_lane`` (``crisisline.deadline``): status callbacks wait on a pool of their
# own, so a flood of them on a slow database never holds up a caller's webhook.
STATUS_LANE = "status"


def status_deadline(
    acknowledgement: Callable[[], Response],
) -> Callable[[Callable[P, Response]], Callable[P, Response]]:
    """A decorator for a status callback: deadline-bound on the status lane
    (``crisisline.deadline.STATUS_LANE``); past the deadline, or on any failure (logged by
    class name), answered with ``acknowledgement()``. A late handler finishes on its own
    thread, if it ever does; Twilio does not send a status again either way."""

    def decorate(view: Callable[P, Response]) -> Callable[P, Response]:
        wrapper = answering_failures_with(lambda _error: acknowledgement(), "status callback failed")(view)
        wrapper.deadline_lane = STATUS_LANE  # type: ignore[attr-defined]
        return wrapper

    return decorate


def acknowledged() -> Response:
    """A status callback's answer: Twilio needs no TwiML from one."""
    return Response(status=204)


voice_failsafe = answering_failures_with(_dial_backup, "voice webhook failed, dialling backup line")
voice_failsafe.__doc__ = "Turn any failure inside a voice webhook into TwiML that dials the backup line."


def late_hold_turns(query_string: bytes) -> int:
    """How many hold turns in a row were answered without the database (``late`` in the URL)."""
    raw = dict(parse_qsl(query_string.decode("latin-1"))).get("late", "0")
    return int(raw) if raw.isdecimal() and len(raw) < 3 else LATE_HOLD_TURNS


def one_more_hold_turn(path: str, query_string: bytes) -> VoiceResponse:
    """A sentence, a short pause and the same hold URL again, counting the late turns in ``late``."""
    query = dict(parse_qsl(query_string.decode("latin-1")))
    query["late"] = str(late_hold_turns(query_string) + 1)
    twiml = VoiceResponse()
    twiml.say(LATE_HOLD_MESSAGE)
    twiml.pause(length=LATE_HOLD_PAUSE_SECONDS)
    twiml.redirect(f"{path}?{urlencode(query)}", method="POST")
    return twiml


def _hold_or_backup(error: BaseException) -> Response:
    """A caller already safely in the hold loop whose turn failed on the database or ran past
    its deadline: one more hold turn, twice at most, then the backup line. Any other failure
    (a bug) goes to the backup line at once: another turn would fail the same way."""
    slow_or_down = isinstance(error, DBAPIError | PoolTimeout | DeadlineExceeded)
    if slow_or_down and late_hold_turns(request.query_string) < LATE_HOLD_TURNS:
        return twiml_response(one_more_hold_turn(url_prefix() + request.path, request.query_string))
    return _dial_backup(error)


hold_failsafe = answering_failures_with(_hold_or_backup, "hold turn failed")
hold_failsafe.__doc__ = "A hold turn's fail-safe: the database down or slow holds the caller twice more, then backup."


# Calls this process answered with the backup line because their webhook ran past its
# deadline. The late handler is still running here and must not start a search for them
# afterwards (a counselor accepting would pull the caller off the backup line).
_ANSWERED_LATE: dict[str, float] = {}
_ANSWERED_LATE_LOCK = threading.Lock()
REMEMBER_LATE_SECONDS = 600


def note_answered_by_failsafe(call_sid: str) -> None:
    """Remember that the fail-safe answered this call (in this process, for 10 minutes)."""
    if not call_sid:
        return
    moment = time.monotonic()
    with _ANSWERED_LATE_LOCK:
        for sid, at in list(_ANSWERED_LATE.items()):
            if moment - at > REMEMBER_LATE_SECONDS:
                del _ANSWERED_LATE[sid]
        _ANSWERED_LATE[call_sid] = moment


def answered_by_failsafe(call_sid: str | None) -> bool:
    """Whether the fail-safe already sent this call to the backup line (see above)."""
    if not call_sid:
        return False
    with _ANSWERED_LATE_LOCK:
        at = _ANSWERED_LATE.get(call_sid)
    return at is not None and time.monotonic() - at <= REMEMBER_LATE_SECONDS


def run_after_failsafe_hooks(call_sid: str) -> None:
    """Best effort, after the fail-safe answered: e.g. stop ringing for a caller on the backup line."""
    for hook in AFTER_FAILSAFE:
        try:
            hook(call_sid)
        except Exception as error:
            log.warning("after-failsafe hook failed: %s", type(error).__name__)
            _rollback_quietly()


def _rollback_quietly() -> None:
    try:
        from crisisline.db import db

        db.session.rollback()
    except Exception:  # noqa: S110 - the database may be the thing that is down
        pass
