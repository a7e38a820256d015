"""Events a subscriber notes while events are being published are published too (a freed
counselor offered a caller whose ring failed frees the next one), each responder once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from crisisline import events


@pytest.fixture
def heard(app: Flask) -> Iterator[list[str]]:
    """The responders ``responder_freed`` was sent for; ``ana`` frees ``ben``, who frees ``ana``."""
    sent: list[str] = []
    frees_next = {"ana": "ben", "ben": "ana"}

    def receiver(responder_id: str) -> None:
        sent.append(responder_id)
        events.note_responder_freed(frees_next[responder_id])

    events.responder_freed.connect(receiver)
    yield sent
    events.responder_freed.disconnect(receiver)


def test_a_responder_freed_by_a_subscriber_is_published_in_the_same_publishing(app: Flask, heard: list[str]) -> None:
    with app.app_context():
        events.note_responder_freed("ana")

        published = events.publish_pending()

    assert heard == ["ana", "ben"]
    assert published == 2


def test_nothing_is_left_noted_after_publishing(app: Flask, heard: list[str]) -> None:
    with app.app_context():
        events.note_responder_freed("ana")
        events.publish_pending()

        assert events.publish_pending() == 0
    assert heard == ["ana", "ben"]  # ben freeing ana again is not a loop
