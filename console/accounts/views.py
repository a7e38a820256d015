"""Signing in and out, the console's front door, and the administrators' accounts page."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from console.access import allow, current_user, login_user, logout_user, public, safe_next, signed_in
from console.accounts import users
from console.accounts.forms import AddUserForm, CloseAccountForm, SignInForm
from console.accounts.passwords import WeakPassword
from console.models import ADMIN, COUNSELOR, ROLES, SUPERVISOR, User
from crisisline.db import db
from line_queue.responders import closed_responder_ids

bp = Blueprint("accounts", __name__)
log = logging.getLogger(__name__)

HOME = {ADMIN: "console.board.page", SUPERVISOR: "console.board.page", COUNSELOR: "console.desk.page"}


@bp.route("/sign-in", methods=["GET", "POST"])
@public
def sign_in() -> Response | tuple[str, int] | str:
    if current_user.is_authenticated:
        return redirect(url_for("console.accounts.home"))
    form = SignInForm(next=request.args.get("next", ""))
    if not form.validate_on_submit():
        return render_template("console/sign_in.html", form=form)
    result = users.sign_in(form.username.data or "", form.password.data or "", request.remote_addr)
    if result.user is None:
        return render_template("console/sign_in.html", form=form, refusal=result.refusal), result.status
    session.clear()  # nothing from before sign-in carries over
    session.permanent = True
    login_user(result.user)
    session["seen"] = session["touched"] = datetime.now(UTC).timestamp()
    return redirect(safe_next(form.next.data) or url_for(HOME[result.user.role]))


@bp.post("/sign-out")
@allow(*ROLES)
def sign_out() -> Response:
    users.sign_out(signed_in())
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("console.accounts.sign_in"))


@bp.get("/")
@allow(*ROLES)
def home() -> Response:
    return redirect(url_for(HOME[current_user.role]))


@bp.get("/users")
@allow(ADMIN)
def user_list() -> str:
    return _user_page(AddUserForm())


def _user_page(form: AddUserForm) -> str:
    accounts = list(db.session.scalars(select(User).order_by(User.active.desc(), User.username)))
    return render_template(
        "console/users.html",
        form=form,
        accounts=accounts,
        not_rung=closed_responder_ids() & users.responder_ids(),
        in_routing=users.responder_ids(),
        responders=sorted(users.responder_ids()),
    )


@bp.post("/users")
@allow(ADMIN)
def user_add() -> Response | tuple[str, int]:
    form = AddUserForm()
    if form.validate_on_submit():
        was_not_rung = closed_responder_ids()
        try:
            user = users.create_user(
                form.username.data or "", form.password.data or "", role=form.role.data or "",
                display_name=form.display_name.data, responder_id=form.responder_id.data,
                actor=signed_in(),
            )  # fmt: skip
        except (users.AccountError, WeakPassword) as problem:
            db.session.rollback()
            form.username.errors = [*form.username.errors, str(problem)]
        else:
            db.session.commit()
            flash(f"Account {user.username} created.", "info")
            if user.responder_id in was_not_rung:
                flash(f"The line rings {user.responder_id} again: an active account is linked to it.", "warning")
            return redirect(url_for("console.accounts.user_list"))
    return _user_page(form), 400


@bp.get("/users/<id:user_id>/close")
@allow(ADMIN)
def user_close(user_id: int) -> str:
    """Before closing an account, what it does to the calls of its responder, and the choice;
    after, what the line does now and what is left to do in the routing."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    stopped = None if user.active else user.responder_id in closed_responder_ids()
    return render_template(
        "console/user_close.html",
        account=user,
        stop=users.closing(user, stopped=stopped),
        keep=users.closing(user, keep_ringing=True) if user.active else None,
        form=CloseAccountForm(),
    )


@bp.post("/users/<id:user_id>/stop-ringing")
@allow(ADMIN)
def user_stop_ringing(user_id: int) -> Response:
    """A closed account whose responder the line still rings: stop ringing it."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    if CloseAccountForm().validate_on_submit():
        try:
            closing = users.stop_ringing_closed(user, actor=signed_in())
        except users.AccountError as problem:
            db.session.rollback()
            flash(str(problem), "error")
        else:
            db.session.commit()
            handed = users.hand_on_texts(closing)  # once the change is committed
            flash(f"The line no longer rings {user.responder_id}. {users.handed_on(handed)}".strip(), "info")
    return redirect(url_for("console.accounts.user_close", user_id=user.id))


@bp.post("/users/<id:user_id>/deactivate")
@allow(ADMIN)
def user_deactivate(user_id: int) -> Response:
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    form = CloseAccountForm()
    if form.validate_on_submit():
        try:
            closing = users.deactivate(user, actor=signed_in(), keep_ringing=form.keep_ringing())
        except users.AccountError as problem:
            db.session.rollback()
            flash(str(problem), "error")
            if not user.active:  # closed already (sent twice): its page says what was done
                return redirect(url_for("console.accounts.user_close", user_id=user.id))
        else:
            db.session.commit()
            handed = users.hand_on_texts(closing)  # once the closing is committed
            flash(f"Account {user.username} closed; its sessions have ended. {users.handed_on(handed)}".strip(), "info")
            # The page it goes to says what happens to the calls of its responder now.
            log.info("account closed; its responder's phone: %s", closing.ringing)
            return redirect(url_for("console.accounts.user_close", user_id=user.id))
    return redirect(url_for("console.accounts.user_list"))
