"""The whole throttling decision: which keys count, their limits, and how long to wait.

Failures are counted in the database, so every worker and instance agrees. A
key is throttled once it has `limit` failures inside the sliding window; it is
free again when enough of them have aged out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, delete, select

from webapp.db import Database, read_in_thread, write_in_thread
from webapp.domain.errors import Throttled, ThrottledAction
from webapp.models import Client, SigninFailure, utcnow
from webapp.settings import Settings


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    limit: int


def account_key(user_id: int | None, typed_name: str) -> str:
    """One counter per account whatever spelling was used; unknown names get their own."""
    return f"user:{user_id}" if user_id is not None else f"name:{typed_name.lower()}"


def client_key(address: str) -> str:
    return f"client:{address}"


def seconds_until_allowed(
    session: Session, limits: Sequence[Limit], *, window: int, now: datetime
) -> int | None:
    """None when every key may try again, else how long until all of them may."""
    since = now - timedelta(seconds=window)
    rows = session.exec(
        select(SigninFailure.key, SigninFailure.failed_at)
        .where(col(SigninFailure.key).in_([limit.key for limit in limits]))
        .where(SigninFailure.failed_at > since)
        .order_by(col(SigninFailure.failed_at))
    ).all()
    wait = 0.0
    for limit in limits:
        times = [failed_at for key, failed_at in rows if key == limit.key]
        if len(times) >= limit.limit:
            # Allowed again once all but limit-1 failures have left the window.
            frees_at = times[len(times) - limit.limit] + timedelta(seconds=window)
            wait = max(wait, (frees_at - now).total_seconds())
    return max(1, math.ceil(wait)) if wait > 0 else None


def record_failure(session: Session, keys: Sequence[str], *, window: int, now: datetime) -> None:
    session.exec(
        delete(SigninFailure).where(col(SigninFailure.failed_at) <= now - timedelta(seconds=window))
    )
    session.add_all(SigninFailure(key=key, failed_at=now) for key in keys)


class SigninThrottle:
    """Failed sign-ins (and wrong current passwords) per account and per client."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def limits(self, account: str, client: Client) -> list[Limit]:
        return [
            Limit(account, self.settings.throttle_account_limit),
            Limit(client_key(client.address), self.settings.throttle_client_limit),
        ]

    def refuse_if_throttled(
        self,
        session: Session,
        account: str,
        client: Client,
        *,
        action: ThrottledAction = "signin",
    ) -> None:
        """Raise Throttled when the account or the client has used up its failures."""
        wait = seconds_until_allowed(
            session,
            self.limits(account, client),
            window=self.settings.throttle_window,
            now=utcnow(),
        )
        if wait is not None:
            raise Throttled(wait, action=action)

    async def check(
        self, account: str, client: Client, *, action: ThrottledAction = "signin"
    ) -> None:
        await read_in_thread(self._check, account, client, action)

    def _check(self, account: str, client: Client, action: ThrottledAction) -> None:
        with self.db.reading() as session:
            self.refuse_if_throttled(session, account, client, action=action)

    async def count_failure(self, account: str, client: Client) -> None:
        await write_in_thread(self._count_failure, account, client)

    def _count_failure(self, account: str, client: Client) -> None:
        with self.db.writing() as session:
            record_failure(
                session,
                [account, client_key(client.address)],
                window=self.settings.throttle_window,
                now=utcnow(),
            )
