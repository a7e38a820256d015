"""A bug that fails every time a texter's text is handled: in the webhook and in the clock's
retries alike, until ``heal()``. Shared by the sweep's tests and the board's."""

from __future__ import annotations

import pytest

import sms.views
from sms import conversations as convo
from sms.inbound import handle_inbound


class HandlingFails:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.attempts = 0
        monkeypatch.setattr(sms.views, "handle_texter_message", self._fail)
        monkeypatch.setattr(convo, "_INBOUND_HANDLERS", [self._retry])

    def _fail(self, *args: object, **kwargs: object) -> None:
        self.attempts += 1
        raise RuntimeError("simulated bug")

    def _retry(self, document: object, inbound: object, body: str) -> None:
        handle_inbound(document, inbound, body, texter_handler=self._fail)  # type: ignore[arg-type]

    def heal(self) -> None:
        """The bug is fixed (a deploy): the retries handle the text as the line always does."""
        self.monkeypatch.setattr(convo, "_INBOUND_HANDLERS", [handle_inbound])
