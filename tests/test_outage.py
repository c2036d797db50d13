"""A database outage, cut for real: a TCP proxy between a uvicorn process and PostgreSQL.

While the proxy is closed the app answers 503 quickly (its own page, or the JSON
health check) and writes nothing; once it is open again the same process serves
the same requests without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from tests.helpers import PASSWORD, make_settings, patch_profile, signed_in
from tests.live import (
    LiveServer,
    TcpProxy,
    base_env,
    page_token,
    postgres_database,
    require_postgres_url,
    tcp_proxy,
)
from webapp.app import create_app
from webapp.db import normalize_database_url
from webapp.migrate import upgrade_to_head

# The contract: an outage is answered within this many seconds, never a hang.
BOUND = 2.0
TABLES = ("users", "user_sessions", "signin_failures")


@dataclass
class Outage:
    server: LiveServer
    proxy: TcpProxy
    database_url: str

    def counts(self) -> dict[str, int]:
        """Row counts read around the proxy, straight from PostgreSQL."""
        engine = create_engine(normalize_database_url(self.database_url))
        try:
            with engine.connect() as connection:
                return {
                    table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                    for table in TABLES
                }
        finally:
            engine.dispose()


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[Outage]:
    require_postgres_url()
    with postgres_database("webapp_outage") as database_url:
        upgrade_to_head(database_url)
        real = make_url(normalize_database_url(database_url))
        with tcp_proxy((real.host or "127.0.0.1", real.port or 5432)) as proxy:
            proxied = real.set(host="127.0.0.1", port=proxy.port)
            env = base_env(proxied.render_as_string(hide_password=False), AUTO_MIGRATE="false")
            server = LiveServer("outage", env, tmp_path)
            try:
                server.wait_until_ready()
                yield Outage(server, proxy, database_url)
            finally:
                server.stop()


def _timed(send) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = send()
    return response, time.monotonic() - started


def _browser(server: LiveServer) -> httpx.Client:
    # A timeout well past the bound, so a hang is measured rather than cut short.
    return httpx.Client(base_url=server.url, follow_redirects=False, timeout=15.0)


def _sign_up_and_in(browser: httpx.Client, name: str) -> None:
    token = page_token(browser, "/register")
    fields = {"username": name, "email": f"{name}@example.com", "csrf_token": token}
    fields |= {"password": PASSWORD, "confirm_password": PASSWORD}
    assert browser.post("/register", data=fields).status_code == 303
    token = page_token(browser, "/login")
    login = {"username": name, "password": PASSWORD, "csrf_token": token}
    assert browser.post("/login", data=login).status_code == 303


def _assert_error_page(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="flash"' in response.text
    assert "Service unavailable" in response.text
    assert "Traceback" not in response.text
    assert response.headers["retry-after"] == "5"
    assert "content-security-policy" in response.headers


def test_an_outage_answers_503_quickly_and_the_app_recovers(outage: Outage) -> None:
    server = outage.server
    with _browser(server) as alice, _browser(server) as guest, _browser(server) as newcomer:
        _sign_up_and_in(alice, "alice")
        alice_token = page_token(alice, "/")
        login_token = page_token(guest, "/login")
        register_token = page_token(newcomer, "/register")
        before = outage.counts()

        def healthz() -> httpx.Response:
            return guest.get("/healthz")

        def home() -> httpx.Response:
            return alice.get("/")

        def login() -> httpx.Response:
            fields = {"username": "alice", "password": PASSWORD, "csrf_token": login_token}
            return guest.post("/login", data=fields)

        def register() -> httpx.Response:
            fields = {"username": "bob", "email": "bob@example.com", "csrf_token": register_token}
            fields |= {"password": PASSWORD, "confirm_password": PASSWORD}
            return newcomer.post("/register", data=fields)

        def patch() -> httpx.Response:
            headers = {"X-CSRF-Token": alice_token, "HX-Request": "true"}
            return alice.patch("/partial/alice", data={"username": "alicia"}, headers=headers)

        outage.proxy.close()
        times: dict[str, list[float]] = {}
        # Twice: first the pooled connections die under us, then new connections are refused.
        for _ in range(2):
            for name, send in (
                ("healthz", healthz),
                ("GET / signed in", home),
                ("POST /login", login),
                ("POST /register", register),
                ("PATCH htmx", patch),
            ):
                response, elapsed = _timed(send)
                times.setdefault(name, []).append(elapsed)
                if name == "healthz":
                    assert response.status_code == 503
                    assert response.json() == {"status": "unavailable"}
                elif name == "PATCH htmx":
                    assert response.status_code == 503
                    assert response.headers["hx-reswap"] == "none"
                    assert 'id="flash"' in response.text
                else:
                    _assert_error_page(response)
        # A guest's home page needs no database at all.
        assert guest.get("/").status_code == 200
        print("\ntime to 503 while the database is cut (s):")
        for name, figures in times.items():
            print(f"  {name:18} " + "  ".join(f"{figure:.3f}" for figure in figures))
        slowest = max(max(figures) for figures in times.values())
        assert slowest < BOUND, times
        assert outage.counts() == before, "a row was written during the outage"

        outage.proxy.open()
        response, recovered = _timed(healthz)
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ok"}
        recovery = {"healthz": recovered}
        response, recovery["GET / signed in"] = _timed(home)
        assert response.status_code == 200
        assert "Welcome, alice" in response.text
        response, recovery["POST /login"] = _timed(login)
        assert response.status_code == 303
        response, recovery["POST /register"] = _timed(register)
        assert response.status_code == 303
        print("time to answer after the database returns (s):")
        for name, figure in recovery.items():
            print(f"  {name:18} {figure:.3f}")

    assert server.process.poll() is None, "the server restarted or died"
    log = server.log()
    assert "Traceback" not in log, log
    assert " 500 " not in log, log
    after = outage.counts()
    assert after["users"] == before["users"] + 1
    assert after["user_sessions"] == before["user_sessions"] + 1


def test_a_silent_database_answers_503_within_the_bound(outage: Outage) -> None:
    """No refusal, no reset, just silence: reads give up at their deadline."""
    server = outage.server
    with _browser(server) as alice, _browser(server) as guest:
        _sign_up_and_in(alice, "alice")
        login_token = page_token(guest, "/login")
        sends = {
            "healthz": lambda: guest.get("/healthz"),
            "GET / signed in": lambda: alice.get("/"),
            "POST /login": lambda: guest.post(
                "/login",
                data={"username": "alice", "password": PASSWORD, "csrf_token": login_token},
            ),
        }
        outage.proxy.silence()
        times: dict[str, list[float]] = {}
        # Twice: first a pooled connection goes quiet, then new connections hang.
        for _ in range(2):
            for name, send in sends.items():
                response, elapsed = _timed(send)
                times.setdefault(name, []).append(elapsed)
                assert response.status_code == 503, (name, response.text[:200])
                if name != "healthz":
                    _assert_error_page(response)
        print("\ntime to 503 while the database is silent (s):")
        for name, figures in times.items():
            print(f"  {name:18} " + "  ".join(f"{figure:.3f}" for figure in figures))
        assert max(max(figures) for figures in times.values()) < BOUND, times

        outage.proxy.close()
        outage.proxy.open()
        response, recovered = _timed(sends["GET / signed in"])
        assert response.status_code == 200
        assert "Welcome, alice" in response.text
        print(f"first signed-in page after the silence: {recovered:.3f} s")
    assert server.process.poll() is None, "the server restarted or died"


# -- writes: a database that goes silent mid-write, in the app's own process -------------


@dataclass
class InProcess:
    app: Any
    proxy: TcpProxy
    database_url: str


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[InProcess]:
    """The app in this process, its database behind the proxy, with short deadlines."""
    require_postgres_url()
    with postgres_database("webapp_write_outage") as database_url:
        upgrade_to_head(database_url)
        real = make_url(normalize_database_url(database_url))
        with tcp_proxy((real.host or "127.0.0.1", real.port or 5432)) as proxy:
            proxied = real.set(host="127.0.0.1", port=proxy.port)
            settings = make_settings(
                proxied.render_as_string(hide_password=False),
                db_read_deadline=1.0,
                db_write_deadline=2.0,
                db_idle_in_transaction_timeout=1000,
                db_statement_timeout=2000,
                db_lock_timeout=1000,
                db_tcp_user_timeout=2000,
            )
            app = create_app(settings)
            try:
                yield InProcess(app, proxy, database_url)
            finally:
                if proxy.is_open:
                    proxy.close()
                app.state.services.db.dispose()


def _idle_in_transaction(database_url: str):
    """Connections of this database holding a transaction open, seen from outside the proxy."""
    url = make_url(normalize_database_url(database_url))
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :name "
                    "AND state LIKE 'idle in transaction%'"
                ),
                {"name": url.database},
            ).scalar_one()
    finally:
        engine.dispose()


def _user_row_is_free(database_url: str) -> bool:
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            connection.execute(text("SET lock_timeout = '200ms'"))
            connection.execute(text("SELECT id FROM users FOR UPDATE")).all()
            connection.rollback()
        return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


@pytest.mark.parametrize("cut", ["before the UPDATE is answered", "between UPDATE and COMMIT"])
def test_a_write_cut_off_answers_503_in_time_and_leaves_no_lock(in_process: InProcess, cut: str):
    app, proxy = in_process.app, in_process.proxy
    engine = app.state.services.db.engine
    with TestClient(app, follow_redirects=False) as client:
        token = signed_in(client)
        armed = {"on": True}

        def silence_on_update(conn, cursor, statement, *args):
            if armed["on"] and statement.lstrip().upper().startswith("UPDATE USERS"):
                armed["on"] = False
                proxy.silence()

        def silence_on_commit(conn):
            if armed["on"] and conn.info.get("updated_users"):
                armed["on"] = False
                proxy.silence()

        def note_update(conn, cursor, statement, *args):
            if statement.lstrip().upper().startswith("UPDATE USERS"):
                conn.info["updated_users"] = True

        if cut == "before the UPDATE is answered":
            event.listen(engine, "before_cursor_execute", silence_on_update)
        else:
            event.listen(engine, "after_cursor_execute", note_update)
            event.listen(engine, "commit", silence_on_commit)
        started = time.monotonic()
        response = patch_profile(
            client, "alice", token, email="new@example.com", current_password=PASSWORD
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text[:300]
        assert response.headers["hx-reswap"] == "none"
        # The write deadline (2 s here), not TCP's minutes.
        assert elapsed < 2.0 + BOUND, elapsed
        assert not armed["on"], "the cut never happened"
        # The server ends the stranded transaction (idle_in_transaction_session_timeout),
        # and with it the row lock: nothing of the app's is left holding anything.
        for _ in range(100):
            if _idle_in_transaction(in_process.database_url) == 0:
                break
            time.sleep(0.1)
        assert _idle_in_transaction(in_process.database_url) == 0
        assert _user_row_is_free(in_process.database_url)
        # Nothing half-done: the change was never committed.
        with create_engine(normalize_database_url(in_process.database_url)).connect() as c:
            assert c.execute(text("SELECT email FROM users")).scalar_one() == "alice@example.com"

        proxy.close()
        proxy.open()
        event.remove(
            engine,
            "before_cursor_execute" if cut == "before the UPDATE is answered" else "commit",
            silence_on_update if cut == "before the UPDATE is answered" else silence_on_commit,
        )
        response = patch_profile(
            client, "alice", token, email="new@example.com", current_password=PASSWORD
        )
        assert response.status_code == 200, response.text[:300]
