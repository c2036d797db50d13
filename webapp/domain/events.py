"""The account's security history: what happened, when, from which browser and address.

`record` adds an event to the caller's transaction, so an event exists exactly when the
change it records does. Failed sign-ins for a name no account has are never recorded
anywhere a user can see.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import insert
from sqlmodel import Session, SQLModel, col, select

from webapp.models import Client, SecurityEvent, User, utcnow

EventKind = Literal[
    "signin",
    "signin_failed",
    "signout",
    "throttled",
    "password_changed",
    "password_reset",
    "email_changed",
    "email_verified",
    "email_reverted",
    "username_changed",
    "session_revoked",
    "totp_enabled",
    "totp_disabled",
    "recovery_code_used",
    "recovery_codes_renewed",
    "passkey_added",
    "passkey_removed",
]
# A burst of throttled attempts is one event per this many seconds, not one per attempt.
THROTTLED_QUIET = 15 * 60


# Built once: events are written on every sign-in, and building the statement costs more
# than running it.
_INSERT = insert(SQLModel.metadata.tables["security_events"])


def record(
    session: Session,
    *,
    user_id: int,
    kind: EventKind,
    client: Client | None = None,
    detail: str = "",
    now: datetime | None = None,
) -> None:
    session.execute(
        _INSERT,
        {
            "user_id": user_id,
            "kind": kind,
            "created_at": now or utcnow(),
            "client_addr": (client.address if client else "")[:64],
            "user_agent": (client.user_agent if client else "")[:512],
            "detail": detail[:300],
        },
    )


def account_exists(session: Session, user_id: int) -> bool:
    """Whether the user is still there, holding it (FOR KEY SHARE on PostgreSQL) until the
    caller's transaction ends, so an account deletion cannot slip between this check and
    the event that refers to it (it waits, or it came first and this is False)."""
    found = session.exec(
        select(User.id).where(col(User.id) == user_id).with_for_update(read=True, key_share=True)
    ).first()
    return found is not None


def note(
    session: Session,
    *,
    user_id: int,
    kind: EventKind,
    client: Client,
    detail: str = "",
) -> None:
    """A failure or throttling event written on its own (no other change goes with it):
    nothing if the account was deleted meanwhile, one "throttled" per quarter hour."""
    if not account_exists(session, user_id):
        return
    if kind == "throttled":
        record_throttled(session, user_id=user_id, client=client)
    else:
        record(session, user_id=user_id, kind=kind, client=client, detail=detail)


def record_throttled(session: Session, *, user_id: int, client: Client) -> None:
    """One "throttled" event per quarter hour per account, however many attempts."""
    now = utcnow()
    recent = session.exec(
        select(SecurityEvent.id)
        .where(col(SecurityEvent.user_id) == user_id)
        .where(col(SecurityEvent.kind) == "throttled")
        .where(col(SecurityEvent.created_at) > now - timedelta(seconds=THROTTLED_QUIET))
        .limit(1)
    ).first()
    if recent is None:
        record(session, user_id=user_id, kind="throttled", client=client, now=now)
