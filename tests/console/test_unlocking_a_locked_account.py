"""An administrator can lift the lock that failed sign-ins put on an account: setting a new
password lifts it (``flask users set-password``), and so does ``flask users unlock`` (the
password stays). Found by review: the lock page says "ask an administrator to check the
account", but nothing an administrator could do lifted it: someone who knew a counselor's
username locked her out with 5 guesses, and after the reset she still waited 15 minutes."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from console.accounts import throttle
from tests.console.conftest import PASSWORD, Account, audit_actions, csrf_token, sign_in

NEW_PASSWORD = "a brand new passphrase"


def lock_out(client: FlaskClient, account: Account) -> None:
    """Someone who knows the username guesses until the account is locked."""
    for _ in range(throttle.PAIR_LIMIT):
        assert sign_in(client, account, "somebody else guessing") == 200
    locked = client.post(
        "/console/sign-in", data={"username": account.username, "password": PASSWORD, "csrf_token": csrf_token(client)}
    )
    assert locked.status_code == 429
    assert "ask an administrator to check the account" in locked.get_data(as_text=True)


def test_an_administrator_setting_a_new_password_lifts_the_lock(
    app: Flask, client: FlaskClient, counselor: Account
) -> None:
    lock_out(client, counselor)

    result = app.test_cli_runner().invoke(
        args=["users", "set-password", counselor.username], env={"CONSOLE_PASSWORD": NEW_PASSWORD}
    )

    assert result.exit_code == 0, result.output
    assert sign_in(client, counselor, NEW_PASSWORD) == 302


def test_flask_users_unlock_lifts_the_lock_and_keeps_the_password(
    app: Flask, client: FlaskClient, counselor: Account
) -> None:
    lock_out(client, counselor)

    result = app.test_cli_runner().invoke(args=["users", "unlock", counselor.username])

    assert result.exit_code == 0, result.output
    assert "'ana' can sign in again" in result.output
    assert ("cli", "account_unlocked", "user:ana") in audit_actions(app)
    assert sign_in(client, counselor, "a wrong password") == 200  # counted afresh, from zero
    assert sign_in(client, counselor) == 302


def test_unlocking_an_account_that_does_not_exist_says_so(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["users", "unlock", "nobody"])

    assert result.exit_code != 0 and "no account named 'nobody'" in result.output


def test_the_guesses_still_count_against_the_address_they_came_from(
    app: Flask, client: FlaskClient, counselor: Account
) -> None:
    """Unlocking the account forgives nothing to the address the guessing came from."""
    for _ in range(throttle.ADDRESS_LIMIT // throttle.PAIR_LIMIT):
        lock_out(client, counselor)
        assert app.test_cli_runner().invoke(args=["users", "unlock", counselor.username]).exit_code == 0

    form = {"username": counselor.username, "password": PASSWORD, "csrf_token": csrf_token(client)}
    refused = client.post("/console/sign-in", data=form)

    assert refused.status_code == 429
    assert "Too many failed sign-ins for your network address" in refused.get_data(as_text=True)
