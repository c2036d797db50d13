"""Two uvicorn instances, one PostgreSQL database: sessions, sign-outs, throttling and
registration races hold across instances, as behind a load balancer.

Both instances start together on an empty database, so their start-up
migrations race too (the advisory lock in migrations/env.py serialises them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.helpers import PASSWORD
from tests.live import (
    LiveServer,
    base_env,
    csrf_token_in,
    live_servers,
    page_token,
    postgres_database,
    require_postgres_url,
)
from webapp.db import normalize_database_url
from webapp.migrate import pending_revisions

pytestmark = pytest.mark.multi_instance

# Seconds any single request may take before the test gives up on it.
REQUEST_TIMEOUT = 15.0


class Browser:
    """One browser whose cookie jar follows it from instance to instance (cookies ignore ports)."""

    def __init__(self) -> None:
        self.client = httpx.Client(follow_redirects=False, timeout=REQUEST_TIMEOUT)

    def get(self, server: LiveServer, path: str, **kwargs) -> httpx.Response:
        return self.client.get(server.url + path, **kwargs)

    def post(self, server: LiveServer, path: str, **kwargs) -> httpx.Response:
        return self.client.post(server.url + path, **kwargs)

    def patch(self, server: LiveServer, path: str, **kwargs) -> httpx.Response:
        return self.client.patch(server.url + path, **kwargs)

    def token(self, server: LiveServer, path: str = "/") -> str:
        return page_token(self.client, server.url + path)

    def register(self, server: LiveServer, name: str, email: str) -> httpx.Response:
        fields = {"username": name, "email": email, "csrf_token": self.token(server, "/register")}
        fields |= {"password": PASSWORD, "confirm_password": PASSWORD}
        return self.post(server, "/register", data=fields)

    def login(self, server: LiveServer, name: str, password: str = PASSWORD) -> httpx.Response:
        fields = {"username": name, "password": password}
        return self.post(
            server, "/login", data=fields | {"csrf_token": self.token(server, "/login")}
        )

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    require_postgres_url()
    with postgres_database("webapp_multi") as url:
        yield url


@pytest.fixture(scope="module")
def instances(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, LiveServer]]:
    # AUTO_MIGRATE on an empty database: A and B both try to migrate as they start.
    # Registrations from one test client: well past the per-client hourly limit.
    env = base_env(database_url, AUTO_MIGRATE="true", REGISTRATION_LIMIT="1000")
    with live_servers(env, tmp_path_factory.mktemp("multi"), "A", "B") as (a, b):
        yield a, b
        for server in (a, b):
            assert server.process.poll() is None, server.log()
            assert "Traceback" not in server.log(), server.log()


@pytest.fixture
def browser() -> Iterator[Browser]:
    new = Browser()
    yield new
    new.close()


def _scalar(database_url: str, sql: str, **params: object) -> object:
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql), params).scalar_one()
    finally:
        engine.dispose()


def test_both_instances_migrated_the_empty_database_once(instances, database_url):
    assert pending_revisions(database_url) == []
    assert _scalar(database_url, "SELECT count(*) FROM alembic_version") == 1


def test_a_sign_in_on_a_works_on_b(instances, browser):
    a, b = instances
    assert browser.register(a, "alice", "alice@example.com").status_code == 303
    response = browser.login(a, "alice")
    assert response.status_code == 303
    assert "access_token" in response.cookies
    page = browser.get(b, "/")
    assert page.status_code == 200
    assert "Welcome, alice" in page.text
    # An unsafe request on B with the token of B's page: CSRF and session agree across instances.
    token = csrf_token_in(page.text)
    response = browser.patch(
        b,
        "/partial/alice",
        data={"username": "Alice"},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert response.status_code == 200, response.text
    assert "Welcome, Alice" in browser.get(a, "/").text


def test_a_sign_out_on_b_kills_the_token_on_a(instances, browser):
    a, b = instances
    assert browser.register(a, "bob", "bob@example.com").status_code == 303
    assert browser.login(a, "bob").status_code == 303
    token = browser.client.cookies["access_token"]
    browser_cookie = browser.client.cookies["browser"]
    signed_in_page = browser.get(a, "/").text
    csrf = csrf_token_in(signed_in_page)

    response = browser.post(b, "/logout", data={"csrf_token": browser.token(b)})
    assert response.status_code == 303

    # Replay the old cookies on A, as a thief who copied them would.
    with httpx.Client(base_url=a.url, follow_redirects=False, timeout=REQUEST_TIMEOUT) as thief:
        headers = {"Cookie": f"access_token={token}; browser={browser_cookie}"}
        home = thief.get("/", headers=headers)
        assert home.status_code == 200
        assert "Welcome, bob" not in home.text
        response = thief.patch(
            "/partial/bob",
            data={"username": "robert"},
            headers=headers | {"X-CSRF-Token": csrf, "HX-Request": "true"},
        )
        assert response.status_code == 401


def test_failed_sign_ins_on_a_and_b_add_up_to_one_throttle(instances, browser, database_url):
    a, b = instances
    assert browser.register(a, "carol", "carol@example.com").status_code == 303
    for attempt in range(10):
        server = (a, b)[attempt % 2]
        response = browser.login(server, "carol", "wrong password")
        assert response.status_code == 401, (attempt, server.name)
    user_id = _scalar(database_url, "SELECT id FROM users WHERE username_key = 'carol'")
    failures = _scalar(
        database_url, "SELECT count(*) FROM signin_failures WHERE key = :key", key=f"user:{user_id}"
    )
    assert failures == 10
    for server in (a, b):
        # Throttled on both instances, even with the right password.
        response = browser.login(server, "carol")
        assert response.status_code == 429, server.name
        assert int(response.headers["retry-after"]) > 0


def test_parallel_registrations_of_one_name_leave_one_account(instances, database_url):
    a, b = instances
    spellings = ["dave", "Dave", "DAVE", "dAve", "daVe", "davE", "DAve", "daVE"] * 3
    browsers = [Browser() for _ in spellings]
    try:
        prepared = []
        for index, (name, who) in enumerate(zip(spellings, browsers, strict=True)):
            server = (a, b)[index % 2]
            fields = {
                "username": name,
                "email": f"dave{index}@example.com",
                "password": PASSWORD,
                "confirm_password": PASSWORD,
                "csrf_token": who.token(server, "/register"),
            }
            prepared.append((who, server, fields))
        start = threading.Barrier(len(prepared), timeout=REQUEST_TIMEOUT)

        def race(job: tuple[Browser, LiveServer, dict[str, str]]) -> int:
            who, server, fields = job
            start.wait()
            return who.post(server, "/register", data=fields).status_code

        with ThreadPoolExecutor(max_workers=len(prepared)) as pool:
            statuses = list(pool.map(race, prepared, timeout=2 * REQUEST_TIMEOUT))
    finally:
        for who in browsers:
            who.close()
    assert sorted(statuses) == [303] + [409] * (len(spellings) - 1), statuses
    assert _scalar(database_url, "SELECT count(*) FROM users WHERE username_key = 'dave'") == 1
