"""``routing.store.active_routing`` inside a request: read once (a status callback asked three
times, a query each), one version throughout the request, and a publish made by the request
itself (the console's publish page) is what it sees next. Outside a request, every call reads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from flask import Flask
from sqlalchemy import event

from crisisline.db import db
from routing import store


@pytest.fixture
def routing_reads(app: Flask) -> Iterator[list[str]]:
    """The statements that look up the newest routing version, while the test runs."""
    reads: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "ORDER BY routing_versions.id DESC" in statement:
            reads.append(statement)

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", record)
    yield reads
    with app.app_context():
        event.remove(db.engine, "before_cursor_execute", record)


def renamed(example_routing: dict[str, Any], name: str) -> str:
    document = yaml.safe_load(yaml.safe_dump(example_routing))
    document["line"]["name"] = name
    return yaml.safe_dump(document, allow_unicode=True)


def test_a_request_reads_the_active_routing_once(
    app: Flask, publish_routing: Callable[..., int], routing_reads: list[str]
) -> None:
    version = publish_routing()
    routing_reads.clear()

    with app.test_request_context("/voice/status", method="POST"):
        seen = [store.active_routing() for _ in range(3)]

    assert [active.version_id for active in seen if active] == [version] * 3
    assert len(routing_reads) == 1


def test_a_request_keeps_its_version_while_another_process_publishes(
    app: Flask, publish_routing: Callable[..., int], example_routing: dict[str, Any]
) -> None:
    first = publish_routing()
    published: list[int] = []

    def publish_elsewhere() -> None:  # another thread, as another web process would
        with app.app_context():
            published.append(store.publish(renamed(example_routing, "Elsewhere"), published_by="tests").id)

    with app.test_request_context("/voice/status", method="POST"):
        before = store.active_routing()
        elsewhere = threading.Thread(target=publish_elsewhere)
        elsewhere.start()
        elsewhere.join(timeout=30)
        during = store.active_routing()
    (newer,) = published

    assert before is not None and during is not None
    assert before.version_id == during.version_id == first
    with app.app_context():
        after = store.active_routing()
    assert after is not None and after.version_id == newer


def test_a_request_that_publishes_sees_what_it_published(
    app: Flask, publish_routing: Callable[..., int], example_routing: dict[str, Any]
) -> None:
    publish_routing()
    with app.test_request_context("/console/routing/publish", method="POST"):
        store.active_routing()
        published = store.publish(renamed(example_routing, "Published here"), published_by="tests")
        active = store.active_routing()

    assert active is not None and active.version_id == published.id
    assert active.document.line_name == "Published here"


def test_outside_a_request_every_call_reads_the_newest_version(
    app: Flask, publish_routing: Callable[..., int], routing_reads: list[str]
) -> None:
    publish_routing()
    routing_reads.clear()

    with app.app_context():
        store.active_routing()
        store.active_routing()

    assert len(routing_reads) == 2
