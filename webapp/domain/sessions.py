"""Sessions: open one (sign-in), load it (the live check of every signed-in request),
and end one or all others. A session row's id is the JWT's `sid`.

The public methods are coroutines: database work runs in worker threads, bcrypt
on the low-priority threads of `passwords`, never inside a write transaction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, SQLModel, col, or_, select, update

from webapp.db import Database, read_in_thread, write_in_thread
from webapp.domain import passwords, throttle
from webapp.domain.errors import SigninFailed
from webapp.domain.throttle import SigninThrottle
from webapp.domain.validation import Signin, clean_email, email_key, username_key
from webapp.models import Account, Client, User, UserSession, utcnow
from webapp.settings import SESSION_LIFETIME, Settings

# The revocation check of every signed-in request.
_LIVE_SESSION_SQL = """
SELECT users.id, users.username, users.email
FROM user_sessions JOIN users ON users.id = user_sessions.user_id
WHERE user_sessions.id = :sid AND users.id = :uid
  AND user_sessions.revoked_at IS NULL AND user_sessions.expires_at > :now
"""


@dataclass(frozen=True, slots=True)
class NewSession:
    account: Account
    session_id: str
    # The moment the session starts: its token is stamped with it.
    started_at: datetime


def account_of(user: User) -> Account:
    assert user.id is not None
    return Account(id=user.id, username=user.username, email=user.email)


def revoke_others(session: Session, *, user_id: int, keep: str, now: datetime) -> None:
    """End every live session of the user but `keep`, inside the caller's transaction."""
    session.exec(
        update(UserSession)
        .where(col(UserSession.user_id) == user_id)
        .where(col(UserSession.id) != keep)
        .where(col(UserSession.revoked_at).is_(None))
        .values(revoked_at=now)
    )


def renew(session: Session, *, session_id: str, now: datetime) -> None:
    """A fresh lifetime for one session (a rename re-issues its cookie)."""
    session.exec(
        update(UserSession)
        .where(col(UserSession.id) == session_id)
        .values(expires_at=now + timedelta(seconds=SESSION_LIFETIME))
    )


class Sessions:
    def __init__(self, db: Database, settings: Settings, signin_throttle: SigninThrottle) -> None:
        self.db = db
        self.settings = settings
        self.throttle = signin_throttle
        expires_at = SQLModel.metadata.tables["user_sessions"].c["expires_at"]
        self._live_session_query = db.fast_read(_LIVE_SESSION_SQL, {"now": expires_at.type})

    async def sign_in(self, signin: Signin, client: Client) -> NewSession:
        """Check the password and open a session; raises SigninFailed or Throttled."""
        user, account = await read_in_thread(self._candidate, signin, client)
        rounds = self.settings.bcrypt_rounds
        stored_hash = user.password_hash if user else await passwords.dummy_hash(rounds)
        if user is None or not await passwords.verify_password(
            signin.password, password_hash=stored_hash
        ):
            await self.throttle.count_failure(account, client)
            raise SigninFailed
        new_hash = (
            await passwords.hash_password(signin.password, rounds=rounds)
            if passwords.needs_rehash(user.password_hash, rounds=rounds)
            else None
        )
        return await write_in_thread(self._open, user, client, new_hash)

    def _candidate(self, signin: Signin, client: Client) -> tuple[User | None, str]:
        """The account the identifier names (if any) and its throttling key; raises Throttled."""
        with self.db.reading() as session:
            user = session.exec(
                select(User).where(
                    or_(
                        col(User.username_key) == username_key(signin.identifier),
                        col(User.email_key) == _identifier_email_key(signin.identifier),
                    )
                )
            ).first()
            account = throttle.account_key(user.id if user else None, signin.identifier)
            self.throttle.refuse_if_throttled(session, account, client)
        return user, account

    def _open(self, user: User, client: Client, new_hash: str | None) -> NewSession:
        assert user.id is not None
        now = utcnow()
        row = UserSession(
            id=secrets.token_urlsafe(32),
            user_id=user.id,
            created_at=now,
            expires_at=now + timedelta(seconds=SESSION_LIFETIME),
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
        return NewSession(account_of(user), row.id, now)

    async def load(self, *, session_id: str, user_id: int) -> Account | None:
        """The account behind a live (unrevoked, unexpired) session, else None."""
        return await read_in_thread(self._live, session_id, user_id)

    def _live(self, session_id: str, user_id: int) -> Account | None:
        # Runs on every signed-in request: one indexed lookup by primary key.
        row = self._live_session_query.first({"sid": session_id, "uid": user_id, "now": utcnow()})
        if row is None:
            return None
        found_id, username, email = row
        return Account(id=found_id, username=username, email=email)

    async def sign_out(self, session_id: str) -> None:
        """Revoke one session; its token is refused from now on, on every worker."""
        await write_in_thread(self._revoke, session_id)

    def _revoke(self, session_id: str) -> None:
        with self.db.writing() as session:
            session.exec(
                update(UserSession)
                .where(col(UserSession.id) == session_id)
                .where(col(UserSession.revoked_at).is_(None))
                .values(revoked_at=utcnow())
            )


def _identifier_email_key(identifier: str) -> str:
    """Sign-in by e-mail matches however the address was typed."""
    try:
        return email_key(clean_email(identifier))
    except ValueError:
        return email_key(identifier)
