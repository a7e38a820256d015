"""Deny by default, checked from the app's URL map: every console route declares its roles,
every route by every role and anonymous gets exactly what was intended, and every
state-changing request without a CSRF token fails, except Twilio's signed webhooks."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from console.access import PUBLIC, declared_roles, is_twilio_signed
from console.models import ADMIN, COUNSELOR, ROLES, SUPERVISOR
from console.routing_pages.forms import prompt_field
from crisisline.settings import DEFAULT_ROUTING_FILE
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from tests.console.conftest import Account, MakeUser, audit_actions, csrf_token, sign_in
from twilio_fake.signing import signed_headers, sms_params

EVERYONE = frozenset(ROLES)
STAFF = frozenset({ADMIN, SUPERVISOR})
# The intended access of every console route. A new route must be added here (the first
# test fails until it is), so its roles are a decision, not an accident.
INTENDED: dict[str, frozenset[str]] = {
    "console.accounts.sign_in": PUBLIC,
    "console.accounts.sign_out": EVERYONE,
    "console.accounts.home": EVERYONE,
    "console.accounts.user_list": frozenset({ADMIN}),
    "console.accounts.user_add": frozenset({ADMIN}),
    "console.accounts.user_close": frozenset({ADMIN}),
    "console.accounts.user_deactivate": frozenset({ADMIN}),
    "console.accounts.user_stop_ringing": frozenset({ADMIN}),
    "console.audit.log": STAFF,
    "console.board.page": STAFF,
    "console.board.data": STAFF,
    "console.board.unmask_list": STAFF,
    "console.board.unmask_reveal": STAFF,
    "console.board.take_over": STAFF,
    "console.board.checkin_followed_up": STAFF,
    "console.board.follow_up_taken": STAFF,
    "console.metrics.page": STAFF,
    "console.metrics.download": STAFF,
    "console.metrics.staffing": STAFF,
    "console.metrics.definitions_page": STAFF,
    "console.desk.page": frozenset({COUNSELOR}),
    "console.desk.data": frozenset({COUNSELOR}),
    "console.desk.availability": frozenset({COUNSELOR}),
    "console.desk.conversation": frozenset({COUNSELOR}),
    "console.desk.reply": frozenset({COUNSELOR}),
    "console.desk.command": frozenset({COUNSELOR}),
    "console.desk.conversation_data": frozenset({COUNSELOR}),
    "console.desk.wrap_up": frozenset({COUNSELOR}),
    "console.desk.wrap_up_save": frozenset({COUNSELOR}),
    "console.routing.editor": frozenset({ADMIN}),
    "console.routing.preview": frozenset({ADMIN}),
    "console.routing.publish": frozenset({ADMIN}),
    "console.routing.history": frozenset({ADMIN}),
    "console.routing.version": frozenset({ADMIN}),
    "console.routing.rollback": frozenset({ADMIN}),
    "console.routing.people": frozenset({ADMIN}),
    "console.routing.add_responder": frozenset({ADMIN}),
    "console.routing.add_shift": frozenset({ADMIN}),
    "console.routing.line_settings": frozenset({ADMIN}),
    "console.routing.languages": frozenset({ADMIN}),
    "console.routing.edit_language": frozenset({ADMIN}),
    "console.routing.add_language": frozenset({ADMIN}),
    "console.routing.remove_language": frozenset({ADMIN}),
    "console.routing.needs": frozenset({ADMIN}),
    "console.routing.edit_need": frozenset({ADMIN}),
    "console.routing.add_need": frozenset({ADMIN}),
    "console.routing.remove_need": frozenset({ADMIN}),
    "console.routing.prompts": frozenset({ADMIN}),
    "console.routing.edit_prompts": frozenset({ADMIN}),
    "console.routing.menus": frozenset({ADMIN}),
    "console.routing.edit_menus": frozenset({ADMIN}),
    "console.routing.overrides": frozenset({ADMIN}),
    "console.routing.add_override": frozenset({ADMIN}),
    "console.routing.remove_override": frozenset({ADMIN}),
    "console.routing.simulator": STAFF,
    "console.routing.coverage_week": STAFF,
}
# The counselor's actions on a contact (console/desk): the co-responder unit, referrals.
INTENDED.update(
    {
        "console.desk.bring_unit": frozenset({COUNSELOR}),
        "console.desk.referral": frozenset({COUNSELOR}),
        "console.desk.referral_send": frozenset({COUNSELOR}),
    }
)
# Values for the routes' arguments (a conversation or contact that does not exist: 404 for
# the roles allowed, the same refusals as any route for the others).
ARGUMENTS = {
    "conversation_id": 999_999, "contact_id": 999_999, "channel": "text", "command": "end", "number": 999_999,
    "message_id": 999_999, "checkin_id": 999_999,
}  # fmt: skip
ANONYMOUS = "anonymous"


def _english_prompts() -> dict[str, str]:
    """The prompts form's fields for English, as the example routing has them."""
    english = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text())["languages"][0]
    return {prompt_field(f"{part}.{key}"): text for part in ("prompts", "sms") for key, text in english[part].items()}


def console_rules(app: Flask) -> list[Rule]:
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("console.")]
    return [rule for rule in rules if rule.endpoint != "console.static"]


def requests_for(rule: Rule, spare_user_id: int, role: str) -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, form data) that exercise ``rule`` successfully when allowed."""
    values: dict[str, Any] = {"user_id": spare_user_id, **ARGUMENTS}
    built = rule.build({name: value for name, value in values.items() if name in rule.arguments})
    assert built is not None
    path = built[1]
    data = {
        "console.accounts.user_add": {"username": f"new-{role}", "role": SUPERVISOR, "password": "x" * 16},
        "console.desk.availability": {"available": "0"},
        "console.desk.reply": {"body": "hello", "key": "k" * 24},
        "console.desk.command": {"key": "k" * 24},
        "console.desk.wrap_up_save": {"outcome": "other"},
        "console.board.unmask_reveal": {"reason": "imminent risk stated"},
        "console.routing.preview": {"text": "version: 1\n"},
        # The live text again: valid, and nothing to publish (the matrix changes no routing).
        "console.routing.publish": {"text": DEFAULT_ROUTING_FILE.read_text(), "note": "the same text"},
        "console.routing.add_responder": {
            "kind": "counselor",
            "responder_id": f"new-{role}",
            "name": "New Person",
            "phone": "+1 312 555 0109",
            "languages": "en",
        },
        "console.routing.add_shift": {"responder_id": "ana-ruiz", "days": "sat", "start": "02:00", "end": "04:00"},
        "console.routing.line_settings": {
            "mode": "normal",
            "strategy": "sequential",
            "ring_timeout": "20s",
            "max_hold": "4m",
            "menu_timeout": "6s",
        },
        # The routing forms: each makes a draft (nothing is published).
        "console.routing.edit_language": {"code": "es", "name": "Español", "staff_name": "Spanish",
                                          "twilio_language": "es-US", "voice": "Polly.Miguel", "digit": "2"},
        "console.routing.add_language": {"code": "fr", "name": "Français", "staff_name": "French",
                                         "twilio_language": "fr-FR", "voice": "Polly.Lea", "digit": "3",
                                         "copy_from": "en"},
        "console.routing.remove_language": {"code": "es"},
        "console.routing.edit_need": {"key": "suicide", "digit": "2", "priority": "8", "target": "counselors",
                                      "fallback": "", "label_en": "suicidal thoughts",
                                      "label_es": "pensamientos de suicidio"},
        "console.routing.add_need": {"key": "grief", "digit": "7", "priority": "2", "target": "counselors",
                                     "fallback": "", "label_en": "grief", "label_es": "duelo"},
        "console.routing.remove_need": {"key": "mental_health"},
        "console.routing.edit_prompts": {"language": "en", **_english_prompts()},
        "console.routing.edit_menus": {"ask_need": "off", "retries": "2", "default_language": "en",
                                       "default_need": "something_else", "max_seconds_to_ring": "20s"},
        "console.routing.add_override": {"responder_id": "ben-carter", "on_call": "on", "day": "2031-01-02",
                                         "start": "08:00", "end": "16:00"},
        "console.routing.remove_override": {"responder_id": "ana-ruiz", "index": "0"},
    }.get(rule.endpoint, {})  # fmt: skip
    methods = sorted((rule.methods or set()) & {"GET", "POST"})
    return [(method, path, data if method == "POST" else {}) for method in methods]


def test_every_console_route_declares_its_roles_as_intended(app: Flask) -> None:
    declared = {rule.endpoint: declared_roles(app.view_functions[rule.endpoint]) for rule in console_rules(app)}

    undeclared = sorted(endpoint for endpoint, roles in declared.items() if roles is None)
    assert not undeclared, f"console routes without @allow/@public: {undeclared}"
    assert declared == INTENDED


def test_a_console_route_added_without_roles_is_refused_to_everyone(
    app: Flask, client: FlaskClient, admin: Account
) -> None:
    app.add_url_rule("/console/forgotten", "console.forgotten", lambda: "secret")
    assert client.get("/console/forgotten").status_code == 403
    sign_in(client, admin)
    assert client.get("/console/forgotten").status_code == 403


@pytest.mark.parametrize("role", [*ROLES, ANONYMOUS])
def test_route_by_role_matrix(app: Flask, client: FlaskClient, make_user: MakeUser, role: str) -> None:
    spare = make_user(COUNSELOR, "spare")
    if role != ANONYMOUS:
        if role != ADMIN:
            make_user(ADMIN, "another-admin")
        assert sign_in(client, make_user(role, f"me-{role}")) == 302
    # Signing out last: it ends the session the other requests use.
    rules = sorted(console_rules(app), key=lambda rule: rule.endpoint == "console.accounts.sign_out")
    outcomes: dict[tuple[str, str], int] = {}
    for rule in rules:
        for method, path, data in requests_for(rule, spare.id, role):
            if method == "POST":
                data = {**data, "csrf_token": csrf_token(client)}
            response = client.open(path, method=method, data=data)
            location = response.headers.get("Location", "")
            intended = INTENDED[rule.endpoint]
            if intended == PUBLIC or role in intended:
                assert response.status_code not in (400, 401, 403), (method, path)
                assert "/console/sign-in" not in location or rule.endpoint == "console.accounts.sign_out"
            elif role == ANONYMOUS:
                if path.endswith(".json"):
                    assert response.status_code == 401, (method, path)
                else:
                    assert response.status_code == 302 and "/console/sign-in" in location, (method, path)
            else:
                assert response.status_code == 403, (method, path, role)
            outcomes[(method, rule.endpoint)] = response.status_code
    assert len(outcomes) == sum(len(requests_for(rule, spare.id, role)) for rule in rules)


@pytest.mark.parametrize("role", ROLES)
def test_state_changing_console_requests_without_a_csrf_token_fail(
    app: Flask, client: FlaskClient, make_user: MakeUser, role: str
) -> None:
    spare = make_user(COUNSELOR, "spare")
    assert sign_in(client, make_user(role, f"me-{role}")) == 302
    before = audit_actions(app)
    posts = [(rule, path) for rule in console_rules(app) for method, path, _ in requests_for(rule, spare.id, role)
             if method == "POST"]  # fmt: skip
    assert posts

    for _rule, path in posts:
        data: dict[str, Any] = {"available": "0", "username": "sneaky", "role": ADMIN, "password": "y" * 16}
        assert client.post(path, data=data).status_code == 400, path
        assert client.post(path, data={**data, "csrf_token": "forged"}).status_code == 400, path
    assert audit_actions(app) == before  # nothing changed, nobody signed out
    assert client.get("/console/").status_code == 302


def test_csrf_guards_every_other_form_of_the_app_but_not_twilio_webhooks(app: Flask, client: FlaskClient) -> None:
    """Twilio cannot send a CSRF token: its views check its signature instead (403 unsigned).
    Any other state-changing route of the app, whoever adds it, needs a token (400)."""
    posts = [
        rule for rule in app.url_map.iter_rules()
        if "POST" in (rule.methods or ()) and not rule.endpoint.startswith("console.") and not rule.arguments
    ]  # fmt: skip
    assert posts
    for rule in posts:
        expected = 403 if is_twilio_signed(app.view_functions[rule.endpoint]) else 400
        assert client.post(rule.rule, data={"From": "+13125550123"}).status_code == expected, rule.rule
    assert any(is_twilio_signed(app.view_functions[rule.endpoint]) for rule in posts)


def test_a_signed_twilio_webhook_needs_no_csrf_token(client: FlaskClient) -> None:
    url = "http://localhost/sms/incoming"
    params = sms_params(TEST_ACCOUNT_SID, "+13125550123", LINE_NUMBER, "hello", None, 0)

    response = client.post(url, data=params, headers=signed_headers(TEST_AUTH_TOKEN, url, params, voice=False))

    assert response.status_code == 200
    assert re.search(r"<Response", response.get_data(as_text=True))
