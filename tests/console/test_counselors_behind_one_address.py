"""Counselors who all sign in from one address (a crisis centre behind one NAT address) can
get to work whatever their colleagues mistype, while guessing passwords stays throttled.

Found by review: every failure counted against the address, and a success lifted nothing but
its own account's count, so a few mistyped passwords from different people at one centre
locked everyone there out of the console for 15 minutes. Failures now count per account and
address (a success clears that pair's), per account from any address (a higher limit), and
per address only as a much higher ceiling against trying many accounts."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from console.accounts import throttle
from console.models import COUNSELOR, SignInAttempt
from crisisline.db import db
from tests.console.conftest import PASSWORD, Account, MakeUser, csrf_token, sign_in

CENTRE = {"REMOTE_ADDR": "203.0.113.5"}  # every counselor at the centre, behind one NAT address
ELSEWHERE = {"REMOTE_ADDR": "198.51.100.20"}
ATTACKER = {"REMOTE_ADDR": "192.0.2.7"}


def refusal(client: FlaskClient, account: Account, environ: dict[str, str]) -> str:
    """The page a sign-in with the right password gets, which must be a refusal."""
    form = {"username": account.username, "password": PASSWORD, "csrf_token": csrf_token(client)}
    page = client.post("/console/sign-in", data=form, environ_base=environ)
    assert page.status_code == 429
    return page.get_data(as_text=True)


def failures(app: Flask, username: str, address: str) -> int:
    with app.app_context():
        return db.session.scalar(
            select(func.count()).select_from(SignInAttempt).where(
                SignInAttempt.account_key == throttle.account_key(username),
                SignInAttempt.address_key == throttle.address_key(address),
                SignInAttempt.succeeded.is_(False),
            )
        ) or 0  # fmt: skip


def test_colleagues_mistyping_behind_one_address_do_not_lock_out_a_counselor_with_the_right_password(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    """Five colleagues mistype their passwords four times each and give up (gone home, or
    calling the administrator): twenty failures from the centre's address in minutes."""
    colleagues = [make_user(COUNSELOR, f"colleague-{n}") for n in range(5)]
    ana = make_user(COUNSELOR, "ana")
    for colleague in colleagues:
        for _ in range(throttle.PAIR_LIMIT - 1):
            assert sign_in(app.test_client(), colleague, "a mistyped password", **CENTRE) == 200

    assert sign_in(client, ana, **CENTRE) == 302
    assert client.get("/console/me").status_code == 200


def test_each_counselor_who_mistypes_then_signs_in_is_let_in_however_many_do(app: Flask, make_user: MakeUser) -> None:
    """A shift change: ten counselors each mistype twice, then type it right."""
    for n in range(10):
        counselor = make_user(COUNSELOR, f"counselor-{n}")
        client = app.test_client()
        assert sign_in(client, counselor, "a mistyped password", **CENTRE) == 200
        assert sign_in(client, counselor, "another mistyped password", **CENTRE) == 200
        assert sign_in(client, counselor, **CENTRE) == 302, f"counselor {n} was refused"


def test_a_success_clears_the_failures_of_its_account_at_its_address_and_no_others(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    ana, bea = make_user(COUNSELOR, "ana"), make_user(COUNSELOR, "bea")
    for _ in range(2):
        assert sign_in(app.test_client(), bea, "a mistyped password", **CENTRE) == 200
        assert sign_in(app.test_client(), ana, "a mistyped password", **ELSEWHERE) == 200
    for _ in range(throttle.PAIR_LIMIT - 1):
        assert sign_in(client, ana, "a mistyped password", **CENTRE) == 200

    assert sign_in(client, ana, **CENTRE) == 302

    assert failures(app, "ana", CENTRE["REMOTE_ADDR"]) == 0  # hers, from here: cleared
    assert failures(app, "ana", ELSEWHERE["REMOTE_ADDR"]) == 2  # hers, from elsewhere: still counted
    assert failures(app, "bea", CENTRE["REMOTE_ADDR"]) == 2  # a colleague's, from here: still counted
    # Counted afresh: she may mistype again as before.
    client.post("/console/sign-out", data={"csrf_token": csrf_token(client, "/console/me")})
    for _ in range(throttle.PAIR_LIMIT - 1):
        assert sign_in(client, ana, "a mistyped password", **CENTRE) == 200
    assert sign_in(client, ana, **CENTRE) == 302


def test_guessing_one_accounts_password_from_one_address_is_locked_out_and_its_counselor_still_gets_in(
    app: Flask, client: FlaskClient, counselor: Account
) -> None:
    """Someone who knows Ana's username guesses her password from their own address."""
    for n in range(throttle.PAIR_LIMIT):
        assert sign_in(client, counselor, f"guess {n}", **ATTACKER) == 200

    page = refusal(client, counselor, ATTACKER)  # the right password too, before it is looked at
    assert "Too many failed sign-ins for this account from your network address" in page
    assert "try again in 15 minutes" in page

    # Ana, at the centre, signs in as usual; that lifts nothing for the guesser.
    assert sign_in(app.test_client(), counselor, **CENTRE) == 302
    assert sign_in(client, counselor, "one more guess", **ATTACKER) == 429
    assert failures(app, counselor.username, ATTACKER["REMOTE_ADDR"]) == throttle.PAIR_LIMIT  # refusals not counted


def test_guessing_one_accounts_password_from_many_addresses_locks_the_account_everywhere(
    app: Flask, counselor: Account
) -> None:
    """Guesses spread over addresses, each staying under the limit per address, still add up
    for the account, and her signing in meanwhile does not give the guesser a fresh start: at
    ``ACCOUNT_LIMIT`` it is locked wherever the sign-in comes from, until the window passes or
    an administrator unlocks it."""
    assert throttle.PAIR_LIMIT < throttle.ACCOUNT_LIMIT
    for n in range(throttle.ACCOUNT_LIMIT):
        if n == throttle.ACCOUNT_LIMIT - 1:
            assert sign_in(app.test_client(), counselor, **CENTRE) == 302  # Ana signs in at work
        address = f"192.0.2.{10 + n // (throttle.PAIR_LIMIT - 1)}"
        assert sign_in(app.test_client(), counselor, f"guess {n}", REMOTE_ADDR=address) == 200, n

    page = refusal(app.test_client(), counselor, CENTRE)
    assert "Too many failed sign-ins for this account." in page
    assert "ask an administrator to check the account" in page

    assert app.test_cli_runner().invoke(args=["users", "unlock", counselor.username]).exit_code == 0
    assert sign_in(app.test_client(), counselor, **CENTRE) == 302


def test_trying_many_accounts_from_one_address_meets_its_ceiling_whoever_signs_in_there_meanwhile(
    app: Flask, make_user: MakeUser
) -> None:
    """Someone behind the centre's address tries a wrong password on many names (never more
    than one each) while counselors there mistype and sign in: their successes forgive their
    own mistakes only, and the guesses still reach the address's ceiling."""
    counselors = [make_user(COUNSELOR, f"counselor-{n}") for n in range(throttle.ADDRESS_LIMIT // 10)]
    sprayer = app.test_client()
    for n in range(throttle.ADDRESS_LIMIT):
        probe = Account(0, f"guess-{n}", COUNSELOR, "a wrong password", None)
        assert sign_in(sprayer, probe, **CENTRE) == 200, n
        if n % 10 == 4:  # now and then a counselor arrives, mistypes, and gets in
            counselor, client = counselors[n // 10], app.test_client()
            assert sign_in(client, counselor, "a mistyped password", **CENTRE) == 200
            assert sign_in(client, counselor, **CENTRE) == 302, f"counselor {n // 10} was refused"

    page = refusal(app.test_client(), counselors[0], CENTRE)
    assert "Too many failed sign-ins for your network address" in page
    # The same account from anywhere else signs in as usual.
    assert sign_in(app.test_client(), counselors[0], **ELSEWHERE) == 302
