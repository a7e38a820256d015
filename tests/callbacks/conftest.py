"""Fixtures for the callback tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.rota import around_the_clock


@pytest.fixture
def rota(publish_routing: Callable[..., int]) -> Callable[..., None]:
    """Publishes the example routing with everyone on call around the clock; call it again with
    ``on_call=(...)`` or callback settings (``offer_after_seconds=...``) to change either."""

    def publish(**changes: Any) -> None:
        def change(document: dict[str, Any]) -> None:
            around_the_clock(document, **{k: v for k, v in changes.items() if k == "on_call"})
            document["callbacks"].update({k: v for k, v in changes.items() if k != "on_call"})

        publish_routing(change)

    publish()
    return publish
