"""Fixtures: a real database per backend (SQLite always, PostgreSQL when
TEST_DATABASE_URL is set), an app per test, and helpers that act like a browser."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before webapp.app is imported anywhere: no generated development key, no surprises.
os.environ.setdefault("APP_ENV", "test")
os.environ.setdefault("SECRET_KEY", "test-secret-key-that-is-long-enough-0123456789")

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.testclient import TestClient

from webapp.app import create_app
from webapp.db import normalize_database_url
from webapp.schema import upgrade_to_head
from webapp.settings import Settings

SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"
TABLES = ("signin_failures", "user_sessions", "users")
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


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


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "app_env": "test",
        "secret_key": SECRET,
        "database_url": database_url,
        "bcrypt_rounds": 4,
        "auto_migrate": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


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


def new_client(app: Starlette, base_url: str = "http://testserver") -> TestClient:
    """Another browser: its own cookies, its own CSRF identity."""
    return TestClient(app, base_url=base_url, follow_redirects=False)


# -- acting like a browser ----------------------------------------------------------


def csrf_token_in(html: str) -> str:
    match = CSRF_META.search(html)
    assert match, "no csrf-token meta in the page"
    return match.group(1)


def csrf_token(client: TestClient, path: str = "/") -> str:
    return csrf_token_in(client.get(path).text)


def register(
    client: TestClient,
    username: str = "alice",
    email: str = "alice@example.com",
    password: str = PASSWORD,
    confirm: str | None = None,
    **headers: str,
):
    token = csrf_token(client, "/register")
    return client.post(
        "/register",
        data={
            "username": username,
            "email": email,
            "password": password,
            "confirm_password": password if confirm is None else confirm,
            "csrf_token": token,
        },
        headers=headers,
    )


def login(client: TestClient, username: str = "alice", password: str = PASSWORD, **fields: str):
    token = csrf_token(client, "/login")
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token, **fields}
    )


def signed_in(client: TestClient, username: str = "alice", email: str | None = None) -> str:
    """Register and sign in; returns the CSRF token of the new session."""
    response = register(client, username, email or f"{username.lower()}@example.com")
    assert response.status_code == 303, response.text
    response = login(client, username)
    assert response.status_code == 303, response.text
    return csrf_token(client, "/")


def patch_profile(client: TestClient, name: str, token: str, /, htmx: bool = True, **fields: str):
    headers = {"X-CSRF-Token": token}
    if htmx:
        headers["HX-Request"] = "true"
    return client.patch(f"/partial/{name}", data=fields, headers=headers)


def put_profile(client: TestClient, name: str, token: str, /, htmx: bool = True, **fields: str):
    headers = {"X-CSRF-Token": token}
    if htmx:
        headers["HX-Request"] = "true"
    return client.put(f"/update/{name}", data=fields, headers=headers)


def rows(app: Starlette, sql: str, **params: object) -> list[tuple[Any, ...]]:
    engine = app.state.services.db.engine
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql), params)]


ROOT = Path(__file__).resolve().parent.parent
