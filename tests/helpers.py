"""What tests share: the test secret and password, settings, and helpers that act like a
browser (CSRF tokens from pages, forms posted as a browser posts them, rows read back)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.testclient import TestClient

from webapp.settings import Settings

SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"
TABLES = (
    "signin_failures",
    "user_sessions",
    "email_tokens",
    "outbox",
    "security_events",
    "passkey_challenges",
    "users",
)
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def migration_head() -> str:
    """The newest migration revision."""
    from alembic.script import ScriptDirectory

    from webapp.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


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


def at_once(count: int, attempt: Callable[[int], T]) -> list[T]:
    """Run attempt(0..count-1) in `count` threads released together; results in index order."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = attempt(index)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]
