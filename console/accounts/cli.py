"""``flask users …``: the first administrator, and accounts from a terminal or a script.

A password is asked for at the prompt (hidden, twice), or read from the environment variable
``CONSOLE_PASSWORD`` when set, so a deployment script can make accounts without a terminal.
Passwords are never taken as arguments: they would land in shell history and ``ps``.
"""

from __future__ import annotations

import os

import click
from flask.cli import AppGroup
from sqlalchemy import select

from console.accounts import users
from console.accounts.passwords import WeakPassword, check_strength
from console.audit.log import CLI
from console.models import ADMIN, ROLES, User
from crisisline.db import db

PASSWORD_ENV = "CONSOLE_PASSWORD"  # noqa: S105 - the name of the variable, not a password
users_cli = AppGroup("users", help="Console accounts: the first admin, more people, closing accounts.")


def _password() -> str:
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    while True:
        password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        try:
            check_strength(password)
        except WeakPassword as problem:
            click.echo(str(problem), err=True)
            continue
        return password


def _create(username: str, role: str, display_name: str | None, responder_id: str | None) -> None:
    if users.find(username) is not None:
        raise click.ClickException(f"there is already an account named {username.strip().lower()!r}")
    try:
        user = users.create_user(
            username, _password(), role=role, actor=CLI, display_name=display_name, responder_id=responder_id
        )
    except (users.AccountError, WeakPassword) as problem:
        db.session.rollback()
        raise click.ClickException(str(problem)) from None
    db.session.commit()
    click.echo(f"created {role} account {user.username!r}")


@users_cli.command("create-admin")
@click.argument("username")
@click.option("--name", "display_name", help="Name shown in the console.")
def create_admin(username: str, display_name: str | None) -> None:
    """Create an administrator (the first account of a new line). Password: prompt, or $CONSOLE_PASSWORD."""
    _create(username, ADMIN, display_name, None)


@users_cli.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--responder", "responder_id", help="Counselors: their responder id in the routing config.")
@click.option("--name", "display_name", help="Name shown in the console.")
def add(username: str, role: str, responder_id: str | None, display_name: str | None) -> None:
    """Create an account of any role. Password: prompt, or $CONSOLE_PASSWORD."""
    _create(username, role, display_name, responder_id)


@users_cli.command("list")
def list_users() -> None:
    """Every account: name, role, linked responder, open or closed."""
    for user in db.session.scalars(select(User).order_by(User.username)):
        state = "active" if user.active else "closed"
        click.echo(f"{user.username}\t{user.role}\t{user.responder_id or '-'}\t{state}")


@users_cli.command("set-password")
@click.argument("username")
def set_password(username: str) -> None:
    """Give an account a new password (its sessions end; a lock from failed sign-ins is lifted).
    Password: prompt, or $CONSOLE_PASSWORD."""
    user = users.find(username)
    if user is None:
        raise click.ClickException(f"no account named {username!r}")
    try:
        users.set_password(user, _password(), actor=CLI)
    except WeakPassword as problem:
        db.session.rollback()
        raise click.ClickException(str(problem)) from None
    db.session.commit()
    click.echo(f"password changed for {user.username!r}")


@users_cli.command("unlock")
@click.argument("username")
def unlock(username: str) -> None:
    """Lift the lock that failed sign-ins put on an account (its password stays). Setting a
    new password lifts it too."""
    user = users.find(username)
    if user is None:
        raise click.ClickException(f"no account named {username!r}")
    cleared = users.unlock(user, actor=CLI)
    db.session.commit()
    click.echo(f"{user.username!r} can sign in again ({cleared} failed sign-in(s) cleared)")


@users_cli.command("set-role")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--responder", "responder_id", help="Counselors: their responder id in the routing config.")
def set_role(username: str, role: str, responder_id: str | None) -> None:
    """Change an account's role (its sessions end, so it applies at once)."""
    user = users.find(username)
    if user is None:
        raise click.ClickException(f"no account named {username!r}")
    try:
        users.set_role(user, role, actor=CLI, responder_id=responder_id)
    except users.AccountError as problem:
        db.session.rollback()
        raise click.ClickException(str(problem)) from None
    db.session.commit()
    click.echo(f"{user.username!r} is now {role}" + (f" ({user.responder_id})" if user.responder_id else ""))


@users_cli.command("deactivate")
@click.argument("username")
@click.option(
    "--keep-ringing", is_flag=True,
    help="Go on ringing the account's responder (a phone that stays in service, a shared unit phone).",
)  # fmt: skip
def deactivate(username: str, keep_ringing: bool) -> None:
    """Close an account; its sessions end at once, and the line stops ringing its responder
    (unless another active account is linked to it, or --keep-ringing). Says what happens to
    the responder's calls and where the routing still lists them."""
    user = users.find(username)
    if user is None:
        raise click.ClickException(f"no account named {username!r}")
    try:
        closing = users.deactivate(user, actor=CLI, keep_ringing=keep_ringing)
    except users.AccountError as problem:
        raise click.ClickException(str(problem)) from None
    db.session.commit()
    handed = users.hand_on_texts(closing)  # once the closing is committed
    click.echo(f"closed {user.username!r}")
    if handed:
        click.echo(users.handed_on(handed))
    for sentence in closing.summary():
        click.echo(sentence)
    for line in closing.gap_lines():
        click.echo(f"  {line}")
    if closing.in_routing and closing.ringing in (users.STOPPED, users.KEPT):
        click.echo("Remove it in the console's routing editor, or with flask routing export and flask routing load.")
