"""The board's forms (Flask-WTF: each carries its CSRF token)."""

from __future__ import annotations

from flask_wtf import FlaskForm  # type: ignore[import-untyped]
from wtforms import TextAreaField  # type: ignore[import-untyped]
from wtforms.validators import DataRequired, Length  # type: ignore[import-untyped]

from console.board.unmask import MAX_REASON, MIN_REASON
from console.inputs import unix_line_breaks


class UnmaskForm(FlaskForm):
    reason = TextAreaField(
        "Reason (required: the imminent risk; kept encrypted in the audit log)",
        validators=[DataRequired(), Length(min=MIN_REASON, max=MAX_REASON)],
        # Counted as kept: "OD" and a few spaces is no reason (and once failed with a 500).
        filters=[unix_line_breaks, lambda value: value.strip() if isinstance(value, str) else value],
    )


class TakeOverForm(FlaskForm):
    """ "A person has this" (a text, a follow-up) or "Followed up": the CSRF token is its only field."""
