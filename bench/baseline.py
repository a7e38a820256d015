"""``c_pg``: the least a Twilio webhook on this stack can cost, to compare the line against.

Twilio's ``RequestValidator`` on the signed request, one ORM insert and one select on the same
PostgreSQL, a few lines of TwiML. Served by the Procfile's web line with this app in place of
the line's (``bench.load``), interpreter flags and gunicorn settings the same::

    python -OO -m gunicorn 'bench.baseline:create_app()' --config gunicorn.conf.py
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from flask import Flask, Response, abort, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from twilio.request_validator import RequestValidator


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class BaselineHit(db.Model):  # type: ignore[name-defined]
    __tablename__ = "bench_baseline_hits"
    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def create_tables(database_url: str) -> None:
    """Run once by the bench before gunicorn starts (two workers must not both create it)."""
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    engine.dispose()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True}
    db.init_app(app)
    validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
    public = os.environ["PUBLIC_BASE_URL"].rstrip("/")

    @app.post("/hook")
    def hook() -> Response:
        url = public + request.full_path.rstrip("?")
        if not validator.validate(url, request.form, request.headers.get("X-Twilio-Signature", "")):
            abort(403)
        call_sid = request.form.get("CallSid", "")
        db.session.add(BaselineHit(call_sid=call_sid, created_at=datetime.now(UTC)))
        db.session.commit()
        seen = db.session.scalar(select(func.count()).where(BaselineHit.call_sid == call_sid))
        body = f'<?xml version="1.0" encoding="UTF-8"?><Response><Say>Seen {seen}.</Say></Response>'
        return Response(body, mimetype="text/xml")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
