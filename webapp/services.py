"""What routes need from the app, built once at start-up and typed."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from starlette.requests import HTTPConnection

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
    templates: jinja2.Environment


def services(conn: HTTPConnection) -> Services:
    found: Services = conn.app.state.services
    return found
