"""Your security history, your data, and leaving.

- The Activity page: an account's security events, newest first, 50 at a time.
- Retention: events older than ACTIVITY_RETENTION_DAYS, expired e-mail links and e-mails
  delivered (or given up on) before that are deleted by `Housekeeping`, a task the app's
  lifespan runs once at start and then every hour. Plain batched DELETEs by time, so any
  number of workers may run it at once.
- The export: one versioned JSON document of everything held about an account. Which
  column goes out under which key, and which is withheld and why, is written down for
  every column of every table (EXPORTED, WITHHELD, NOT_ABOUT_AN_ACCOUNT), and a test
  checks that against the tables, so a new column cannot be forgotten silently.
- Deleting an account: the password is checked like a sign-in (reserved before bcrypt,
  a wrong one recorded as a failed sign-in), then one transaction removes the user and
  every row of it and queues a goodbye notice that outlives it (user_id NULL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Result, Table
from sqlalchemy import select as select_columns
from sqlalchemy.engine import CursorResult
from sqlmodel import Session, SQLModel, col, delete, or_, select

from webapp.db import Database
from webapp.domain import throttle
from webapp.domain.accounts import check_password_counted
from webapp.domain.devices import describe
from webapp.domain.emails import moment
from webapp.domain.errors import AccountGone, InvalidInput
from webapp.domain.outbox import Mailer
from webapp.domain.throttle import Reservation, Throttle
from webapp.domain.validation import CURRENT_PASSWORD_WRONG, MAX_PASSWORD_LENGTH, username_key
from webapp.models import (
    Account,
    Client,
    EmailToken,
    OutboxMessage,
    SecurityEvent,
    SigninFailure,
    TwoFactor,
    User,
    utcnow,
)
from webapp.settings import Settings

logger = logging.getLogger("webapp.activity")

PAGE_SIZE = 50
CLEANUP_INTERVAL = 3600.0  # seconds between clean-ups; one more runs when the app starts
# Rows per DELETE: each transaction stays short, well inside PostgreSQL's statement_timeout
# and the write deadline, even for the first clean-up of a large backlog.
CLEANUP_BATCH = 5000
EXPORT_FORMAT = 1
PASSWORD_NEEDED = "Enter your password to delete your account."

# What each kind of event (events.EventKind) says on the Activity page and in the CLI.
DESCRIPTIONS: dict[str, str] = {
    "signin": "Signed in",
    "signin_failed": "Wrong password entered",
    "signout": "Signed out",
    "throttled": "Sign-in paused after too many wrong passwords",
    "password_changed": "Password changed",
    "password_reset": "Password reset through an e-mail link",
    "email_changed": "E-mail address changed",
    "email_verified": "E-mail address confirmed",
    "email_reverted": "E-mail address change undone",
    "username_changed": "Username changed",
    "session_revoked": "A session was signed out",
    "totp_enabled": "Two-factor sign-in turned on",
    "totp_disabled": "Two-factor sign-in turned off",
    "recovery_code_used": "A recovery code was used",
    "recovery_codes_renewed": "New recovery codes made",
    "passkey_added": "Passkey added",
    "passkey_removed": "Passkey removed",
}


def describe_event(kind: str, detail: str) -> str:
    """What an event says to people. A failed sign-in that was not a wrong password (a
    wrong two-factor code, a refused passkey) says so; its detail says which."""
    if kind == "signin_failed" and detail and "password" not in detail:
        return "Sign-in refused"
    return DESCRIPTIONS.get(kind, kind)


# -- what the export holds ----------------------------------------------------------------

# Table → where its rows go in the export (a path of keys). A table in SINGLE_ROW has at
# most one row per account: an object (or null) rather than a list.
SECTIONS: dict[str, tuple[str, ...]] = {
    "users": ("user",),
    "user_sessions": ("sessions",),
    "security_events": ("events",),
    "email_tokens": ("email_tokens",),
    "outbox": ("outbox",),
    "two_factor": ("two_factor", "authenticator"),
    "recovery_codes": ("two_factor", "recovery_codes"),
    "signin_challenges": ("two_factor", "pending_sign_ins"),
    "passkeys": ("two_factor", "passkeys"),
}
SINGLE_ROW = frozenset({"users", "two_factor"})
# Table → {column: its key in the export}.
EXPORTED: dict[str, dict[str, str]] = {
    "users": {
        "id": "id",
        "username": "username",
        "email": "email",
        "email_verified_at": "email_verified_at",
        "created_at": "created_at",
        "updated_at": "updated_at",
    },
    "user_sessions": {
        # The handle the sessions page shows, not the sid.
        "public_id": "id",
        "created_at": "created_at",
        "expires_at": "expires_at",
        "revoked_at": "revoked_at",
        "last_seen_at": "last_seen_at",
        "authenticated_at": "authenticated_at",
        "user_agent": "user_agent",
        "client_addr": "client_addr",
    },
    "security_events": {
        "id": "id",
        "kind": "kind",
        "created_at": "created_at",
        "client_addr": "client_addr",
        "user_agent": "user_agent",
        "detail": "detail",
    },
    "email_tokens": {
        "purpose": "purpose",
        "created_at": "created_at",
        "expires_at": "expires_at",
        "used_at": "used_at",
    },
    "outbox": {
        "kind": "kind",
        "to_address": "to",
        "subject": "subject",
        "created_at": "created_at",
        "sent_at": "sent_at",
    },
    "two_factor": {"enabled_at": "enabled_at", "pending_at": "setup_started_at"},
    "recovery_codes": {"created_at": "created_at", "used_at": "used_at"},
    "signin_challenges": {
        "created_at": "created_at",
        "expires_at": "expires_at",
        "failures": "failures",
        "remember": "remember",
    },
    "passkeys": {
        "id": "id",
        "name": "name",
        "created_at": "created_at",
        "last_used_at": "last_used_at",
        "transports": "transports",
        "backed_up": "synced",
    },
}
_YOURS = "the account's own id: the whole export is about it"
_DELIVERY = "delivery bookkeeping of the mail sender"
# Table → {column: why it is not exported}. Never a hash, token, secret or nonce.
WITHHELD: dict[str, dict[str, str]] = {
    "users": {
        "username_key": "a lower-case copy of the username, kept for uniqueness",
        "email_key": "a lower-case copy of the e-mail address, kept for uniqueness",
        "password_hash": "secret: the bcrypt hash of the password",
        "credential_version": "an internal counter that ends old sessions at a new password",
    },
    "user_sessions": {
        "id": "secret: the session id inside the sign-in cookie",
        "user_id": _YOURS,
        "credential_version": "an internal counter that ends old sessions at a new password",
        "remember_hash": "secret: the hash of the remember-me token",
        "remember_prev_hash": "secret: the hash of the previous remember-me token",
        "device_hash": "secret: the hash of the browser's device id",
    },
    "security_events": {"user_id": _YOURS},
    "email_tokens": {
        "id": "an internal row number",
        "token_hash": "secret: the hash of the token in the link",
        "user_id": _YOURS,
        "email": "the address the link went to: the `to` of its message in the outbox",
    },
    "outbox": {
        "id": "an internal row number",
        "user_id": _YOURS,
        "body_text": "the message text: the kind and subject say what it was",
        "body_html": "the message text: the kind and subject say what it was",
        "token_nonce": "secret: what the link's token is derived from",
        "next_attempt_at": _DELIVERY,
        "leased_until": _DELIVERY,
        "attempts": _DELIVERY,
        "last_error": _DELIVERY,
        "failed_at": _DELIVERY,
    },
    "two_factor": {
        "id": "an internal row number",
        "user_id": _YOURS,
        "secret": "secret: the authenticator app's key (encrypted)",
        "pending_secret": "secret: a key shown for set-up, not confirmed yet (encrypted)",
        "last_step": "an internal counter: the newest code accepted, so none is used twice",
    },
    "recovery_codes": {
        "id": "an internal row number",
        "user_id": _YOURS,
        "code_hash": "secret: the hash of a recovery code",
    },
    "signin_challenges": {
        "id": "an internal row number",
        "user_id": _YOURS,
        "token_hash": "secret: the hash of the token that carries a sign-in to its second step",
        "browser_hash": "secret: the hash of the browser's identity",
        "credential_version": "an internal counter that ends old sessions at a new password",
    },
    "passkeys": {
        "user_id": _YOURS,
        "credential_id": "the authenticator's own name for the passkey, of use to nobody else",
        "public_key": "the key that checks the passkey's signatures, of use to nobody else",
        "sign_count": "an internal counter: how often the authenticator says it was used",
        "user_handle": "a random id the authenticator keeps for the account, of use to nobody else",
    },
}
# Tables with no row that belongs to an account, and why.
NOT_ABOUT_AN_ACCOUNT: dict[str, str] = {
    "signin_failures": (
        "throttling counters, kept at most an hour and keyed by an id, a hash of a typed "
        "name or a client address; each failed sign-in is an event in `events`"
    ),
    "health_probe": "always empty: the health check writes a row and deletes it",
    "passkey_challenges": (
        "hashes of passkey challenges already answered, kept until they expire (5 minutes) "
        "so none is accepted twice; they name no account"
    ),
}
# Keys added beside the columns: what the User-Agent says, for people.
DERIVED: dict[str, tuple[str, ...]] = {
    "user_sessions": ("browser", "system"),
    "security_events": ("browser", "system"),
}
# Rows in the order they happened (by id, unless named here).
_ORDER: dict[str, str] = {"user_sessions": "created_at"}


def _aware(when: datetime) -> datetime:
    """SQLite hands datetimes back naive; every time here is UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return _aware(value).isoformat()
    return value


# -- values handed out ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventView:
    """One line of the history as people read it."""

    id: int
    kind: str
    description: str
    created_at: datetime
    browser: str
    system: str
    client_addr: str
    detail: str


@dataclass(frozen=True, slots=True)
class EventPage:
    events: tuple[EventView, ...]
    # The cursor of the next (older) page, None when there is no older event.
    older: int | None


@dataclass(frozen=True, slots=True)
class Cleanup:
    """Rows one clean-up deleted, per kind."""

    events: int = 0
    email_tokens: int = 0
    outbox: int = 0

    def __add__(self, other: Cleanup) -> Cleanup:
        return Cleanup(
            self.events + other.events,
            self.email_tokens + other.email_tokens,
            self.outbox + other.outbox,
        )

    @property
    def total(self) -> int:
        return self.events + self.email_tokens + self.outbox


@dataclass(frozen=True, slots=True)
class DeletedAccount:
    id: int
    username: str
    email: str
    # Table → rows deleted from it.
    rows: Mapping[str, int]


# The columns a line of history shows, read as plain rows: for a page of 50 this is half
# the cost of loading ORM objects.
_EVENT_COLUMNS = (
    col(SecurityEvent.id),
    col(SecurityEvent.kind),
    col(SecurityEvent.created_at),
    col(SecurityEvent.user_agent),
    col(SecurityEvent.client_addr),
    col(SecurityEvent.detail),
)


def _events_of(
    session: Session, user_id: int, *, before: int | None, limit: int
) -> list[EventView]:
    """The user's events, newest first, those older than event `before` when it is given."""
    query = (
        select_columns(*_EVENT_COLUMNS)
        .where(col(SecurityEvent.user_id) == user_id)
        .order_by(col(SecurityEvent.id).desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(col(SecurityEvent.id) < before)
    views = []
    for event_id, kind, created_at, user_agent, client_addr, detail in session.execute(query):
        device = describe(user_agent)
        views.append(
            EventView(
                id=event_id,
                kind=kind,
                description=describe_event(kind, detail),
                created_at=_aware(created_at),
                browser=device.browser,
                system=device.system,
                client_addr=client_addr,
                detail=detail,
            )
        )
    return views


def _lock_user(session: Session, user_id: int, *, exclusive: bool) -> User | None:
    """The user row, locked for the rest of the transaction on PostgreSQL (SQLite's
    BEGIN IMMEDIATE already admits one writer). Shared: the row cannot be deleted under
    us; exclusive: no one else can lock or reference it until we commit."""
    query = select(User).where(col(User.id) == user_id)
    query = (
        query.with_for_update() if exclusive else query.with_for_update(read=True, key_share=True)
    )
    return session.exec(query).first()


def _count(result: Result[Any]) -> int:
    """The rows a DELETE touched."""
    return int(cast(CursorResult[Any], result).rowcount)


def _delete_rows(session: Session, model: type[SQLModel], *where: ColumnElement[bool]) -> int:
    return _count(session.exec(delete(model).where(*where)))


def _account_tables() -> list[Table]:
    """Every table that holds rows of an account (it has a user_id column), children first."""
    return [table for table in reversed(SQLModel.metadata.sorted_tables) if "user_id" in table.c]


def _delete_some(session: Session, model: type[SQLModel], where: ColumnElement[bool]) -> int:
    """Delete at most CLEANUP_BATCH rows matching `where`."""
    key = model.__table__.c["id"]  # type: ignore[attr-defined]
    ids = select(key).where(where).limit(CLEANUP_BATCH)
    return _delete_rows(session, model, key.in_(ids))


class Activity:
    def __init__(self, db: Database, settings: Settings, limits: Throttle, mailer: Mailer) -> None:
        self.db = db
        self.settings = settings
        self.throttle = limits
        self.mailer = mailer

    # -- the history ----------------------------------------------------------------------

    async def page(self, user_id: int, *, before: int | None = None) -> EventPage:
        """The account's newest PAGE_SIZE events, or those just older than event `before`."""
        return await self.db.read(self._page, user_id, before)

    def _page(self, user_id: int, before: int | None) -> EventPage:
        with self.db.reading() as session:
            # One more than a page: whether there is an older page, without a count.
            found = _events_of(session, user_id, before=before, limit=PAGE_SIZE + 1)
        shown = tuple(found[:PAGE_SIZE])
        older = shown[-1].id if len(found) > PAGE_SIZE else None
        return EventPage(shown, older)

    async def recent(self, username: str, *, limit: int) -> tuple[Account, list[EventView]] | None:
        """For the operator: an account (by username, any case) and its newest events."""
        return await self.db.read(self._recent, username, limit)

    def _recent(self, username: str, limit: int) -> tuple[Account, list[EventView]] | None:
        with self.db.reading() as session:
            user = self._by_name(session, username)
            if user is None or user.id is None:
                return None
            found = _events_of(session, user.id, before=None, limit=limit)
        account = Account(user.id, user.username, user.email, user.email_verified_at is not None)
        return account, found

    @staticmethod
    def _by_name(session: Session, username: str) -> User | None:
        return session.exec(
            select(User).where(col(User.username_key) == username_key(username.strip()))
        ).first()

    # -- retention --------------------------------------------------------------------------

    async def clean_up(self, *, now: datetime | None = None) -> Cleanup:
        """Delete what is past keeping, a batch per transaction; the rows deleted."""
        now = now or utcnow()
        total = Cleanup()
        while True:
            done = await self.db.write(self._clean_batch, now)
            total += done
            if max(done.events, done.email_tokens, done.outbox) < CLEANUP_BATCH:
                return total

    def _clean_batch(self, now: datetime) -> Cleanup:
        cutoff = now - timedelta(days=self.settings.activity_retention_days)
        with self.db.writing() as session:
            return Cleanup(
                events=_delete_some(session, SecurityEvent, col(SecurityEvent.created_at) < cutoff),
                # A link is refused once expired: its row serves nothing any more.
                email_tokens=_delete_some(session, EmailToken, col(EmailToken.expires_at) < now),
                # Delivered, or given up on after a day of trying.
                outbox=_delete_some(
                    session,
                    OutboxMessage,
                    or_(
                        col(OutboxMessage.sent_at) < cutoff,
                        col(OutboxMessage.failed_at) < cutoff,
                    ),
                ),
            )

    # -- the export -------------------------------------------------------------------------

    async def export(self, user_id: int) -> dict[str, Any]:
        """Everything held about the account, as one JSON-ready document; raises AccountGone."""
        return await self.db.read(self._export, user_id)

    def _export(self, user_id: int) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "exported_at": utcnow().isoformat(),
            "user": None,
            "sessions": [],
            "events": [],
            "email_tokens": [],
            "outbox": [],
            "two_factor": {"enabled": False},
        }
        with self.db.reading() as session:
            for name, path in SECTIONS.items():
                found = self._rows(session, SQLModel.metadata.tables[name], user_id)
                value = (found[0] if found else None) if name in SINGLE_ROW else found
                *parents, key = path
                place = document
                for parent in parents:
                    place = place[parent]
                place[key] = value
            secret = session.exec(
                select(TwoFactor.secret).where(col(TwoFactor.user_id) == user_id)
            ).first()
        if document["user"] is None:
            raise AccountGone
        document["two_factor"]["enabled"] = secret is not None
        return document

    @staticmethod
    def _rows(session: Session, table: Table, user_id: int) -> list[dict[str, Any]]:
        columns = table.c
        owner = columns["id"] if table.name == "users" else columns["user_id"]
        exported = EXPORTED[table.name]
        derived = DERIVED.get(table.name, ())
        # The User-Agent is read for the derived keys even where it is not exported.
        read = [*exported, *(["user_agent"] if derived and "user_agent" not in exported else [])]
        result = session.execute(
            select(*(columns[name] for name in read))
            .where(owner == user_id)
            .order_by(columns[_ORDER.get(table.name, "id")], columns["id"])
        )
        rows = []
        for found in result:
            values = dict(zip(read, found, strict=True))
            row = {key: _json_value(values[name]) for name, key in exported.items()}
            if derived:
                device = describe(values["user_agent"])
                row |= {"browser": device.browser, "system": device.system}
            rows.append(row)
        return rows

    # -- deleting an account ----------------------------------------------------------------

    async def delete_account(
        self, user_id: int, *, current_password: str, client: Client
    ) -> DeletedAccount:
        """Delete the account after checking its password like a sign-in.

        Raises InvalidInput (no or a wrong password: a wrong one counts as a failed
        sign-in), Throttled, or AccountGone (deleted meanwhile)."""
        if not current_password:
            raise InvalidInput({"current_password": PASSWORD_NEEDED})
        if len(current_password) > MAX_PASSWORD_LENGTH:
            raise InvalidInput({"current_password": CURRENT_PASSWORD_WRONG})
        user = await self.db.read(self._user, user_id)
        if user is None or user.id is None:
            raise AccountGone
        # Counted before the password is checked, as a sign-in is; released by _delete.
        reservation = await check_password_counted(
            self.db,
            self.throttle,
            user,
            current_password,
            client,
            failure="wrong password to delete the account",
        )
        deleted = await self.db.write(
            self._delete, user.id, user.credential_version, reservation, client
        )
        if deleted is None:
            raise AccountGone
        return deleted

    async def delete_user(self, username: str) -> DeletedAccount | None:
        """For the operator: delete an account by username; None when there is none."""
        user = await self.db.read(self._user_named, username)
        if user is None or user.id is None:
            return None
        return await self.db.write(self._delete, user.id, None, None, None)

    def _user(self, user_id: int) -> User | None:
        with self.db.reading() as session:
            return session.get(User, user_id)

    def _user_named(self, username: str) -> User | None:
        with self.db.reading() as session:
            return self._by_name(session, username)

    def _delete(
        self,
        user_id: int,
        credential_version: int | None,
        reservation: Reservation | None,
        client: Client | None,
    ) -> DeletedAccount | None:
        """One transaction: every row of the user goes, and the goodbye notice is queued.

        The user's row is locked first: on PostgreSQL a sign-in that is opening a session
        either finished before (its session is deleted here) or waits and then finds no
        user; on SQLite, BEGIN IMMEDIATE orders the two the same way.
        """
        now = utcnow()
        with self.db.writing() as session:
            user = _lock_user(session, user_id, exclusive=True)
            if user is None or (
                credential_version is not None and user.credential_version != credential_version
            ):
                # Deleted by another request, or the password changed since it was checked:
                # this attempt is void (and not a failure: hand its count back).
                if reservation is not None:
                    throttle.release_in(session, reservation)
                return None
            rows: dict[str, int] = {}
            # Every row of every table that holds the account's (sessions, links, events,
            # e-mails, two-factor…): the foreign keys would cascade, but counted here.
            # Pending e-mails go too: their links die with the tokens.
            for table in _account_tables():
                deleted = session.execute(delete(table).where(table.c["user_id"] == user_id))
                rows[table.name] = _count(deleted)
            # The account's throttling counters ("user:<id>", "rename:user:<id>", …): on
            # SQLite a new account may be given this id again.
            rows["signin_failures"] = _delete_rows(
                session,
                SigninFailure,
                or_(
                    col(SigninFailure.key) == f"user:{user_id}",
                    col(SigninFailure.key).like(f"%:user:{user_id}"),
                ),
            )
            rows["users"] = _delete_rows(session, User, col(User.id) == user_id)
            if reservation is not None:
                # This attempt's own count (against the client) is handed back, as a
                # successful sign-in's is.
                throttle.release_in(session, reservation)
            # Queued with no user, so it outlives the account it says goodbye for.
            self.mailer.enqueue(
                session,
                kind="goodbye",
                to=user.email,
                user_id=None,
                context={
                    "username": user.username,
                    "email": user.email,
                    "when": moment(now),
                    "device": str(describe(client.user_agent)) if client else None,
                    "address": client.address if client else None,
                },
            )
        return DeletedAccount(user_id, user.username, user.email, rows)


class Housekeeping:
    """Runs `Activity.clean_up` in the background: once at start, then every `interval`
    seconds. Started and stopped by the app's lifespan; database work runs in worker
    threads (db.write), never on the event loop. A failed pass (the database is down) is
    logged and tried again at the next one."""

    def __init__(self, activity: Activity, *, interval: float = CLEANUP_INTERVAL) -> None:
        self.activity = activity
        self.interval = interval
        self.passes = 0
        # Set once the first pass (at start) is over, whatever its outcome.
        self.first_pass = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="housekeeping")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            try:
                done = await self.activity.clean_up()
            except Exception as exc:
                logger.warning("the retention clean-up failed: %s", type(exc).__name__)
            else:
                if done.total:
                    logger.info(
                        "retention clean-up: deleted %d events, %d e-mail links, %d e-mails",
                        done.events,
                        done.email_tokens,
                        done.outbox,
                    )
            self.passes += 1
            self.first_pass.set()
            await asyncio.sleep(self.interval)
