"""Whether the line is down, said at the top of every console page: a supervisor who opens the
board, or a counselor waiting for transfers, must not have to guess why nothing arrives.

Down means every caller and texter is sent to the backup line: either the operator's emergency
switch (``LINE_MODE_OVERRIDE=system_down``, set where the line's environment is kept) or a
published routing whose mode is ``system_down``.
"""

from __future__ import annotations

import phonenumbers
from flask import current_app

from console.access import current_user
from crisisline.failsafe import failsafe_backup_number
from routing.store import active_routing


def line_down_message(*, switch_on: bool, published_down: bool, backup_number: str) -> str | None:
    """What staff are told while the line is down, or None while it runs as published."""
    backup = _shown(backup_number)
    if switch_on:
        return (
            f"Emergency switch on: every caller and texter is sent to the backup line {backup}, "
            "whatever the published routing says, and nothing is offered to counselors. It is turned "
            "off where the line's settings are kept (LINE_MODE_OVERRIDE), then the line restarted."
        )
    if published_down:
        return (
            f"The line is down: the published routing's mode is system_down, so every caller and "
            f"texter is sent to the backup line {backup}. An administrator publishes mode normal to "
            "bring it back."
        )
    return None


def current_line_down_message() -> str | None:
    """``line_down_message`` for this process's settings and the routing in force."""
    settings = current_app.extensions.get("crisisline.settings")
    switch_on = settings is not None and settings.line_mode_override == "system_down"
    active = active_routing()  # served as down already while the switch is on
    if active is None:  # nothing published yet: callers go to BACKUP_NUMBER whatever the switch
        return line_down_message(switch_on=switch_on, published_down=False, backup_number=failsafe_backup_number())
    published_down = active.document.mode == "system_down"
    return line_down_message(
        switch_on=switch_on, published_down=published_down, backup_number=active.document.backup_number
    )


def inject_line_state() -> dict[str, str | None]:
    """Context for ``base.html``: only for staff signed in (the sign-in page reads nothing)."""
    if not current_user.is_authenticated:
        return {"line_down": None}
    return {"line_down": current_line_down_message()}


def _shown(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
