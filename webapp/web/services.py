"""What routes need from the app, built once at start-up (in `app.py`) and typed."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from starlette.requests import HTTPConnection

from webapp.db import Database
from webapp.domain.accounts import Accounts
from webapp.domain.activity import Activity
from webapp.domain.emails import Emails
from webapp.domain.outbox import Mailer
from webapp.domain.passkeys import PasskeyService
from webapp.domain.sessions import Sessions
from webapp.domain.twofactor import TwoFactorService
from webapp.settings import Settings
from webapp.web.assets import StaticAssets
from webapp.web.tokens import TokenIssuer


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    db: Database
    accounts: Accounts
    sessions: Sessions
    emails: Emails
    # Renders and queues e-mails; webapp/mail.py delivers them.
    mailer: Mailer
    tokens: TokenIssuer
    csrf_key: bytes
    assets: StaticAssets
    templates: jinja2.Environment
    # The security history, the export and deleting an account.
    activity: Activity
    # Two-factor sign-in: the authenticator app, recovery codes, the second step.
    twofactor: TwoFactorService
    # Passkeys (WebAuthn): adding and removing them, and signing in with one.
    passkeys: PasskeyService


def services(conn: HTTPConnection) -> Services:
    found: Services = conn.app.state.services
    return found
