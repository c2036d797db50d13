"""The whole throttling decision: which keys count, their limits and windows, and how long
to wait (the 429's Retry-After).

Every limited action reserves an attempt *before* it is evaluated, in one write
transaction with the count (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction
advisory lock per key), so however many requests arrive at once, no more than
`limit` of them are ever evaluated in a window. A successful sign-in releases
its reservation; a failure leaves it standing as the failure. Rows live in the
database, so every worker and instance agrees.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, insert, text
from sqlmodel import Session, SQLModel, col, delete, select

from webapp.db import Database
from webapp.domain.errors import Throttled, ThrottledAction
from webapp.domain.validation import clean_email, email_key
from webapp.models import Client, SigninFailure, utcnow
from webapp.settings import Settings

HOUR = 3600
# Rows older than the longest window are deleted as new ones are written.
LONGEST_WINDOW = HOUR


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    limit: int
    # Seconds.
    window: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """The attempt rows one reservation wrote (deleted again if the attempt succeeds)."""

    ids: tuple[int, ...]


def canonical_identifier(identifier: str) -> str:
    """What an identifier means, however it was typed: Unicode width (NFKC), case, and
    for an address the IDNA form of its domain. Lookups and throttling both use it."""
    text_ = unicodedata.normalize("NFKC", identifier.strip())
    try:
        return email_key(clean_email(text_))
    except ValueError:
        return text_.casefold()


def account_key(user_id: int | None, identifier: str) -> str:
    """One counter per account whatever spelling was used; for a name no account has, one
    counter per canonical spelling, hashed so any length or character fits the column."""
    if user_id is not None:
        return f"user:{user_id}"
    digest = hashlib.sha256(canonical_identifier(identifier).encode()).hexdigest()
    return f"name:{digest}"


def client_key(address: str) -> str:
    """One counter per client address; an IPv6 client by its /64, which it owns whole."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return f"client:{address[:64]}"
    if parsed.version == 6:
        mapped = parsed.ipv4_mapped
        if mapped is not None:
            return f"client:{mapped}"
        return f"client:{ipaddress.ip_network(f'{parsed}/64', strict=False)}"
    return f"client:{parsed}"


def _lock_id(key: str) -> int:
    """A signed 64-bit advisory-lock id for a key."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


# The statements of every reservation, built once: building a statement costs more than
# running it, and a sign-in reserves before every password check.
_failures = SQLModel.metadata.tables["signin_failures"]
_LOCK = text("SELECT pg_advisory_xact_lock(:id)")
_COUNTED = (
    select(_failures.c.key, _failures.c.failed_at)
    .where(_failures.c.key.in_(bindparam("keys", expanding=True)))
    .where(_failures.c.failed_at > bindparam("since"))
    .order_by(_failures.c.failed_at)
)
_EXPIRED = delete(_failures).where(_failures.c.failed_at <= bindparam("before"))
_ADD = insert(_failures).returning(_failures.c.id, sort_by_parameter_order=True)
_RELEASE = delete(_failures).where(_failures.c.id.in_(bindparam("ids", expanding=True)))


def reserve_in(
    session: Session, limits: Sequence[Limit], *, action: ThrottledAction, now: datetime
) -> Reservation:
    """Count and reserve one attempt against every limit, inside the caller's write
    transaction; raises Throttled (and writes nothing) when any limit is used up."""
    keys = sorted({limit.key for limit in limits})
    if session.get_bind().dialect.name == "postgresql":
        # Concurrent reservations of one key queue here until the first commits; SQLite's
        # BEGIN IMMEDIATE already admits one writer at a time.
        for key in keys:
            session.execute(_LOCK, {"id": _lock_id(key)})
    since = now - timedelta(seconds=max(limit.window for limit in limits))
    rows = session.execute(_COUNTED, {"keys": keys, "since": since}).all()
    wait = 0.0
    for limit in limits:
        start = now - timedelta(seconds=limit.window)
        times = [at for key, at in rows if key == limit.key and at > start]
        if len(times) >= limit.limit:
            # Allowed again once all but limit-1 attempts have left the window.
            frees_at = times[len(times) - limit.limit] + timedelta(seconds=limit.window)
            wait = max(wait, (frees_at - now).total_seconds())
    if wait > 0:
        raise Throttled(max(1, math.ceil(wait)), action=action)
    session.execute(_EXPIRED, {"before": now - timedelta(seconds=LONGEST_WINDOW)})
    added = session.execute(_ADD, [{"key": key, "failed_at": now} for key in keys])
    return Reservation(tuple(added.scalars()))


def forgive_in(session: Session, key: str) -> None:
    """Forget every attempt counted against a key (the owner proved who they are)."""
    session.exec(delete(SigninFailure).where(col(SigninFailure.key) == key))


def release_in(session: Session, reservation: Reservation) -> None:
    """Forget a reservation whose attempt succeeded (inside the caller's transaction)."""
    if reservation.ids:
        session.execute(_RELEASE, {"ids": list(reservation.ids)})


class Throttle:
    """The app's limits, from settings: sign-in and current-password guesses per account and
    per client, registrations per client, renames per account."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def signin_limits(self, account: str, client: Client) -> list[Limit]:
        window = self.settings.throttle_window
        return [
            Limit(account, self.settings.throttle_account_limit, window),
            Limit(client_key(client.address), self.settings.throttle_client_limit, window),
        ]

    def passkey_limits(self, client: Client) -> list[Limit]:
        """A passkey sign-in counts against the client's cap only: a signature cannot be
        guessed, and an attacker guessing the password must not lock the owner's passkey."""
        window = self.settings.throttle_window
        return [Limit(client_key(client.address), self.settings.throttle_client_limit, window)]

    def registration_limits(self, client: Client) -> list[Limit]:
        return [
            Limit(f"register:{client_key(client.address)}", self.settings.registration_limit, HOUR)
        ]

    def rename_limits(self, user_id: int) -> list[Limit]:
        return [Limit(f"rename:user:{user_id}", self.settings.rename_limit, HOUR)]

    async def reserve(self, limits: Sequence[Limit], *, action: ThrottledAction) -> Reservation:
        """Reserve one attempt (its own transaction); raises Throttled."""
        return await self.db.write(self._reserve, limits, action)

    def _reserve(self, limits: Sequence[Limit], action: ThrottledAction) -> Reservation:
        with self.db.writing() as session:
            return reserve_in(session, limits, action=action, now=utcnow())

    async def release(self, reservation: Reservation) -> None:
        await self.db.write(self._release, reservation)

    def _release(self, reservation: Reservation) -> None:
        with self.db.writing() as session:
            release_in(session, reservation)
