"""The typed shape of a valid routing document. Built only by ``routing.validation``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

TARGETS = ("counselors", "co_responders", "backup")
RESPONDER_KINDS = ("counselor", "co_responder")

# Every prompt each language must define, with the {placeholders} it must use.
PROMPT_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "greeting": frozenset(),
    "confidentiality": frozenset(),
    "language_option": frozenset({"digit"}),
    "need_menu_intro": frozenset(),
    "need_option": frozenset({"label", "digit"}),
    "need_unclear": frozenset(),  # speech not understood: asks for a key
    "need_confirm": frozenset({"label"}),  # a co-responder need heard in speech: 1 confirms
    "need_confirm_key": frozenset(),  # they said "yes": the key is still needed
    "invalid_input": frozenset(),
    "no_input": frozenset(),
    "connecting": frozenset(),
    "no_language_match": frozenset(),
    "nobody_available": frozenset(),
    "backup_retry": frozenset(),
    "backup_unreachable": frozenset(),
    "system_down": frozenset(),
    "blocked": frozenset(),
    "hold": frozenset(),
    "hold_update": frozenset(),
    "hold_next": frozenset(),
    "hold_wait": frozenset({"minutes"}),
    "hold_position": frozenset({"position", "minutes"}),
    "staff_left": frozenset(),
    "sms_unavailable": frozenset(),
    "callback_offer": frozenset({"digit"}),
    "callback_confirmed": frozenset(),
    "callback_impossible": frozenset(),
    "callback_greeting": frozenset(),
    "checkin_question": frozenset(),
    "checkin_thanks": frozenset(),
}

# What counselors and co-responder units hear and read, in the line's working language.
STAFF_PROMPT_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "whisper": frozenset({"language", "need", "wait"}),
    "whisper_add_unit": frozenset({"language", "need"}),
    "already_connected": frozenset(),
    "caller_gone": frozenset(),
    "caller_on_backup": frozenset(),
    "unit_not_needed": frozenset(),  # a unit's join accepted as the counselor left: the caller moved on
    "connecting": frozenset(),
    "passed": frozenset(),
    "no_response": frozenset(),
    "counselor_menu": frozenset(),
    "unit_calling": frozenset(),
    "unit_unavailable": frozenset(),  # ``*`` then 1 with no unit to ring (none on shift, all busy, refused)
    "unit_not_reached": frozenset(),  # after "calling": every unit asked passed, did not answer or was refused
    "paused_sms": frozenset({"count"}),
    "status_sms": frozenset({"status"}),
    "on_sms": frozenset(),
    "off_sms": frozenset(),
    "not_rung_sms": frozenset(),  # their console account was closed (``line_queue.responders.stop_ringing``)
    "not_rung": frozenset(),  # spoken: their press of 1 refused, the account closed while their phone rang
    "whisper_callback": frozenset({"language", "need", "ago"}),
    "callback_calling": frozenset(),
    "callback_no_answer": frozenset(),
    "callback_no_answer_last": frozenset(),
    "callback_called_in": frozenset(),
    "callback_number_refused": frozenset(),  # Twilio will never call their number (``callbacks.attempts``)
    "callback_person_holding": frozenset(),
    "checkin_flag_sms": frozenset({"case", "reason"}),
    "checkin_answered_sms": frozenset({"case"}),
    "callback_unreached_sms": frozenset({"case", "reason"}),  # a callback given up (``callbacks.attempts``)
    "text_stuck_sms": frozenset({"case", "minutes"}),
    "texts_stuck_sms": frozenset({"count", "cases"}),  # many at once: one summary (``sms.conversations``)
    "text_after_stop_sms": frozenset({"case"}),
}
STRATEGIES = ("sequential", "parallel")

# What texters read, per language (``languages[i].sms``), with the placeholders each must use.
SMS_PROMPT_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "language_option": frozenset({"digit"}),
    "welcome": frozenset(),
    "need_menu": frozenset(),
    "need_option": frozenset({"label", "digit"}),
    "need_retry": frozenset(),
    "queued": frozenset({"minutes"}),
    "nobody_free": frozenset({"minutes"}),
    "backup": frozenset(),
    "still_waiting": frozenset(),  # a waiting texter wrote again (``sms.conversations.tell_still_waiting``)
    "closed": frozenset(),
    "idle_closed": frozenset(),
    "help": frozenset({"line", "voice_number"}),
    "mms": frozenset(),
    "started": frozenset(),
    "missed_call": frozenset(),
    "callback_confirmed": frozenset(),
    "callback_impossible": frozenset(),
    "callback_missed": frozenset(),
    "checkin_question": frozenset(),
    "checkin": frozenset(),
    "checkin_second": frozenset(),
    "checkin_ok": frozenset(),
    "checkin_talk": frozenset(),
    "checkin_noted": frozenset(),
    "survey": frozenset(),
    "survey_thanks": frozenset(),
}
SMS_STAFF_PROMPT_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "sms_offer": frozenset({"tag", "language", "need", "wait"}),
    "sms_taken": frozenset({"tag"}),
    "sms_returning": frozenset({"tag"}),
    "sms_too_late": frozenset({"tag"}),
    "sms_ambiguous": frozenset({"tags"}),
    "sms_no_conversation": frozenset(),
    "sms_ended": frozenset({"tag"}),
    "sms_passed": frozenset({"tag"}),
    "sms_relay": frozenset({"tag", "body"}),
    "sms_picture": frozenset({"tag"}),
    "sms_not_delivered": frozenset({"tag", "reason"}),
    "sms_texter_left": frozenset({"tag"}),
    "sms_needs_tag": frozenset({"command"}),
    "sms_requeued": frozenset({"tag"}),
    "sms_line_trouble": frozenset(),
    "sms_line_lost": frozenset(),
    "sms_at_limit": frozenset({"tag", "count"}),
    "sms_empty_reply": frozenset({"tag"}),
    "sms_command_alone": frozenset({"command"}),  # "END 12 thanks": neither done nor sent
    "sms_staff_picture": frozenset(),  # a counselor's picture: never passed on
    "sms_supervisor_text": frozenset(),  # a supervisor texted the line: not a texter, not passed on
    "sms_started": frozenset({"status"}),  # their START: the line can text their phone again
    "sms_blocked_on": frozenset(),  # their ON while their phone still blocks the line's texts
}
STAFF_PROMPT_PLACEHOLDERS.update(SMS_STAFF_PROMPT_PLACEHOLDERS)


@dataclass(frozen=True)
class Language:
    code: str
    digit: int
    name: str
    twilio_language: str
    voice: str
    speech_words: tuple[str, ...]
    prompts: dict[str, str]
    staff_name: str  # how staff hear it named ("Spanish"), defaults to ``name``
    sms: dict[str, str]
    # How speech in this language is understood (``languages[i].words``); all normalised.
    digit_words: dict[str, int]  # spoken numbers ("two", "dos") and the key each stands for
    filler_words: tuple[str, ...]  # ignored around a spoken number ("number two", "um, dos")
    negation_words: tuple[str, ...]  # "not", "no": need words after them in a clause do not count
    not_negation_words: tuple[str, ...]  # "not okay", "no puedo": look negative, deny nothing
    hedge_words: tuple[str, ...]  # "maybe", "tal vez": need words in their clause do not count
    clause_breaks: tuple[str, ...]  # "but", "pero": end a clause, and a negation's reach
    yes_words: tuple[str, ...]  # a spoken "yes" to a confirmation (a key is still asked for)
    no_words: tuple[str, ...]  # a spoken "no" to a confirmation: back to the menu

    def text(self, key: str, **values: object) -> str:
        """The texting prompt ``key`` in this language."""
        return self.sms[key].format(**values)

    def prompt(self, key: str, **values: object) -> str:
        """The prompt ``key`` in this language, with its placeholders filled in."""
        return self.prompts[key].format(**values)


@dataclass(frozen=True)
class Need:
    key: str
    digit: int
    target: str
    fallback: str | None
    skill: str
    strategy: str | None
    priority: int  # higher is answered first; a text naming this need raises its conversation
    labels: dict[str, str]
    speech_words: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Shift:
    """A weekly on-call window in the line's time zone; ``end <= start`` runs past midnight."""

    weekdays: frozenset[int]  # 0 = Monday
    start: time
    end: time | None  # None means midnight at the end of the day ("24:00")


@dataclass(frozen=True)
class Override:
    """A one-off change to a weekly rota: on call (cover) or off call (leave), local times."""

    start: datetime
    end: datetime
    on_call: bool


@dataclass(frozen=True)
class Responder:
    """A counselor or co-responder unit. ``phone`` is E.164."""

    id: str
    kind: str
    name: str
    phone: str
    languages: tuple[str, ...]
    skills: frozenset[str]
    shifts: tuple[Shift, ...]
    overrides: tuple[Override, ...]


@dataclass(frozen=True)
class MenuSettings:
    timeout_seconds: int
    retries: int
    default_language: str
    default_need: str
    ask_need: bool  # false: no need menu, every caller goes with ``default_need``
    max_seconds_to_ring: int  # ``flask routing check`` warns when a menu path speaks longer


@dataclass(frozen=True)
class TransferSettings:
    ring_timeout_seconds: int
    backup_attempts: int
    language_fallback: str  # "any_language" or "backup"
    accept_timeout_seconds: int
    strategy: str  # "sequential" or "parallel"
    parallel_max: int
    max_hold_seconds: int
    pause_after_missed: int
    hold_music_url: str | None

    def strategy_for(self, need: Need) -> str:
        return need.strategy or self.strategy


@dataclass(frozen=True)
class SmsSettings:
    offer_timeout_seconds: int
    max_conversations_per_counselor: int
    max_wait_seconds: int  # then the texter is given the backup line's text option
    idle_close_minutes: int
    language_confidence: float  # below this the texter is asked which language
    # The line's number is in a Messaging Service with Advanced Opt-Out: a text through it opts
    # in or out only by Twilio's ``OptOutType`` (its list may leave out CANCEL, END, QUIT...).
    advanced_opt_out: bool = False


@dataclass(frozen=True)
class CallbackSettings:
    """Calling people back instead of keeping them on hold (``callbacks:``)."""

    enabled: bool
    digit: str  # the key a holding caller presses for a callback
    offer_after_seconds: int  # hold time before the option is offered (it is always offered
    #                           when nobody is on call)
    retry_after_minutes: tuple[int, ...]  # waits between attempts when the person does not answer
    ring_timeout_seconds: int  # how long the person's phone rings
    give_up_after_minutes: int  # not taken by a counselor by then: the "we tried" text


@dataclass(frozen=True)
class QueueSettings:
    """The one queue of waiting contacts (``queue:``): who is offered first, and when again.

    Order: the need's ``priority`` (higher first), then arrival; a callback keeps the place
    its person had. ``channels``: ``shared`` puts texts and calls in one line (a counselor is
    offered one contact at a time, whichever waited first); ``separate`` offers texts and
    calls independently (a counselor may hold a text offer while their phone rings).
    """

    reoffer_after_seconds: int  # a responder who passed or missed a contact may get it again after this
    channels: str  # "shared" or "separate"
    announce_position: bool  # hold updates say "You are number N in line"


QUEUE_CHANNELS = ("shared", "separate")


@dataclass(frozen=True)
class FollowupSettings:
    missed_contact_after_seconds: int  # 0: never text a caller who hung up while waiting
    checkins: bool  # ask for consent to a check-in at the end of a call or text conversation
    # Hours may be a part of one: the config takes durations like ``30m`` (0.5).
    checkin_after_hours: dict[str, float]  # per need key; "default" for the rest
    second_attempt_after_hours: float  # no reply to the check-in → one more
    escalate_after_hours: float  # no reply to the second → flagged for a supervisor
    talk_by: str  # what a "2 I'd like to talk" reply opens: "text" or "call"
    survey: bool  # one-question rating by text after a consented contact
    survey_after_minutes: int
    # No check-in or survey text between these local times (start, end; end <= start runs past
    # midnight): one due then waits for the end. None: texts go whenever they fall due.
    quiet_hours: tuple[time, time] | None = None

    def checkin_hours(self, need: str | None) -> float:
        return self.checkin_after_hours.get(need or "", self.checkin_after_hours.get("default", 24.0))


@dataclass(frozen=True)
class Supervisor:
    """Someone who is told (by text) about cases that need a human: unanswered check-ins."""

    id: str
    name: str
    phone: str


@dataclass(frozen=True)
class Service:
    """A community service in the line's referral directory (``services:``), sent to people
    by text: who it is, how to reach it, in which languages and for which needs."""

    id: str
    name: str
    phone: str  # E.164
    languages: tuple[str, ...]
    needs: tuple[str, ...]  # need keys it helps with; empty: any need
    description: str  # one short line for the referral text (may be empty)


@dataclass(frozen=True)
class RoutingDocument:
    line_name: str
    timezone: ZoneInfo
    region: str
    mode: str
    backup_number: str
    menu: MenuSettings
    transfer: TransferSettings
    languages: tuple[Language, ...]
    needs: tuple[Need, ...]
    responders: tuple[Responder, ...]
    staff_prompts: dict[str, str]
    sms: SmsSettings
    followups: FollowupSettings
    callbacks: CallbackSettings
    supervisors: tuple[Supervisor, ...]
    queue: QueueSettings
    services: tuple[Service, ...] = ()

    def staff_prompt(self, key: str, **values: object) -> str:
        return self.staff_prompts[key].format(**values)

    def responder(self, responder_id: str) -> Responder | None:
        return next((r for r in self.responders if r.id == responder_id), None)

    def entries(self, responder_id: str) -> tuple[str, ...]:
        """Where the file lists ``responder_id``, as its validator names the place, with the
        responder's name and never their phone: ``counselors[1] (Ben Carter)``."""
        sections = {"counselor": "counselors", "co_responder": "co_responder_units"}
        found: list[str] = []
        for kind, section in sections.items():
            of_kind = [r for r in self.responders if r.kind == kind]
            found += [f"{section}[{index}] ({r.name})" for index, r in enumerate(of_kind) if r.id == responder_id]
        return tuple(found)

    def responder_by_phone(self, phone: str) -> Responder | None:
        return next((r for r in self.responders if r.phone == phone), None)

    def supervisor_by_phone(self, phone: str) -> Supervisor | None:
        return next((s for s in self.supervisors if s.phone == phone), None)

    def supervisor(self, supervisor_id: str | None) -> Supervisor | None:
        return next((s for s in self.supervisors if s.id == supervisor_id), None)

    @property
    def default_language(self) -> Language:
        return self.language(self.menu.default_language)

    def language(self, code: str | None) -> Language:
        """The language ``code``, or the default one for an unknown or missing code."""
        by_code = {language.code: language for language in self.languages}
        return by_code.get(code or "") or by_code.get(self.menu.default_language) or self.languages[0]

    def need(self, key: str | None) -> Need | None:
        return next((need for need in self.needs if need.key == key), None)

    def referrals(self, language: str | None = None, need: str | None = None) -> tuple[Service, ...]:
        """Services from the directory that speak ``language`` and help with ``need`` (None: any)."""
        return tuple(
            service
            for service in self.services
            if (language is None or language in service.languages)
            and (need is None or not service.needs or need in service.needs)
        )
