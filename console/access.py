"""Who may see what: sessions, roles, CSRF and cookies for the console. Deny by default.

Every console view declares who may use it, with ``@allow(...)`` or ``@public``. The console
blueprint's guard refuses (403) any view that declares nothing, so a route added without a
thought about roles is closed, not open; a test walks the URL map for the same reason.

CSRF is checked on every state-changing request of the whole app, except views guarded by
``twilio_signed`` (Twilio cannot send a token; its signature is the proof there).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, flash, redirect, render_template, request, session, url_for

# Neither ships type information; these are the console's only untyped imports.
from flask_login import LoginManager, current_user, login_user, logout_user  # type: ignore[import-untyped]
from flask_wtf.csrf import CSRFError, CSRFProtect  # type: ignore[import-untyped]
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from console.audit.log import record
from console.inputs import has_control_characters
from console.models import ROLES, User
from crisisline.db import db
from crisisline.settings import Settings
from crisisline.twilio_auth import twilio_signed

V = TypeVar("V", bound=Callable[..., Any])

ROLES_ATTRIBUTE = "console_roles"
PUBLIC: frozenset[str] = frozenset({"public"})
IDLE_MINUTES = 30  # app.config["CONSOLE_IDLE_MINUTES"] (a create_app keyword) overrides it; never read from the env
# Sent by the pages' own refresh: a page left open is not activity, so it does not keep a
# session alive past the idle timeout. A page that reloads itself (the desk, when its inbox
# changes) asks for ``?poll=1`` instead, as a reload cannot send a header.
POLL_HEADER = "X-Console-Poll"
POLL_QUERY = "poll"

login_manager = LoginManager()
csrf = CSRFProtect()


def allow(*roles: str) -> Callable[[V], V]:
    """Declare the roles that may use a console view (checked by the guard)."""
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"roles must be some of {ROLES}, got {roles}")

    def mark(view: V) -> V:
        setattr(view, ROLES_ATTRIBUTE, frozenset(roles))
        return view

    return mark


def public(view: V) -> V:
    """Declare a console view open to anyone (the sign-in page)."""
    setattr(view, ROLES_ATTRIBUTE, PUBLIC)
    return view


def declared_roles(view: Callable[..., Any] | None) -> frozenset[str] | None:
    """The roles a view declared, ``PUBLIC``, or None when it declared nothing."""
    roles = getattr(view, ROLES_ATTRIBUTE, None)
    return roles if isinstance(roles, frozenset) else None


_SIGNED_CODE = twilio_signed(lambda: None).__code__


def is_twilio_signed(view: Callable[..., Any] | None) -> bool:
    """True when ``view`` is (or wraps) a ``twilio_signed`` guard."""
    while view is not None:
        if getattr(view, "__code__", None) is _SIGNED_CODE:
            return True
        view = getattr(view, "__wrapped__", None)
    return False


def init_app(app: Flask) -> None:
    settings: Settings = app.extensions["crisisline.settings"]
    https = (settings.public_base_url or "").startswith("https://") or settings.environment == "production"
    idle = int(app.config.get("CONSOLE_IDLE_MINUTES", IDLE_MINUTES))
    app.config.setdefault("CONSOLE_IDLE_MINUTES", idle)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=idle),
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=https,
        # Checked by ``_csrf_unless_twilio_signed`` below, which knows the Twilio webhooks.
        WTF_CSRF_CHECK_DEFAULT=False,
    )
    csrf.init_app(app)
    app.before_request(_csrf_unless_twilio_signed)
    login_manager.init_app(app)
    login_manager.session_protection = "strong"
    login_manager.user_loader(_load_user)


def _csrf_unless_twilio_signed() -> None:
    """Every POST/PUT/PATCH/DELETE needs a CSRF token, whoever registered the route, unless
    its view checks Twilio's signature instead."""
    if request.method not in current_app.config["WTF_CSRF_METHODS"] or not request.endpoint:
        return
    if is_twilio_signed(current_app.view_functions.get(request.endpoint)):
        return
    csrf.protect()


__all__ = ["CSRFError", "current_user", "login_user", "logout_user", "signed_in"]


def signed_in() -> User:
    """The signed-in account (only inside views the guard let through with a role)."""
    user: User = current_user._get_current_object()
    return user


def _load_user(token: str) -> User | None:
    return db.session.scalars(select(User).where(User.session_token == token, User.active.is_(True))).first()


def guard() -> BaseResponse | None:
    """Runs before every console view: declared roles, signed in, not idle, right role."""
    view = current_app.view_functions.get(request.endpoint or "")
    if request.endpoint == "console.static":
        return None  # the console's own CSS and JS: nothing personal
    roles = declared_roles(view)
    if roles is None:
        return _refuse(403)
    if roles == PUBLIC:
        return None
    if not current_user.is_authenticated:
        return _to_sign_in()
    if _idle_too_long():
        record("signed_out_idle", actor=signed_in())
        db.session.commit()
        logout_user()
        session.clear()
        flash("You were signed out after a time without activity. Please sign in again.", "info")
        typed = typed_in_the_form()
        if typed and not _wants_json():  # a form sent after the timeout: what it held, to copy
            return Response(render_template("console/refused.html", status=401, typed=typed), status=401)
        return _to_sign_in()
    if not _is_poll():
        session["seen"] = session["touched"] = datetime.now(UTC).timestamp()
    if current_user.role not in roles:
        return _refuse(403)
    return None


def count_as_activity(since: datetime) -> None:
    """For a view whose poll is someone at work though the screen is untouched (a counselor on
    a call with a caller since ``since``, the desk open beside them): the idle clock restarts
    as for a click, in a session someone used within the idle limit before ``since``. A desk
    left open elsewhere (an office screen) is not kept signed in by the calls that follow."""
    touched = session.get("touched")
    limit = timedelta(minutes=current_app.config["CONSOLE_IDLE_MINUTES"])
    if isinstance(touched, int | float) and touched >= (since - limit).timestamp():
        session["seen"] = datetime.now(UTC).timestamp()


def _is_poll() -> bool:
    """The page's own refresh or reload, not someone at the screen."""
    return request.headers.get(POLL_HEADER) == "1" or request.args.get(POLL_QUERY) == "1"


def _idle_too_long() -> bool:
    seen = session.get("seen")
    if not isinstance(seen, int | float):
        return True  # a session that never saw activity is not one we made
    limit = timedelta(minutes=current_app.config["CONSOLE_IDLE_MINUTES"]).total_seconds()
    return datetime.now(UTC).timestamp() - seen > limit


def _wants_json() -> bool:
    return request.path.endswith(".json") or request.headers.get(POLL_HEADER) == "1"


def _to_sign_in() -> BaseResponse:
    if _wants_json():
        return _refuse(401)
    # With the path the proxy serves the line under (X-Forwarded-Prefix: ``script_root``), so
    # signing in again lands on this very page.
    target = request.script_root + request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("console.accounts.sign_in", next=target))


def _refuse(status: int) -> Response:
    if _wants_json():
        body = current_app.json.dumps({"error": "sign in" if status == 401 else "not allowed"})
        return Response(body, status=status, mimetype="application/json")
    return Response(render_template("console/refused.html", status=status), status=status)


def csrf_failed(error: CSRFError) -> tuple[str, int]:
    """A form without a valid token: say so plainly (most often, it was open too long), and
    give back what it held to copy."""
    return render_template("console/refused.html", status=400, reason=error.description, typed=typed_in_the_form()), 400


# Free text someone may have spent a while on (a routing draft, a wrap-up note, an unmask
# reason): shown back to copy when its form is refused for an expired token or an idle
# sign-out, so nothing typed is lost with the refusal. Only to the browser that sent it. A
# reply to a texter is not among them: its tab keeps it and puts it back after signing in
# (``drafts.js``), which the sign-in page's redirect relies on.
TYPED_FIELDS = {"text": "The routing text", "note": "Your note", "reason": "Your reason"}


def typed_in_the_form() -> list[tuple[str, str]]:
    """(label, what was typed) of the free-text fields of the form being refused; nothing for
    a form another site's page sent (it could put words of its own before an administrator,
    on our page, as theirs to paste back)."""
    if request.method != "POST" or not _sent_from_our_pages():
        return []
    return [(label, request.form[name]) for name, label in TYPED_FIELDS.items() if request.form.get(name, "").strip()]


def security_headers(response: Response) -> Response:
    """Console pages: no framing, no inline or third-party scripts, nothing cached."""
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


def safe_next(target: str | None) -> str | None:
    """A redirect target after sign-in, only if it is a path inside the console, under the
    path the proxy serves the line under (``request.script_root``, "" at the root): never
    another site, nor ``//host`` (a browser reads it as one)."""
    if (
        target
        and target.startswith(request.script_root + "/console/")
        and not target.startswith("//")
        and "\\" not in target
        and not has_control_characters(target)  # CR/LF would split the Location header
    ):
        return target
    return None


def _sent_from_our_pages() -> bool:
    """A browser says where a POST came from: ``Sec-Fetch-Site``, else ``Origin``."""
    if request.headers.get("Sec-Fetch-Site") == "same-origin":
        return True
    origin = request.headers.get("Origin", "")
    return bool(origin) and urlsplit(origin).netloc == request.host
