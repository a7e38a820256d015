"""Process settings from the environment (12-factor), typed, frozen and validated at start.

Everything that must survive a dead database lives here, above all the backup number that
every fail-safe path dials. Problems are collected and reported together, so an operator
fixes a broken deployment in one pass.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import phonenumbers

from crisisline.privacy import DataKey, key_id

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"
DEFAULT_ROUTING_FILE = PROJECT_ROOT / "config" / "routing.example.yaml"
ENVIRONMENTS = ("development", "production", "test")
LINE_MODES = ("normal", "system_down")
RETENTION_KINDS = ("calls", "texts", "followups")  # RETENTION_DAYS_<KIND> overrides the general window
# What becomes of Twilio's own records of a contact (its calls' and texts' logs: numbers, bodies)
# once the line has purged its copy: deleted through the REST API, or kept for a policy that
# needs Twilio's logs (billing disputes). ``workers.twilio_records``.
TWILIO_RECORDS_CHOICES = ("delete", "keep")
# The 988 Suicide & Crisis Lifeline: a sane backup for a development checkout only.
DEVELOPMENT_BACKUP_NUMBER = "+18002738255"


class SettingsError(ValueError):
    """The environment does not describe a runnable line; ``problems`` lists every issue."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Settings:
    """Everything the process needs from its environment. Frozen: read once at start."""

    environment: str
    secret_key: str
    data_encryption_key: bytes
    database_url: str
    redis_url: str
    backup_number: str
    public_base_url: str | None
    twilio_account_sid: str
    twilio_auth_token: str
    twilio_api_base_url: str | None
    line_phone_number: str | None
    default_region: str
    trusted_proxy_count: int
    routing_file: Path
    line_mode_override: str | None
    log_level: str
    personal_data_retention_days: int
    # How long a voice webhook may take before it answers with its fail-safe (``crisisline.deadline``).
    voice_deadline_seconds: float = 2.0
    log_format: str = "text"  # or "json": one JSON object per line
    # The auth token being rotated out (``TWILIO_PREVIOUS_AUTH_TOKEN``): webhooks it signed are
    # accepted too, until Twilio signs with the new one (the promotion). Never used for REST.
    twilio_previous_auth_token: str | None = None
    # Per kind of data; each defaults to ``personal_data_retention_days``.
    retention_days_calls: int = 30
    retention_days_texts: int = 30
    retention_days_followups: int = 30
    # Key rotation (``crisisline.privacy``): older data keys still open what they sealed, and
    # the lookup-hash key, pinned so rotation never changes a hash. ``data_encryption_key``
    # itself is a ``DataKey`` carrying both, so ``Vault(settings.data_encryption_key)`` has the ring.
    data_encryption_old_keys: tuple[bytes, ...] = ()
    lookup_hash_key: bytes | None = None
    # PostgreSQL connections per process (``crisisline.app.database_pool``); None: the line's own.
    database_pool_size: int | None = None
    database_max_overflow: int | None = None
    # ``TWILIO_RECORDS_AFTER_PURGE``: one of ``TWILIO_RECORDS_CHOICES``; privacy by default.
    twilio_records_after_purge: str = "delete"

    @property
    def twilio_is_local(self) -> bool:
        """True when no real Twilio account is configured (local stand-in or tests)."""
        return self.twilio_api_base_url is not None or self.twilio_account_sid.startswith("AClocal")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate settings; raise :class:`SettingsError` listing every problem."""
        env = dict(os.environ if environ is None else environ)
        problems: list[str] = []
        environment = env.get("CRISISLINE_ENV", "development")
        if environment not in ENVIRONMENTS:
            problems.append(f"CRISISLINE_ENV: {environment!r} is not one of {ENVIRONMENTS}")
        production = environment == "production"
        generated: dict[str, str] = {}

        def dev_secret(name: str) -> str:
            # Made (and kept in instance/) only when a development value is actually missing.
            if production:
                return ""
            if not generated:
                generated.update(_development_secrets(environment))
            return generated.get(name, "")

        def required_in_production(name: str) -> str:
            value = env.get(name, "").strip()
            if value:
                return value
            if production:
                problems.append(f"{name}: required in production")
                return ""
            return dev_secret(name)

        secret_key = required_in_production("SECRET_KEY")
        if production and secret_key and len(secret_key) < 32:
            problems.append("SECRET_KEY: use at least 32 random characters")

        data_key = _decode_key(required_in_production("DATA_ENCRYPTION_KEY"), problems)
        old_keys, lookup_hash_key = _keyring(env, data_key, problems)

        database_url = _normalise_database_url(env.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'crisisline.db'}")
        redis_url = env.get("REDIS_URL", "").strip()
        if not redis_url:
            if production:
                problems.append("REDIS_URL: required in production")
            redis_url = _local_line_redis() or "redis://127.0.0.1:6379/0"
        elif urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
            problems.append("REDIS_URL: must start with redis://, rediss:// or unix://")

        default_region = env.get("DEFAULT_REGION", "US").upper()
        backup_raw = env.get("BACKUP_NUMBER", "").strip()
        if not backup_raw:
            if production:
                problems.append("BACKUP_NUMBER: required; every fail-safe path dials it")
            backup_raw = DEVELOPMENT_BACKUP_NUMBER
        backup_number = _e164_or_problem("BACKUP_NUMBER", backup_raw, default_region, problems)

        line_number_raw = env.get("LINE_PHONE_NUMBER", "").strip()
        line_phone_number = (
            _e164_or_problem("LINE_PHONE_NUMBER", line_number_raw, default_region, problems)
            if line_number_raw
            else None
        )
        if line_phone_number is not None and line_phone_number == backup_number:
            # Every fail-safe dials BACKUP_NUMBER: the line's own would send callers round into
            # the line again, never to a person.
            problems.append("BACKUP_NUMBER: is the line's own number (LINE_PHONE_NUMBER); it must be another line")

        public_base_url = env.get("PUBLIC_BASE_URL", "").strip().rstrip("/") or None
        if public_base_url and urlsplit(public_base_url).scheme not in ("http", "https"):
            problems.append("PUBLIC_BASE_URL: must be an http:// or https:// URL")
        if production and not public_base_url:
            problems.append("PUBLIC_BASE_URL: required in production (Twilio signs this URL)")

        account_sid = env.get("TWILIO_ACCOUNT_SID", "").strip() or dev_secret("TWILIO_ACCOUNT_SID")
        auth_token = env.get("TWILIO_AUTH_TOKEN", "").strip() or dev_secret("TWILIO_AUTH_TOKEN")
        if production and not (account_sid and auth_token):
            problems.append("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN: required in production")
        previous_auth_token = env.get("TWILIO_PREVIOUS_AUTH_TOKEN", "").strip() or None
        if previous_auth_token is not None and previous_auth_token == auth_token:
            previous_auth_token = None  # the rotation is over: one token
        if account_sid and not (account_sid.startswith("AC") and len(account_sid) == 34):
            problems.append("TWILIO_ACCOUNT_SID: must be 'AC' followed by 32 characters")

        api_base_url = env.get("TWILIO_API_BASE_URL", "").strip().rstrip("/") or None
        if api_base_url and urlsplit(api_base_url).scheme not in ("http", "https"):
            problems.append("TWILIO_API_BASE_URL: must be an http:// or https:// URL")

        proxies_raw = env.get("TRUSTED_PROXY_COUNT", "0").strip() or "0"
        trusted_proxy_count = 0
        if proxies_raw.isdigit() and int(proxies_raw) <= 5:
            trusted_proxy_count = int(proxies_raw)
        else:
            problems.append("TRUSTED_PROXY_COUNT: must be a whole number from 0 to 5")

        mode_override = env.get("LINE_MODE_OVERRIDE", "").strip() or None
        if mode_override and mode_override not in LINE_MODES:
            problems.append(f"LINE_MODE_OVERRIDE: {mode_override!r} is not one of {LINE_MODES}")

        routing_file = Path(env.get("ROUTING_FILE", "") or DEFAULT_ROUTING_FILE)
        log_level = env.get("LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append("LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR")

        retention_raw = env.get("PERSONAL_DATA_RETENTION_DAYS", "30").strip()
        retention_days = 30
        if retention_raw.isdigit() and 1 <= int(retention_raw) <= 3650:
            retention_days = int(retention_raw)
        else:
            problems.append("PERSONAL_DATA_RETENTION_DAYS: must be a whole number of days, 1 to 3650")
        per_kind: dict[str, int] = {}
        for kind in RETENTION_KINDS:
            name = f"RETENTION_DAYS_{kind.upper()}"
            raw = env.get(name, "").strip()
            per_kind[kind] = retention_days
            if not raw:
                continue
            if raw.isdigit() and 1 <= int(raw) <= 3650:
                per_kind[kind] = int(raw)
            else:
                problems.append(f"{name}: must be a whole number of days, 1 to 3650")

        log_format = env.get("LOG_FORMAT", "text").strip().lower() or "text"
        if log_format not in ("text", "json"):
            problems.append("LOG_FORMAT: must be text or json")
        deadline_raw = env.get("VOICE_DEADLINE_SECONDS", "2").strip()
        voice_deadline = 2.0
        try:
            voice_deadline = float(deadline_raw)
        except ValueError:
            voice_deadline = -1.0
        if not 0.5 <= voice_deadline <= 5:
            problems.append("VOICE_DEADLINE_SECONDS: must be a number of seconds from 0.5 to 5 (Twilio waits 15)")

        twilio_records = env.get("TWILIO_RECORDS_AFTER_PURGE", "delete").strip().lower() or "delete"
        if twilio_records not in TWILIO_RECORDS_CHOICES:
            problems.append("TWILIO_RECORDS_AFTER_PURGE: must be delete or keep")

        pool_size = _whole_number_or_problem(env, "DATABASE_POOL_SIZE", 1, 500, problems)
        max_overflow = _whole_number_or_problem(env, "DATABASE_MAX_OVERFLOW", 0, 500, problems)

        if production:
            problems += _unsafe_in_production(env, secret_key, data_key, public_base_url)
            problems += _unsafe_keyring_in_production(data_key, old_keys, lookup_hash_key)
        if problems:
            raise SettingsError(problems)
        return cls(
            environment=environment,
            secret_key=secret_key,
            data_encryption_key=DataKey(data_key, old_keys, lookup_hash_key),
            data_encryption_old_keys=old_keys,
            lookup_hash_key=lookup_hash_key,
            database_url=database_url,
            redis_url=redis_url,
            backup_number=backup_number,
            public_base_url=public_base_url,
            twilio_account_sid=account_sid,
            twilio_auth_token=auth_token,
            twilio_previous_auth_token=previous_auth_token,
            twilio_api_base_url=api_base_url,
            line_phone_number=line_phone_number,
            default_region=default_region,
            trusted_proxy_count=trusted_proxy_count,
            routing_file=routing_file,
            line_mode_override=mode_override,
            log_level=log_level,
            personal_data_retention_days=retention_days,
            retention_days_calls=per_kind["calls"],
            retention_days_texts=per_kind["texts"],
            retention_days_followups=per_kind["followups"],
            voice_deadline_seconds=voice_deadline,
            log_format=log_format,
            database_pool_size=pool_size,
            database_max_overflow=max_overflow,
            twilio_records_after_purge=twilio_records,
        )


# Values people paste from examples and tutorials: never a production secret.
PLACEHOLDER_SECRETS = ("change", "secret", "example", "password", "dev-", "test-", "xxxx")


def _unsafe_in_production(
    env: Mapping[str, str], secret_key: str, data_key: bytes, public_url: str | None
) -> list[str]:
    """Settings a production line must refuse: each would quietly weaken privacy or safety."""
    problems = []
    if not env.get("DATABASE_URL", "").strip():
        problems.append(
            "DATABASE_URL: required in production (without it the line would quietly use a local SQLite "
            "file that one machine alone can see)"
        )
    if secret_key and (len(set(secret_key)) < 12 or any(word in secret_key.lower() for word in PLACEHOLDER_SECRETS)):
        problems.append("SECRET_KEY: looks weak or like a placeholder; use `python -c 'import secrets; "
                        "print(secrets.token_urlsafe(48))'`")  # fmt: skip
    if len(data_key) == 32 and len(set(data_key)) < 16:
        problems.append("DATA_ENCRYPTION_KEY: not random (too few distinct bytes); make one with `flask line keygen`")
    if public_url and urlsplit(public_url).scheme != "https":
        problems.append("PUBLIC_BASE_URL: must be https:// in production (Twilio's webhooks carry personal data)")
    return problems


def _whole_number_or_problem(
    env: Mapping[str, str], name: str, lowest: int, highest: int, problems: list[str]
) -> int | None:
    """``name``'s value as a whole number within bounds; None when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if raw.isdigit() and lowest <= int(raw) <= highest:
        return int(raw)
    problems.append(f"{name}: must be a whole number from {lowest} to {highest}")
    return None


def _normalise_database_url(url: str) -> str:
    """Accept Heroku-style ``postgres://`` URLs and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _decode_key(raw: str, problems: list[str], name: str = "DATA_ENCRYPTION_KEY") -> bytes:
    if not raw:
        return b""
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        problems.append(f"{name}: not valid base64")
        return b""
    if len(key) != 32:
        problems.append(f"{name}: must be 32 random bytes, base64-encoded")
    return key


def _keyring(env: Mapping[str, str], data_key: bytes, problems: list[str]) -> tuple[tuple[bytes, ...], bytes | None]:
    """DATA_ENCRYPTION_OLD_KEYS (comma-separated, still decrypt) and LOOKUP_HASH_KEY (pinned).

    Problems here break the line in any environment, so they are refused everywhere: a key
    that cannot be read loses data, and a rotation without a pinned hash key changes every
    lookup hash (the blocklist and STOP would quietly stop matching).
    """
    old_keys: list[bytes] = []
    raw_old = [part.strip() for part in env.get("DATA_ENCRYPTION_OLD_KEYS", "").split(",") if part.strip()]
    for position, raw in enumerate(raw_old, start=1):
        key = _decode_key(raw, problems, f"DATA_ENCRYPTION_OLD_KEYS (key {position})")
        if len(key) == 32:
            old_keys.append(key)
    raw_hash_key = env.get("LOOKUP_HASH_KEY", "").strip()
    lookup_hash_key = _decode_key(raw_hash_key, problems, "LOOKUP_HASH_KEY") if raw_hash_key else None
    if lookup_hash_key is not None and len(lookup_hash_key) != 32:
        lookup_hash_key = None
    if raw_old and not raw_hash_key:
        problems.append(
            "LOOKUP_HASH_KEY: required while DATA_ENCRYPTION_OLD_KEYS is set (rotation must not change lookup "
            "hashes); set it to what `flask keys hash-key` printed before the rotation, with the old key as "
            "DATA_ENCRYPTION_KEY"
        )
    if lookup_hash_key is not None and lookup_hash_key in (data_key, *old_keys):
        problems.append("LOOKUP_HASH_KEY: is a data encryption key; use the value `flask keys hash-key` prints")
    ring = {key for key in (data_key, *old_keys) if len(key) == 32}
    if len({key_id(key) for key in ring}) != len(ring):
        problems.append("DATA_ENCRYPTION_OLD_KEYS: two keys share a key id; generate a new DATA_ENCRYPTION_KEY")
    return tuple(old_keys), lookup_hash_key


def _unsafe_keyring_in_production(
    data_key: bytes, old_keys: tuple[bytes, ...], lookup_hash_key: bytes | None
) -> list[str]:  # fmt: skip
    """A keyring a production line must refuse. Weak *old* keys are allowed: rotating away
    from one is exactly what they are there for."""
    problems = []
    for position, key in enumerate(old_keys, start=1):
        if key == data_key:
            problems.append(
                f"DATA_ENCRYPTION_OLD_KEYS (key {position}): is the current DATA_ENCRYPTION_KEY; an old key must "
                "be the one you rotated away from (make a new key with `flask keys generate`)"
            )
    if len(set(old_keys)) != len(old_keys):
        problems.append("DATA_ENCRYPTION_OLD_KEYS: the same key is listed twice")
    if lookup_hash_key is not None and len(set(lookup_hash_key)) < 16:
        problems.append("LOOKUP_HASH_KEY: not random (too few distinct bytes); use `flask keys hash-key`")
    return problems


def _e164_or_problem(name: str, raw: str, region: str, problems: list[str]) -> str:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        problems.append(f"{name}: not a valid phone number")
        return ""
    if number.extension:
        # E.164 has no extension: dialled, the main number would ring (a switchboard's menu
        # where a caller in crisis expected the backup line's people).
        problems.append(f"{name}: has an extension, which the line cannot dial: give a direct number")
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def new_data_encryption_key() -> str:
    """A fresh base64 DATA_ENCRYPTION_KEY, as ``flask line keygen`` prints."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _development_secrets(environment: str) -> dict[str, str]:
    """Secrets for a local checkout, made once and kept in ``instance/`` (never in git).

    The local Twilio stand-in signs webhooks with the same generated auth token, so
    signature validation is never switched off, not even locally.
    """
    path = INSTANCE_DIR / f"{environment}-secrets.json"
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    values = {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATA_ENCRYPTION_KEY": new_data_encryption_key(),
        "TWILIO_ACCOUNT_SID": "AClocal" + secrets.token_hex(16)[:27],
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
    }
    INSTANCE_DIR.mkdir(exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle, indent=2)
    try:
        # link() fails if another process won the race; then everyone uses the winner's file.
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    winner: dict[str, str] = json.loads(path.read_text())
    return winner


def _local_line_redis() -> str | None:
    """Outside production, with no ``REDIS_URL``: the private Redis of the line ``dev.py run``
    started (``instance/line.json``), so ``flask workers status`` and friends reach it rather
    than whatever else holds port 6379. Read as plain JSON: production never imports the
    development tools."""
    try:
        data = json.loads((INSTANCE_DIR / "line.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not _process_alive(data.get("pid")):
        return None  # a file left by a run that was killed: its Redis is gone with it
    url = data.get("redis_url")
    return url if isinstance(url, str) and url.startswith(("redis://", "rediss://", "unix://")) else None


def _process_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
