"""Who rings for whom when several contacts wait for a first phone (``first_phones``): queue
order, except that a contact takes another of its equally fit choices when the one it would
take is the only one someone behind it can have. Pure: contacts, responders and the routing's
choices for each, as the fill pass hands them over."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from line_queue.matching import first_phones
from line_queue.waiting import WaitingContact
from routing.document import Responder


def counselor(name: str, *languages: str) -> Responder:
    return Responder(name, "counselor", name, "+13125550100", languages, frozenset(), (), ())


BEN, DIEGO, CHLOE = counselor("ben", "en"), counselor("diego", "es", "en"), counselor("chloe", "en")


def contact(number: int, language: str, kind: str = "call") -> WaitingContact:
    return WaitingContact(kind, number, language, "suicide", 8, datetime(2026, 12, 2, tzinfo=UTC), 0)


def routing(tiers: dict[int, Sequence[Sequence[Responder]]]) -> Callable[[WaitingContact, set[str]], list[Responder]]:
    """As ``decide_route``: per contact, its first tier with anyone not taken (speakers of their
    language, then others), best first."""

    def choices(waiting: WaitingContact, taken: set[str]) -> list[Responder]:
        for tier in tiers[waiting.id]:
            free = [responder for responder in tier if responder.id not in taken]
            if free:
                return free
        return []

    return choices


def one_lane(_contact: WaitingContact) -> str:
    return "voice"


def names(given: list[Responder | None]) -> list[str | None]:
    return [responder.name if responder else None for responder in given]


def test_an_english_caller_takes_ben_so_the_spanish_caller_behind_gets_diego() -> None:
    contacts = [contact(1, "en"), contact(2, "es")]
    choices = routing({1: [[DIEGO, BEN]], 2: [[DIEGO], [BEN]]})

    assert names(first_phones(contacts, one_lane, choices, Counter(voice=2))) == ["ben", "diego"]


def test_nobody_moves_when_nobody_behind_needs_their_responder() -> None:
    contacts = [contact(1, "en"), contact(2, "en")]
    choices = routing({1: [[DIEGO, BEN]], 2: [[DIEGO, BEN]]})

    assert names(first_phones(contacts, one_lane, choices, Counter(voice=2))) == ["diego", "ben"]


def test_the_first_of_two_spanish_callers_keeps_the_one_spanish_speaker() -> None:
    contacts = [contact(1, "es"), contact(2, "en"), contact(3, "es")]
    choices = routing({1: [[DIEGO], [BEN]], 2: [[DIEGO, BEN]], 3: [[DIEGO], [BEN]]})

    assert names(first_phones(contacts, one_lane, choices, Counter(voice=2))) == ["diego", "ben", None]


def test_a_caller_with_no_speaker_free_keeps_the_one_counselor_from_a_caller_behind_who_speaks_with_him() -> None:
    contacts = [contact(1, "es"), contact(2, "en")]
    choices = routing({1: [[], [BEN]], 2: [[BEN]]})

    assert names(first_phones(contacts, one_lane, choices, Counter(voice=1))) == ["ben", None]


def test_a_caller_whose_speaker_is_taken_by_someone_ahead_who_cannot_move_gets_another_language() -> None:
    contacts = [contact(1, "es"), contact(2, "es")]
    choices = routing({1: [[DIEGO], [BEN]], 2: [[DIEGO], [BEN]]})

    assert names(first_phones(contacts, one_lane, choices, Counter(voice=2))) == ["diego", "ben"]


def test_a_move_can_make_room_through_several_contacts_ahead() -> None:
    # 1 can have Diego or Chloe, 2 Chloe or Ben; Ben is taken by nobody: 3 (Spanish) needs Diego.
    contacts = [contact(1, "en"), contact(2, "en"), contact(3, "es")]
    choices = routing({1: [[DIEGO, CHLOE]], 2: [[CHLOE, BEN]], 3: [[DIEGO], [BEN, CHLOE]]})

    assert names(first_phones(contacts, one_lane, choices, Counter(voice=3))) == ["chloe", "ben", "diego"]


def test_separate_lines_do_not_take_a_responder_from_each_other() -> None:
    contacts = [contact(1, "en"), contact(2, "es", kind="text")]
    choices = routing({1: [[DIEGO]], 2: [[DIEGO]]})

    given = first_phones(contacts, lambda waiting: waiting.channel, choices, Counter(voice=1, text=1))

    assert names(given) == ["diego", "diego"]
