"""Accounts: password hashing, sign-in and its rate limits, sessions (cookies, idle timeout,
sign-out everywhere), the audit rows they leave, and ``flask users``. SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest
import requests
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.accounts import throttle, users
from console.accounts.passwords import MIN_LENGTH, WeakPassword, hash_password, needs_rehash, verify_password
from console.audit.log import CLI
from console.models import ADMIN, COUNSELOR, SignInAttempt, User
from crisisline.db import db
from crisisline.settings import Settings
from tests.console.conftest import PASSWORD, Account, MakeUser, audit_actions, csrf_token, sign_in


@pytest.mark.production_password_cost
def test_passwords_are_hashed_with_argon2id_at_the_recommended_cost() -> None:
    stored = hash_password(PASSWORD)

    # RFC 9106's second recommended option: argon2id, 64 MiB, 3 passes, 4 lanes.
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in stored
    assert hash_password(PASSWORD) != stored  # salted
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD.upper())
    assert not verify_password(None, PASSWORD)
    assert not verify_password("not a hash", PASSWORD)
    assert not needs_rehash(stored)
    with pytest.raises(WeakPassword):
        hash_password("x" * (MIN_LENGTH - 1))


def test_the_stored_account_has_a_hash_not_the_password(app: Flask, admin: Account) -> None:
    with app.app_context():
        user = db.session.get(User, admin.id)
        assert user is not None
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash


def test_signing_in_and_out_is_audited_and_ends_the_session_everywhere(
    app: Flask, client: FlaskClient, supervisor: Account
) -> None:
    assert sign_in(client, supervisor) == 302
    assert client.get("/console/board").status_code == 200
    copied_cookie = client.get_cookie("session")
    assert copied_cookie is not None

    token = csrf_token(client, "/console/board")
    assert client.post("/console/sign-out", data={"csrf_token": token}).status_code == 302
    assert client.get("/console/board").status_code == 302  # back to the sign-in page

    # A copy of the old cookie (stolen, or another tab) no longer signs anyone in.
    other = app.test_client()
    other.set_cookie("session", copied_cookie.value)
    response = other.get("/console/board")
    assert response.status_code == 302 and "/console/sign-in" in response.headers["Location"]
    assert [(actor, action) for actor, action, _ in audit_actions(app)] == [
        ("cli", "user_created"),
        ("sue-supervisor", "sign_in"),
        ("sue-supervisor", "sign_out"),
    ]


def test_a_wrong_password_is_refused_with_the_same_words_as_an_unknown_name(
    app: Flask, client: FlaskClient, counselor: Account
) -> None:
    wrong = client.post(
        "/console/sign-in",
        data={"username": counselor.username, "password": "not the password", "csrf_token": csrf_token(client)},
    )
    unknown = client.post(
        "/console/sign-in",
        data={"username": "nobody-here", "password": "not the password", "csrf_token": csrf_token(client)},
    )

    assert wrong.status_code == unknown.status_code == 200
    assert "do not match an active account" in wrong.get_data(as_text=True)
    assert "do not match an active account" in unknown.get_data(as_text=True)
    assert client.get("/console/me").status_code == 302  # not signed in
    assert audit_actions(app)[-2:] == [
        ("ana", "sign_in_failed", "user:ana"),
        ("unknown account", "sign_in_failed", None),
    ]
    with app.app_context():
        stored = db.session.scalars(select(SignInAttempt)).all()
        # Names typed and addresses are kept only as keyed hashes.
        assert all(len(a.account_key) == 64 and "nobody" not in a.account_key for a in stored)
        assert all("127.0.0.1" not in a.address_key for a in stored)


def test_an_account_is_locked_after_repeated_failures_then_unlocks(
    app: Flask, client: FlaskClient, counselor: Account
) -> None:
    with time_machine.travel("2026-12-02 16:00:00Z", tick=False) as traveller:
        for _ in range(throttle.PAIR_LIMIT):  # from one address: the limit of the account there
            assert sign_in(client, counselor, "a wrong password") == 200

        # Locked: even the right password is refused, before it is looked at, with a clear reason.
        locked = client.post(
            "/console/sign-in",
            data={"username": counselor.username, "password": PASSWORD, "csrf_token": csrf_token(client)},
        )
        assert locked.status_code == 429
        assert "Too many failed sign-ins for this account" in locked.get_data(as_text=True)
        assert "try again in 15 minutes" in locked.get_data(as_text=True)
        assert client.get("/console/me").status_code == 302
        assert sign_in(client, counselor) == 429
        assert [entry for entry in audit_actions(app) if entry[1] == "sign_in_locked"] == [
            ("ana", "sign_in_locked", "user:ana")  # once per lock, not once per try
        ]

        traveller.shift(throttle.WINDOW + timedelta(seconds=1))
        assert sign_in(client, counselor) == 302
        assert client.get("/console/me").status_code == 200


def test_a_success_clears_the_account_count(app: Flask, client: FlaskClient, counselor: Account) -> None:
    for _ in range(throttle.PAIR_LIMIT - 1):
        sign_in(client, counselor, "a wrong password")
    assert sign_in(client, counselor) == 302
    client.post("/console/sign-out", data={"csrf_token": csrf_token(client, "/console/me")})
    for _ in range(throttle.PAIR_LIMIT - 1):
        sign_in(client, counselor, "a wrong password")
    assert sign_in(client, counselor) == 302


def test_parallel_wrong_passwords_for_one_account_check_no_more_passwords_than_the_limit(
    app: Flask, live_server: str, counselor: Account
) -> None:
    """Guesses sent all at once, over real HTTP to a threaded server, cannot all pass the
    lock check before any of them is counted: only ``PAIR_LIMIT`` passwords are checked (each
    answered "do not match" and audited), every other guess is refused as locked."""
    guesses = throttle.PAIR_LIMIT * 3
    sessions = []
    for _ in range(guesses):
        session = requests.Session()
        page = session.get(f"{live_server}/console/sign-in", timeout=15).text
        found = re.search(r'name="csrf[-_]token" (?:content|value)="([^"]+)"', page)
        assert found, page
        sessions.append((session, found.group(1)))
    start = threading.Barrier(guesses)
    statuses: list[int] = []

    def guess(number: int) -> None:
        session, token = sessions[number]
        start.wait()
        form = {"username": counselor.username, "password": f"wrong password {number:04d}", "csrf_token": token}
        reply = session.post(f"{live_server}/console/sign-in", data=form, allow_redirects=False, timeout=60)
        statuses.append(reply.status_code)

    threads = [threading.Thread(target=guess, args=(number,)) for number in range(guesses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * throttle.PAIR_LIMIT + [429] * (guesses - throttle.PAIR_LIMIT)
    checked = [entry for entry in audit_actions(app) if entry[1] == "sign_in_failed"]
    assert checked == [("ana", "sign_in_failed", "user:ana")] * throttle.PAIR_LIMIT
    with app.app_context():
        counted = db.session.scalars(select(SignInAttempt).where(SignInAttempt.succeeded.is_(False))).all()
        assert len(counted) == throttle.PAIR_LIMIT  # a refused guess is not counted (it would extend the lock)


def test_a_right_password_is_counted_as_a_success_not_a_failure(
    app: Flask, client: FlaskClient, counselor: Account
) -> None:
    assert sign_in(client, counselor) == 302
    with app.app_context():
        attempts = db.session.scalars(select(SignInAttempt)).all()
        assert [attempt.succeeded for attempt in attempts] == [True]


def test_one_address_trying_many_accounts_is_locked_out(app: Flask, client: FlaskClient, make_user: MakeUser) -> None:
    accounts = [make_user(COUNSELOR, f"c{n}") for n in range(2)]
    attacker = {"REMOTE_ADDR": "192.0.2.7"}
    for n in range(throttle.ADDRESS_LIMIT):
        # A different (unknown) name each time: no account reaches its own limit.
        probe = Account(0, f"guess-{n}", COUNSELOR, "a wrong password", None)
        assert sign_in(client, probe, **attacker) == 200

    assert sign_in(client, accounts[0], **attacker) == 429
    page = client.post(
        "/console/sign-in",
        data={"username": "c1", "password": PASSWORD, "csrf_token": csrf_token(client)},
        environ_base=attacker,
    )
    assert "Too many failed sign-ins for your network address" in page.get_data(as_text=True)
    # Someone elsewhere signs in to the same account as usual.
    assert sign_in(app.test_client(), accounts[0], REMOTE_ADDR="198.51.100.20") == 302


def test_a_closed_account_cannot_sign_in(app: Flask, client: FlaskClient, admin: Account, counselor: Account) -> None:
    runner = app.test_cli_runner()
    assert runner.invoke(args=["users", "deactivate", counselor.username]).exit_code == 0
    assert sign_in(client, counselor) == 200
    assert client.get("/console/me").status_code == 302


def test_sessions_end_after_the_idle_timeout_and_polling_does_not_extend_them(
    app: Flask, client: FlaskClient, supervisor: Account
) -> None:
    idle = timedelta(minutes=app.config["CONSOLE_IDLE_MINUTES"])
    with time_machine.travel("2026-12-02 16:00:00Z", tick=False) as traveller:
        sign_in(client, supervisor)
        traveller.shift(idle - timedelta(minutes=1))
        assert client.get("/console/board").status_code == 200  # activity: the clock restarts
        traveller.shift(idle - timedelta(minutes=1))
        for _ in range(3):  # the board's own refresh is not activity
            assert client.get("/console/board.json", headers={"X-Console-Poll": "1"}).status_code == 200
        traveller.shift(timedelta(minutes=2))

        assert client.get("/console/board.json", headers={"X-Console-Poll": "1"}).status_code == 401
        page = client.get("/console/board", follow_redirects=True)
        assert "Sign in" in page.get_data(as_text=True)
    assert audit_actions(app)[-1] == ("sue-supervisor", "signed_out_idle", None)


def test_the_desk_reloads_itself_with_poll_1(client: FlaskClient) -> None:
    """desk.js reloads the page when the inbox changes: that reload asks for ``?poll=1``."""
    with client.get("/console/static/desk.js") as response:
        script = response.get_data(as_text=True)
    assert 'searchParams.set("poll", "1")' in script and "location.reload()" not in script


def test_a_page_reload_with_poll_1_does_not_keep_an_unattended_session_alive(
    app: Flask, client: FlaskClient, counselor: Account
) -> None:
    """The guard does not count a page's own reload (``?poll=1``) as activity, as it does not
    count a poll (``X-Console-Poll: 1``): a desk left open still signs out when idle."""
    idle = timedelta(minutes=app.config["CONSOLE_IDLE_MINUTES"])
    with time_machine.travel("2026-12-02 16:00:00Z", tick=False) as traveller:
        sign_in(client, counselor)
        traveller.shift(idle - timedelta(minutes=1))
        assert client.get("/console/me").status_code == 200  # activity: the clock restarts
        traveller.shift(idle - timedelta(minutes=1))
        for _ in range(3):  # the page reloading itself is not activity
            assert client.get("/console/me?poll=1").status_code == 200
        traveller.shift(timedelta(minutes=2))

        signed_out = client.get("/console/me?poll=1")
        assert signed_out.status_code == 302 and "/console/sign-in" in signed_out.headers["Location"]
    assert audit_actions(app)[-1] == ("ana", "signed_out_idle", None)


def test_session_cookies_are_http_only_and_same_site_lax(client: FlaskClient, counselor: Account) -> None:
    client.get("/console/sign-in")
    token = csrf_token(client)
    response = client.post(
        "/console/sign-in", data={"username": counselor.username, "password": PASSWORD, "csrf_token": token}
    )
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # PUBLIC_BASE_URL is http:// in tests; https turns it on
    assert "Expires=" in cookie  # lasts no longer than the idle timeout


def test_the_session_cookie_is_secure_when_the_line_is_served_over_https(
    make_app: Callable[[Settings], Flask], settings: Settings
) -> None:
    secure_app = make_app(replace(settings, public_base_url="https://line.example.org"))
    assert secure_app.config["SESSION_COOKIE_SECURE"] is True


def test_console_pages_forbid_framing_scripts_from_elsewhere_and_caching(client: FlaskClient) -> None:
    response = client.get("/console/sign-in")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_sign_in_only_redirects_inside_the_console(client: FlaskClient, counselor: Account) -> None:
    token = csrf_token(client)
    response = client.post(
        "/console/sign-in",
        data={"username": "ana", "password": PASSWORD, "csrf_token": token, "next": "https://evil.example/x"},
    )
    assert response.headers["Location"] == "/console/me"


def test_create_admin_reads_the_password_from_the_environment(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create-admin", "Root", "--name", "Rita"], env={"CONSOLE_PASSWORD": PASSWORD})

    assert result.exit_code == 0, result.output
    assert "created admin account 'root'" in result.output
    with app.app_context():
        (user,) = db.session.scalars(select(User)).all()
        assert (user.username, user.display_name, user.role) == ("root", "Rita", ADMIN)
    assert audit_actions(app) == [("cli", "user_created", "user:root")]
    assert sign_in(app.test_client(), Account(user.id, "root", ADMIN, PASSWORD, None)) == 302


def test_create_admin_prompts_twice_and_refuses_a_short_password(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create-admin", "root"],
        input=f"short\nshort\n{PASSWORD}\n{PASSWORD}\n",
        env={"CONSOLE_PASSWORD": ""},
    )

    assert result.exit_code == 0, result.output
    assert f"at least {MIN_LENGTH} characters" in result.output
    assert "short" not in result.output  # hidden input: never echoed
    again = runner.invoke(args=["users", "create-admin", "root"], env={"CONSOLE_PASSWORD": PASSWORD})
    assert again.exit_code != 0 and "already an account" in again.output


def test_users_add_links_a_counselor_to_a_responder_of_the_routing(app: Flask) -> None:
    runner = app.test_cli_runner()
    env = {"CONSOLE_PASSWORD": PASSWORD}

    unlinked = runner.invoke(args=["users", "add", "bob", "--role", "counselor"], env=env)
    unknown = runner.invoke(args=["users", "add", "bob", "--role", "counselor", "--responder", "nobody"], env=env)
    linked = runner.invoke(args=["users", "add", "ben", "--role", "counselor", "--responder", "ben-carter"], env=env)
    listed = runner.invoke(args=["users", "list"])

    assert unlinked.exit_code != 0 and "must be linked to a responder" in unlinked.output
    assert unknown.exit_code != 0 and "No responder 'nobody'" in unknown.output
    assert linked.exit_code == 0, linked.output
    assert listed.output.strip() == "ben\tcounselor\tben-carter\tactive"


def test_the_last_admin_cannot_be_closed(app: Flask, admin: Account) -> None:
    result = app.test_cli_runner().invoke(args=["users", "deactivate", admin.username])
    assert result.exit_code != 0 and "last active administrator" in result.output


CLOSE_OR_DEMOTE: dict[str, Callable[[User], None]] = {
    "deactivate": lambda user: users.deactivate(user, actor=CLI),
    "demote": lambda user: users.set_role(user, "supervisor", actor=CLI),
}


@pytest.mark.parametrize("change", sorted(CLOSE_OR_DEMOTE))
def test_two_admins_closing_each_other_at_once_leave_one_active_admin(
    app: Flask, make_user: MakeUser, change: str
) -> None:
    """The only two administrators close (or demote) each other at the same moment: the one
    who is second to write is refused with the last-admin message, not let through on a count
    read while the first change was not yet committed."""
    ada, bob = make_user(ADMIN, "ada-admin"), make_user(ADMIN, "bob-admin")
    apply = CLOSE_OR_DEMOTE[change]
    first_checked = threading.Event()
    outcome: dict[str, str] = {}

    def first() -> None:  # Ada closes Bob, and is slow to commit
        with app.app_context():
            apply(db.session.get_one(User, bob.id))
            first_checked.set()
            time.sleep(0.5)  # meanwhile Bob closes Ada
            db.session.commit()
            outcome["ada"] = "done"

    def second() -> None:
        first_checked.wait(timeout=10)
        with app.app_context():
            try:
                apply(db.session.get_one(User, ada.id))
            except users.AccountError as refused:
                db.session.rollback()
                outcome["bob"] = str(refused)
            else:
                db.session.commit()
                outcome["bob"] = "done"

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert outcome == {"ada": "done", "bob": "This is the last active administrator; add another one first."}
    with app.app_context():
        assert users.count_admins() == 1
        assert db.session.get_one(User, ada.id).role == ADMIN and db.session.get_one(User, ada.id).active


def test_set_password_ends_existing_sessions(app: Flask, client: FlaskClient, counselor: Account) -> None:
    sign_in(client, counselor)
    new_password = "another long passphrase here"
    result = app.test_cli_runner().invoke(
        args=["users", "set-password", counselor.username], env={"CONSOLE_PASSWORD": new_password}
    )

    assert result.exit_code == 0, result.output
    assert client.get("/console/me").status_code == 302
    assert sign_in(client, counselor) == 200
    assert sign_in(client, counselor, new_password) == 302
    assert ("cli", "password_changed", "user:ana") in audit_actions(app)


def test_a_role_change_applies_at_once_and_is_audited(app: Flask, client: FlaskClient, counselor: Account) -> None:
    sign_in(client, counselor)
    assert client.get("/console/me").status_code == 200
    runner = app.test_cli_runner()

    result = runner.invoke(args=["users", "set-role", counselor.username, "--role", "supervisor"])

    assert result.exit_code == 0, result.output
    assert client.get("/console/me").status_code == 302  # its session ended with the old role
    sign_in(client, counselor)
    assert client.get("/console/me").status_code == 403
    assert client.get("/console/board").status_code == 200
    assert audit_actions(app)[-2] == ("cli", "user_role_changed", "user:ana")
    back = runner.invoke(args=["users", "set-role", counselor.username, "--role", "counselor"])
    assert back.exit_code != 0 and "must be linked to a responder" in back.output
