"""The sign-in throttle's keyed hashes of typed names and addresses use a key of their own,
derived from ``SECRET_KEY`` for this one purpose, never ``SECRET_KEY`` itself. Found by
review: the throttle keyed its hashes with the Flask session secret directly (one secret, two
uses)."""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.accounts import throttle
from console.models import SignInAttempt
from crisisline.db import db
from tests.console.conftest import Account, sign_in


def test_the_throttle_hashes_with_a_key_derived_for_it_not_with_the_secret_key(
    app: Flask, client: FlaskClient, counselor: Account
) -> None:
    assert sign_in(client, counselor, "a wrong password", REMOTE_ADDR="203.0.113.9") == 200

    secret = app.config["SECRET_KEY"].encode()
    with app.app_context():
        stored = db.session.scalars(select(SignInAttempt)).one()
        for kind, value in (("account", counselor.username), ("address", "203.0.113.9")):
            keyed_with_the_secret = hmac.new(secret, f"console-sign-in:{kind}:{value}".encode(), hashlib.sha256)
            assert getattr(stored, f"{kind}_key") != keyed_with_the_secret.hexdigest()

        key = throttle.hash_key()
        assert key != secret and secret not in key
        for kind, value in (("account", counselor.username), ("address", "203.0.113.9")):
            keyed_with_its_own = hmac.new(key, f"console-sign-in:{kind}:{value}".encode(), hashlib.sha256)
            assert getattr(stored, f"{kind}_key") == keyed_with_its_own.hexdigest()
        # The same SECRET_KEY always gives the same key (every web process counts alike).
        assert throttle.hash_key() == key
