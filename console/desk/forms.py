"""The counselor page's forms (Flask-WTF: each carries its CSRF token). A form that sends
something to a texter also carries a random key of its own, so a double submit sends once."""

from __future__ import annotations

import secrets

from flask_wtf import FlaskForm  # type: ignore[import-untyped]
from wtforms import BooleanField, HiddenField, RadioField, SelectChoice, TextAreaField  # type: ignore[import-untyped]
from wtforms.validators import DataRequired, InputRequired, Length, Regexp  # type: ignore[import-untyped]

from console.desk.texts import FORM_KEY, MAX_REPLY
from console.desk.wrapups import MAX_NOTE
from console.inputs import unix_line_breaks
from console.models import OUTCOMES


def new_key() -> str:
    return secrets.token_urlsafe(18)


class KeyedForm(FlaskForm):
    key = HiddenField(validators=[DataRequired(), Regexp(FORM_KEY)], default=new_key)


class ReplyForm(KeyedForm):
    body = TextAreaField(
        "Your reply",
        validators=[
            DataRequired(message="Not sent: write a reply first."),
            Length(max=MAX_REPLY, message=f"Not sent: a reply is at most {MAX_REPLY} characters."),
        ],
        filters=[unix_line_breaks],
    )


class ReferralForm(FlaskForm):
    """Only the CSRF token: the chosen services travel as repeated ``service`` fields, and the
    referral's own key (the contact and the services) makes a second submit send nothing."""


class WrapUpForm(FlaskForm):
    outcome = RadioField(
        "Outcome", choices=[SelectChoice(key, label) for key, label in OUTCOMES.items()], validators=[InputRequired()]
    )
    consent = BooleanField("They agreed to a check-in later (the line texts them)")
    note = TextAreaField("Short note (stored encrypted)", validators=[Length(max=MAX_NOTE)], filters=[unix_line_breaks])
