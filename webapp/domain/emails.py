"""Everything e-mail decides: confirming addresses, resetting passwords, undoing an address
change, and the notices that tell an account's owner what happened.

Links carry a token of 256 bits (webapp/domain/outbox.py derives it); only its SHA-256
is stored, with its purpose, its user, the address it was sent to and its expiry. A
token is spent in the same transaction as the change it allows, and only if it is
still unspent, unexpired and bound to the user's current address where that matters.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam
from sqlmodel import Session, SQLModel, col, select, update

from webapp.db import Database
from webapp.domain import events, passwords, sessions, throttle
from webapp.domain.devices import describe
from webapp.domain.errors import InvalidInput, InvalidLink, Throttled
from webapp.domain.outbox import TOKEN_MARK, Mailer, link_token, new_nonce, token_hash
from webapp.domain.throttle import Limit, Throttle
from webapp.domain.validation import check_new_password, clean_email, email_key
from webapp.models import Client, EmailToken, User, utcnow
from webapp.settings import Settings

Purpose = Literal["verify", "reset", "revert"]
LIFETIMES: dict[Purpose, timedelta] = {
    "verify": timedelta(days=3),
    "reset": timedelta(hours=1),
    "revert": timedelta(days=7),
}
PATHS: dict[Purpose, str] = {
    "verify": "/verify-email/",
    "reset": "/password-reset/",
    "revert": "/email-revert/",
}
QUARTER = 15 * 60
_sessions = SQLModel.metadata.tables["user_sessions"]
# Built once: asked at every sign-in.
_SEEN = (
    select(_sessions.c.id)
    .where(_sessions.c.user_id == bindparam("user_id"))
    .where(_sessions.c.device_hash == bindparam("device"))
    .limit(1)
)
# Links to confirm an address, per account per 15 minutes; resets, per client and per
# address (known or not) per 15 minutes.
VERIFY_LIMIT = 3
RESET_LIMIT = 5


def moment(when: datetime) -> str:
    return when.strftime("%d %B %Y, %H:%M UTC")


def _client_context(client: Client | None, when: datetime) -> dict[str, Any]:
    if client is None:
        return {"when": moment(when), "device": None, "address": None}
    return {
        "when": moment(when),
        "device": str(describe(client.user_agent)),
        "address": client.address,
    }


@dataclass(frozen=True, slots=True)
class LinkCheck:
    """What a link's page may show: whose, and for which address."""

    username: str
    email: str


class Emails:
    def __init__(self, db: Database, settings: Settings, limits: Throttle, mailer: Mailer) -> None:
        self.db = db
        self.settings = settings
        self.throttle = limits
        self.mailer = mailer

    # -- writing links and notices (inside the caller's transaction) --------------

    def send_link(
        self,
        session: Session,
        user: User,
        purpose: Purpose,
        *,
        to: str,
        kind: str,
        context: dict[str, Any] | None = None,
    ) -> None:
        """Store a new token for `purpose` and queue the message that carries it."""
        assert user.id is not None
        nonce = new_nonce()
        now = utcnow()
        session.add(
            EmailToken(
                token_hash=token_hash(link_token(self.mailer.token_key, nonce)),
                user_id=user.id,
                purpose=purpose,
                email=to,
                created_at=now,
                expires_at=now + LIFETIMES[purpose],
            )
        )
        self.mailer.enqueue(
            session,
            kind=kind,
            to=to,
            user_id=user.id,
            context={
                "username": user.username,
                "link": self.mailer.link(PATHS[purpose] + TOKEN_MARK),
                "valid_for": _describe_lifetime(LIFETIMES[purpose]),
                **(context or {}),
            },
            token_nonce=nonce,
        )

    def notify(
        self,
        session: Session,
        user: User,
        kind: str,
        *,
        to: str | None = None,
        client: Client | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        """Queue a notice (no link token) to the account's address, or `to`."""
        self.mailer.enqueue(
            session,
            kind=kind,
            to=to or user.email,
            user_id=user.id,
            context={
                "username": user.username,
                "reset_link": self.mailer.link("/password-reset"),
                **_client_context(client, utcnow()),
                **(context or {}),
            },
        )

    def on_register(self, session: Session, user: User) -> None:
        self.send_link(session, user, "verify", to=user.email, kind="confirm_email")

    def on_email_change(self, session: Session, user: User, *, old: str, new: str) -> None:
        """The new address gets a link to confirm it; the old one, a notice that can undo."""
        self.send_link(session, user, "verify", to=new, kind="confirm_email")
        self.send_link(
            session, user, "revert", to=old, kind="email_changed", context={"new_email": new}
        )

    # -- confirming an address -----------------------------------------------------------

    async def resend_verification(self, user_id: int) -> None:
        """A new link to the current address; raises Throttled past 3 per 15 minutes."""
        limits = [Limit(f"verify:user:{user_id}", VERIFY_LIMIT, QUARTER)]
        await self.db.write(self._resend, user_id, limits)

    def _resend(self, user_id: int, limits: list[Limit]) -> None:
        with self.db.writing() as session:
            throttle.reserve_in(session, limits, action="email", now=utcnow())
            user = session.get(User, user_id)
            if user is None or user.email_verified_at is not None:
                return
            self.send_link(session, user, "verify", to=user.email, kind="confirm_email")

    def send_verification_for_signin(self, session: Session, user: User) -> None:
        """EMAIL_VERIFICATION=required: a fresh link, at most one per 15 minutes."""
        assert user.id is not None
        limits = [Limit(f"verify-signin:user:{user.id}", 1, QUARTER)]
        try:
            throttle.reserve_in(session, limits, action="email", now=utcnow())
        except Throttled:
            return
        self.send_link(session, user, "verify", to=user.email, kind="confirm_email")

    async def check(self, token: str, purpose: Purpose) -> LinkCheck:
        """The link is good (for the page a GET shows); raises InvalidLink. Changes nothing."""
        return await self.db.read(self._check, token, purpose)

    def _check(self, token: str, purpose: Purpose) -> LinkCheck:
        with self.db.reading() as session:
            row, user = self._valid(session, token, purpose)
            return LinkCheck(user.username, row.email)

    def _valid(
        self, session: Session, token: str, purpose: Purpose, *, lock: bool = False
    ) -> tuple[EmailToken, User]:
        if not token or len(token) > 128:
            raise InvalidLink(purpose)
        presented = token_hash(token)
        query = select(EmailToken, User).join(User, col(User.id) == col(EmailToken.user_id))
        query = query.where(col(EmailToken.token_hash) == presented)
        if lock:
            query = query.with_for_update()
        found = session.exec(query).first()
        if found is None:
            raise InvalidLink(purpose)
        row, user = found
        usable = (
            hmac.compare_digest(row.token_hash, presented)
            and row.purpose == purpose
            and row.used_at is None
            and _aware(row.expires_at) > utcnow()
            # A confirmation is for the address it was sent to, and only while it is the
            # account's address.
            and (purpose != "verify" or email_key(row.email) == user.email_key)
        )
        if not usable:
            raise InvalidLink(purpose)
        return row, user

    async def verify(self, token: str, client: Client | None = None) -> LinkCheck:
        return await self.db.write(self._verify, token, client)

    def _verify(self, token: str, client: Client | None) -> LinkCheck:
        with self.db.writing() as session:
            row, user = self._valid(session, token, "verify", lock=True)
            now = utcnow()
            row.used_at = now
            user.email_verified_at = now
            session.add_all([row, user])
            assert user.id is not None
            events.record(
                session, user_id=user.id, kind="email_verified", client=client, detail=row.email
            )
            return LinkCheck(user.username, row.email)

    # -- resetting a password ------------------------------------------------------------

    async def request_reset(self, raw_email: str, client: Client) -> None:
        """Queue a reset link if an account uses the address; the same work either way.

        Raises InvalidInput (not an address) or Throttled (5 per 15 minutes per client,
        and per address whether or not an account uses it)."""
        try:
            address = email_key(clean_email(raw_email))
        except ValueError as exc:
            raise InvalidInput({"email": str(exc)}) from None
        limits = [
            Limit(f"reset:{throttle.client_key(client.address)}", RESET_LIMIT, QUARTER),
            Limit(f"reset:{throttle.account_key(None, address)}", RESET_LIMIT, QUARTER),
        ]
        await self.db.write(self._request_reset, address, limits)

    def _request_reset(self, address: str, limits: list[Limit]) -> None:
        # One transaction for known and unknown addresses alike: count, look up, queue.
        with self.db.writing() as session:
            throttle.reserve_in(session, limits, action="email", now=utcnow())
            user = session.exec(select(User).where(col(User.email_key) == address)).first()
            if user is not None:
                self.send_link(session, user, "reset", to=user.email, kind="reset_password")

    async def reset_password(
        self, token: str, password: str, confirm: str, client: Client | None = None
    ) -> LinkCheck:
        """Set a new password through a reset link. InvalidInput leaves the link usable."""
        found = await self.check(token, "reset")
        user = await self.db.read(self._user_by_name, found.username)
        errors = check_new_password(password, confirm, min_length=self.settings.password_min_length)
        if not errors and (
            problem := passwords.weakness(password, username=user.username, email=user.email)
        ):
            errors["password"] = problem
        if errors:
            raise InvalidInput(errors)
        new_hash = await passwords.hash_password(password, rounds=self.settings.bcrypt_rounds)
        return await self.db.write(self._reset, token, new_hash, client)

    def _user_by_name(self, username: str) -> User:
        with self.db.reading() as session:
            user = session.exec(select(User).where(col(User.username) == username)).first()
            if user is None:
                raise InvalidLink("reset")
            return user

    def _reset(self, token: str, new_hash: str, client: Client | None) -> LinkCheck:
        with self.db.writing() as session:
            row, user = self._valid(session, token, "reset", lock=True)
            assert user.id is not None
            now = utcnow()
            # Every reset link of the account is spent with this one.
            session.exec(
                update(EmailToken)
                .where(col(EmailToken.user_id) == user.id)
                .where(col(EmailToken.purpose) == "reset")
                .where(col(EmailToken.used_at).is_(None))
                .values(used_at=now)
            )
            user.password_hash = new_hash
            user.credential_version += 1
            user.updated_at = now
            if email_key(row.email) == user.email_key:
                # The link reached the address: that confirms it.
                user.email_verified_at = user.email_verified_at or now
            session.add(user)
            sessions.revoke_all(session, user_id=user.id, now=now)
            # The owner proved control of the address: earlier failures are forgiven.
            throttle.forgive_in(session, throttle.account_key(user.id, user.username))
            self.notify(session, user, "password_changed", client=client)
            events.record(session, user_id=user.id, kind="password_reset", client=client)
            return LinkCheck(user.username, row.email)

    # -- undoing an address change -------------------------------------------------------

    async def revert(self, token: str, client: Client | None = None) -> LinkCheck:
        return await self.db.write(self._revert, token, client)

    def _revert(self, token: str, client: Client | None) -> LinkCheck:
        with self.db.writing() as session:
            row, user = self._valid(session, token, "revert", lock=True)
            assert user.id is not None
            now = utcnow()
            taken = session.exec(
                select(User.id)
                .where(col(User.email_key) == email_key(row.email))
                .where(col(User.id) != user.id)
            ).first()
            if taken is not None:
                raise InvalidLink("revert")
            session.exec(
                update(EmailToken)
                .where(col(EmailToken.user_id) == user.id)
                .where(col(EmailToken.used_at).is_(None))
                .where(col(EmailToken.purpose).in_(["revert", "verify"]))
                .values(used_at=now)
            )
            user.email, user.email_key = row.email, email_key(row.email)
            user.email_verified_at = now
            # Whoever changed the address may know the password: every session ends.
            user.credential_version += 1
            user.updated_at = now
            session.add(user)
            session.flush()
            sessions.revoke_all(session, user_id=user.id, now=now)
            self.send_link(session, user, "reset", to=user.email, kind="reset_password")
            events.record(
                session, user_id=user.id, kind="email_reverted", client=client, detail=row.email
            )
            return LinkCheck(user.username, row.email)

    # -- sign-in notices -----------------------------------------------------------------

    def on_signin(self, session: Session, user: User, client: Client, device: str) -> None:
        """A notice for a sign-in from a browser this account has never signed in from."""
        if not device:
            return
        seen = session.execute(_SEEN, {"user_id": user.id, "device": device}).first()
        if seen is None:
            self.notify(session, user, "new_browser", client=client)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _describe_lifetime(lifetime: timedelta) -> str:
    hours = int(lifetime.total_seconds() // 3600)
    if hours < 24:
        return "1 hour" if hours == 1 else f"{hours} hours"
    days = hours // 24
    return "1 day" if days == 1 else f"{days} days"
