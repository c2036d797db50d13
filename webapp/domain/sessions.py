"""Sessions: open one (sign-in), load it (the live check of every signed-in request),
resume it from a remember token, and end it. A session row's id is the JWT's `sid`.

A session is bound to the credential it was opened with: the row keeps the user's
`credential_version` of that moment, and the live check compares it with the user's
current one in the same query as revocation and expiry. A password change bumps the
version, so nothing opened with the old password survives it, not even a sign-in that
was checking the old password while it changed.

The public methods are coroutines: database work runs in worker threads, bcrypt on
the low-priority threads of `passwords`, never inside a write transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert
from sqlmodel import Session, SQLModel, col, or_, select, update

from webapp.db import Database
from webapp.domain import events, passwords, throttle, twofactor
from webapp.domain.devices import Device, describe, device_hash
from webapp.domain.emails import Emails
from webapp.domain.errors import (
    AccountGone,
    EmailNotVerified,
    InvalidInput,
    SessionNotFound,
    SigninFailed,
    Throttled,
)
from webapp.domain.events import EventKind
from webapp.domain.throttle import Reservation, Throttle
from webapp.domain.validation import MAX_PASSWORD_LENGTH, Signin, username_key
from webapp.models import Account, Client, User, UserSession, utcnow
from webapp.settings import Settings

if TYPE_CHECKING:
    # Only for a type: accounts.py imports this module.
    from webapp.domain.accounts import Accounts

# The live check of every signed-in request: revoked, expired and old-credential
# sessions are all "not signed in".
_LIVE_SESSION_SQL = """
SELECT users.id, users.username, users.email, user_sessions.expires_at, user_sessions.public_id,
  users.email_verified_at IS NOT NULL
FROM user_sessions JOIN users ON users.id = user_sessions.user_id
WHERE user_sessions.id = :sid AND users.id = :uid
  AND user_sessions.revoked_at IS NULL AND user_sessions.expires_at > :now
  AND user_sessions.credential_version = users.credential_version
"""


# The statements of every sign-in, built once (building one costs more than running it).
# The account an identifier names, and whether it has two-factor sign-in on.
_CANDIDATE = select(User, twofactor.enabled_column()).where(
    or_(
        col(User.username_key) == bindparam("username_key"),
        col(User.email_key) == bindparam("email_key"),
    )
)
# FOR KEY SHARE (PostgreSQL): the user cannot be deleted until the transaction ends.
_CREDENTIAL = (
    select(User.credential_version, twofactor.enabled_column())
    .where(col(User.id) == bindparam("user_id"))
    .with_for_update(read=True, key_share=True, of=User)
)
_ADD_SESSION = insert(SQLModel.metadata.tables["user_sessions"])


@dataclass(frozen=True, slots=True)
class LiveSession:
    account: Account
    session_id: str
    # The public handle, kept when the session goes on under a new sid.
    handle: str
    # The absolute end: nothing extends it.
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class NewSession(LiveSession):
    # The moment the session (or this token of it) starts.
    started_at: datetime
    # The opaque "remember me" secret for the browser; only its hash is stored.
    remember_token: str | None = None


@dataclass(frozen=True, slots=True)
class SessionView:
    """What the sessions page and the operator see of one live session."""

    # The public handle (never the sid).
    handle: str
    device: Device
    client_addr: str
    signed_in_at: datetime
    # Updated when the session's token is renewed, so at most ten minutes behind.
    last_active_at: datetime
    expires_at: datetime
    # This browser's own session.
    current: bool


@dataclass(frozen=True, slots=True)
class EndedSession:
    """A session ended from the sessions page: `current` means the browser signed itself out."""

    device: Device
    current: bool


# What a public handle can look like (secrets.token_urlsafe(12)); anything else names nothing,
# and is never sent to the database (PostgreSQL refuses a NUL in text).
_HANDLE = re.compile(r"[A-Za-z0-9_-]{1,32}")
PASSWORD_NEEDED = "Enter your password."
PASSWORD_WRONG = "That password is not correct."


def account_of(user: User) -> Account:
    assert user.id is not None
    return Account(
        id=user.id,
        username=user.username,
        email=user.email,
        email_verified=user.email_verified_at is not None,
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def revoke_all(session: Session, *, user_id: int, now: datetime, keep: str | None = None) -> None:
    """End every live session of the user (but `keep`), inside the caller's transaction."""
    query = (
        update(UserSession)
        .where(col(UserSession.user_id) == user_id)
        .where(col(UserSession.revoked_at).is_(None))
    )
    if keep is not None:
        query = query.where(col(UserSession.id) != keep)
    session.exec(query.values(revoked_at=now))


def reopen(session: Session, *, old_id: str, credential_version: int, now: datetime) -> str:
    """A new row (new sid) for the browser of `old_id`, under a new credential: the same
    absolute end, the same remember token. The caller revokes the old row."""
    old = session.get(UserSession, old_id)
    assert old is not None
    row = UserSession(
        id=new_session_id(),
        public_id=old.public_id,
        user_id=old.user_id,
        created_at=old.created_at,
        expires_at=old.expires_at,
        last_seen_at=now,
        authenticated_at=now,
        credential_version=credential_version,
        remember_hash=old.remember_hash,
        remember_prev_hash=old.remember_prev_hash,
        user_agent=old.user_agent,
        client_addr=old.client_addr,
        device_hash=old.device_hash,
    )
    # The remember hashes are unique: the old row gives them up first.
    old.remember_hash = old.remember_prev_hash = None
    session.add(old)
    session.flush()
    session.add(row)
    return row.id


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; every time here is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Sessions:
    def __init__(self, db: Database, settings: Settings, limits: Throttle, emails: Emails) -> None:
        self.db = db
        self.settings = settings
        self.throttle = limits
        self.emails = emails
        expires_at = SQLModel.metadata.tables["user_sessions"].c["expires_at"]
        self._live_session_query = db.fast_read(_LIVE_SESSION_SQL, {"now": expires_at.type})

    # -- signing in --------------------------------------------------------------

    async def sign_in(
        self, signin: Signin, client: Client, *, remember: bool = False, replaces: str | None = None
    ) -> NewSession:
        """Check the password and open a session; raises SigninFailed or Throttled,
        or twofactor.SecondFactorRequired when the password is right and a code is needed.

        The attempt is reserved before the password is checked, and exactly one bcrypt
        check runs whether or not the identifier names an account. `replaces` is the
        session this browser was signed in with, ended in the same transaction.
        """
        # A read first: while the database is unreachable, a sign-in answers within the read
        # deadline, as every page does.
        user, second_factor = await self.db.read(self._candidate, signin)
        reservation = await self.db.write(self._reserve, user, signin, client)
        rounds = self.settings.bcrypt_rounds
        stored_hash = user.password_hash if user else await passwords.dummy_hash(rounds)
        matches = await passwords.verify_password(signin.password, password_hash=stored_hash)
        if user is None or not matches:
            if user is not None and user.id is not None:
                # Only for a real account: a name nobody has is recorded nowhere visible.
                await self.db.write(self._note, user.id, "signin_failed", client)
            raise SigninFailed
        if self.settings.email_verification == "required" and user.email_verified_at is None:
            # The right password, but the address is not confirmed: a fresh link instead.
            await self.db.write(self._refuse_unconfirmed, user, reservation)
            raise EmailNotVerified
        if second_factor:
            # The password was right, so its attempt is released; no session yet: the web
            # layer asks for a code, each of which is counted on its own (twofactor.py).
            await self.throttle.release(reservation)
            raise twofactor.SecondFactorRequired(account_of(user), remember=remember)
        new_hash = (
            await passwords.hash_password(signin.password, rounds=rounds)
            if passwords.needs_rehash(user.password_hash, rounds=rounds)
            else None
        )
        # _open looks at two-factor sign-in again, in the transaction that opens the
        # session: turned on while the password was being checked, it still asks for a code.
        return await self.db.write(
            self._open, user, client, new_hash, reservation, remember, replaces, True
        )

    async def open_checked(
        self,
        user: User,
        client: Client,
        reservation: Reservation,
        *,
        remember: bool,
        replaces: str | None = None,
        detail: str = "",
    ) -> NewSession:
        """Open the session for a user whose sign-in another module checked: the second
        step of a two-factor sign-in (twofactor.py), or a passkey (passkeys.py), which is
        both factors in one. `user` carries the credential version read when the check
        began, so a password changed since then still refuses it."""
        return await self.db.write(
            self._open, user, client, None, reservation, remember, replaces, False, detail
        )

    def _note(self, user_id: int, kind: EventKind, client: Client) -> None:
        with self.db.writing() as session:
            events.note(session, user_id=user_id, kind=kind, client=client)

    def _refuse_unconfirmed(self, user: User, reservation: Reservation) -> None:
        with self.db.writing() as session:
            throttle.release_in(session, reservation)
            self.emails.send_verification_for_signin(session, user)

    def _candidate(self, signin: Signin) -> tuple[User | None, bool]:
        """The account the identifier names, by username or e-mail, however it was typed,
        and whether it has two-factor sign-in on."""
        canonical = throttle.canonical_identifier(signin.identifier)
        if not canonical.isprintable() or len(canonical) > 254:
            # No account has such a name; the database is not asked (PostgreSQL refuses NUL).
            return None, False
        with self.db.reading() as session:
            found = session.execute(
                _CANDIDATE, {"username_key": username_key(canonical), "email_key": canonical}
            ).first()
        if found is None:
            return None, False
        user, second_factor = found
        return user, bool(second_factor)

    def _reserve(self, user: User | None, signin: Signin, client: Client) -> Reservation:
        """Reserve the attempt against the account (or the name) and the client; Throttled
        when a limit is used up, with the account's "throttled" event written instead."""
        account = throttle.account_key(user.id if user else None, signin.identifier)
        limits = self.throttle.signin_limits(account, client)
        with self.db.writing() as session:
            try:
                return throttle.reserve_in(session, limits, action="signin", now=utcnow())
            except Throttled as exc:
                if user is None or user.id is None:
                    raise
                throttled = exc
                # Nothing was reserved; the event is all this transaction writes.
                events.note(session, user_id=user.id, kind="throttled", client=client)
        raise throttled

    def _open(
        self,
        user: User,
        client: Client,
        new_hash: str | None,
        reservation: Reservation,
        remember: bool,
        replaces: str | None,
        check_second_factor: bool,
        detail: str = "",
    ) -> NewSession:
        assert user.id is not None
        now = utcnow()
        lifetime = (
            timedelta(days=self.settings.remember_me_days)
            if remember
            else timedelta(seconds=self.settings.session_max_age)
        )
        remember_token = secrets.token_urlsafe(32) if remember else None
        sid, handle, expires_at = new_session_id(), secrets.token_urlsafe(12), now + lifetime
        device = device_hash(client.device)
        row = {
            "id": sid,
            "public_id": handle,
            "user_id": user.id,
            "created_at": now,
            "expires_at": expires_at,
            "revoked_at": None,
            "last_seen_at": now,
            "authenticated_at": now,
            # The credential the password was checked against, read before the check.
            "credential_version": user.credential_version,
            "remember_hash": token_hash(remember_token) if remember_token else None,
            "remember_prev_hash": None,
            "user_agent": client.user_agent[:512],
            "client_addr": client.address[:64],
            "device_hash": device,
        }
        with self.db.writing() as session:
            # FOR KEY SHARE (PostgreSQL): the user cannot be deleted until this commits, and
            # a deletion already under way is waited for, after which no user is found.
            current = session.execute(_CREDENTIAL, {"user_id": user.id}).first()
            if current is None or current[0] != user.credential_version:
                # The password changed while this one was being checked: too late.
                raise SigninFailed
            # Earlier failures are not forgiven by a success, only this attempt's own
            # reservation (else the owner's sign-in would hand an attacker fresh guesses).
            throttle.release_in(session, reservation)
            second_factor = check_second_factor and bool(current[1])
            if not second_factor:
                if replaces is not None:
                    session.exec(
                        update(UserSession)
                        .where(col(UserSession.id) == replaces)
                        .where(col(UserSession.revoked_at).is_(None))
                        .values(revoked_at=now)
                    )
                self.emails.on_signin(session, user, client, device)
                events.record(
                    session, user_id=user.id, kind="signin", client=client, detail=detail, now=now
                )
                session.execute(_ADD_SESSION, row)
                if new_hash is not None:
                    session.exec(
                        update(User).where(col(User.id) == user.id).values(password_hash=new_hash)
                    )
        if second_factor:
            # Turned on while the password was being checked: the attempt is released (above)
            # and a code is asked for, as if it had been on from the start.
            raise twofactor.SecondFactorRequired(account_of(user), remember=remember)
        return NewSession(account_of(user), sid, handle, expires_at, now, remember_token)

    # -- the live check ----------------------------------------------------------------

    async def load(self, *, session_id: str, user_id: int) -> LiveSession | None:
        """The live (unrevoked, unexpired, current-credential) session, else None."""
        return await self.db.read(self._live, session_id, user_id)

    def _live(self, session_id: str, user_id: int) -> LiveSession | None:
        # Runs on every signed-in request: one indexed lookup by primary key.
        row = self._live_session_query.first({"sid": session_id, "uid": user_id, "now": utcnow()})
        if row is None:
            return None
        found_id, username, email, expires_at, handle, verified = row
        # The driver's own value: a datetime from psycopg, ISO text from sqlite3.
        if isinstance(expires_at, str):
            expires_at = datetime.fromisoformat(expires_at)
        account = Account(found_id, username, email, bool(verified))
        return LiveSession(account, session_id, handle, _aware(expires_at))

    async def recently_authenticated(self, session_id: str, *, within: int) -> bool:
        """Whether the password (or a passkey) was entered in this session in the last
        `within` seconds. Read only by the few pages that need it, never on every request."""
        return await self.db.read(self._recently_authenticated, session_id, within)

    def _recently_authenticated(self, session_id: str, within: int) -> bool:
        with self.db.reading() as session:
            moment = session.exec(
                select(UserSession.authenticated_at).where(col(UserSession.id) == session_id)
            ).first()
        return moment is not None and _aware(moment) > utcnow() - timedelta(seconds=within)

    async def touch(self, session_id: str) -> None:
        """Note that the session is in use (called at most once per token renewal)."""
        await self.db.write(self._touch, session_id)

    def _touch(self, session_id: str) -> None:
        with self.db.writing() as session:
            session.exec(
                update(UserSession)
                .where(col(UserSession.id) == session_id)
                .values(last_seen_at=utcnow())
            )

    # -- remember me ---------------------------------------------------------------------

    async def resume(self, remember_token: str) -> NewSession | None:
        """Sign a browser in again with its remember token, handing it a new one.

        The presented token is spent; presenting a spent one again means a copy is in
        someone else's hands, so the session ends. Check and rotation: one transaction.
        """
        return await self.db.write(self._resume, token_hash(remember_token))

    def _resume(self, presented: str) -> NewSession | None:
        now = utcnow()
        with self.db.writing() as session:
            found = session.exec(
                select(UserSession, User)
                .join(User, col(User.id) == col(UserSession.user_id))
                .where(
                    or_(
                        col(UserSession.remember_hash) == presented,
                        col(UserSession.remember_prev_hash) == presented,
                    )
                )
                .with_for_update()
            ).first()
            if found is None:
                return None
            row, user = found
            live = (
                row.revoked_at is None
                and _aware(row.expires_at) > now
                and row.credential_version == user.credential_version
            )
            if not live:
                return None
            if row.remember_hash != presented:
                # A spent token: whoever holds the current one, this session is over.
                row.revoked_at = now
                session.add(row)
                return None
            token = secrets.token_urlsafe(32)
            row.remember_prev_hash, row.remember_hash = presented, token_hash(token)
            row.last_seen_at = now
            session.add(row)
            return NewSession(
                account_of(user), row.id, row.public_id, _aware(row.expires_at), now, token
            )

    # -- signing out ---------------------------------------------------------------------

    async def sign_out(self, session_id: str, client: Client | None = None) -> None:
        """Revoke one session; its token is refused from now on, on every worker."""
        await self.db.write(self._revoke, session_id, client)

    def _revoke(self, session_id: str, client: Client | None) -> None:
        with self.db.writing() as session:
            row = session.get(UserSession, session_id)
            if row is None or row.revoked_at is not None:
                return
            if not events.account_exists(session, row.user_id):
                return  # deleted meanwhile, its sessions with it
            row.revoked_at = utcnow()
            session.add(row)
            events.record(session, user_id=row.user_id, kind="signout", client=client)

    # -- your sessions: the sessions page and the operator ---------------------------------

    async def live_sessions(
        self, user_id: int, *, current_sid: str | None = None
    ) -> list[SessionView]:
        """The user's live sessions, the newest sign-in first; `current_sid` marks this
        browser's own."""
        return await self.db.read(self._live_sessions, user_id, current_sid)

    def _live_sessions(self, user_id: int, current_sid: str | None) -> list[SessionView]:
        with self.db.reading() as session:
            found = session.exec(
                select(UserSession)
                .where(*_live_conditions(user_id, utcnow()))
                .order_by(col(UserSession.created_at).desc(), col(UserSession.public_id))
            ).all()
        return [
            SessionView(
                handle=row.public_id,
                device=describe(row.user_agent),
                client_addr=row.client_addr,
                signed_in_at=_aware(row.created_at),
                last_active_at=_aware(row.last_seen_at),
                expires_at=_aware(row.expires_at),
                current=row.id == current_sid,
            )
            for row in found
        ]

    async def end_session(
        self, user_id: int, handle: str, *, current_sid: str, client: Client
    ) -> EndedSession:
        """End one live session of the user, named by its public handle; SessionNotFound for
        anything else, another user's session included. Ending this browser's own session is
        signing out. The check, the end and its event are one transaction, so of many
        requests to end one session exactly one succeeds."""
        if not _HANDLE.fullmatch(handle):
            raise SessionNotFound
        return await self.db.write(self._end_session, user_id, handle, current_sid, client)

    def _end_session(
        self, user_id: int, handle: str, current_sid: str, client: Client
    ) -> EndedSession:
        now = utcnow()
        with self.db.writing() as session:
            row = session.exec(
                select(UserSession)
                .where(col(UserSession.public_id) == handle)
                .where(*_live_conditions(user_id, now))
                # Requests to end one session queue here; the later ones find it ended.
                .with_for_update()
            ).first()
            if row is None:
                raise SessionNotFound
            ended = session.exec(
                update(UserSession)
                .where(col(UserSession.id) == row.id)
                .where(col(UserSession.revoked_at).is_(None))
                .values(revoked_at=now)
                .execution_options(synchronize_session=False)
            )
            if ended.rowcount != 1:
                raise SessionNotFound
            device = describe(row.user_agent)
            current = row.id == current_sid
            if current:
                events.record(session, user_id=user_id, kind="signout", client=client, now=now)
            else:
                detail = f"{device}, {row.client_addr or 'unknown address'}"
                events.record(
                    session,
                    user_id=user_id,
                    kind="session_revoked",
                    client=client,
                    detail=detail,
                    now=now,
                )
            return EndedSession(device, current)

    async def end_other_sessions(self, user_id: int, *, current_sid: str, client: Client) -> int:
        """End every live session of the user but this browser's; how many ended. One
        session_revoked event for them all, in the same transaction (none if none ended)."""
        return await self.db.write(self._end_others, user_id, current_sid, client)

    def _end_others(self, user_id: int, current_sid: str, client: Client) -> int:
        now = utcnow()
        with self.db.writing() as session:
            count = self._end_live(session, user_id, now, keep=current_sid)
            if count:
                plural = "" if count == 1 else "s"
                events.record(
                    session,
                    user_id=user_id,
                    kind="session_revoked",
                    client=client,
                    detail=f"{count} other session{plural}",
                    now=now,
                )
        return count

    async def account_named(self, username: str) -> Account | None:
        """The account with this username (any case), for operators; None if there is none."""
        return await self.db.read(self._account_named, username)

    def _account_named(self, username: str) -> Account | None:
        name = username.strip()
        if not name.isprintable() or not 0 < len(name) <= 50:
            return None
        with self.db.reading() as session:
            user = session.exec(
                select(User).where(col(User.username_key) == username_key(name))
            ).first()
        return account_of(user) if user is not None else None

    async def end_all_sessions(
        self, user_id: int, *, detail: str, client: Client | None = None
    ) -> int:
        """End every live session of the user (an operator's doing); how many ended, with
        one session_revoked event carrying `detail` when any did."""
        return await self.db.write(self._end_all, user_id, detail, client)

    def _end_all(self, user_id: int, detail: str, client: Client | None) -> int:
        now = utcnow()
        with self.db.writing() as session:
            count = self._end_live(session, user_id, now)
            if count:
                events.record(
                    session,
                    user_id=user_id,
                    kind="session_revoked",
                    client=client,
                    detail=detail,
                    now=now,
                )
        return count

    @staticmethod
    def _end_live(session: Session, user_id: int, now: datetime, *, keep: str | None = None) -> int:
        """Revoke the user's live sessions (but `keep`) in the caller's transaction; how many.

        A conditional UPDATE: a concurrent one waits for this row lock and then finds the
        rows revoked, so each session is counted (and its event written) once."""
        query = update(UserSession).where(*_live_conditions(user_id, now))
        if keep is not None:
            query = query.where(col(UserSession.id) != keep)
        result = session.exec(
            query.values(revoked_at=now).execution_options(synchronize_session=False)
        )
        return int(result.rowcount)

    # -- recent authentication -----------------------------------------------------------

    async def reauthenticate(
        self,
        accounts: Accounts,
        *,
        user_id: int,
        session_id: str,
        password: str,
        client: Client,
    ) -> None:
        """The password entered again in this session ("recent authentication").

        Checked exactly as a current password is (Accounts.check_current_password: the
        attempt is reserved against the sign-in limit before bcrypt runs, failures are
        recorded), then the session's authenticated_at becomes now. Raises InvalidInput
        (field `password`), Throttled, or AccountGone when the session has ended.
        """
        if not password:
            raise InvalidInput({"password": PASSWORD_NEEDED})
        if len(password) > MAX_PASSWORD_LENGTH:
            # No account has such a password; like an over-long current_password, not hashed.
            raise InvalidInput({"password": PASSWORD_WRONG})
        user = await self.db.read(self._user, user_id)
        if user is None:
            raise AccountGone
        try:
            await accounts.check_current_password(user, password, client)
        except InvalidInput:
            raise InvalidInput({"password": PASSWORD_WRONG}) from None
        await self.db.write(self._authenticated, session_id, user_id)

    async def confirm_authentication(self, session_id: str, user_id: int) -> None:
        """Another check of who this is passed (a passkey): authenticated_at becomes now.
        Raises AccountGone when the session has ended meanwhile."""
        await self.db.write(self._authenticated, session_id, user_id)

    def _user(self, user_id: int) -> User | None:
        with self.db.reading() as session:
            return session.get(User, user_id)

    def _authenticated(self, session_id: str, user_id: int) -> None:
        now = utcnow()
        with self.db.writing() as session:
            marked = session.exec(
                update(UserSession)
                .where(col(UserSession.id) == session_id)
                .where(*_live_conditions(user_id, now))
                .values(authenticated_at=now)
                .execution_options(synchronize_session=False)
            )
            if marked.rowcount != 1:
                # The session ended while the password was being checked.
                raise AccountGone


def _live_conditions(user_id: int, now: datetime) -> list[Any]:
    """The user's live sessions: not revoked, not expired, opened under the current password."""
    current_version = (
        select(User.credential_version).where(col(User.id) == user_id).scalar_subquery()
    )
    return [
        col(UserSession.user_id) == user_id,
        col(UserSession.revoked_at).is_(None),
        col(UserSession.expires_at) > now,
        col(UserSession.credential_version) == current_version,
    ]
