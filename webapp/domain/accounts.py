"""Accounts: register, change the profile, and the current-password rule.

What a PATCH or PUT that changes the password does is read in `_apply`, one
transaction: the new hash is saved, the credential version goes up (so every
session opened with the old password is dead, including sign-ins still in
flight), every session of the user is revoked, and this browser continues in a
new session (new sid) with the same absolute end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select, update

from webapp.db import Database
from webapp.domain import events, passwords, sessions, throttle
from webapp.domain.emails import Emails
from webapp.domain.errors import AccountGone, InvalidInput, Taken, Throttled
from webapp.domain.events import EventKind
from webapp.domain.throttle import Reservation, Throttle
from webapp.domain.validation import (
    CURRENT_PASSWORD_NEEDED,
    CURRENT_PASSWORD_WRONG,
    ProfileChanges,
    Registration,
    email_key,
    username_key,
)
from webapp.models import Account, Client, User, utcnow
from webapp.settings import Settings


@dataclass(frozen=True, slots=True)
class ProfileUpdate:
    account: Account
    changed: frozenset[str] = field(default_factory=frozenset)
    # The browser needs a new token: after a rename (same session), or after a new password
    # (a new session, `session_id`). Stamped from this moment.
    reissue_at: datetime | None = None
    session_id: str | None = None


def refuse_taken(
    session: Session,
    new_username_key: str | None,
    new_email_key: str | None,
    *,
    user_id: int | None,
) -> None:
    """Raise Taken naming each field another account already uses."""
    clauses = []
    if new_username_key is not None:
        clauses.append(col(User.username_key) == new_username_key)
    if new_email_key is not None:
        clauses.append(col(User.email_key) == new_email_key)
    if not clauses:
        return
    query = select(User.username_key, User.email_key).where(or_(*clauses))
    if user_id is not None:
        query = query.where(col(User.id) != user_id)
    errors = {}
    for found_username, found_email in session.exec(query).all():
        if new_username_key is not None and found_username == new_username_key:
            errors["username"] = "That username is taken."
        if new_email_key is not None and found_email == new_email_key:
            errors["email"] = "That e-mail address is already registered."
    if errors:
        raise Taken(errors)


class Accounts:
    def __init__(self, db: Database, settings: Settings, limits: Throttle, emails: Emails) -> None:
        self.db = db
        self.settings = settings
        self.throttle = limits
        self.emails = emails

    # -- registration ------------------------------------------------------

    async def count_registration_attempt(self, client: Client) -> None:
        """Every registration attempt from a client counts, valid or not; raises Throttled."""
        await self.throttle.reserve(
            self.throttle.registration_limits(client), action="registration"
        )

    async def register(self, registration: Registration) -> Account:
        """Create the account; raises Taken when the name or e-mail is in use."""
        password_hash = await passwords.hash_password(
            registration.password, rounds=self.settings.bcrypt_rounds
        )
        return await self.db.write(self._insert_user, registration, password_hash)

    def _insert_user(self, registration: Registration, password_hash: str) -> Account:
        user = User(
            username=registration.username,
            username_key=username_key(registration.username),
            email=registration.email,
            email_key=email_key(registration.email),
            password_hash=password_hash,
        )
        try:
            with self.db.writing() as session:
                refuse_taken(session, user.username_key, user.email_key, user_id=None)
                session.add(user)
                session.flush()
                # The confirmation link leaves with the account, or not at all.
                self.emails.on_register(session, user)
        except IntegrityError:
            # Lost a race with another registration between our check and insert.
            with self.db.reading() as session:
                refuse_taken(session, user.username_key, user.email_key, user_id=None)
            raise
        return sessions.account_of(user)

    # -- profile ------------------------------------------------------------

    async def update_profile(
        self, account: Account, changes: ProfileChanges, *, session_id: str, client: Client
    ) -> ProfileUpdate:
        """Apply the changes; raises InvalidInput, Taken or Throttled."""
        user = await self.db.read(self._get_user, account.id)
        if user is None:
            raise AccountGone
        assert user.id is not None
        wanted: dict[str, str] = {}
        if changes.username is not None and changes.username != user.username:
            wanted["username"] = changes.username
        if changes.email is not None and changes.email != user.email:
            wanted["email"] = changes.email
        if changes.password is not None:
            wanted["password"] = changes.password
            problem = passwords.weakness(
                changes.password,
                username=wanted.get("username", user.username),
                email=wanted.get("email", user.email),
            )
            if problem:
                raise InvalidInput({"password": problem})
        if "username" in wanted:
            # Every rename attempt counts (a taken name too), so names cannot be probed fast.
            await self.throttle.reserve(self.throttle.rename_limits(user.id), action="rename")
        sensitive = "email" in wanted or "password" in wanted
        if sensitive or changes.current_password is not None:
            await self.check_current_password(user, changes.current_password, client)
        if not wanted:
            return ProfileUpdate(sessions.account_of(user))
        new_hash = (
            await passwords.hash_password(wanted["password"], rounds=self.settings.bcrypt_rounds)
            if "password" in wanted
            else None
        )
        return await self.db.write(self._apply, user, wanted, new_hash, session_id, client)

    def _get_user(self, user_id: int) -> User | None:
        with self.db.reading() as session:
            return session.get(User, user_id)

    def _apply(
        self,
        user: User,
        wanted: dict[str, str],
        new_hash: str | None,
        session_id: str,
        client: Client,
    ) -> ProfileUpdate:
        assert user.id is not None
        new_username_key = username_key(wanted["username"]) if "username" in wanted else None
        new_email_key = email_key(wanted["email"]) if "email" in wanted else None
        now = utcnow()
        values: dict[str, object] = {"updated_at": now}
        if new_username_key is not None:
            values |= {"username": wanted["username"], "username_key": new_username_key}
        if new_email_key is not None:
            # The new address is unconfirmed until its link is followed.
            values |= {
                "email": wanted["email"],
                "email_key": new_email_key,
                "email_verified_at": None,
            }
        if new_hash is not None:
            values["password_hash"] = new_hash
            values["credential_version"] = user.credential_version + 1
        new_session_id = None
        try:
            with self.db.writing() as session:
                refuse_taken(session, new_username_key, new_email_key, user_id=user.id)
                found = session.exec(
                    update(User)
                    .where(col(User.id) == user.id)
                    # Lost to a concurrent password change: that one stands.
                    .where(col(User.credential_version) == user.credential_version)
                    .values(**values)
                )
                if found.rowcount != 1:
                    raise AccountGone
                if new_email_key is not None:
                    self.emails.on_email_change(session, user, old=user.email, new=wanted["email"])
                if new_hash is not None:
                    # To the address the account had before this change.
                    self.emails.notify(session, user, "password_changed", client=client)
                self._record_changes(session, user, wanted, client, now)
                if new_hash is not None:
                    # A new password ends every session of this user; this browser goes
                    # on in a new one (new sid), under the new credential.
                    new_session_id = sessions.reopen(
                        session,
                        old_id=session_id,
                        credential_version=user.credential_version + 1,
                        now=now,
                    )
                    sessions.revoke_all(session, user_id=user.id, keep=new_session_id, now=now)
        except IntegrityError:
            with self.db.reading() as session:
                refuse_taken(session, new_username_key, new_email_key, user_id=user.id)
            raise
        updated = Account(
            id=user.id,
            username=wanted.get("username", user.username),
            email=wanted.get("email", user.email),
            email_verified="email" not in wanted and user.email_verified_at is not None,
        )
        reissue = "username" in wanted or new_session_id is not None
        return ProfileUpdate(updated, frozenset(wanted), now if reissue else None, new_session_id)

    @staticmethod
    def _record_changes(
        session: Session, user: User, wanted: dict[str, str], client: Client, now: datetime
    ) -> None:
        assert user.id is not None
        if "username" in wanted:
            detail = f"from {user.username} to {wanted['username']}"
            events.record(
                session, user_id=user.id, kind="username_changed", client=client, detail=detail
            )
        if "email" in wanted:
            detail = f"from {user.email} to {wanted['email']}"
            events.record(
                session, user_id=user.id, kind="email_changed", client=client, detail=detail
            )
        if "password" in wanted:
            events.record(session, user_id=user.id, kind="password_changed", client=client, now=now)

    async def check_current_password(
        self, user: User, candidate: str | None, client: Client
    ) -> None:
        """The current password counts like a sign-in: throttled, failures recorded."""
        if candidate is None:
            raise InvalidInput({"current_password": CURRENT_PASSWORD_NEEDED})
        reservation = await check_password_counted(
            self.db, self.throttle, user, candidate, client, failure="wrong current password"
        )
        await self.throttle.release(reservation)


async def check_password_counted(
    db: Database, limits: Throttle, user: User, candidate: str, client: Client, *, failure: str
) -> Reservation:
    """Check the account's password as a sign-in does: the attempt is reserved against the
    account's and the client's sign-in limits before bcrypt runs; a refusal writes a
    `throttled` event, a wrong password a `signin_failed` one with `failure` as detail
    (InvalidInput, field `current_password`). The reservation is the caller's to release,
    in the transaction that acts on the check."""
    assert user.id is not None
    key = throttle.account_key(user.id, user.username)
    try:
        reservation = await limits.reserve(limits.signin_limits(key, client), action="password")
    except Throttled:
        await db.write(_note, db, user.id, "throttled", client, "")
        raise
    if not await passwords.verify_password(candidate, password_hash=user.password_hash):
        await db.write(_note, db, user.id, "signin_failed", client, failure)
        raise InvalidInput({"current_password": CURRENT_PASSWORD_WRONG})
    return reservation


def _note(db: Database, user_id: int, kind: EventKind, client: Client, detail: str) -> None:
    with db.writing() as session:
        events.note(session, user_id=user_id, kind=kind, client=client, detail=detail)
