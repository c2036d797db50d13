"""What routes need from the app, built once at start-up and typed."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.templating import Jinja2Templates

from webapp.accounts import Accounts
from webapp.assets import StaticAssets
from webapp.auth import TokenIssuer
from webapp.db import Database
from webapp.settings import Settings


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    db: Database
    accounts: Accounts
    tokens: TokenIssuer
    csrf_key: bytes
    assets: StaticAssets
    templates: Jinja2Templates


def services(conn: HTTPConnection) -> Services:
    found: Services = conn.app.state.services
    return found
