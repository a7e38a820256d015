"""The web console (issue 11): staff sign in with a role, and see the line.

- ``access``: sessions, roles (deny by default), CSRF for the whole app, cookies, idle timeout.
- ``accounts``: accounts, passwords, sign-in and its rate limit, ``flask users``.
- ``audit``: who did what, when.
- ``board``: the supervisors' live board of the queue and the responders, and the emergency
  unmask of a live contact's number (a reason required, sealed; audited; shown once).
- ``metrics_pages``: the line's 988-style numbers, plots, staffing and a CSV (``metrics``).
- ``desk``: a counselor's own page: availability switch, what is on now with the person's
  earlier contacts (by keyed hash), the SMS inbox (replies go through ``sms.staff`` as a
  text would), and wrap-ups after a contact (outcome, check-in consent, a sealed note).
- ``routing_pages``: the routing config: YAML editor (preview with errors at their lines,
  warnings and diff; publish with a note, refused when stale or invalid), history and roll
  back, the simulator and coverage week, and people and shift forms that make drafts.

Pages are server-rendered; the board and the desk refresh themselves with a few lines of
JavaScript served by the app (no CDN). ``init_app`` is called once by the app factory.
"""

from __future__ import annotations

from flask import Blueprint, Flask


def init_app(app: Flask) -> None:
    """Tables, security, the ``/console`` blueprints and ``flask users``."""
    from console import (
        models,  # noqa: F401 - the tables join the metadata Alembic compares
        retention,  # noqa: F401 - notes and unmask reasons join the retention purge
    )
    from console.access import CSRFError, csrf_failed, guard, security_headers
    from console.access import init_app as init_access
    from console.accounts.cli import users_cli
    from console.accounts.views import bp as accounts_bp
    from console.audit.views import bp as audit_bp
    from console.board.views import bp as board_bp
    from console.desk import wrapups  # noqa: F401 - the clock keeps check-ins wrap-ups promised
    from console.desk.views import bp as desk_bp
    from console.inputs import IdConverter
    from console.line_state import inject_line_state
    from console.metrics_pages.views import bp as metrics_bp
    from console.routing_pages.views import bp as routing_bp

    init_access(app)
    app.url_map.converters["id"] = IdConverter  # ``<id:...>``: a number no row can have is a 404
    console = Blueprint(
        "console", __name__, url_prefix="/console", template_folder="templates", static_folder="static",
        static_url_path="/static",
    )  # fmt: skip
    console.before_request(guard)
    console.after_request(security_headers)
    console.context_processor(inject_line_state)  # the line-down banner on every page
    for child in (accounts_bp, audit_bp, board_bp, desk_bp, metrics_bp, routing_bp):
        console.register_blueprint(child)
    app.register_blueprint(console)
    app.register_error_handler(CSRFError, csrf_failed)
    app.cli.add_command(users_cli)
