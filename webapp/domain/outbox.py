"""The outbox: e-mails written in the same transaction as the change that causes them.

`enqueue` renders a message from `templates/email/<kind>.txt` (and `.html` when there is
one) and adds it to the caller's transaction, so a message is neither lost nor sent for
a change that did not happen. `webapp/mail.py` delivers it.

A link's token never reaches the database: the message holds TOKEN_MARK where the token
goes and a random `token_nonce`; the token is HMAC(key, nonce), which only the app (with
SECRET_KEY) can compute, and only its SHA-256 is stored (email_tokens.token_hash).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from sqlalchemy import insert
from sqlmodel import Session, SQLModel

from webapp.models import utcnow

TOKEN_MARK = "@@TOKEN@@"
# Set in a session's `info` when it queued a message.
QUEUED = "webapp.outbox.queued"
# Built once: a notice is queued on every sign-in from a new browser.
_INSERT = insert(SQLModel.metadata.tables["outbox"])


def link_token(key: bytes, nonce: str) -> str:
    """The token a link carries: 256 bits, derived from the row's nonce with the app's key."""
    digest = hmac.new(key, nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class Mailer:
    """What enqueueing needs: the templates, the links' origin, the token key."""

    templates: jinja2.Environment
    public_url: str
    token_key: bytes
    app_name: str = "Accounts"

    def link(self, path: str) -> str:
        """An absolute link under PUBLIC_URL (never the request's Host)."""
        return f"{self.public_url}{path}"

    def enqueue(
        self,
        session: Session,
        *,
        kind: str,
        to: str,
        user_id: int | None,
        context: Mapping[str, Any],
        token_nonce: str | None = None,
    ) -> None:
        """Render `kind` and add it to the caller's transaction."""
        values = {"app_name": self.app_name, "public_url": self.public_url, **context}
        subject = self.templates.get_template(f"email/{kind}.subject.txt").render(values).strip()
        text = self.templates.get_template(f"email/{kind}.txt").render(values)
        html = None
        with contextlib.suppress(jinja2.TemplateNotFound):
            html = self.templates.get_template(f"email/{kind}.html").render(values)
        now = utcnow()
        session.execute(
            _INSERT,
            {
                "user_id": user_id,
                "kind": kind,
                "to_address": to,
                "subject": subject[:200],
                "body_text": text,
                "body_html": html,
                "token_nonce": token_nonce,
                "created_at": now,
                "next_attempt_at": now,
                "leased_until": None,
                "attempts": 0,
                "last_error": None,
                "sent_at": None,
                "failed_at": None,
            },
        )
        # The sender (webapp/mail.py) is woken when this transaction commits.
        session.info[QUEUED] = True

    def finish(self, body: str, nonce: str | None) -> str:
        """The text as sent: the token put where TOKEN_MARK stands."""
        if nonce is None:
            return body
        return body.replace(TOKEN_MARK, link_token(self.token_key, nonce))
