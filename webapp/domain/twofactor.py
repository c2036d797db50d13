"""Two-factor sign-in with an authenticator app (TOTP, RFC 6238: SHA-1, 6 digits, 30-second
steps, one step of drift either way) and single-use recovery codes.

Set-up: a new secret is kept server-side, encrypted, until a code from it is entered;
only then is two-factor sign-in on, and 10 recovery codes are shown once (only their
SHA-256 is stored: each is 50 random bits, so a hash cannot be reversed by guessing).

Sign-in: once the password is right, `Sessions.sign_in` raises SecondFactorRequired and
the web layer asks for a code through a challenge (a random token, stored as a hash,
bound to the browser, valid 5 minutes and for 5 wrong codes). Every code is counted
against the account's sign-in limit *before* it is evaluated, in the same write
transaction that evaluates it, so the limits hold under concurrency exactly as for
passwords. A TOTP code is accepted once: the newest accepted time step is stored and
steps at or before it are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Exists, exists
from sqlmodel import Session, col, delete, func, select

from webapp.db import Database
from webapp.domain import events, throttle
from webapp.domain.emails import Emails
from webapp.domain.errors import InvalidInput, SigninFailed, Throttled
from webapp.domain.throttle import Reservation, Throttle
from webapp.models import (
    Account,
    Client,
    RecoveryCode,
    SigninChallenge,
    TwoFactor,
    User,
    utcnow,
)

if TYPE_CHECKING:
    # Only for types: sessions.py imports this module.
    from webapp.domain.sessions import NewSession, Sessions

# Seconds per time step, digits per code, steps of clock drift accepted either way.
STEP = 30
DIGITS = 6
DRIFT = 1
RECOVERY_CODES = 10
# Base32 characters per recovery code: 50 random bits.
RECOVERY_LENGTH = 10
RECOVERY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# The second step of a sign-in: 5 minutes, in seconds, and at most 5 wrong codes.
CHALLENGE_LIFETIME = 5 * 60
CHALLENGE_FAILURES = 5
# No code is longer; anything longer is wrong without a look at the database.
MAX_CODE_LENGTH = 64
ISSUER = "Accounts"

CODE_NEEDED = "Enter the 6-digit code from your authenticator app."
CODE_WRONG = "That code is not correct. Check your device's clock and try a new code."
SETUP_GONE = "Start the set-up again: there is no authenticator app waiting to be confirmed."
NOT_ENABLED = "Two-factor sign-in is off, so there are no recovery codes to renew."


class SecondFactorRequired(Exception):
    """The password was right and the account has two-factor sign-in on: ask for a code.

    Not a DomainError: it is not a failure, and the sign-in route answers it itself."""

    def __init__(self, account: Account, *, remember: bool) -> None:
        super().__init__(account.id)
        self.account = account
        self.remember = remember


class WrongCode(SigninFailed):
    """A wrong second-factor code at sign-in; `can_retry` while the challenge lives on."""

    code = "wrong_code"

    def __init__(self, *, can_retry: bool) -> None:
        super().__init__("wrong code")
        self.can_retry = can_retry


class ChallengeExpired(SigninFailed):
    """The second step is unknown, expired, used up, or from another browser: start again."""

    code = "challenge_expired"


@dataclass(frozen=True, slots=True)
class Setup:
    """What the set-up shows: the secret as text and the otpauth:// URI the QR code holds."""

    secret: str
    uri: str


@dataclass(frozen=True, slots=True)
class Status:
    enabled: bool
    enabled_at: datetime | None
    recovery_codes_left: int


@dataclass(frozen=True, slots=True)
class _Passed:
    user: User
    reservation: Reservation
    remember: bool


# -- pure helpers ---------------------------------------------------------------------------


class SecretBox:
    """AES-256-GCM for secrets at rest, with a key derived from SECRET_KEY for this purpose
    alone (derive_key(purpose="totp")). `context` (the owner) is authenticated data, so a
    ciphertext copied to another account does not decrypt.

    Key rotation: every value starts with its key's version ("v1:"). To rotate, derive the
    new key from the new SECRET_KEY as "v2", keep the old one for decrypting only, seal
    every new value with v2 and re-seal each v1 value when it is next read (or in one pass
    by a management command); once no "v1:" value is left, drop the old key.
    """

    VERSION = "v1"

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the TOTP key needs 32 bytes")
        self._aead = AESGCM(key[:32])

    def seal(self, plaintext: str, *, context: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.VERSION}:" + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, *, context: str) -> str:
        version, _, data = sealed.partition(":")
        if version != self.VERSION:
            raise ValueError(f"unknown key version {version!r}")
        raw = base64.urlsafe_b64decode(data)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise ValueError("the secret does not decrypt with this key") from None


def matching_step(secret: str, code: str, *, now: float, after: int) -> int | None:
    """The time step (within the drift window) whose code this is, if newer than `after`."""
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP)
    current = int(now) // STEP
    for step in range(current - DRIFT, current + DRIFT + 1):
        if step > after and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def normalize_code(code: str) -> str:
    """A typed code without spaces or dashes, upper case (recovery codes ignore case)."""
    return "".join(code.split()).replace("-", "").upper()


def is_totp_code(code: str) -> bool:
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def new_recovery_code() -> str:
    raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def recovery_hash(code: str) -> str:
    return hashlib.sha256(normalize_code(code).encode()).hexdigest()


def challenge_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def browser_hash(browser: str) -> str:
    return hashlib.sha256(browser.encode()).hexdigest()


def enabled_column() -> Exists:
    """Whether two-factor sign-in is on for the `users` row of the query it is a column of."""
    return (
        exists()
        .where(col(TwoFactor.user_id) == col(User.id))
        .where(col(TwoFactor.secret).is_not(None))
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _context(user_id: int) -> str:
    return f"totp:{user_id}"


# -- the service ----------------------------------------------------------------------------


class TwoFactorService:
    """Set-up, recovery codes, turning off, and the second step of a sign-in."""

    def __init__(
        self,
        db: Database,
        limits: Throttle,
        emails: Emails,
        sessions: Sessions,
        *,
        key: bytes,
    ) -> None:
        self.db = db
        self.throttle = limits
        self.emails = emails
        self.sessions = sessions
        self.box = SecretBox(key)
        # Seconds since the epoch; tests may pin it.
        self.clock: Callable[[], float] = time.time

    # -- what the security page shows ----------------------------------------------

    async def status(self, user_id: int) -> Status:
        return await self.db.read(self._status, user_id)

    def _status(self, user_id: int) -> Status:
        with self.db.reading() as session:
            row = session.exec(select(TwoFactor).where(col(TwoFactor.user_id) == user_id)).first()
            left = session.exec(
                select(func.count())
                .select_from(RecoveryCode)
                .where(col(RecoveryCode.user_id) == user_id)
                .where(col(RecoveryCode.used_at).is_(None))
            ).one()
        enabled = row is not None and row.secret is not None
        enabled_at = _aware(row.enabled_at) if row and row.enabled_at else None
        return Status(enabled, enabled_at if enabled else None, int(left) if enabled else 0)

    # -- setting up ----------------------------------------------------------------

    async def begin_setup(self, account: Account) -> Setup:
        """A new secret, kept (encrypted) until a code from it is entered. Nothing is on yet;
        an earlier set-up that was never confirmed is replaced."""
        secret = pyotp.random_base32(32)
        await self.db.write(
            self._store_pending, account.id, self.box.seal(secret, context=_context(account.id))
        )
        return self._setup(account, secret)

    def _store_pending(self, user_id: int, sealed: str) -> None:
        with self.db.writing() as session:
            row = session.exec(
                select(TwoFactor).where(col(TwoFactor.user_id) == user_id).with_for_update()
            ).first()
            row = row or TwoFactor(user_id=user_id)
            row.pending_secret, row.pending_at = sealed, utcnow()
            session.add(row)

    def _setup(self, account: Account, secret: str) -> Setup:
        uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(
            name=account.username, issuer_name=ISSUER
        )
        return Setup(secret, uri)

    async def pending_setup(self, account: Account) -> Setup | None:
        """The set-up waiting to be confirmed, if any (to show it again)."""
        sealed = await self.db.read(self._pending, account.id)
        if sealed is None:
            return None
        secret = self._open(sealed, account.id)
        return self._setup(account, secret) if secret is not None else None

    def _open(self, sealed: str, user_id: int) -> str | None:
        """The secret, or None when it was sealed under another key (a new SECRET_KEY): then
        no TOTP code matches, and the recovery codes (hashes, not encrypted) still work."""
        try:
            return self.box.open(sealed, context=_context(user_id))
        except ValueError:
            return None

    def _pending(self, user_id: int) -> str | None:
        with self.db.reading() as session:
            return session.exec(
                select(TwoFactor.pending_secret).where(col(TwoFactor.user_id) == user_id)
            ).first()

    async def pending_qr_svg(self, account: Account) -> bytes | None:
        """The QR code of the pending set-up's otpauth:// URI, as an SVG document."""
        setup = await self.pending_setup(account)
        if setup is None:
            return None
        buffer = io.BytesIO()
        segno.make(setup.uri, error="m").save(buffer, kind="svg", scale=5, border=4, omitsize=True)
        return buffer.getvalue()

    async def confirm(self, user_id: int, code: str, client: Client) -> list[str]:
        """Turn two-factor sign-in on with a code from the pending secret; the new recovery
        codes (shown once). Raises InvalidInput (field `code`)."""
        typed = normalize_code(code)
        if not typed:
            raise InvalidInput({"code": CODE_NEEDED})
        if not is_totp_code(typed):
            raise InvalidInput({"code": CODE_WRONG})
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        await self.db.write(self._confirm, user_id, typed, codes, client)
        return codes

    def _confirm(self, user_id: int, code: str, codes: list[str], client: Client) -> None:
        with self.db.writing() as session:
            row = session.exec(
                select(TwoFactor).where(col(TwoFactor.user_id) == user_id).with_for_update()
            ).first()
            user = session.get(User, user_id)
            if row is None or row.pending_secret is None or user is None:
                raise InvalidInput({"code": SETUP_GONE})
            secret = self._open(row.pending_secret, user_id)
            if secret is None:
                raise InvalidInput({"code": SETUP_GONE})
            step = matching_step(secret, code, now=self.clock(), after=0)
            if step is None:
                raise InvalidInput({"code": CODE_WRONG})
            now = utcnow()
            row.secret, row.enabled_at, row.last_step = row.pending_secret, now, step
            row.pending_secret = row.pending_at = None
            session.add(row)
            self._replace_codes(session, user_id, codes, now)
            events.record(session, user_id=user_id, kind="totp_enabled", client=client, now=now)
            self.emails.notify(session, user, "totp_enabled", client=client)

    @staticmethod
    def _replace_codes(session: Session, user_id: int, codes: list[str], now: datetime) -> None:
        session.exec(delete(RecoveryCode).where(col(RecoveryCode.user_id) == user_id))
        session.add_all(
            RecoveryCode(user_id=user_id, code_hash=recovery_hash(code), created_at=now)
            for code in codes
        )

    # -- recovery codes and turning off -----------------------------------------------

    async def renew_codes(self, user_id: int, client: Client) -> list[str]:
        """10 new recovery codes (shown once); the old ones stop working. InvalidInput when
        two-factor sign-in is off."""
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        await self.db.write(self._renew, user_id, codes, client)
        return codes

    def _renew(self, user_id: int, codes: list[str], client: Client) -> None:
        with self.db.writing() as session:
            row = session.exec(
                select(TwoFactor).where(col(TwoFactor.user_id) == user_id).with_for_update()
            ).first()
            user = session.get(User, user_id)
            if row is None or row.secret is None or user is None:
                raise InvalidInput({"code": NOT_ENABLED})
            now = utcnow()
            self._replace_codes(session, user_id, codes, now)
            events.record(
                session, user_id=user_id, kind="recovery_codes_renewed", client=client, now=now
            )
            self.emails.notify(session, user, "recovery_codes_renewed", client=client)

    async def disable(self, user_id: int, client: Client) -> bool:
        """Turn two-factor sign-in off and remove the recovery codes; whether it was on."""
        return await self.db.write(self._disable, user_id, client)

    def _disable(self, user_id: int, client: Client) -> bool:
        with self.db.writing() as session:
            row = session.exec(
                select(TwoFactor).where(col(TwoFactor.user_id) == user_id).with_for_update()
            ).first()
            user = session.get(User, user_id)
            if row is None or user is None:
                return False
            was_on = row.secret is not None
            session.delete(row)
            session.exec(delete(RecoveryCode).where(col(RecoveryCode.user_id) == user_id))
            session.exec(delete(SigninChallenge).where(col(SigninChallenge.user_id) == user_id))
            if was_on:
                events.record(session, user_id=user_id, kind="totp_disabled", client=client)
                self.emails.notify(session, user, "totp_disabled", client=client)
            return was_on

    # -- the second step of a sign-in ---------------------------------------------------

    async def begin_signin(self, pending: SecondFactorRequired, *, browser: str) -> str:
        """A challenge for the browser whose password was right; its token (for a form)."""
        token = secrets.token_urlsafe(32)
        await self.db.write(self._begin_signin, pending, browser, token)
        return token

    def _begin_signin(self, pending: SecondFactorRequired, browser: str, token: str) -> None:
        now = utcnow()
        with self.db.writing() as session:
            version = session.exec(
                select(User.credential_version).where(col(User.id) == pending.account.id)
            ).first()
            if version is None:
                raise SigninFailed
            # Challenges past their end are of no use to anyone.
            session.exec(delete(SigninChallenge).where(col(SigninChallenge.expires_at) < now))
            session.add(
                SigninChallenge(
                    token_hash=challenge_hash(token),
                    user_id=pending.account.id,
                    browser_hash=browser_hash(browser),
                    remember=pending.remember,
                    credential_version=version,
                    created_at=now,
                    expires_at=now + timedelta(seconds=CHALLENGE_LIFETIME),
                )
            )

    async def complete_signin(
        self,
        *,
        token: str,
        browser: str,
        code: str,
        client: Client,
        replaces: str | None = None,
    ) -> NewSession:
        """Check the second factor and open the session as a password sign-in does.

        Raises InvalidInput (no code), ChallengeExpired (start again), WrongCode (401,
        counted against the account's sign-in limit) or Throttled.
        """
        typed = normalize_code(code)
        if not typed:
            raise InvalidInput({"code": CODE_NEEDED})
        if not token or len(token) > 128:
            raise ChallengeExpired
        presented = challenge_hash(token)
        user_id = await self.db.read(self._challenge_owner, presented, browser_hash(browser))
        if user_id is None:
            raise ChallengeExpired
        limits = self.throttle.signin_limits(throttle.account_key(user_id, ""), client)
        try:
            passed = await self.db.write(
                self._check_code, presented, browser_hash(browser), typed, limits, client
            )
        except Throttled:
            await self.db.write(self._note_throttled, user_id, client)
            raise
        if isinstance(passed, WrongCode):
            raise passed
        return await self.sessions.open_checked(
            passed.user,
            client,
            passed.reservation,
            remember=passed.remember,
            replaces=replaces,
        )

    def _challenge_owner(self, presented: str, browser: str) -> int | None:
        with self.db.reading() as session:
            row = session.exec(
                select(SigninChallenge).where(col(SigninChallenge.token_hash) == presented)
            ).first()
        if row is None or not self._usable(row, browser):
            return None
        return row.user_id

    @staticmethod
    def _usable(row: SigninChallenge, browser: str) -> bool:
        return (
            hmac.compare_digest(row.browser_hash, browser)
            and row.failures < CHALLENGE_FAILURES
            and _aware(row.expires_at) > utcnow()
        )

    def _check_code(
        self,
        presented: str,
        browser: str,
        code: str,
        limits: list[throttle.Limit],
        client: Client,
    ) -> _Passed | WrongCode:
        now = utcnow()
        with self.db.writing() as session:
            # Counted before it is evaluated: concurrent codes for one account queue here.
            reservation = throttle.reserve_in(session, limits, action="signin", now=now)
            challenge = session.exec(
                select(SigninChallenge)
                .where(col(SigninChallenge.token_hash) == presented)
                .with_for_update()
            ).first()
            if challenge is None or not self._usable(challenge, browser):
                raise ChallengeExpired
            user = session.get(User, challenge.user_id)
            row = session.exec(
                select(TwoFactor)
                .where(col(TwoFactor.user_id) == challenge.user_id)
                .with_for_update()
            ).first()
            if (
                user is None
                or row is None
                or row.secret is None
                or user.credential_version != challenge.credential_version
            ):
                # Turned off, or a new password, since the password step: start again.
                raise ChallengeExpired
            assert user.id is not None
            if len(code) <= MAX_CODE_LENGTH and self._accept(session, user, row, code, client):
                session.delete(challenge)
                return _Passed(user, reservation, challenge.remember)
            challenge.failures += 1
            session.add(challenge)
            events.record(
                session,
                user_id=user.id,
                kind="signin_failed",
                client=client,
                detail="wrong two-factor code",
                now=now,
            )
            return WrongCode(can_retry=challenge.failures < CHALLENGE_FAILURES)

    def _accept(
        self, session: Session, user: User, row: TwoFactor, code: str, client: Client
    ) -> bool:
        """Spend the code if it is good: a TOTP step newer than the last, or an unused
        recovery code (inside the caller's transaction, which holds the row locks)."""
        assert user.id is not None
        assert row.secret is not None
        if is_totp_code(code):
            secret = self._open(row.secret, user.id)
            if secret is None:
                return False
            step = matching_step(secret, code, now=self.clock(), after=row.last_step)
            if step is None:
                return False
            row.last_step = step
            session.add(row)
            return True
        found = session.exec(
            select(RecoveryCode)
            .where(col(RecoveryCode.user_id) == user.id)
            .where(col(RecoveryCode.code_hash) == recovery_hash(code))
            .where(col(RecoveryCode.used_at).is_(None))
            .with_for_update()
        ).first()
        if found is None:
            return False
        found.used_at = utcnow()
        session.add(found)
        session.flush()
        left = session.exec(
            select(func.count())
            .select_from(RecoveryCode)
            .where(col(RecoveryCode.user_id) == user.id)
            .where(col(RecoveryCode.used_at).is_(None))
        ).one()
        events.record(session, user_id=user.id, kind="recovery_code_used", client=client)
        self.emails.notify(
            session, user, "recovery_code_used", client=client, context={"codes_left": int(left)}
        )
        return True

    def _note_throttled(self, user_id: int, client: Client) -> None:
        with self.db.writing() as session:
            events.record_throttled(session, user_id=user_id, client=client)
