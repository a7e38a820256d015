"""Accounts as plain functions, shared by the web pages and ``flask users``. Each change is
written to the audit log in the same transaction; the caller commits."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select

from console.accounts import throttle
from console.accounts.passwords import hash_password, needs_rehash, rehash, verify_password
from console.audit.log import record
from console.models import ADMIN, COUNSELOR, ROLES, AuditEntry, User
from crisisline.db import db, hold_lock
from crisisline.models import Conversation
from line_queue import responders
from routing.coverage import NOBODY, OTHER_LANGUAGE, Opened, gaps_opened
from routing.document import RoutingDocument
from routing.store import active_routing
from sms import conversations as convo

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}\Z")
LAST_ADMIN = "This is the last active administrator; add another one first."


class AccountError(ValueError):
    """A request about an account that cannot be done; the message says why, for the user."""


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def find(username: str) -> User | None:
    """The account named ``username``; None for a name no account can have (a NUL in it, say,
    which PostgreSQL would refuse with an error rather than find nothing)."""
    username = username.strip().lower()
    if not USERNAME.match(username):
        return None
    return db.session.scalars(select(User).where(User.username == username)).first()


def responder_ids() -> set[str]:
    """Responder ids of the active routing config (what a counselor account may link to)."""
    active = active_routing()
    return {responder.id for responder in active.document.responders} if active else set()


def create_user(
    username: str, password: str, *, role: str, actor: User | str, display_name: str | None = None,
    responder_id: str | None = None,
) -> User:  # fmt: skip
    """A new account. A counselor must be linked to a responder of the active routing."""
    username = username.strip().lower()
    if not USERNAME.match(username):
        raise AccountError("A username is 2-64 lowercase letters, digits, dots, dashes or underscores.")
    if role not in ROLES:
        raise AccountError(f"The role must be one of: {', '.join(ROLES)}.")
    responder_id = (responder_id or "").strip() or None
    if role == COUNSELOR and responder_id is None:
        raise AccountError("A counselor account must be linked to a responder id from the routing config.")
    if responder_id is not None and responder_id not in responder_ids():
        raise AccountError(f"No responder {responder_id!r} in the active routing config.")
    # Every role, before any row is written (the lock first, always: no deadlock): the name is
    # looked up under it, so the same form sent twice at once finds the first one's account
    # and is refused in words, never by the unique index (an IntegrityError, a 500).
    hold_lock(ACCOUNTS_LOCK)
    if find(username) is not None:
        raise AccountError(f"There is already an account named {username!r}.")
    user = User(
        username=username,
        display_name=(display_name or "").strip() or username,
        role=role,
        responder_id=responder_id,
        password_hash=hash_password(password),
        session_token=new_session_token(),
        active=True,
    )
    db.session.add(user)
    db.session.flush()
    again = link_rings_again(responder_id)
    record(
        "user_created", actor=actor, target=f"user:{user.username}", role=role, responder_id=responder_id,
        **({"rung_again": True} if again else {}),
    )  # fmt: skip
    return user


def count_admins() -> int:
    return db.session.scalar(select(func.count(User.id)).where(User.role == ADMIN, User.active.is_(True))) or 0


# The administrators' lock: changes to who is an active admin, and to which active accounts
# link a responder the line rings, are serialised under it (``hold_lock``: held to commit).
ACCOUNTS_LOCK = "console:admins"


def _refuse_closing_the_last_admin(user: User) -> None:
    """Refuse a change that would leave no active administrator, checked under a lock held
    until the caller commits or rolls back (PostgreSQL: an advisory lock; SQLite: its one write
    lock), with ``user`` read again under it: two administrators closing each other at once
    cannot both pass on a count read before the other's change was committed."""
    hold_lock(ACCOUNTS_LOCK)
    db.session.refresh(user)
    if user.role == ADMIN and user.active and count_admins() <= 1:
        raise AccountError(LAST_ADMIN)


# What closing an account does to the phone of its responder (``Closing.ringing``).
NO_RESPONDER = "no_responder"  # linked to none: no phone changes
STILL_LINKED = "still_linked"  # another active account is linked to the same responder: still rung
KEPT = "kept"  # the administrator chose to keep ringing the phone (a shared unit phone, say)
STOPPED = "stopped"  # the line rings the responder no more


@dataclass(frozen=True)
class Closing:
    """What closing an account does (or did) to the calls and texts of its responder, in the
    words the administrator is shown at that moment: the CLI, the close page, the audit log."""

    username: str
    responder_id: str | None
    ringing: str  # NO_RESPONDER, STILL_LINKED, KEPT or STOPPED
    entries: tuple[str, ...]  # where the live routing lists the responder: ``counselors[1] (Ben Carter)``
    still_linked: tuple[str, ...]  # other active accounts linked to the responder
    gaps: tuple[Opened, ...]  # weekly-rota stretches left with nobody (who speaks the language) to ring
    texts: int = 0  # text conversations the responder holds, handed back to the queue when the ringing stops

    @property
    def in_routing(self) -> bool:
        return bool(self.entries)

    def summary(self) -> list[str]:
        """Plain sentences: what happens to calls for this person, and what is left to do."""
        rid, where = self.responder_id, ", ".join(self.entries)
        if self.ringing == NO_RESPONDER:
            return [f"{self.username} is linked to no responder: the line rings nobody differently."]
        if self.ringing == STILL_LINKED:
            return [
                f"The line keeps ringing {rid} ({where or 'not in the live routing'}): it is still linked to the "
                f"active account(s) {', '.join(self.still_linked)}."
            ]
        if not self.in_routing:
            return [f"{rid} is not in the live routing: the line rings nobody differently."]
        if self.ringing == KEPT:
            return [
                f"The line still rings {rid} ({where}). Remove the entry in the routing when that phone should no "
                "longer be rung."
            ]
        said = [
            f"The line no longer rings {rid} ({where}): calls and texts go to whoever else is on call. "
            "The entry is still in the routing: remove it (or link an active account to ring it again)."
        ]
        if self.gaps:
            said.append(
                f"Without {rid}, the weekly rota has stretches with nobody on call (callers go to the backup line) "
                "or nobody who speaks the caller's language:"
            )
        else:
            said.append("Every stretch of the weekly rota still has someone on call who speaks the caller's language.")
        return said

    def texts_sentence(self) -> str | None:
        """What becomes of the text conversations the responder holds now, if any, before closing."""
        if not self.texts:
            return None
        if self.ringing != STOPPED:
            return f"{self.responder_id} holds {_conversations(self.texts)}: they stay with that phone."
        return (
            f"{self.responder_id} holds {_conversations(self.texts)}: each goes back to the queue, as after a pass, "
            "and is offered to the next counselor free. No texter is dropped."
        )

    def gap_lines(self) -> list[str]:
        """The stretches the rota is left without anyone, one line per language and need:
        ``en / suicide: Mon 16:00-22:00, Tue 16:00-22:00: nobody on call (the backup line)``."""
        grouped: dict[tuple[str, str, str], list[str]] = {}
        for gap in self.gaps:
            grouped.setdefault((gap.language, gap.need, gap.status), []).append(gap.label)
        return [
            f"{language} / {need}: {', '.join(labels)}: {WHAT_THEY_GET[status]}"
            for (language, need, status), labels in grouped.items()
        ]


def _conversations(count: int) -> str:
    return f"{count} text conversation{'' if count == 1 else 's'}"


WHAT_THEY_GET = {NOBODY: "nobody on call (the backup line)", OTHER_LANGUAGE: "nobody on call speaks the language"}


def routing_entries(document: RoutingDocument | None, responder_id: str) -> tuple[str, ...]:
    """Where ``document`` lists ``responder_id``, as its validator names the place and with the
    responder's name (never their phone): ``counselors[1] (Ben Carter)``."""
    return document.entries(responder_id) if document is not None else ()


def closing(user: User, *, keep_ringing: bool = False, stopped: bool | None = None) -> Closing:
    """What closing ``user`` does to its responder's phone (``stopped``: what it did, once
    closed). Reads the live routing and the accounts; writes nothing."""
    rid = user.responder_id
    if rid is None:
        return Closing(user.username, None, NO_RESPONDER, (), (), ())
    others = tuple(
        db.session.scalars(
            select(User.username).where(User.responder_id == rid, User.active.is_(True), User.id != user.id)
        )
    )
    active = active_routing()
    document = active.document if active is not None else None
    entries = routing_entries(document, rid)
    texts = convo.counselor_load(rid)  # a count of the text conversations they hold now
    if others:
        ringing = STILL_LINKED
    elif stopped is None:
        ringing = KEPT if keep_ringing else STOPPED
    else:
        ringing = STOPPED if stopped else KEPT
    gaps: tuple[Opened, ...] = ()
    if ringing == STOPPED and document is not None and entries:
        gaps = tuple(gaps_opened(document, {rid}, already_without=responders.closed_responder_ids() - {rid}))
    return Closing(user.username, rid, ringing, entries, others, gaps, texts)


def handed_on(count: int) -> str:
    """What :func:`hand_on_texts` did, for the administrator ("" when nothing was handed on)."""
    if not count:
        return ""
    return f"{_conversations(count)} went back to the queue for the next counselor."


def hand_on_texts(closing: Closing) -> int:
    """Once a closing that stopped ringing the responder is committed: each text conversation
    the responder still holds goes back to the queue the way their PASS would
    (``sms.conversations.pass_back``: conditional on their still holding it, then offered to
    the next counselor free), so no texter waits on a phone the line no longer texts. Their
    phone is refused any relay meanwhile, either way (``sms.staff``). Commits each. Returns how
    many were handed on; 0 unless the ringing stopped."""
    rid = closing.responder_id
    active = active_routing()
    if closing.ringing != STOPPED or rid is None or active is None:
        return 0
    document = active.document
    responder = document.responder(rid)
    held = db.session.scalars(
        select(Conversation).where(Conversation.counselor_id == rid, Conversation.state == "active")
    ).all()
    handed = 0
    for conversation in held:
        if responder is None:  # no longer in the routing: as a texter's next text would find it
            convo.requeue_orphan(conversation, document)
            handed += 1
        elif convo.pass_back(conversation, responder, document):
            handed += 1
    return handed


def deactivate(user: User, *, actor: User | str, keep_ringing: bool = False) -> Closing:
    """Close an account: its sessions end at once. The last active admin cannot be closed.

    The line stops ringing its responder (``line_queue.responders.stop_ringing``), unless
    another active account is linked to the same responder or ``keep_ringing``. Returns what
    was done, for the administrator (see :class:`Closing`); it is audited with the change.
    Once the caller has committed, :func:`hand_on_texts` hands the text conversations the
    responder holds back to the queue (a live call goes on).

    Why the responder is paused rather than taken out of the routing: the routing is the
    administrator's document, versioned and reviewed, and editing it behind their back would
    surprise them; and a pause is read by every path that picks whom to ring with no new
    statement on any webhook. The routing keeps the entry, and the pages say so until it goes.

    An account closed already is refused (a form sent twice, two administrators at once): read
    again under the lock, so the second neither audits a second closing nor stops the phone
    an administrator may since have chosen to keep ringing.
    """
    _refuse_closing_the_last_admin(user)  # holds the lock and reads ``user`` again under it
    if not user.active:
        raise AccountError(f"{user.username} is closed already: nothing was changed.")
    result = closing(user, keep_ringing=keep_ringing)
    user.active = False
    user.session_token = new_session_token()
    if result.ringing == STOPPED and result.responder_id is not None:
        responders.stop_ringing(result.responder_id)
    record(
        "user_deactivated", actor=actor, target=f"user:{user.username}", responder_id=result.responder_id,
        ringing=result.ringing, routing_entries=list(result.entries), still_linked=list(result.still_linked),
        gaps_opened=result.gap_lines(), text_conversations_held=result.texts,
    )  # fmt: skip
    return result


def stop_ringing_closed(user: User, *, actor: User | str) -> Closing:
    """Stop ringing the responder of an account closed while the line went on ringing it (the
    administrator chose so, or it was closed before closing stopped the ringing). Refused while
    another active account is linked to the responder. Audited; the caller commits.

    Under the administrators' lock, with ``user`` read again: an account linked to the
    responder at the same moment is seen (see :func:`link_rings_again`)."""
    hold_lock(ACCOUNTS_LOCK)
    db.session.refresh(user)
    if user.active:
        raise AccountError("This account is open: close it to stop ringing its responder.")
    if user.responder_id is None:
        raise AccountError(f"{user.username} is linked to no responder.")
    now = closing(user, stopped=True)
    if now.ringing == STILL_LINKED:
        raise AccountError(now.summary()[0])
    responders.stop_ringing(user.responder_id)
    record(
        "responder_not_rung", actor=actor, target=f"user:{user.username}", responder_id=user.responder_id,
        routing_entries=list(now.entries), gaps_opened=now.gap_lines(),
    )  # fmt: skip
    return now


@dataclass(frozen=True)
class NotRung:
    """A responder a routing lists whom the line does not ring: their account was closed."""

    responder_id: str
    entries: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{', '.join(self.entries)}, {self.responder_id}: not rung, because the console account linked to it was "
            "closed. Remove the entry from the routing, or link an active account to ring it again."
        )


def not_rung(document: RoutingDocument | None) -> list[NotRung]:
    """The responders ``document`` lists that the line does not ring because their console
    account was closed (one small read: for the routing pages and the live board, not webhooks)."""
    if document is None:
        return []
    closed = responders.closed_responder_ids()
    return [NotRung(r.id, routing_entries(document, r.id)) for r in document.responders if r.id in closed]


def link_rings_again(responder_id: str | None) -> bool:
    """An active account is linked to ``responder_id``: a responder the line stopped ringing
    when an account was closed is rung again. True if so.

    Under the administrators' lock, which closing an account takes before it reads who else
    is linked (:func:`deactivate`, :func:`stop_ringing_closed`): without it, a closing that
    read the accounts before this link was committed would stop ringing the responder after
    this found nothing to lift, leaving an active account's phone silent. Held to commit, so
    whichever is second sees the other's change (the link, or the pause to lift)."""
    if responder_id is None:
        return False
    hold_lock(ACCOUNTS_LOCK)
    return responders.ring_again(responder_id)


def set_role(user: User, role: str, *, actor: User | str, responder_id: str | None = None) -> None:
    """Change what an account may do; its sessions end, so the new role applies at once."""
    if role not in ROLES:
        raise AccountError(f"The role must be one of: {', '.join(ROLES)}.")
    responder_id = (responder_id or "").strip() or (user.responder_id if role == COUNSELOR else None)
    if role == COUNSELOR and responder_id is None:
        raise AccountError("A counselor account must be linked to a responder id from the routing config.")
    if responder_id is not None and responder_id not in responder_ids():
        raise AccountError(f"No responder {responder_id!r} in the active routing config.")
    # The lock before the account's row is written, whatever the role: a closing of this same
    # account holds the lock and then writes the row, so the other order could deadlock.
    hold_lock(ACCOUNTS_LOCK)
    db.session.refresh(user)  # read again under the lock: closed meanwhile, it links nothing
    if role != ADMIN:
        _refuse_closing_the_last_admin(user)
    before = (user.role, user.responder_id)
    user.role, user.responder_id = role, responder_id
    user.session_token = new_session_token()
    again = user.active and link_rings_again(responder_id)
    record(
        "user_role_changed", actor=actor, target=f"user:{user.username}",
        role=role, responder_id=responder_id, was_role=before[0], was_responder_id=before[1],
        **({"rung_again": True} if again else {}),
    )  # fmt: skip


def set_password(user: User, password: str, *, actor: User | str) -> None:
    user.password_hash = hash_password(password)
    user.password_changed_at = datetime.now(UTC)
    user.session_token = new_session_token()
    throttle.clear_account(user.username)  # the lock page tells them to ask an administrator
    record("password_changed", actor=actor, target=f"user:{user.username}")


def unlock(user: User, *, actor: User | str) -> int:
    """Lift the lock that failed sign-ins put on the account (its password stays). Audited;
    the caller commits. Returns how many failures were cleared."""
    cleared = throttle.clear_account(user.username)
    record("account_unlocked", actor=actor, target=f"user:{user.username}", failures_cleared=cleared)
    return cleared


@dataclass(frozen=True)
class SignIn:
    user: User | None
    refusal: str | None  # what to tell the person when ``user`` is None
    status: int = 200


WRONG = "That username and password do not match an active account."


def sign_in(username: str, password: str, address: str | None) -> SignIn:
    """Check a sign-in under the rate limits; counts the attempt and audits it. Commits."""
    user = find(username)
    claimed = throttle.claim(username, address)  # counted as a failure before the password is checked
    if isinstance(claimed, throttle.Lockout):
        if not _locked_recently(_target(user)):  # one entry per lock, however hard someone hammers
            record("sign_in_locked", actor=user or "unknown account", target=_target(user), scope=claimed.scope)
            db.session.commit()
        return SignIn(None, claimed.message, 429)
    matches = verify_password(user.password_hash if user else None, password)
    if user is None or not matches or not user.active:
        record("sign_in_failed", actor=user or "unknown account", target=_target(user))
        db.session.commit()
        return SignIn(None, WRONG, 200)
    if needs_rehash(user.password_hash):
        user.password_hash = rehash(password)
    user.last_sign_in_at = datetime.now(UTC)
    record("sign_in", actor=user, target=_target(user))
    throttle.succeeded(claimed, username, address)  # last: it holds the sign-in lock until the commit
    db.session.commit()
    return SignIn(user, None)


def sign_out(user: User) -> None:
    """End this account's sessions everywhere (a copied cookie stops working too). Commits."""
    user.session_token = new_session_token()
    record("sign_out", actor=user, target=_target(user))
    db.session.commit()


def _locked_recently(target: str | None) -> bool:
    since = datetime.now(UTC) - throttle.WINDOW
    same_target = AuditEntry.target.is_(None) if target is None else AuditEntry.target == target
    return db.session.scalar(
        select(AuditEntry.id).where(AuditEntry.action == "sign_in_locked", same_target, AuditEntry.occurred_at > since)
        .limit(1)
    ) is not None  # fmt: skip


def _target(user: User | None) -> str | None:
    return f"user:{user.username}" if user else None
