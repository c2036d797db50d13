"""Fixtures: a real database per backend (SQLite always, PostgreSQL when
TEST_DATABASE_URL is set), an app per test, and browser-like clients.
Helpers live in tests/helpers.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers import SECRET

# Before webapp.app is imported anywhere: no generated development key, no surprises.
os.environ.setdefault("APP_ENV", "test")
os.environ.setdefault("SECRET_KEY", SECRET)

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.helpers import TABLES, make_settings
from webapp.app import create_app
from webapp.db import normalize_database_url
from webapp.migrate import upgrade_to_head
from webapp.settings import Settings


def _required(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")


def _postgres_database(tmp_name: str) -> Iterator[str]:
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        message = "TEST_DATABASE_URL is not set, so the PostgreSQL half of the suite is skipped"
        if _required("REQUIRE_POSTGRES"):
            pytest.fail(message + " (REQUIRE_POSTGRES is set)")
        pytest.skip(message)
    admin = create_engine(normalize_database_url(base), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{tmp_name}"'))
    except Exception as exc:
        admin.dispose()
        message = f"PostgreSQL at TEST_DATABASE_URL cannot be used: {type(exc).__name__}"
        if _required("REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    url = make_url(normalize_database_url(base)).set(database=tmp_name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{tmp_name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database of each kind, shared by the tests of a session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        upgrade_to_head(url)
        yield url
        return
    for url in _postgres_database(f"webapp_test_{uuid.uuid4().hex[:12]}"):
        upgrade_to_head(url)
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[Starlette]:
    application = create_app(settings)
    yield application
    engine = application.state.services.db.engine
    with engine.begin() as connection:
        for table in TABLES:
            connection.execute(text(f"DELETE FROM {table}"))
    engine.dispose()


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture
def https_client(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as test_client:
        yield test_client
