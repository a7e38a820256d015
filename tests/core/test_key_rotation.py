"""Data keys rotate without a flag day: the newest key seals, older ones open, ``flask keys
rotate`` re-seals every row (live-safe and resumable), and lookups by number keep working.
Real SQLite and PostgreSQL, real webhooks over HTTP, the fake Twilio."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, insert, select, update

from console.models import NOTE_CONTEXT, UNMASK_REASON_CONTEXT, AuditEntry, WrapUp
from crisisline.cli import SEAL_CONTEXTS, rotate_sealed_values, sealed_columns, sealed_value_counts
from crisisline.db import db
from crisisline.models import Call, CheckIn, Message, Texter, TwilioRecord
from crisisline.privacy import DecryptionError, Vault, derived_lookup_hash_key, key_id
from crisisline.settings import Settings, SettingsError, new_data_encryption_key
from followups.checkins import REPLY_CONTEXT
from ivr.call_log import PHONE_CONTEXT, phone_hash
from sms.outbox import BODY_CONTEXT
from tests.conftest import LINE_NUMBER, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TEST_DATA_KEY, TextingPhone, serving
from tests.conftest import settings_for as conftest_settings_for
from twilio_fake.phone import Keys, Phone, RequestsTransport, Words
from twilio_fake.rest_api import FakeTwilio
from twilio_fake.server import FakeTwilioServer

OLD = base64.urlsafe_b64decode(TEST_DATA_KEY)
NEW = secrets.token_bytes(32)
PINNED_HASH_KEY = derived_lookup_hash_key(OLD)
TEXTER = "+13125550177"
STOPPED_TEXTER = "+13125550178"
CALLER = "+13125550179"
BLOCKED_CALLER = "+13125550180"


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


# --- the keyring ---------------------------------------------------------------------------


def test_a_value_sealed_with_an_old_key_opens_with_the_ring_and_names_its_key() -> None:
    old_vault = Vault(OLD)
    sealed = old_vault.seal("+13125550123", context="phone")
    ring = Vault(NEW, [OLD], lookup_hash_key=PINNED_HASH_KEY)

    assert sealed.startswith(f"v2:{key_id(OLD)}:")
    assert ring.sealed_key_id(sealed) == key_id(OLD) != ring.current_key_id == key_id(NEW)
    assert ring.open(sealed, context="phone") == "+13125550123"
    assert ring.seal("x", context="phone").startswith(f"v2:{key_id(NEW)}:")
    with pytest.raises(DecryptionError):
        Vault(NEW).open(sealed, context="phone")  # the old key dropped too soon: refused, not guessed


def test_values_sealed_before_key_ids_still_open_with_the_current_or_an_old_key() -> None:
    legacy = "v1:" + Vault(OLD).seal("hello", context="sms").split(":", 2)[2]  # the pre-rotation format

    assert Vault(OLD).open(legacy, context="sms") == "hello"
    assert Vault(NEW, [OLD], lookup_hash_key=PINNED_HASH_KEY).open(legacy, context="sms") == "hello"
    assert Vault(NEW, [OLD], lookup_hash_key=PINNED_HASH_KEY).sealed_key_id(legacy) is None
    with pytest.raises(DecryptionError):
        Vault(NEW).open(legacy, context="sms")


def test_lookup_hashes_do_not_change_with_a_rotation() -> None:
    before = Vault(OLD).lookup_hash("+13125550123", context="phone")

    during = Vault(NEW, [OLD], lookup_hash_key=PINNED_HASH_KEY).lookup_hash("+13125550123", context="phone")
    after = Vault(NEW, lookup_hash_key=PINNED_HASH_KEY).lookup_hash("+13125550123", context="phone")

    assert before == during == after
    with pytest.raises(ValueError, match="lookup-hash key pinned"):
        Vault(NEW, [OLD])  # would silently change every hash


def test_a_rolling_deploy_reads_everything_in_either_phase() -> None:
    # Phase 1: the new key is only added to the ring; phase 2: it seals. Either reads the other.
    adding, swapped = (
        Vault(OLD, [NEW], lookup_hash_key=PINNED_HASH_KEY),
        Vault(NEW, [OLD], lookup_hash_key=PINNED_HASH_KEY),
    )

    assert adding.open(swapped.seal("a", context="c"), context="c") == "a"
    assert swapped.open(adding.seal("b", context="c"), context="c") == "b"


# --- settings ------------------------------------------------------------------------------


def production_env(**changes: str) -> dict[str, str]:
    env = {
        "CRISISLINE_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATA_ENCRYPTION_KEY": b64(NEW),
        "DATA_ENCRYPTION_OLD_KEYS": b64(OLD),
        "LOOKUP_HASH_KEY": b64(PINNED_HASH_KEY),
        "DATABASE_URL": "postgres://line@db.internal/line",
        "REDIS_URL": "redis://cache.internal:6379/0",
        "BACKUP_NUMBER": "(800) 273-8255",
        "PUBLIC_BASE_URL": "https://line.example.org/",
        "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "TWILIO_AUTH_TOKEN": "f" * 32,
    }
    env.update(changes)
    return env


def test_production_settings_carry_the_keyring_to_the_vault() -> None:
    third = secrets.token_bytes(32)
    settings = Settings.from_env(production_env(DATA_ENCRYPTION_OLD_KEYS=f" {b64(OLD)} , {b64(third)} "))

    assert settings.data_encryption_old_keys == (OLD, third)
    assert settings.lookup_hash_key == PINNED_HASH_KEY
    vault = Vault(settings.data_encryption_key)  # exactly how the app builds it
    assert vault.key_ids == (key_id(NEW), key_id(OLD), key_id(third))
    assert vault.open(Vault(third).seal("x", context="c"), context="c") == "x"


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        (
            {"DATA_ENCRYPTION_OLD_KEYS": b64(NEW)},
            "DATA_ENCRYPTION_OLD_KEYS (key 1): is the current DATA_ENCRYPTION_KEY",
        ),
        ({"DATA_ENCRYPTION_OLD_KEYS": f"{b64(OLD)},not*base64"}, "DATA_ENCRYPTION_OLD_KEYS (key 2): not valid base64"),
        ({"DATA_ENCRYPTION_OLD_KEYS": "c2hvcnQ="}, "DATA_ENCRYPTION_OLD_KEYS (key 1): must be 32 random bytes"),
        (
            {"DATA_ENCRYPTION_OLD_KEYS": f"{b64(OLD)},{b64(OLD)}"},
            "DATA_ENCRYPTION_OLD_KEYS: the same key is listed twice",
        ),
        ({"LOOKUP_HASH_KEY": ""}, "LOOKUP_HASH_KEY: required while DATA_ENCRYPTION_OLD_KEYS is set"),
        ({"LOOKUP_HASH_KEY": b64(OLD)}, "LOOKUP_HASH_KEY: is a data encryption key"),
        ({"LOOKUP_HASH_KEY": b64(bytes(32))}, "LOOKUP_HASH_KEY: not random"),
        ({"LOOKUP_HASH_KEY": "c2hvcnQ="}, "LOOKUP_HASH_KEY: must be 32 random bytes"),
    ],
)
def test_production_refuses_a_bad_keyring_with_a_clear_message(changes: dict[str, str], refused: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(production_env(**changes))

    assert any(problem.startswith(refused) for problem in raised.value.problems), raised.value.problems
    assert not any(b64(NEW) in problem or b64(OLD) in problem for problem in raised.value.problems)


def test_an_old_weak_key_may_be_rotated_away_from() -> None:
    weak = bytes(32)  # what some lines were once allowed to start with

    settings = Settings.from_env(production_env(DATA_ENCRYPTION_OLD_KEYS=b64(weak)))

    assert Vault(settings.data_encryption_key).open(Vault(weak).seal("x", context="c"), context="c") == "x"


# --- rotating a database ---------------------------------------------------------------------


@pytest.fixture
def keyed_app(
    settings: Settings, make_app: Callable[[Settings], Flask], fake_twilio_server: FakeTwilioServer
) -> Callable[..., Flask]:
    """Factory: the line on the test's database and Redis, with the given keys."""

    def make(**keys: str) -> Flask:
        return make_app(
            conftest_settings_for(
                settings.database_url, settings.redis_url,
                TWILIO_API_BASE_URL=fake_twilio_server.base_url, PUBLIC_BASE_URL=settings.public_base_url or "",
                **keys,
            )
        )  # fmt: skip

    return make


def every_sealed_value(app: Flask) -> dict[tuple[str, Any], str]:
    """Every sealed value in the database, opened with ``app``'s vault (keyed by column and row)."""
    vault: Vault = app.extensions["crisisline.vault"]
    values = {}
    with app.app_context():
        for sealed in sealed_columns():
            (key,) = sealed.table.primary_key.columns
            query = select(key, sealed.column).where(sealed.column.is_not(None))
            for row_id, token in db.session.execute(query):
                values[(sealed.name, row_id)] = vault.open(token, context=sealed.context)
    return values


def key_ids_in_use(app: Flask) -> set[str]:
    with app.app_context():
        return {label for counter in sealed_value_counts().values() for label in counter}


def a_day_on_the_old_key(app: Flask, port: int, fake: FakeTwilio) -> None:
    """Texts, a STOP, a call with spoken words, a blocked number: the line itself writes every
    sealed column (but a check-in reply and the console's wrap-up note and unmask reason, stored
    directly); one text body is then put back in the format from before key ids."""
    runner = app.test_cli_runner()
    assert runner.invoke(args=["blocklist", "add", BLOCKED_CALLER]).output == "blocked\n"
    with serving(app, port) as url:
        texting = TextingPhone(url, fake)
        texting.send(TEXTER, "I want to kill myself")
        texting.send(STOPPED_TEXTER, "hello")
        texting.send(STOPPED_TEXTER, "STOP")
        phone = Phone(RequestsTransport(), url, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
        phone.call([Keys("1"), Words("I want to kill myself")], identity=phone.identity(CALLER), max_hold_turns=0)
    with app.app_context():
        first = db.session.scalars(select(Message).order_by(Message.id)).first()
        assert first is not None and first.sealed_body is not None
        legacy = "v1:" + first.sealed_body.split(":", 2)[2]
        db.session.execute(update(Message).where(Message.id == first.id).values(sealed_body=legacy))
        reply = app.extensions["crisisline.vault"].seal("couldn't sleep", context=REPLY_CONTEXT)
        db.session.add(CheckIn(dedupe_key="text:1", origin="text", language="en", state="answered", sealed_reply=reply))
        # What staff write in the console: a wrap-up note and an unmask's reason.
        vault = app.extensions["crisisline.vault"]
        note = vault.seal("talked it through", context=NOTE_CONTEXT)
        reason = vault.seal("imminent risk", context=UNMASK_REASON_CONTEXT)
        db.session.add(
            WrapUp(
                contact_key="text:1", channel="text", responder_id="ana-ruiz", outcome="de_escalated", sealed_note=note
            )
        )
        db.session.add(AuditEntry(actor="supervisor", action="unmask", target="call:1", sealed_detail=reason))
        # What the purge notes to find a texter's texts at Twilio: their number, sealed.
        number = vault.seal(TEXTER, context=PHONE_CONTEXT)
        now = datetime.now(UTC)
        db.session.add(TwilioRecord(kind="texts", sid="texts:1:test", state="pending", due_at=now,
                                    sealed_number=number, line_number=LINE_NUMBER, sent_before=now))  # fmt: skip
        db.session.commit()


@pytest.mark.usefixtures("wednesday_evening")
def test_rotation_re_seals_every_row_and_then_the_old_key_can_be_dropped(
    app: Flask, keyed_app: Callable[..., Flask], app_port: int, fake: FakeTwilio
) -> None:
    a_day_on_the_old_key(app, app_port, fake)
    written = every_sealed_value(app)
    assert {table for table, _row in written} == {f"{t}.{c}" for t, c in SEAL_CONTEXTS}
    hash_key = app.test_cli_runner().invoke(args=["keys", "hash-key"]).output.strip()
    assert base64.urlsafe_b64decode(hash_key) == PINNED_HASH_KEY

    # Deployed with the new key; the old one only opens. Nothing is lost before the rotation…
    rotating = keyed_app(DATA_ENCRYPTION_KEY=b64(NEW), DATA_ENCRYPTION_OLD_KEYS=TEST_DATA_KEY, LOOKUP_HASH_KEY=hash_key)
    assert every_sealed_value(rotating) == written
    assert key_ids_in_use(rotating) == {key_id(OLD), "legacy"}

    result = rotating.test_cli_runner().invoke(args=["keys", "rotate", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    print("\n" + result.output.strip())
    assert (
        f"messages.sealed_body: {sum(1 for t, _ in written if t == 'messages.sealed_body')} re-sealed" in result.output
    )
    status = rotating.test_cli_runner().invoke(args=["keys", "status"]).output
    assert "every value is sealed with the current key" in status
    assert "lookup hashes: 3 sampled, all match" in status  # two texters, one caller
    assert "+1312" not in result.output + status and "kill myself" not in result.output + status
    assert key_ids_in_use(rotating) == {key_id(NEW)}
    again = rotating.test_cli_runner().invoke(args=["keys", "rotate"]).output
    assert "messages.sealed_body: 0 re-sealed" in again  # resumable: nothing done twice

    # …and once the old key is dropped every row still reads, and people are still found.
    dropped = keyed_app(DATA_ENCRYPTION_KEY=b64(NEW), LOOKUP_HASH_KEY=hash_key)
    assert every_sealed_value(dropped) == written
    with dropped.app_context():
        texters_before = db.session.scalar(select(func.count(Texter.id)))
        assert db.session.scalar(select(Call.id).where(Call.caller_hash == phone_hash(CALLER))) is not None
    mistaken = keyed_app(DATA_ENCRYPTION_KEY=b64(NEW), LOOKUP_HASH_KEY=b64(secrets.token_bytes(32)))
    warned = mistaken.test_cli_runner().invoke(args=["keys", "status"]).output
    assert "WARNING lookup hashes: 3 of 3 sampled do not match" in warned
    with serving(dropped, app_port) as url:
        texting = TextingPhone(url, fake)
        assert texting.send(STOPPED_TEXTER, "are you there?") == []  # still known to have said STOP
        texting.send(TEXTER, "are you there?")
        phone = Phone(RequestsTransport(), url, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID, LINE_NUMBER, fake=fake)
        blocked = phone.call([Keys("1")], identity=phone.identity(BLOCKED_CALLER), dial_outcomes=["completed"])
    assert "connecting you to our partner crisis line" in blocked.heard_text()
    with dropped.app_context():
        assert db.session.scalar(select(func.count(Texter.id))) == texters_before  # the same people
        assert db.session.scalar(select(Call.route).where(Call.caller_hash == phone_hash(BLOCKED_CALLER))) == "blocked"


def text_message(sealed_body: str) -> Message:
    return Message(direction="in", party="texter", status="received", sealed_body=sealed_body)


class RacingVault(Vault):
    """The real vault, but the line writes while rotation is between reading a batch and
    writing it back: ``race`` runs once, at the first text body re-sealed."""

    def __init__(self, *args: Any, race: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.race: Callable[[], None] | None = race

    def reseal(self, token: str, *, context: str) -> str:
        if context == BODY_CONTEXT and self.race is not None:
            race, self.race = self.race, None
            race()
        return super().reseal(token, context=context)


def test_a_row_the_line_writes_during_rotation_is_not_lost(app: Flask, settings: Settings) -> None:
    old, ring = Vault(OLD), Vault(NEW, [OLD], lookup_hash_key=PINNED_HASH_KEY)
    with app.app_context():
        rows = [text_message(old.seal(f"text {n}", context=BODY_CONTEXT)) for n in range(4)]
        db.session.add_all(rows)
        db.session.commit()
        ids = [row.id for row in rows]
    line = create_engine(settings.database_url)

    def the_line_writes() -> None:
        # A process already on the new keyring rewrites the first text; one still on the old
        # key (mid-deploy) rewrites the second; a new text arrives, sealed with the old key.
        with line.begin() as connection:
            by_new, by_old = (
                ring.seal("new, by the new", context=BODY_CONTEXT),
                old.seal("new, by the old", context=BODY_CONTEXT),
            )
            connection.execute(update(Message).where(Message.id == ids[0]).values(sealed_body=by_new))
            connection.execute(update(Message).where(Message.id == ids[1]).values(sealed_body=by_old))
            arrived = old.seal("arrived", context=BODY_CONTEXT)
            connection.execute(
                insert(Message).values(direction="in", party="texter", status="received", sealed_body=arrived)
            )

    try:
        with app.app_context():
            counts = rotate_sealed_values(
                RacingVault(NEW, [OLD], lookup_hash_key=PINNED_HASH_KEY, race=the_line_writes), 2
            )
    finally:
        line.dispose()

    bodies = counts["messages.sealed_body"]
    assert bodies.changed_meanwhile == 2 and not bodies.unreadable_ids
    print(
        f"\n{bodies.resealed} text bodies re-sealed; {bodies.changed_meanwhile} rewritten by the line meanwhile, kept"
    )
    with app.app_context():
        stored = [token or "" for token in db.session.scalars(select(Message.sealed_body).order_by(Message.id))]
        assert all(token.startswith(f"v2:{key_id(NEW)}:") for token in stored)
        opened = [Vault(NEW, lookup_hash_key=PINNED_HASH_KEY).open(token, context=BODY_CONTEXT) for token in stored]
    assert opened == ["new, by the new", "new, by the old", "text 2", "text 3", "arrived"]


def test_every_sealed_column_is_known_to_rotation(app: Flask) -> None:
    with app.app_context():
        columns = {sealed.name for sealed in sealed_columns()}
    assert columns == {f"{table}.{column}" for table, column in SEAL_CONTEXTS}


def test_keys_generate_prints_a_usable_key(app: Flask) -> None:
    printed = app.test_cli_runner().invoke(args=["keys", "generate"]).output.strip()

    assert len(base64.urlsafe_b64decode(printed)) == 32
    assert printed != new_data_encryption_key()
