"""The tables, and the value types the domain hands out.

Times are aware UTC datetimes (SQLModel stores them as UTC everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, Index, Text
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
    # Whether the address was confirmed through a link sent to it.
    email_verified: bool = False


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request came from, for throttling and the session record."""

    address: str
    user_agent: str = ""
    # This browser's long-lived id (from its signed cookie); "" when unknown.
    device: str = ""


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
    # When the current address was confirmed by a link sent to it; None: not (yet).
    email_verified_at: datetime | None = None
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
    # SHA-256 of the browser's long-lived device id: a sign-in from a browser this account
    # has never seen brings a notice.
    device_hash: str = Field(default="", max_length=64, index=True)
    # When the password (or a passkey) was last entered in this session: sign-in counts.
    # Sensitive pages need it within the last 10 minutes ("recent authentication").
    authenticated_at: datetime = Field(default_factory=utcnow)


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


class EmailToken(SQLModel, table=True):
    """A link sent by e-mail: confirm an address, reset a password, undo an address change.

    Only the SHA-256 of the token is stored. Single use (`used_at`), bound to its user,
    its purpose and the address it was sent to, valid until `expires_at`.
    """

    __tablename__ = "email_tokens"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    # "verify", "reset" or "revert".
    purpose: str = Field(max_length=16)
    # The address the link was sent to (for "revert": the address to put back).
    email: str = Field(max_length=254)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    used_at: datetime | None = None


class OutboxMessage(SQLModel, table=True):
    """An e-mail to send, written in the same transaction as the change that causes it.

    The sender (webapp/mail.py) leases due rows, delivers them outside any transaction
    and records the outcome; failures are retried with back-off for a day. A link's
    token is not stored here: the text holds a placeholder and `token_nonce`, from
    which the sender derives the token with a key only the app has.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "sent_at", "failed_at", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    # Kept when the account is deleted (the goodbye notice), hence no foreign key.
    user_id: int | None = Field(default=None, index=True)
    kind: str = Field(max_length=40)
    to_address: str = Field(max_length=254)
    subject: str = Field(max_length=200)
    body_text: str = Field(sa_type=Text)
    body_html: str | None = Field(default=None, sa_type=Text)
    token_nonce: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    next_attempt_at: datetime = Field(default_factory=utcnow)
    leased_until: datetime | None = None
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, max_length=500)
    sent_at: datetime | None = None
    # Given up on (a day of failures).
    failed_at: datetime | None = None


class SecurityEvent(SQLModel, table=True):
    """One line of an account's security history, written in the same transaction as the
    change it records. Never a password, token or code."""

    __tablename__ = "security_events"
    __table_args__ = (Index("ix_security_events_user_id_id", "user_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    # signin, signin_failed, signout, throttled, password_changed, password_reset,
    # email_changed, email_verified, email_reverted, username_changed, session_revoked, …
    kind: str = Field(max_length=40)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    client_addr: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=512)
    # A short, harmless detail ("from alice to alicia"), or "".
    detail: str = Field(default="", max_length=300)


class TwoFactor(SQLModel, table=True):
    """An account's authenticator app (TOTP). Secrets are AES-GCM encrypted
    (webapp/domain/twofactor.py); a row without `secret` is a set-up not yet confirmed."""

    __tablename__ = "two_factor"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", unique=True, ondelete="CASCADE")
    # The confirmed secret, encrypted; None: two-factor sign-in is off.
    secret: str | None = Field(default=None, max_length=200)
    enabled_at: datetime | None = None
    # The newest accepted time step (Unix time // 30): a code is accepted once.
    last_step: int = Field(default=0)
    # A secret shown for set-up and not yet confirmed by a code, encrypted.
    pending_secret: str | None = Field(default=None, max_length=200)
    pending_at: datetime | None = None


class RecoveryCode(SQLModel, table=True):
    """A single-use recovery code: only the SHA-256 of the (high-entropy) code is stored."""

    __tablename__ = "recovery_codes"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    code_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    used_at: datetime | None = None


class SigninChallenge(SQLModel, table=True):
    """A sign-in waiting for its second factor: the password was right. Bound to the browser
    it started in; ends after 5 minutes or 5 wrong codes. Only the token's SHA-256 is kept."""

    __tablename__ = "signin_challenges"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    # SHA-256 of the browser's CSRF identity at the first step.
    browser_hash: str = Field(max_length=64)
    remember: bool = False
    # users.credential_version when the password was checked: a new password ends it.
    credential_version: int
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    failures: int = Field(default=0)


class Passkey(SQLModel, table=True):
    """A WebAuthn credential (a passkey) that signs the account in on its own
    (webapp/domain/passkeys.py). Binary values are stored base64url-encoded."""

    __tablename__ = "passkeys"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    # The authenticator's id for it (at most 1,023 bytes by the spec).
    credential_id: str = Field(max_length=1400, unique=True)
    # The COSE public key that checks its signatures.
    public_key: str = Field(max_length=4000)
    # The authenticator's use counter (32 bits unsigned); 0 for those that keep none.
    sign_count: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    # Where the browser may find it ("internal,hybrid"…), as the authenticator said.
    transports: str = Field(default="", max_length=200)
    # The random account handle given to the authenticator (never the row id or a name).
    user_handle: str = Field(max_length=100)
    name: str = Field(max_length=64)
    # Whether the authenticator syncs it to the owner's other devices (a "synced passkey").
    backed_up: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None


class SpentPasskeyChallenge(SQLModel, table=True):
    """A WebAuthn challenge that has been answered once: it is not accepted again.
    Challenges are signed, not stored, when handed out; a row lives until it would have
    expired anyway."""

    __tablename__ = "passkey_challenges"

    id: int | None = Field(default=None, primary_key=True)
    challenge_hash: str = Field(max_length=64, unique=True)
    expires_at: datetime = Field(index=True)
