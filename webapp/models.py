"""The tables, and the value types the domain hands out.

Times are aware UTC datetimes (SQLModel stores them as UTC everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

# Stable constraint names, so migrations can name what they alter on every database.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- value types ----------------------------------------------------------------------


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


# -- tables ---------------------------------------------------------------------------


class User(SQLModel, table=True):
    """An account. Names and e-mails are kept as typed; their *_key twins are unique."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=50)
    # username.lower(): usernames are ASCII, so this is exact on every database.
    username_key: str = Field(max_length=50, unique=True)
    email: str = Field(max_length=254)
    # email.lower() in Python: SQLite's lower() only folds ASCII.
    email_key: str = Field(max_length=254, unique=True)
    password_hash: str = Field(max_length=128)
    # Bumped by every password change: sessions opened under an older one are dead.
    credential_version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class UserSession(SQLModel, table=True):
    """A sign-in. Its id is the JWT's `sid`; a token is live only while its row is."""

    __tablename__ = "user_sessions"

    id: str = Field(primary_key=True, max_length=64)
    # The handle pages may show and name in URLs, never the sid itself. A session that goes
    # on under a new sid (after a new password) keeps it, and the CSRF tokens bound to it.
    public_id: str = Field(max_length=32, index=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    # The absolute end (12 hours, or 30 days with "remember me"): nothing extends it.
    expires_at: datetime
    revoked_at: datetime | None = None
    # Updated when the session's token is renewed, so at most every ten minutes.
    last_seen_at: datetime = Field(default_factory=utcnow)
    # users.credential_version when the session was opened.
    credential_version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    # SHA-256 of the current remember_token and of the one it replaced (reuse detection).
    remember_hash: str | None = Field(default=None, max_length=64, unique=True)
    remember_prev_hash: str | None = Field(default=None, max_length=64, unique=True)
    user_agent: str = Field(default="", max_length=512)
    client_addr: str = Field(default="", max_length=64)


class SigninFailure(SQLModel, table=True):
    """One attempt at something limited (a sign-in, a registration, a rename), written before
    it is evaluated; a successful sign-in deletes its own."""

    __tablename__ = "signin_failures"
    __table_args__ = (Index("ix_signin_failures_key_failed_at", "key", "failed_at"),)

    id: int | None = Field(default=None, primary_key=True)
    # "user:<id>", "name:<sha256 of the canonical identifier>", "client:<address or /64>",
    # "register:client:…" or "rename:user:<id>": one row per attempt (see domain/throttle.py).
    key: str = Field(max_length=300)
    # Indexed alone too: expired rows are purged by time across all keys.
    failed_at: datetime = Field(default_factory=utcnow, index=True)


class HealthProbe(SQLModel, table=True):
    """Always empty: /healthz writes a row and deletes it, to see that writes work."""

    __tablename__ = "health_probe"

    id: int = Field(primary_key=True)
