"""The routing pages' forms (Flask-WTF: each carries its CSRF token)."""

from __future__ import annotations

from flask_wtf import FlaskForm  # type: ignore[import-untyped]
from wtforms import (  # type: ignore[import-untyped]
    HiddenField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    widgets,
)
from wtforms.validators import DataRequired, InputRequired, Length, Optional, Regexp  # type: ignore[import-untyped]

from routing.publishing import MAX_NOTE_LENGTH

MAX_TEXT = 100_000  # characters of YAML; the example is under 30 000
DAY_NAMES = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday", "fri": "Friday",
             "sat": "Saturday", "sun": "Sunday"}  # fmt: skip
DAYS = [SelectChoice(key, name) for key, name in DAY_NAMES.items()]
CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
CLOCK_OR_MIDNIGHT = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


class CheckboxesField(SelectMultipleField):
    """A group of checkboxes (easier on a phone and with a keyboard than a multi-select)."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class EditorForm(FlaskForm):
    text = TextAreaField("Routing YAML", validators=[InputRequired(), Length(max=MAX_TEXT)],
                         render_kw={"spellcheck": "false", "autocapitalize": "none", "rows": 30})  # fmt: skip
    base = HiddenField(validators=[Optional(), Regexp(r"^[0-9]{1,9}$")])
    note = StringField(
        "Note: why this change (required to publish)",
        validators=[Optional(), Length(max=MAX_NOTE_LENGTH)],
        render_kw={"maxlength": MAX_NOTE_LENGTH},
    )
    rebase = HiddenField(validators=[Optional(), Regexp(r"^[0-9]{1,9}$")])

    def base_version(self) -> int | None:
        """The version the draft was edited from (the rebase button's, when pressed)."""
        chosen = self.rebase.data or self.base.data
        return int(chosen) if chosen else None


class RollbackForm(FlaskForm):
    note = StringField("Why roll back (optional, added to the note)", validators=[Optional(), Length(max=400)])


class ResponderForm(FlaskForm):
    kind = SelectField(
        "Kind", choices=[SelectChoice("counselor", "Counselor"), SelectChoice("co_responder", "Co-responder unit")]
    )
    responder_id = StringField(
        "Id (lowercase letters, digits and dashes, e.g. fay-lopez)",
        validators=[DataRequired(), Length(max=64), Regexp(r"^[a-z0-9][a-z0-9-]*$", message="Use a-z, 0-9 and -.")],
        render_kw={"autocapitalize": "none", "spellcheck": "false"},
    )
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    phone = StringField(
        "Phone number (e.g. +1 312 555 0109)",
        validators=[DataRequired(), Length(max=32)],
        render_kw={"type": "tel", "autocomplete": "off"},
    )
    languages = CheckboxesField("Languages they speak", validators=[DataRequired(message="Choose at least one.")])
    skills = CheckboxesField("Needs they take (counselors)", validators=[Optional()])


class ShiftForm(FlaskForm):
    # Its own id: the responder form on the same page has a ``responder_id`` too.
    responder_id = SelectField("Who", validators=[DataRequired()], id="shift_responder_id")
    days = CheckboxesField("Days", choices=DAYS, validators=[DataRequired(message="Choose at least one day.")])
    start = StringField(
        "Start (HH:MM, the line's local time)",
        default="08:00",
        validators=[DataRequired(), Regexp(CLOCK, message="A time like 08:00.")],
    )
    end = StringField(
        "End (HH:MM; 24:00 is midnight; before the start runs past midnight)",
        default="16:00",
        validators=[DataRequired(), Regexp(CLOCK_OR_MIDNIGHT, message="A time like 16:00 or 24:00.")],
    )


class SettingsForm(FlaskForm):
    """A few line-wide settings; only the ones changed are written into the draft."""

    mode = SelectField(
        "Mode",
        choices=[
            SelectChoice("normal", "Normal"),
            SelectChoice("system_down", "System down: every caller goes to the backup line"),
        ],
    )
    strategy = SelectField(
        "How responders are rung",
        choices=[
            SelectChoice("sequential", "One at a time (sequential)"),
            SelectChoice("parallel", "Several at once (parallel)"),
        ],
    )
    ring_timeout = StringField(
        "How long a responder's phone rings (e.g. 20s)", validators=[DataRequired(), Length(max=16)]
    )
    max_hold = StringField("Longest hold before the backup line (e.g. 4m)", validators=[DataRequired(), Length(max=16)])
    menu_timeout = StringField(
        "Silence before a menu is repeated (e.g. 6s)", validators=[DataRequired(), Length(max=16)]
    )
