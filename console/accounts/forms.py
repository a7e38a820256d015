"""Console forms (Flask-WTF: each carries its CSRF token)."""

from __future__ import annotations

from flask_wtf import FlaskForm  # type: ignore[import-untyped]
from wtforms import HiddenField, PasswordField, SelectChoice, SelectField, StringField  # type: ignore[import-untyped]
from wtforms.validators import DataRequired, Length, Optional  # type: ignore[import-untyped]

from console.accounts.passwords import MAX_LENGTH, MIN_LENGTH
from console.models import COUNSELOR, ROLES


class SignInForm(FlaskForm):
    username = StringField(
        "Username",
        validators=[DataRequired(), Length(max=64)],
        render_kw={"autocomplete": "username", "autocapitalize": "none", "spellcheck": "false"},
    )
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_LENGTH)],
                             render_kw={"autocomplete": "current-password"})  # fmt: skip
    next = HiddenField()


class AddUserForm(FlaskForm):
    username = StringField(
        "Username",
        validators=[DataRequired(), Length(min=2, max=64)],
        render_kw={"autocomplete": "off", "autocapitalize": "none", "spellcheck": "false"},
    )
    display_name = StringField("Name shown in the console", validators=[Optional(), Length(max=120)])
    # Least privilege first: counselor is the default choice.
    role = SelectField(
        "Role", choices=[SelectChoice(role, role.capitalize()) for role in reversed(ROLES)], default=COUNSELOR
    )
    responder_id = StringField(
        "Responder id (counselors: as in the routing config)", validators=[Optional(), Length(max=64)]
    )
    password = PasswordField(f"Password (at least {MIN_LENGTH} characters)",
                             validators=[DataRequired(), Length(min=MIN_LENGTH, max=MAX_LENGTH)],
                             render_kw={"autocomplete": "new-password"})  # fmt: skip


class ConfirmForm(FlaskForm):
    """A button that changes something: it needs nothing but its CSRF token."""


class CloseAccountForm(FlaskForm):
    """Closing an account: whether the line goes on ringing its responder's phone. Without a
    choice (an older page, a script), the phone is no longer rung: the person has left."""

    ringing = HiddenField(default="stop")

    def keep_ringing(self) -> bool:
        return self.ringing.data == "keep"
