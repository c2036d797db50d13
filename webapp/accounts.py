"""The domain: register, sign in, load and end sessions, update profiles.

The public methods are coroutines that keep the event loop free: database work
runs in Starlette's worker threads (`run_in_threadpool`), and bcrypt on the
low-priority threads of `webapp.hashing`, awaited, so a slow hash holds neither
the loop nor a worker thread. bcrypt never runs inside a write transaction, so
it never holds SQLite's write lock either.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, or_, select, update
from starlette.concurrency import run_in_threadpool

from webapp import throttle
from webapp.db import Database, read_in_thread
from webapp.forms import (
    InvalidForm,
    ProfileChanges,
    Registration,
    Signin,
    Taken,
    clean_email,
    email_key,
)
from webapp.hashing import dummy_hash, hash_password, verify_password
from webapp.models import User, UserSession, utcnow
from webapp.security import needs_rehash
from webapp.settings import SESSION_LIFETIME, Settings

SIGNIN_FAILED = "Incorrect username, e-mail or password."
CURRENT_PASSWORD_WRONG = "Your current password is not correct."
CURRENT_PASSWORD_NEEDED = "Enter your current password to change your e-mail or password."


@dataclass(frozen=True, slots=True)
class Account:
    """What pages may show of a user."""

    id: int
    username: str
    email: str


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request came from, for throttling and the session record."""

    address: str
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class NewSession:
    account: Account
    session_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ProfileUpdate:
    account: Account
    changed: frozenset[str] = field(default_factory=frozenset)
    # After a rename the session gets a fresh hour from this moment, for a new cookie.
    session_renewed_at: datetime | None = None


class SigninFailed(Exception):
    """Unknown user or wrong password: deliberately one error for both."""


class Throttled(Exception):
    """Too many failed sign-ins for this account or client."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class AccountGone(Exception):
    """The signed-in user no longer exists."""


# The revocation check of every signed-in request.
_LIVE_SESSION_SQL = """
SELECT users.id, users.username, users.email
FROM user_sessions JOIN users ON users.id = user_sessions.user_id
WHERE user_sessions.id = :sid AND users.id = :uid
  AND user_sessions.revoked_at IS NULL AND user_sessions.expires_at > :now
"""


def _account(user: User) -> Account:
    assert user.id is not None
    return Account(id=user.id, username=user.username, email=user.email)


class Accounts:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        expires_at = SQLModel.metadata.tables["user_sessions"].c["expires_at"]
        self._live_session_query = db.fast_read(_LIVE_SESSION_SQL, {"now": expires_at.type})

    # -- registration ------------------------------------------------------

    async def register(self, registration: Registration) -> Account:
        """Create the account; raises Taken (409) when the name or e-mail is in use."""
        password_hash = await hash_password(
            registration.password, rounds=self.settings.bcrypt_rounds
        )
        return await run_in_threadpool(self._insert_user, registration, password_hash)

    def _insert_user(self, registration: Registration, password_hash: str) -> Account:
        user = User(
            username=registration.username,
            username_key=registration.username.lower(),
            email=registration.email,
            email_key=email_key(registration.email),
            password_hash=password_hash,
        )
        try:
            with self.db.writing() as session:
                self._refuse_taken(session, user.username_key, user.email_key, user_id=None)
                session.add(user)
        except IntegrityError:
            # Lost a race with another registration between our check and insert.
            with self.db.reading() as session:
                self._refuse_taken(session, user.username_key, user.email_key, user_id=None)
            raise
        return _account(user)

    @staticmethod
    def _refuse_taken(
        session: Session,
        username_key: str | None,
        new_email_key: str | None,
        *,
        user_id: int | None,
    ) -> None:
        clauses = []
        if username_key is not None:
            clauses.append(col(User.username_key) == username_key)
        if new_email_key is not None:
            clauses.append(col(User.email_key) == new_email_key)
        if not clauses:
            return
        query = select(User.username_key, User.email_key).where(or_(*clauses))
        if user_id is not None:
            query = query.where(col(User.id) != user_id)
        errors = {}
        for found_username, found_email in session.exec(query).all():
            if username_key is not None and found_username == username_key:
                errors["username"] = "That username is taken."
            if new_email_key is not None and found_email == new_email_key:
                errors["email"] = "That e-mail address is already registered."
        if errors:
            raise Taken(errors)

    # -- signing in and out ----------------------------------------------

    async def sign_in(self, signin: Signin, client: Client) -> NewSession:
        """Check the password and open a session; raises SigninFailed or Throttled."""
        user, account_key = await read_in_thread(self._signin_candidate, signin, client)
        rounds = self.settings.bcrypt_rounds
        stored_hash = user.password_hash if user else await dummy_hash(rounds)
        if user is None or not await verify_password(signin.password, password_hash=stored_hash):
            await run_in_threadpool(self._count_failure, account_key, client)
            raise SigninFailed
        new_hash = (
            await hash_password(signin.password, rounds=rounds)
            if needs_rehash(user.password_hash, rounds=rounds)
            else None
        )
        return await run_in_threadpool(self._open_session, user, client, new_hash)

    def _signin_candidate(self, signin: Signin, client: Client) -> tuple[User | None, str]:
        """The account the identifier names (if any) and its throttling key; raises Throttled."""
        with self.db.reading() as session:
            user = session.exec(
                select(User).where(
                    or_(
                        col(User.username_key) == signin.identifier.lower(),
                        col(User.email_key) == _identifier_email_key(signin.identifier),
                    )
                )
            ).first()
            account_key = throttle.account_key(user.id if user else None, signin.identifier)
            self._refuse_throttled(session, account_key, client, utcnow())
        return user, account_key

    def _open_session(self, user: User, client: Client, new_hash: str | None) -> NewSession:
        assert user.id is not None
        now = utcnow()
        expires_at = now + timedelta(seconds=SESSION_LIFETIME)
        row = UserSession(
            id=secrets.token_urlsafe(32),
            user_id=user.id,
            created_at=now,
            expires_at=expires_at,
            user_agent=client.user_agent[:512],
            client_addr=client.address[:64],
        )
        # Earlier failures are not forgiven by a success: ten inside the window throttle
        # the account whoever signed in between (else the owner's sign-in would hand an
        # attacker ten fresh guesses).
        with self.db.writing() as session:
            session.add(row)
            if new_hash is not None:
                session.exec(
                    update(User).where(col(User.id) == user.id).values(password_hash=new_hash)
                )
        return NewSession(_account(user), row.id, expires_at)

    def _refuse_throttled(
        self, session: Session, account_key: str, client: Client, now: datetime
    ) -> None:
        limits = [
            throttle.Limit(account_key, self.settings.throttle_account_limit),
            throttle.Limit(
                throttle.client_key(client.address), self.settings.throttle_client_limit
            ),
        ]
        wait = throttle.seconds_until_allowed(
            session, limits, window=self.settings.throttle_window, now=now
        )
        if wait is not None:
            raise Throttled(wait)

    def _count_failure(self, account_key: str, client: Client) -> None:
        with self.db.writing() as session:
            throttle.record_failure(
                session,
                [account_key, throttle.client_key(client.address)],
                window=self.settings.throttle_window,
                now=utcnow(),
            )

    def _check_throttle(self, account_key: str, client: Client) -> None:
        with self.db.reading() as session:
            self._refuse_throttled(session, account_key, client, utcnow())

    async def load_session(self, *, session_id: str, user_id: int) -> Account | None:
        """The account behind a live (unrevoked, unexpired) session, else None."""
        return await read_in_thread(self._live_session, session_id, user_id)

    def _live_session(self, session_id: str, user_id: int) -> Account | None:
        # Runs on every signed-in request: one indexed lookup by primary key.
        row = self._live_session_query.first({"sid": session_id, "uid": user_id, "now": utcnow()})
        if row is None:
            return None
        found_id, username, email = row
        assert found_id is not None
        return Account(id=found_id, username=username, email=email)

    async def sign_out(self, session_id: str) -> None:
        """Revoke one session; its token is refused from now on, on every worker."""
        await run_in_threadpool(self._revoke, session_id)

    def _revoke(self, session_id: str) -> None:
        with self.db.writing() as session:
            session.exec(
                update(UserSession)
                .where(col(UserSession.id) == session_id)
                .where(col(UserSession.revoked_at).is_(None))
                .values(revoked_at=utcnow())
            )

    # -- profile ------------------------------------------------------------

    async def update_profile(
        self, account: Account, changes: ProfileChanges, *, session_id: str, client: Client
    ) -> ProfileUpdate:
        """Apply the changes; raises InvalidForm (422), Taken (409) or Throttled (429)."""
        user = await read_in_thread(self._get_user, account.id)
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
        sensitive = "email" in wanted or "password" in wanted
        if sensitive or changes.current_password is not None:
            await self._check_current_password(user, changes.current_password, client)
        if not wanted:
            return ProfileUpdate(_account(user))
        new_hash = (
            await hash_password(wanted["password"], rounds=self.settings.bcrypt_rounds)
            if "password" in wanted
            else None
        )
        return await run_in_threadpool(self._apply_changes, user, wanted, new_hash, session_id)

    def _get_user(self, user_id: int) -> User | None:
        with self.db.reading() as session:
            return session.get(User, user_id)

    def _apply_changes(
        self, user: User, wanted: dict[str, str], new_hash: str | None, session_id: str
    ) -> ProfileUpdate:
        assert user.id is not None
        new_username_key = wanted["username"].lower() if "username" in wanted else None
        new_email_key = email_key(wanted["email"]) if "email" in wanted else None
        now = utcnow()
        values: dict[str, object] = {"updated_at": now}
        if new_username_key is not None:
            values |= {"username": wanted["username"], "username_key": new_username_key}
        if new_email_key is not None:
            values |= {"email": wanted["email"], "email_key": new_email_key}
        if new_hash is not None:
            values["password_hash"] = new_hash
        try:
            with self.db.writing() as session:
                self._refuse_taken(session, new_username_key, new_email_key, user_id=user.id)
                session.exec(update(User).where(col(User.id) == user.id).values(**values))
                if "password" in wanted:
                    # A new password ends every other sign-in of this user.
                    session.exec(
                        update(UserSession)
                        .where(col(UserSession.user_id) == user.id)
                        .where(col(UserSession.id) != session_id)
                        .where(col(UserSession.revoked_at).is_(None))
                        .values(revoked_at=now)
                    )
                if "username" in wanted:
                    # The session lives on under the new name, with a fresh hour for
                    # the cookie re-issued with it (in the same transaction).
                    session.exec(
                        update(UserSession)
                        .where(col(UserSession.id) == session_id)
                        .values(expires_at=now + timedelta(seconds=SESSION_LIFETIME))
                    )
        except IntegrityError:
            with self.db.reading() as session:
                self._refuse_taken(session, new_username_key, new_email_key, user_id=user.id)
            raise
        updated = Account(
            id=user.id,
            username=wanted.get("username", user.username),
            email=wanted.get("email", user.email),
        )
        renewed_at = now if "username" in wanted else None
        return ProfileUpdate(updated, frozenset(wanted), renewed_at)

    async def _check_current_password(
        self, user: User, candidate: str | None, client: Client
    ) -> None:
        """The current password counts like a sign-in: throttled, failures recorded."""
        if candidate is None:
            raise InvalidForm({"current_password": CURRENT_PASSWORD_NEEDED})
        account_key = throttle.account_key(user.id, user.username)
        await read_in_thread(self._check_throttle, account_key, client)
        if not await verify_password(candidate, password_hash=user.password_hash):
            await run_in_threadpool(self._count_failure, account_key, client)
            raise InvalidForm({"current_password": CURRENT_PASSWORD_WRONG})


def _identifier_email_key(identifier: str) -> str:
    """Sign-in by e-mail matches however the address was typed."""
    try:
        return email_key(clean_email(identifier))
    except ValueError:
        return email_key(identifier)
