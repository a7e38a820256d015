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

from console.inputs import row_id
from routing.publishing import MAX_NOTE_LENGTH
from routing.validation import IDENTIFIER_RULE, LANGUAGE_CODE_RULE

MAX_TEXT = 100_000  # characters of YAML; the example is under 30 000
DAY_NAMES = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday", "fri": "Friday",
             "sat": "Saturday", "sun": "Sunday"}  # fmt: skip
DAYS = [SelectChoice(key, name) for key, name in DAY_NAMES.items()]
CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]\Z"
CLOCK_OR_MIDNIGHT = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)\Z"
# The validator's own rules for an id or a need's key and for a language's code (a form that
# let through what it refuses would only show its error in the YAML editor, at the draft's line).
IDENTIFIER = rf"^{IDENTIFIER_RULE}\Z"
LANGUAGE_CODE = rf"^{LANGUAGE_CODE_RULE}\Z"
ID_MESSAGE = (
    "Start with a lowercase letter (a to z), then use only lowercase letters, digits, - or _ (no spaces or capitals)."
)


class CheckboxesField(SelectMultipleField):
    """A group of checkboxes (easier on a phone and with a keyboard than a multi-select)."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class EditorForm(FlaskForm):
    text = TextAreaField("Routing YAML", validators=[InputRequired(), Length(max=MAX_TEXT)],
                         render_kw={"spellcheck": "false", "autocapitalize": "none", "rows": 30})  # fmt: skip
    base = HiddenField(validators=[Optional(), Regexp(r"^[0-9]{1,9}\Z")])
    note = StringField(
        "Note: why this change (required to publish)",
        validators=[Optional(), Length(max=MAX_NOTE_LENGTH)],
        render_kw={"maxlength": MAX_NOTE_LENGTH},
    )
    rebase = HiddenField(validators=[Optional(), Regexp(r"^[0-9]{1,9}\Z")])

    def base_version(self) -> int | None:
        """The version the draft was edited from (the rebase button's, when pressed)."""
        return row_id(self.rebase.data) or row_id(self.base.data)  # blank (or only spaces): none


class RollbackForm(FlaskForm):
    note = StringField("Why roll back (optional, added to the note)", validators=[Optional(), Length(max=400)])
    # The version live when the page was drawn: a rollback never undoes one published since, unseen.
    live = HiddenField(validators=[Optional(), Regexp(r"^[0-9]{1,9}\Z")])


class ResponderForm(FlaskForm):
    kind = SelectField(
        "Kind", choices=[SelectChoice("counselor", "Counselor"), SelectChoice("co_responder", "Co-responder unit")]
    )
    responder_id = StringField(
        "Id (a lowercase letter first, then letters, digits, - or _; e.g. fay-lopez)",
        validators=[DataRequired(), Length(max=64), Regexp(IDENTIFIER, message=ID_MESSAGE)],
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

    base = HiddenField(validators=[Optional(), Regexp(r"^[0-9]{1,9}\Z")])  # as ``BaseForm``'s

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


# --- the forms for each part of the config (issue 11) ---------------------------------------
# Each carries ``base``: the version its values were read from. A form posted after someone
# else published goes through the editor's stale check and merge, as a YAML draft does.

DIGIT = r"^[0-9]\Z"
TARGET_CHOICES = [
    SelectChoice("counselors", "Counselors (by skill)"),
    SelectChoice("co_responders", "Co-responder units"),
    SelectChoice("backup", "The backup line"),
]
FALLBACK_CHOICES = [SelectChoice("", "None: the backup line"), *TARGET_CHOICES[:2]]
PRIORITY_CHOICES = [SelectChoice(str(level), str(level)) for level in range(9, -1, -1)]


class BaseForm(FlaskForm):
    base = HiddenField(validators=[Optional(), Regexp(r"^[0-9]{1,9}\Z")])


def _digit_field(label: str) -> StringField:
    return StringField(
        label,
        validators=[DataRequired(), Regexp(DIGIT, message="One keypad digit, 0-9.")],
        render_kw={"inputmode": "numeric", "maxlength": 1},
    )


class LanguageForm(BaseForm):
    """One language's name, voice and menu key (its prompts are on the prompts page)."""

    code = HiddenField(validators=[DataRequired()])
    name = StringField("Name, as callers hear it (e.g. Español)", validators=[DataRequired(), Length(max=60)])
    staff_name = StringField("Name staff hear (e.g. Spanish)", validators=[Optional(), Length(max=60)])
    twilio_language = StringField(
        "Speech language (e.g. es-US)",
        validators=[
            DataRequired(),
            Length(max=16),
            Regexp(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}\Z", message="A locale like es-US."),
        ],
        render_kw={"autocapitalize": "none", "spellcheck": "false"},
    )
    voice = StringField(
        "Voice (e.g. Polly.Lupe)",
        validators=[Optional(), Length(max=64)],
        render_kw={"autocapitalize": "none", "spellcheck": "false", "list": "voices"},
    )
    digit = _digit_field("Menu key")
    speech_words = StringField(
        "Words callers may say to choose it (comma-separated)", validators=[Optional(), Length(max=400)]
    )


class NewLanguageForm(LanguageForm):
    code = StringField(
        "Code (e.g. fr, or vi)",
        validators=[
            DataRequired(),
            Length(max=12),
            Regexp(LANGUAGE_CODE, message="A code like fr."),
        ],
        render_kw={"autocapitalize": "none", "spellcheck": "false"},
    )
    copy_from = SelectField("Start its prompts and texts from (translate them before publishing)")


class RemoveLanguageForm(BaseForm):
    code = SelectField("Language to remove")


class NeedForm(BaseForm):
    """One need: its menu key, priority in the queue, who takes it, and its label per language
    (the label is what the need menu says for it). Label fields are added per language."""

    key = HiddenField(validators=[DataRequired()])
    digit = _digit_field("Menu key")
    priority = SelectField("Priority in the queue (9 is answered first)", choices=PRIORITY_CHOICES)
    target = SelectField("Who is rung", choices=TARGET_CHOICES)
    fallback = SelectField("If nobody of them is on call", choices=FALLBACK_CHOICES)
    counselors = CheckboxesField("Counselors who take it", validators=[Optional()])


class NewNeedForm(NeedForm):
    key = StringField(
        "Key (e.g. grief)",
        validators=[DataRequired(), Length(max=64), Regexp(IDENTIFIER, message=ID_MESSAGE)],
        render_kw={"autocapitalize": "none", "spellcheck": "false"},
    )


class RemoveNeedForm(BaseForm):
    key = SelectField("Need to remove")


class MenuForm(BaseForm):
    ask_need = SelectField(
        "Need menu",
        choices=[
            SelectChoice("on", "On: callers choose a need"),
            SelectChoice("off", "Off: everyone goes with the default need"),
        ],
    )
    retries = SelectField(
        "Attempts: how many times a menu is asked again after silence or a wrong key",
        choices=[SelectChoice(str(n), str(n)) for n in range(6)],
    )
    default_language = SelectField("Default language (after the attempts, or for a one-language line)")
    default_need = SelectField("Default need (after the attempts, or with the need menu off)")
    max_seconds_to_ring = StringField(
        "Warn when menus take longer than this before the first ring (e.g. 20s)",
        validators=[DataRequired(), Length(max=16)],
    )


class OverrideForm(BaseForm):
    responder_id = SelectField("Who", validators=[DataRequired()], id="override_responder_id")
    day = StringField(
        "Date",
        validators=[DataRequired(), Regexp(r"^\d{4}-\d{2}-\d{2}\Z", message="A date like 2026-12-24.")],
        render_kw={"type": "date"},
    )
    start = StringField(
        "From (HH:MM)", default="08:00", validators=[DataRequired(), Regexp(CLOCK, message="A time like 08:00.")]
    )
    end = StringField(
        "To (HH:MM; 24:00 is midnight; before the start ends the next day)",
        default="16:00",
        validators=[DataRequired(), Regexp(CLOCK_OR_MIDNIGHT, message="A time like 16:00 or 24:00.")],
    )
    on_call = SelectField(
        "On call?",
        choices=[SelectChoice("on", "On call (covering)"), SelectChoice("off", "Off call (leave)")],
    )


class RemoveOverrideForm(BaseForm):
    responder_id = HiddenField(validators=[DataRequired()])
    index = HiddenField(validators=[DataRequired(), Regexp(r"^[0-9]{1,4}\Z")])


class PromptsForm(BaseForm):
    """Every prompt of one language; the fields are added per prompt (see ``prompts_form``)."""

    language = HiddenField(validators=[DataRequired()])


def prompt_field(name: str) -> str:
    return "p_" + name.replace(".", "__")


def prompts_form(keys: list[str], **kwargs: object) -> PromptsForm:
    """A prompts form with one text box per ``keys`` entry (``prompts.greeting``, ``sms.welcome``)."""

    class Prompts(PromptsForm):
        pass

    for key in keys:
        setattr(
            Prompts,
            prompt_field(key),
            TextAreaField(key, validators=[DataRequired(), Length(max=1000)], render_kw={"rows": 2}),
        )
    return Prompts(**kwargs)


def need_form(languages: list[tuple[str, str]], new: bool = False, **kwargs: object) -> NeedForm:
    """A need form with a label field per language (code, staff name)."""

    class Need(NewNeedForm if new else NeedForm):  # type: ignore[misc]
        pass

    for code, name in languages:
        setattr(
            Need,
            f"label_{code.replace('-', '_')}",
            StringField(f"Label in {name} (what the menu says)", validators=[DataRequired(), Length(max=120)]),
        )
    return Need(**kwargs)
