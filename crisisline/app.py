"""The application factory: settings, database, queues, privacy vault and blueprints."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import wait
from typing import Any, TypeVar, cast

import redis
from flask import Flask, Response, current_app
from flask_rq import RQ
from sqlalchemy import select, text
from werkzeug.middleware.proxy_fix import ProxyFix

from crisisline import background, events
from crisisline.db import db, engine_options, init_migrations, keep_prepared_statements, ping_idle_connections
from crisisline.deadline import STATUS_WORKERS, VOICE_WORKERS, VoiceDeadline
from crisisline.failsafe import KnownBackupNumber
from crisisline.models import RoutingVersion
from crisisline.phone import LOG_REGION, RedactPhoneNumbers
from crisisline.privacy import Vault
from crisisline.settings import PROJECT_ROOT, Settings

rq = RQ()
T = TypeVar("T")

# Queues named by purpose, highest priority first; the Procfile's worker listens to all.
QUEUES = ("calls", "messages", "followups", "upkeep")
REDIS_CONNECT_TIMEOUT_SECONDS = 1.0


def database_pool(settings: Settings) -> tuple[int, int]:
    """PostgreSQL connections a process may hold: (kept open, more while busy).

    A thread of each pool that serves webhooks and the work they start gets a connection of its
    own, so no webhook waits for one behind another on a slow database (SQLAlchemy's default of
    5 + 10 made callers wait up to ``pool_timeout`` and hear the backup line in a surge:
    ``bench.slow_database``); the overflow is for the side-by-side lanes and console pages.
    ``DATABASE_POOL_SIZE`` / ``DATABASE_MAX_OVERFLOW`` override it to fit ``max_connections``."""
    size = settings.database_pool_size
    overflow = settings.database_max_overflow
    if size is None:
        size = VOICE_WORKERS + STATUS_WORKERS + background.WORKERS
    if overflow is None:
        overflow = DATABASE_OVERFLOW
    return size, overflow


# Connections beyond the pool's size while busy: side-by-side steps hold one only around their
# reads and writes, console pages briefly. Kept small, as ``max_connections`` is sized from the
# most every process could open (docs/deployment.md); the surges measured used 55 a machine.
DATABASE_OVERFLOW = 8


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the app. ``settings`` defaults to the environment; ``overrides`` go to app.config."""
    settings = settings or Settings.from_env()
    _configure_logging(settings.log_level, settings.log_format, settings.default_region)

    app = Flask(__name__, instance_path=str(PROJECT_ROOT / "instance"))
    app.config.from_mapping(
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings.database_url, database_pool(settings)),
        RQ_CONNECTION=settings.redis_url,
        RQ_CONNECTION_CLASS="crisisline.app.FastConnectRedis",
        RQ_QUEUES=list(QUEUES),
        RQ_ASYNC=True,
        TESTING=settings.environment == "test",
        MAX_CONTENT_LENGTH=256 * 1024,  # Twilio webhooks are small; refuse anything huge
    )
    app.config.update(overrides)
    app.extensions["crisisline.settings"] = settings
    app.extensions["crisisline.vault"] = Vault(settings.data_encryption_key)
    app.extensions["crisisline.known_backup"] = KnownBackupNumber()  # see crisisline.failsafe

    # Voice webhooks answer within their deadline whatever hangs (inside ProxyFix, so the
    # deadline's own signature check sees the public URL).
    deadline = VoiceDeadline(app, settings.voice_deadline_seconds)
    app.extensions["crisisline.deadline"] = deadline
    app.wsgi_app = deadline  # type: ignore[method-assign]
    if settings.trusted_proxy_count:
        n = settings.trusted_proxy_count
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n
        )

    background.init_app(app)
    db.init_app(app)
    with app.app_context():
        ping_idle_connections(db.engine)
        keep_prepared_statements(db.engine)
    init_migrations(app, PROJECT_ROOT / "migrations")
    rq.init_app(app)

    import console
    import workers.upkeep  # noqa: F401 - registers the periodic jobs
    from callbacks.views import bp as callbacks_bp
    from crisisline import cli as line_cli
    from followups.views import bp as followups_bp
    from ivr.views import bp as voice_bp
    from line_queue.responders import closed_responder_ids
    from routing.cli import NOT_RUNG, routing_cli
    from sms.views import bp as sms_bp
    from transfer.views import bp as transfer_bp
    from workers import cli as workers_cli

    app.register_blueprint(voice_bp)
    app.register_blueprint(transfer_bp)
    app.register_blueprint(sms_bp)
    app.register_blueprint(followups_bp)
    app.register_blueprint(callbacks_bp)
    app.cli.add_command(routing_cli)
    # ``flask routing who/coverage/check/load`` leave out whom the line does not ring
    # (``line_queue`` is above ``routing``).
    app.extensions[NOT_RUNG] = closed_responder_ids
    line_cli.register(app)
    workers_cli.register(app)
    console.init_app(app)  # staff console: sign-in, roles, CSRF for the app (Twilio views keep signatures)

    @app.after_request
    def publish_events(response: Response) -> Response:
        """What this request changed (a responder became free…) is acted on now, once its
        own work is committed; a subscriber's failure never touches the response."""
        events.publish_pending()
        return response

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness only; it does not touch the database, so it cannot take the line down."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> tuple[dict[str, str], int]:
        """Readiness, for monitoring: the database and Redis each answer within a second, a
        routing is published (with none, every caller and texter gets the backup line), and a
        clock holds its lease (without one, no safety net runs: searches nobody took are never
        given up, lost jobs never re-queued, callbacks never repaired). Names what is down,
        never why (error text could carry connection details). Not for a load balancer's
        health check: a web process with a dead database is what answers callers with the
        backup line (``/healthz`` is)."""
        checks = {"database": _database_answers, "redis": _redis_and_clock, "routing": _routing_published}
        futures = {name: deadline.pool.submit(_in_app_context, app, check) for name, check in checks.items()}
        wait(futures.values(), timeout=READINESS_TIMEOUT_SECONDS)  # one second for all of them
        answers: dict[str, Any] = {}
        for name, future in futures.items():
            try:
                answers[name] = future.result(timeout=0)
            except Exception:
                answers[name] = None  # raised or too slow: down
        redis_ok, clock_leads = answers["redis"] or (False, False)
        status = {"database": "ok" if answers["database"] else "down", "redis": "ok" if redis_ok else "down"}
        routing = answers["routing"]
        if status["database"] != "ok":
            status["routing"] = "unknown"  # it is read from the database
        else:
            status["routing"] = "ok" if routing else ("none" if routing is False else "down")
        status["clock"] = ("ok" if clock_leads else "down") if redis_ok else "unknown"  # its lease is in Redis
        ready = all(value == "ok" for value in status.values())
        body = {"status": "ready" if ready else "not ready", **status}
        override = app.extensions["crisisline.settings"].line_mode_override
        if override:
            # Still ready (the backup line answers), but monitoring should see the switch is on.
            body["line_mode_override"] = override
        return body, 200 if ready else 503

    return app


READINESS_TIMEOUT_SECONDS = 1.0


def _in_app_context(app: Flask, check: Callable[[], T]) -> T:
    with app.app_context():
        return check()


def _database_answers() -> bool:
    try:
        return db.session.execute(text("SELECT 1")).scalar() == 1
    finally:
        db.session.remove()


def _routing_published() -> bool:
    """Whether any routing version was ever published (the line's menus and who to ring)."""
    try:
        return db.session.scalar(select(RoutingVersion.id).limit(1)) is not None
    finally:
        db.session.remove()


# Held by the leading clock process (``workers.clock``), renewed as it runs; gone within
# ``workers.clock.LEASE_SECONDS`` of its last renewal when no clock runs.
CLOCK_LEADER_KEY = "crisisline:clock:leader"


def _redis_and_clock() -> tuple[bool, bool]:
    """Whether Redis answers, and whether a clock holds its lease there."""
    settings: Settings = current_app.extensions["crisisline.settings"]
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=READINESS_TIMEOUT_SECONDS, socket_timeout=READINESS_TIMEOUT_SECONDS
    )
    try:
        return bool(client.ping()), bool(client.exists(CLOCK_LEADER_KEY))
    finally:
        client.close()


class FastConnectRedis(redis.Redis):
    """A Redis client that gives up connecting after a second: a dead Redis must not hold a
    caller up. (No read timeout: workers block on queues by design.)"""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> FastConnectRedis:
        kwargs.setdefault("socket_connect_timeout", REDIS_CONNECT_TIMEOUT_SECONDS)
        return cast(FastConnectRedis, super().from_url(url, **kwargs))


def _configure_logging(level: str, log_format: str = "text", region: str = LOG_REGION) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if log_format == "json":
            for handler in root.handlers:
                handler.setFormatter(JsonLines())
    root.setLevel(level)
    # twilio's HTTP client logs every request (URL and parameters) at INFO, and urllib3 every
    # request line at DEBUG (``GET .../Calls.json?To=%2B1...``): not for our logs, at any level.
    for chatty in ("twilio.http_client", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # National numbers are masked as the line's callers write them (``DEFAULT_REGION``).
    # gunicorn's own loggers do not propagate here: ``gunicorn.conf.py`` masks theirs.
    for handler in root.handlers:
        redacting = [f for f in handler.filters if isinstance(f, RedactPhoneNumbers)]
        if redacting:
            for existing in redacting:
                existing.region = region
        else:
            handler.addFilter(RedactPhoneNumbers(region))


class JsonLines(logging.Formatter):
    """One JSON object per line (``LOG_FORMAT=json``), for log shippers. The redaction filter
    still runs on the message first; exceptions are reduced to their class name."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False)
